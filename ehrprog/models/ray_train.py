"""Train the estimator on a Ray cluster through Ray Train: DDP across workers over a cohort on disk.

:func:`fit_on_ray` runs ``estimator.fit`` in every Ray Train worker; Ray Train starts the
``torch.distributed`` process group (gloo on CPUs, NCCL on GPUs) and ehrprog's training engine
takes it as it takes ``torchrun``'s: the same probe for unused parameters, the same seeds, the
same batches. With a cohort saved by :func:`ehrprog.cohorts.read.save_cohort` or ``ehrprog build``,
each worker reads only its own shards' visits (:class:`~ehrprog.features.sharded.ShardedVisitTensors` gives
shard ``k`` of each epoch's shuffled order to rank ``k % world``); the point statistics
(vocabulary, scaling, point features) are computed by every worker in one pass, so all ranks hold
the same. Rank 0 saves the fitted estimator to ``out`` (shared storage on a multi-node cluster);
the driver loads it from there (JSON and safetensors only).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any


def _worker_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: fit on the saved cohort; rank 0 saves the model."""
    import torch.distributed as dist

    from ehrprog.cohorts.read import load_cohort
    from ehrprog.models.estimator import VisitProgressionEstimator

    cohort = load_cohort(config["cohort"])
    estimator = VisitProgressionEstimator().set_params(**config["params"]).fit(cohort.X, cohort.y)
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    if rank == 0:
        estimator.save(config["out"])
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def fit_on_ray(
    estimator: Any,
    cohort: str | Path,
    out: str | Path,
    *,
    num_workers: int = 2,
    use_gpu: bool = False,
    ray_address: str | None = None,
    storage_path: str | Path | None = None,
) -> Any:
    """Fit a clone of ``estimator`` (its parameters) on the saved cohort ``cohort`` with Ray Train.

    Args:
        estimator: a :class:`~ehrprog.VisitProgressionEstimator` (only its parameters are used).
        cohort: a cohort folder (``ehrprog build`` or ``cohort.save``), readable by every worker.
        out: where rank 0 saves the fitted estimator (readable by the driver).
        num_workers: Ray Train workers (one process each; DDP world size).
        use_gpu: one GPU per worker (NCCL) instead of CPUs (gloo).
        ray_address: an existing cluster (``"auto"``); by default a local one is started.
        storage_path: Ray Train's run folder (default: a temporary folder).

    Returns:
        The fitted estimator, loaded from ``out``.
    """
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ehrprog.models.estimator import VisitProgressionEstimator

    params = estimator.get_params(deep=False)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        with tempfile.TemporaryDirectory(prefix="ehrprog-ray-") as scratch:
            trainer = TorchTrainer(
                _worker_loop,
                train_loop_config={"cohort": str(Path(cohort).resolve()), "params": params, "out": str(out)},
                scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
                run_config=RunConfig(storage_path=str(storage_path or scratch), name="ehrprog-fit"),
            )
            trainer.fit()
    finally:
        if started_here:
            ray.shutdown()
    return VisitProgressionEstimator.load(out)


__all__ = ["fit_on_ray"]
