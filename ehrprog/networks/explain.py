"""Attributions: which visits and codes moved a prediction, by integrated gradients.

Integrated gradients (Sundararajan et al., 2017) over the code embeddings: the path runs from
all-zero embeddings (the padding embedding) to the actual ones in ``steps`` midpoint Riemann
steps; a code's attribution is the sum over embedding dimensions of ``embedding * mean
gradient``, so a point's attributions add up to its output minus the output of the all-padding
input (the completeness axiom, up to the discretisation).

Every point is explained in a row of its own (its own window of visits), and the interpolation
steps are stacked along the batch axis: one forward and one backward pass per chunk of points
serves all ``steps``, instead of a Python loop over points and steps.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from ehrprog.cohorts.cohort import CohortX
from ehrprog.features.tensors import VisitTensors, Vocabulary
from ehrprog.networks.visit_model import VisitSequenceModel

#: Elements of the stacked embedding tensor ``[steps * points, V, C, D]`` per chunk (memory bound).
CHUNK_ELEMENTS = 2**24


def integrated_gradients(
    model: VisitSequenceModel,
    tensors: VisitTensors,
    X: CohortX,
    vocabulary: Vocabulary,
    output: str,
    steps: int,
    device: torch.device,
) -> pl.DataFrame:
    """Attributions of every point of ``X`` (see the module docstring).

    Args:
        model: the trained model (on ``device``).
        tensors: ``X``'s visit tensors.
        X: the points explained.
        vocabulary: the model's code vocabulary (for code names).
        output: ``"risk"`` (log relative risk) or ``"stage"`` (logit of the predicted stage).
        steps: integration steps.
        device: where to compute.

    Returns:
        One row per (point, input visit, code): ``point``, ``subject_id``, ``visit_index``,
        ``visit_start``, ``code``, ``attribution``, ``visit_attribution``.
    """
    model.eval()
    frames = []
    rows = np.arange(len(X))
    start = 0
    while start < len(rows):
        # An upper bound on one point's stacked embeddings: its window times the widest visit.
        window = min(int(tensors.point_n_visits[rows[start]]), tensors.max_visits)
        size = max(CHUNK_ELEMENTS // (window * tensors.max_codes * model.backbone.dim * steps), 1)
        chunk = rows[start : start + size]
        frames.append(_chunk_attributions(model, tensors, chunk, output, steps, device))
        start += size
    frame = pl.concat(frames)
    names = pl.DataFrame({"code_row": np.arange(2, vocabulary.size), "code": vocabulary.codes})
    visits = X.visits.visits().select("subject_id", "visit_index", pl.col("start").alias("visit_start"))
    points = X.points.with_row_index("point").select(pl.col("point").cast(pl.Int64), "subject_id")
    return (
        frame.with_columns(pl.col("code_row").cast(pl.Int64), pl.col("visit_index").cast(pl.Int32))
        .join(names, on="code_row", how="left")
        .with_columns(pl.col("code").fill_null("<unknown code>"))
        .join(points, on="point", how="left")
        .join(visits, on=["subject_id", "visit_index"], how="left")
        .with_columns(pl.col("attribution").sum().over("point", "visit_index").alias("visit_attribution"))
        .select("point", "subject_id", "visit_index", "visit_start", "code", "attribution", "visit_attribution")
        .sort("point", "visit_index", "attribution", descending=[False, False, True])
    )


def tabular_attributions(
    tabular, X: CohortX, output: str, stage_class: np.ndarray | None = None, scale: float = 1.0
) -> pl.DataFrame:
    """Attributions of a fitted :class:`~ehrprog.models.tabular.TabularModel`'s output (``"risk"`` or the
    logit of ``stage_class`` ``[n]`` for ``"stage"``) to each of its inputs, times ``scale`` (as
    the estimator scales the tabular output): exact TreeSHAP for the booster, ``coef * (x - mean)
    / scale`` for a linear model (:meth:`~ehrprog.models.tabular.TabularModel.contributions`).

    Returns one row per (point, input): ``point`` (row of ``X``), ``subject_id``, ``feature``,
    ``value`` (the input) and ``attribution``; every clinical-table column, and the windowed-count
    columns that are recorded or attributed for that point.
    """
    dense, wide = tabular._inputs(X)
    contributions = tabular.contributions(X, output, stage_class, (dense, wide)) * scale
    values = wide.toarray() if hasattr(wide, "toarray") else wide
    n, f = contributions.shape
    clinical = np.tile(np.arange(f) < dense.shape[1], n)  # a count column is listed where it counts
    return pl.DataFrame(
        {
            "point": np.repeat(np.arange(n), f),
            "subject_id": np.repeat(X.points["subject_id"].to_numpy(), f),
            "feature": np.tile(np.asarray(tabular.names_, dtype=object), n).tolist(),
            "value": values.reshape(-1),
            "attribution": contributions.reshape(-1),
        }
    ).filter(pl.Series(clinical) | (pl.col("attribution") != 0) | (pl.col("value") != 0))


def _chunk_attributions(
    model: VisitSequenceModel, tensors: VisitTensors, points: np.ndarray, output: str, steps: int, device
) -> pl.DataFrame:
    """Attributions of the points ``points`` (rows of ``X``), all steps in one pass."""
    batch = tensors.batch(points, per_point=True)  # row k is point points[k]
    n = len(points)
    inputs = batch.tensors(device)
    with torch.no_grad():
        embedded = model.backbone.embed(inputs["codes"], inputs["values"], inputs["has_value"])  # [n,V,C,D]
        logits, _ = model(inputs)
        chosen = logits.argmax(-1) if logits is not None else None
    stacked = batch.repeat(steps).tensors(device)
    alphas = ((torch.arange(steps, dtype=embedded.dtype, device=device) + 0.5) / steps).repeat_interleave(n)
    scaled = (alphas[:, None, None, None] * embedded.repeat(steps, 1, 1, 1)).requires_grad_(True)
    logits, risk = model(stacked, scaled)
    if output == "risk":
        value = model.risk_score(risk).sum()
    else:
        value = logits.gather(1, chosen.repeat(steps)[:, None]).sum()
    (grad,) = torch.autograd.grad(value, scaled)
    mean_grad = grad.reshape(steps, n, *embedded.shape[1:]).mean(0)
    attribution = (embedded * mean_grad).sum(-1).cpu().numpy()  # [n, V, C]
    point, visit_pos, code_pos = np.nonzero(batch.codes)
    return pl.DataFrame(
        {
            "point": points[point],
            "visit_index": visit_pos + batch.visit_offset[point],
            "code_row": batch.codes[point, visit_pos, code_pos],
            "attribution": attribution[point, visit_pos, code_pos],
        }
    )


__all__ = ["integrated_gradients", "tabular_attributions"]
