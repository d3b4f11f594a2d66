"""A saved model's predictions in the MEDS prediction schema, written piece by piece
(``ehrprog predict``).

:func:`prediction_frame` gives one row per prediction point: the MEDS label schema
(``subject_id``, ``prediction_time``, ``boolean_value``: whether the point progressed within the
horizon, null where it was censored before it; ``integer_value``, ``float_value``,
``categorical_value`` null) plus ``predicted_boolean_probability`` (the predicted ``1 - S(horizon)``;
for a model fitted with death competing, its cumulative incidence of progression by the horizon,
and a death before the horizon is a known ``False``) and ``predicted_boolean_value`` (whether it
is at least 0.5), as ``meds-evaluation`` reads them,
and ``predicted_risk`` (the model's ranking score, higher = sooner). A model with a stage head adds
``predicted_next_stage`` (the most probable next stage) and ``predicted_next_stage_probability``.

:func:`write_predictions` writes one Parquet file per piece of the cohort
(:meth:`~ehrprog.cohorts.cohort.CohortX.parts`: a cohort saved by ``ehrprog build`` shard by shard), so
memory holds one shard's inputs and predictions at a time, and ``predictions.json`` saying what
was written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from ehrprog.cohorts.cohort import CohortX

#: The ``kind`` of a predictions folder (:class:`~ehrprog.core.output.OutputFolder`).
PREDICTIONS_KIND = "predictions"
#: The default horizon of ``ehrprog predict`` and of ``evaluate``'s ``predictions.parquet`` (years).
HORIZON_YEARS = 2.0
_DAYS_PER_YEAR = 365.25


def prediction_frame(
    model: Any, X: CohortX, y: pl.DataFrame | None, horizon_years: float = HORIZON_YEARS
) -> pl.DataFrame:
    """Every point of ``X`` in the MEDS prediction schema (see the module docstring).

    Args:
        model: a fitted :class:`~ehrprog.models.estimator.VisitProgressionEstimator`.
        X: the points (read in :meth:`~ehrprog.cohorts.cohort.CohortX.parts`).
        y: their targets (``event``, ``time_to_event_days``); ``None``: ``boolean_value`` is null.
        horizon_years: the horizon of the binary label and probability.
    """
    horizon = horizon_years * _DAYS_PER_YEAR
    logits, risk = model._predict_outputs(X)
    n = len(X)
    columns: dict[str, Any] = {
        "subject_id": X.points["subject_id"],
        "prediction_time": X.points["prediction_time"],
        "boolean_value": pl.Series([None] * n, dtype=pl.Boolean),
        "integer_value": pl.Series([None] * n, dtype=pl.Int64),
        "float_value": pl.Series([None] * n, dtype=pl.Float32),
        "categorical_value": pl.Series([None] * n, dtype=pl.String),
    }
    if y is not None and {"event", "time_to_event_days"} <= set(y.columns):
        event = y["event"].to_numpy().astype(bool)
        time = y["time_to_event_days"].to_numpy().astype(float)
        # A death before the horizon, where death competes, is a known "did not progress".
        ended = event | (y["death"].to_numpy().astype(bool) if "death" in y.columns else False)
        known = (ended & (time <= horizon)) | (time > horizon)
        label = pl.DataFrame({"value": event & (time <= horizon), "known": known})
        columns["boolean_value"] = label.select(pl.when("known").then("value"))["value"]
    if risk is not None:
        from ehrprog.networks.inference import ranking_score

        if getattr(model, "death_", None) is not None:  # fitted with death competing: the incidence
            probability = model._incidence(risk, X, horizon)[:, 0]
        else:
            probability = 1.0 - model._survival_at(risk, horizon)
        columns["predicted_boolean_value"] = probability >= 0.5
        columns["predicted_boolean_probability"] = probability.astype(np.float32)
        columns["predicted_risk"] = ranking_score(risk).astype(np.float32)
    if logits is not None:
        proba = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
        columns["predicted_next_stage"] = np.asarray(model.classes_)[proba.argmax(axis=1)]
        columns["predicted_next_stage_probability"] = proba.max(axis=1).astype(np.float32)
    return pl.DataFrame(columns)


def meds_predictions(
    model: Any, X: CohortX, y: pl.DataFrame, horizon_years: float = 2.0, competing: Any = None
) -> tuple[pl.DataFrame, int]:
    """The model's predictions of progression by ``horizon_years`` in the MEDS prediction schema
    that ``meds-evaluation`` reads (its ``PredictionSchema``: the MEDS label schema plus
    ``predicted_boolean_value`` and ``predicted_boolean_probability``).

    ``boolean_value`` is whether the point progressed within the horizon;
    ``predicted_boolean_probability`` is the predicted ``1 - S(horizon)`` and
    ``predicted_boolean_value`` whether it is at least 0.5. Points censored before the horizon
    have no binary label and are left out; their count is returned beside the frame
    (:func:`~ehrprog.evaluation.predictions.prediction_frame` keeps them, with a null label).

    Where ``y`` has ``death`` (death competes), a death before the horizon with no progression
    first is a known ``False`` (it will never progress), not a censoring; the probability is the
    cumulative incidence of progression by the horizon: the model's own
    (:meth:`~ehrprog.models.estimator.VisitProgressionEstimator.predict_cumulative_incidence`) where
    it was fitted with death competing, else that of ``competing`` (``evaluate_split``'s
    ``fitted["competing"]``).
    """
    frame = prediction_frame(model, X, y, horizon_years)
    if competing is not None and getattr(model, "death_", None) is None:  # the shared death model's incidence
        from ehrprog.evaluation.competing import incidence_by_horizon

        probability = incidence_by_horizon(model, X, np.array([horizon_years * 365.25]), competing)[:, 0]
        frame = frame.with_columns(
            pl.Series("predicted_boolean_value", probability >= 0.5),
            pl.Series("predicted_boolean_probability", probability.astype(np.float32)),
        )
    labelled = frame["boolean_value"].is_not_null()
    kept = frame.filter(labelled).select(
        "subject_id", "prediction_time", "boolean_value", "integer_value", "float_value", "categorical_value",
        "predicted_boolean_value", "predicted_boolean_probability",
    )  # fmt: skip
    return kept, int((~labelled).sum())


def write_predictions(
    model: Any, X: CohortX, y: pl.DataFrame | None, folder: Path, horizon_years: float = HORIZON_YEARS
) -> dict[str, Any]:
    """Write ``folder/predictions/NNNNN.parquet`` (one per piece of ``X``, in order) and
    ``folder/predictions.json``; return the record ``predictions.json`` holds (files, points, points
    with a label at the horizon)."""
    (folder / "predictions").mkdir(parents=True, exist_ok=True)
    files, columns = [], []
    for number, (part, rows) in enumerate(X.parts()):
        frame = prediction_frame(model, part, None if y is None else y[rows], horizon_years)
        relative = f"predictions/{number:05d}.parquet"
        frame.write_parquet(folder / relative)
        columns = frame.columns
        files.append(
            {"file": relative, "points": frame.height, "labelled": int(frame["boolean_value"].is_not_null().sum())}
        )
    record = {
        "horizon_years": horizon_years,
        "points": sum(f["points"] for f in files),
        "labelled": sum(f["labelled"] for f in files),
        "files": files,
        "columns": columns,
    }
    (folder / "predictions.json").write_text(json.dumps(record, indent=1))
    return record


__all__ = ["HORIZON_YEARS", "PREDICTIONS_KIND", "meds_predictions", "prediction_frame", "write_predictions"]
