"""Running a :class:`~ehrprog.networks.visit_model.VisitSequenceModel` over points, and the one scorer.

:func:`batched_outputs` computes the model's outputs for chosen points in batches (evaluation
mode, no gradients); :func:`outputs_score` is what ``VisitProgressionEstimator.score`` reports and
early stopping monitors: macro one-vs-rest AUROC of the known stages, Harrell's C of the risks,
or their mean.
"""

from __future__ import annotations

import numpy as np
import torch

from ehrprog.core.memory import release_free_memory
from ehrprog.features.tensors import Batch, VisitTensors
from ehrprog.metrics import harrell_c, macro_auroc
from ehrprog.networks.piecewise import risk_score
from ehrprog.networks.prefetch import prefetched

#: Subjects per batch at prediction time. A batch pads every visit to its widest one, so larger
#: batches pad more: on 200,000 points 64 subjects a batch took 8.4 s and 261 MB above the
#: resident memory at its peak, 256 subjects 15.7 s and 486 MB.
PREDICT_BATCH_SUBJECTS = 64


def batched_outputs(
    model: torch.nn.Module, tensors: VisitTensors, rows: np.ndarray, device: torch.device, batch_size: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Stage logits ``[len(rows), K]`` and risk outputs (``[len(rows)]`` log relative risks, or
    ``[len(rows), T]`` log hazards) of the points ``rows``, in that order, computed on ``device``
    in batches of ``max(batch_size, PREDICT_BATCH_SUBJECTS)`` subjects (``None`` for a missing head)."""
    position = np.empty(tensors.n_points, dtype=np.int32 if len(rows) < 2**31 else np.int64)
    position[rows] = np.arange(len(rows))
    logits = np.zeros((len(rows), model.n_classes), np.float32) if model.stage_head is not None else None
    risk = None
    if model.risk_head is not None:
        risk = np.zeros((len(rows), model.survival_pieces) if model.survival_pieces else len(rows), np.float32)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in prefetched(tensors.plan_batches(rows, max(batch_size, PREDICT_BATCH_SUBJECTS)), tensors.batch):
            out_logits, out_risk = model(batch.tensors(device))
            where = position[batch.point_index]
            if logits is not None:
                logits[where] = out_logits.float().cpu().numpy()
            if risk is not None:
                risk[where] = out_risk.float().cpu().numpy()
    model.train(was_training)
    release_free_memory()  # the pass's freed batches, before whatever comes next
    return logits, risk


def ranking_score(risk: np.ndarray | None) -> np.ndarray | None:
    """The ranking score ``[n]`` of a risk output: itself, or of log hazards ``[n, T]`` the log
    cumulative hazard at the risk horizon."""
    if risk is None or risk.ndim == 1:
        return risk
    return risk_score(torch.from_numpy(risk).double()).float().numpy()


def outputs_score(logits: np.ndarray | None, risk: np.ndarray | None, targets: dict[str, np.ndarray]) -> float | None:
    """Macro AUROC of the known stages (``stage_label`` >= 0) from ``logits``, Harrell's C of
    ``risk`` given ``event`` and ``time``, or their mean; ``None`` where neither is defined (one
    stage, no event)."""
    scores = []
    if logits is not None:
        labels = targets["stage_label"]
        known = labels >= 0
        if len(np.unique(labels[known])) >= 2:
            proba = torch.softmax(torch.from_numpy(logits[known]), dim=1).numpy()
            scores.append(macro_auroc(labels[known], proba, np.arange(logits.shape[1])))
    if risk is not None and targets["event"].any():
        scores.append(harrell_c(targets["event"].astype(bool), targets["time"], ranking_score(risk)))
    return float(np.mean(scores)) if scores else None


#: Resamples of the paired bootstrap that judges the history on the validation subjects.
GAIN_BOOTSTRAP = 200


def paired_gain(
    kept: tuple[np.ndarray | None, np.ndarray | None],
    base: tuple[np.ndarray | None, np.ndarray | None],
    targets: dict[str, np.ndarray],
    subjects: np.ndarray,
    seed: int,
    n_boot: int = GAIN_BOOTSTRAP,
) -> tuple[float, float]:
    """``(gain, se)``: :func:`outputs_score` of ``kept`` (stage logits, risk outputs) minus that of
    ``base`` on the same points, and the standard error of that difference over ``n_boot``
    resamples of the ``subjects`` (a subject's points drawn together; both outputs scored on the
    same draw: a paired bootstrap). ``(nan, nan)`` where the score is undefined."""
    gain = _difference(kept, base, targets, np.arange(len(subjects)))
    if not np.isfinite(gain):
        return float("nan"), float("nan")
    ids, inverse = np.unique(subjects, return_inverse=True)
    rows_of = np.split(np.argsort(inverse, kind="stable"), np.cumsum(np.bincount(inverse))[:-1])
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        rows = np.concatenate([rows_of[i] for i in rng.integers(0, len(ids), len(ids))])
        draws.append(_difference(kept, base, targets, rows))
    draws = np.asarray(draws)
    draws = draws[np.isfinite(draws)]
    return float(gain), float(draws.std(ddof=1)) if len(draws) > 1 else float("nan")


def _difference(kept, base, targets: dict[str, np.ndarray], rows: np.ndarray) -> float:
    part = {name: values[rows] for name, values in targets.items()}
    pick = lambda x: None if x is None else x[rows]  # noqa: E731
    a = outputs_score(pick(kept[0]), pick(kept[1]), part)
    b = outputs_score(pick(base[0]), pick(base[1]), part)
    return float("nan") if a is None or b is None else a - b


def as_trained(values: np.ndarray) -> np.ndarray:
    """Targets as the heads read them: events (bool) and times (float64 days) as float32; stage
    labels as they are. The fit keeps one copy of each target in its own type and converts the
    rows a batch or a validation needs."""
    return values.astype(np.float32) if values.dtype in (np.bool_, np.float64) else values


def with_targets(batch: Batch, targets: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch's tensors plus its points' targets (``stage_label``, ``event``, ``time``;
    :func:`as_trained`) on ``device``."""
    inputs = batch.tensors(device)
    for name, values in targets.items():
        inputs[name] = torch.from_numpy(as_trained(values[batch.point_index])).to(device)
    return inputs


__all__ = [
    "GAIN_BOOTSTRAP",
    "PREDICT_BATCH_SUBJECTS",
    "as_trained",
    "batched_outputs",
    "outputs_score",
    "paired_gain",
    "ranking_score",
    "with_targets",
]
