"""The one training engine behind ``VisitProgressionEstimator.fit`` and ``ehrprog pretrain``.

:func:`train` runs AdamW over an *objective*: a ``torch.nn.Module`` whose ``forward(inputs)``
returns ``(loss, parts)`` (a scalar tensor and a dict of named floats for the history). The
engine owns everything around it, once:

* **device and mixed precision**: the objective is moved to ``settings.device``; on CUDA the
  forward pass runs under bfloat16 autocast;
* **DDP** under ``torchrun`` (``WORLD_SIZE`` > 1): NCCL on GPUs, gloo on CPUs. Before wrapping,
  one probe step finds parameters that take no part in the loss (a head the target does not
  use, a backbone's pre-training head when fine-tuning); when every rank agrees they are frozen,
  so DDP runs without ``find_unused_parameters`` (and its extra pass); otherwise it falls back to
  ``find_unused_parameters=True``. Each rank takes every ``world``-th batch, all ranks the same
  number of steps;
* **reproducibility**: dropout is reseeded per epoch (``seed + epoch + 1000 * rank``);
* **gradient clipping** (global norm ``clip_norm``);
* **non-finite losses** stop training at once with :class:`NonFiniteLossError` naming the epoch
  and the batch (never a NaN model returned);
* **early stopping** as scikit-learn's MLP does it: the monitored value (validation loss, or a
  validation score, else the training loss) must improve by more than ``tol`` within
  ``n_iter_no_change`` epochs; the best epoch's weights are restored;
* **batches loaded ahead**: the next batches are read and assembled on a background thread while
  the current one trains (:mod:`~ehrprog.networks.prefetch`);
* **progress** (a tqdm bar per epoch when ``verbose``) and a **history** of one dict per epoch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ehrprog.core.memory import release_free_memory
from ehrprog.networks.prefetch import PREFETCH_BATCHES, prefetched

T = TypeVar("T")


class NonFiniteLossError(FloatingPointError):
    """A training or validation loss became NaN or infinite; the model is not returned."""


@dataclass
class TrainSettings:
    """How :func:`train` runs (see the module docstring).

    Attributes:
        max_epochs: epochs at most.
        lr, weight_decay: AdamW's.
        clip_norm: global gradient-norm clip (``None``: no clipping).
        n_iter_no_change: epochs without an improvement larger than ``tol`` before stopping
            (``None``: never stop early; the last epoch's weights are kept).
        tol: the least improvement of the monitored value that counts.
        monitor: the history key to monitor (``"valid_loss"``, ``"valid_score"``...); where a
            record lacks it (a score undefined on the validation set) the validation loss, else
            the training loss, is minimised instead.
        greater_is_better: whether a larger monitored value is better (a score, not a loss).
        device: where the objective trains.
        seed: seeds dropout per epoch (the caller seeds initialisation and batch order).
        verbose: a progress bar per epoch when true (rank 0 only).
        description: the progress bar's label.
        prefetch: batches loaded ahead of the step on a background thread
            (:mod:`~ehrprog.networks.prefetch`; 0: none). The batches and their order are the same.
    """

    max_epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 0.0
    clip_norm: float | None = 1.0
    n_iter_no_change: int | None = None
    tol: float = 1e-4
    monitor: str = "valid_loss"
    greater_is_better: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    verbose: bool = False
    description: str = "epoch"
    prefetch: int = PREFETCH_BATCHES


@dataclass
class TrainResult:
    """What :func:`train` did: ``history`` (one dict per epoch; epoch 0 is the untrained
    reference when ``validate_first``), ``best_epoch`` (whose weights the module now holds),
    ``n_iter`` (epochs run) and ``stopped_early``."""

    history: list[dict[str, float]]
    best_epoch: int
    n_iter: int
    stopped_early: bool


def distributed_context(device: torch.device) -> tuple[int, int]:
    """``(rank, world size)``; under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is
    started here when it is not already (NCCL for CUDA devices, gloo otherwise)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def resolve_device(spec: str) -> torch.device:
    """The device ``spec`` names, checked to exist: ``"auto"`` (CUDA when present, on the
    ``LOCAL_RANK`` device under ``torchrun``, else CPU), ``"cpu"``, ``"cuda[:N]"`` or ``"mps"``."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as error:
        raise ValueError(f"device={spec!r} is not a torch device: {error}") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={spec!r}: ehrprog trains and predicts on 'auto', 'cpu', 'cuda[:N]' or 'mps'")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise ValueError(f"device={spec!r}: this machine has {count} CUDA device(s)")
    return device


def fit_seed(random_state: int | np.random.RandomState | None) -> int:
    """The seed of one fit: ``random_state``'s int, a draw from a ``RandomState``, or a fresh one
    for ``None`` (as scikit-learn does)."""
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0] & 0x7FFFFFFF)
    return int(random_state)


def broadcast_seed(seed: int, device: torch.device) -> int:
    """Rank 0's ``seed`` on every rank (so a fresh random seed still splits and shuffles alike)."""
    _, world = distributed_context(device)
    if world == 1:
        return seed
    import torch.distributed as dist

    value = torch.tensor([seed], dtype=torch.int64, device=device if device.type == "cuda" else "cpu")
    dist.broadcast(value, src=0)
    return int(value.item())


def _wrap_for_ddp(objective: nn.Module, probe_inputs: dict[str, Any], device: torch.device) -> nn.Module:
    """Freeze parameters no rank's probe step reaches, then wrap in DDP (see the module docstring)."""
    import torch.distributed as dist

    params = [p for p in objective.parameters() if p.requires_grad]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        loss, _ = objective(probe_inputs)
        loss.backward()
    used = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=_reduce_device(device))
    objective.zero_grad(set_to_none=True)
    low, high = used.clone(), used.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    agreed = bool(torch.equal(low, high))
    if agreed:
        for param, flag in zip(params, low.tolist(), strict=True):
            if not flag:
                param.requires_grad_(False)
    ids = [device.index or 0] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(objective, device_ids=ids, find_unused_parameters=not agreed)


def _reduce_device(device: torch.device) -> torch.device:
    return device if device.type == "cuda" else torch.device("cpu")


def _check_finite(loss: torch.Tensor, where: str) -> float:
    value = float(loss.detach())
    if not np.isfinite(value):
        raise NonFiniteLossError(
            f"the loss became {value} at {where}; training stopped (check the inputs for non-finite values, "
            "or lower lr)"
        )
    return value


def train(
    objective: nn.Module,
    plan: Callable[[int], Sequence[T]],
    load: Callable[[T, torch.device], dict[str, Any]],
    settings: TrainSettings,
    *,
    validate: Callable[[nn.Module], dict[str, float]] | None = None,
    validate_first: bool = False,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``objective`` in place; see the module docstring.

    Args:
        objective: ``forward(inputs) -> (loss, parts)``; its parameters that require grad are trained.
        plan: ``plan(epoch)`` gives that epoch's batches (cheap descriptions, e.g. point rows), the
            same list on every rank.
        load: turns one planned batch into the objective's inputs on a device.
        settings: see :class:`TrainSettings`.
        validate: ``validate(objective)`` gives held-out figures for the record (run on every rank
            with the unwrapped objective, so every rank decides alike).
        validate_first: record the untrained objective's validation as epoch 0; with early
            stopping on a monitored value it holds, epoch 0 is a candidate (``best_epoch`` 0
            returns the objective as it came in).
        on_epoch: called with each epoch's record.
    """
    device = settings.device
    objective.to(device)
    rank, world = distributed_context(device)
    trained: nn.Module = objective
    if world > 1:
        first = plan(1)
        if len(first):
            trained = _wrap_for_ddp(objective, load(first[rank % len(first)], device), device)
    parameters = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
    amp = device.type == "cuda"
    history: list[dict[str, float]] = []
    sign = -1.0 if settings.greater_is_better else 1.0
    best, best_epoch, best_state, stale, stopped = np.inf, 0, None, 0, False
    if validate_first and validate is not None:
        history.append({"epoch": 0, **validate(objective)})
        if on_epoch is not None:
            on_epoch(history[-1])
        if settings.monitor in history[-1] and settings.n_iter_no_change is not None:
            # The starting point is a candidate too: an initialised model training cannot improve is kept.
            best = sign * history[-1][settings.monitor]
            best_state = {k: v.detach().clone() for k, v in objective.state_dict().items()}
    for epoch in range(1, settings.max_epochs + 1):
        started = time.perf_counter()
        trained.train()
        batches = plan(epoch)
        steps = max(len(batches) // world, 1) if world > 1 else len(batches)
        mine = [batches[i] for i in range(rank, len(batches), world)][:steps]
        losses, weights, parts_sum = [], [], {}
        with torch.random.fork_rng(devices=[device] if amp else []):
            torch.manual_seed(settings.seed + epoch + 1000 * rank)
            bar = tqdm(
                prefetched(mine, lambda item: load(item, device), settings.prefetch),
                total=len(mine),
                disable=not settings.verbose or rank > 0,
                desc=f"{settings.description} {epoch}",
                leave=True,
            )
            for number, inputs in enumerate(bar, start=1):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    loss, parts = trained(inputs)
                value = _check_finite(loss, f"epoch {epoch}, batch {number} of {len(mine)}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if settings.clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(parameters, settings.clip_norm)
                optimizer.step()
                weight = float(parts.pop("weight", 1.0))
                losses.append(value)
                weights.append(weight)
                if number % 10 == 0 or number == len(mine):
                    bar.set_postfix(loss=f"{np.average(losses, weights=weights):.4f}", refresh=False)
                for key, part in parts.items():
                    parts_sum[key] = parts_sum.get(key, 0.0) + part * weight
        total = max(sum(weights), 1e-12)
        record: dict[str, float] = {"epoch": epoch, "train_loss": float(np.average(losses, weights=weights))}
        record.update({f"train_{k}": v / total for k, v in parts_sum.items()})
        if validate is not None:
            figures = validate(objective)
            if "valid_loss" in figures:
                _check_finite(torch.tensor(figures["valid_loss"]), f"epoch {epoch}, validation")
            record.update(figures)
        record["seconds"] = time.perf_counter() - started
        release_free_memory()  # the epoch's freed batches (glibc keeps them otherwise)
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if settings.monitor in record:
            monitored = sign * record[settings.monitor]
        else:  # a loss, never a score, stands in for a monitored value a record lacks
            monitored = record.get("valid_loss", record["train_loss"])
        if monitored < best - settings.tol:
            best, best_epoch, stale = monitored, epoch, 0
            if settings.n_iter_no_change is not None:
                best_state = {k: v.detach().clone() for k, v in objective.state_dict().items()}
        else:
            stale += 1
            if settings.n_iter_no_change is not None and stale >= settings.n_iter_no_change:
                stopped = True
                break
    n_iter = sum(1 for record in history if record["epoch"] > 0)
    if settings.n_iter_no_change is None:
        best_epoch = n_iter  # no early stopping: the last epoch's weights are kept
    elif best_state is not None:
        objective.load_state_dict(best_state)
    return TrainResult(history, best_epoch, n_iter, stopped)


__all__ = [
    "NonFiniteLossError",
    "TrainResult",
    "TrainSettings",
    "broadcast_seed",
    "distributed_context",
    "fit_seed",
    "resolve_device",
    "train",
]
