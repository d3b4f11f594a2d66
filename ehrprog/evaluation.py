"""Fit the model and the baselines on one subject split and measure them the same way.

Used by ``make demo`` and by the quality benchmark, so both report identical metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from sklearn.model_selection import GroupShuffleSplit

from ehrprog.baselines import BoostedCoxBaseline, ClinicalCoxBaseline, CoxBaseline, KFREBaseline, StageBaseline
from ehrprog.metrics import (
    evaluation_times,
    expected_calibration_error,
    harrell_c,
    integrated_brier,
    macro_auroc,
    quadratic_weighted_kappa,
    survival_calibration,
)
from ehrprog.tasks.cohort import Cohort, CohortX

#: The estimator settings the demo and the quality benchmark use (tuned on simulator seed 0 only).
DEMO_MODEL_PARAMS: dict[str, Any] = {
    "target": "both",
    "embedding_dim": 32,
    "hidden_dim": 32,
    "dropout": 0.3,
    "weight_decay": 1e-2,
    "lr": 1e-2,
    "batch_size": 32,
    "max_epochs": 30,
    "n_iter_no_change": 6,
}


#: Horizons (years) at which survival rows report calibration.
CALIBRATION_YEARS = (1, 2, 5)

#: The name of the oracle row (the simulator's true risk): a ceiling, not a competitor.
ORACLE = "oracle (true simulated risk)"
#: The name of the reference row: Cox on the model's own clinical inputs (what the sequence adds).
REFERENCE = "ref: Cox on the model's inputs"


@dataclass
class Row:
    name: str
    metrics: dict[str, float] = field(default_factory=dict)
    fit_s: float = float("nan")
    predict_s: float = float("nan")


def subject_split(cohort: Cohort, test_size: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train and test rows of ``cohort``, split by subject."""
    rows = np.arange(len(cohort.X))
    return next(GroupShuffleSplit(1, test_size=test_size, random_state=seed).split(rows, groups=cohort.groups))


def evaluate(
    cohort: Cohort,
    train: np.ndarray,
    test: np.ndarray,
    model_params: dict[str, Any] | None = None,
    random_state: int = 0,
    oracle: np.ndarray | None = None,
) -> tuple[list[Row], dict[str, Any]]:
    """Fit the estimator and every baseline on the rows ``train`` of ``cohort``, score them on ``test``
    (see :func:`evaluate_split`)."""
    return evaluate_split(
        cohort.X[train], cohort.y[train], cohort.X[test], cohort.y[test], model_params, random_state, oracle
    )


def evaluate_split(
    X_tr: CohortX,
    y_tr: pl.DataFrame,
    X_te: CohortX,
    y_te: pl.DataFrame,
    model_params: dict[str, Any] | None = None,
    random_state: int = 0,
    oracle: np.ndarray | None = None,
    reference: bool = True,
    variants: dict[str, dict[str, Any]] | None = None,
) -> tuple[list[Row], dict[str, Any]]:
    """Fit the estimator and every baseline on ``X_tr``/``y_tr``, score them on ``X_te``/``y_te``.

    Survival rows with a survival function also get ``ici_1y``, ``ici_2y``, ``ici_5y``: the
    calibration (integrated calibration index over risk deciles, Kaplan-Meier observed) of the
    predicted risk of progression by 1, 2 and 5 years (:func:`~ehrprog.metrics.survival_calibration`),
    where the horizon is inside the test follow-up. ``variants`` adds estimator rows: name ->
    parameters over the model's (e.g. ``{"model, piecewise head": {"survival_head": "piecewise"}}``).

    ``oracle`` (simulated data only): the true risk of each test point
    (:func:`~ehrprog.datasets.oracle_risk`), scored as a last row: the ceiling. ``reference``
    adds :class:`~ehrprog.baselines.ClinicalCoxBaseline` (Cox on the model's own clinical inputs).

    Returns the rows of the comparison table and the fitted objects (``model``, ``cox``...) and,
    under ``"risks"``, every method's test risk scores by row name (for paired comparisons).
    """
    from ehrprog.estimator import VisitProgressionEstimator

    stage_te = y_te["stage"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    known = ~np.isnan(stage_te)
    ev_tr, t_tr = y_tr["event"].to_numpy(), y_tr["time_to_event_days"].to_numpy()
    ev_te, t_te = y_te["event"].to_numpy(), y_te["time_to_event_days"].to_numpy()
    times = evaluation_times(t_tr, t_te) if ev_te.any() and ev_tr.any() else np.array([])
    rows: list[Row] = []
    fitted: dict[str, Any] = {"risks": {}}

    def stage_metrics(row: Row, proba: np.ndarray, classes: np.ndarray) -> None:
        if len(np.unique(stage_te[known])) < 2:
            return  # undefined on a test set with one stage (tiny real cohorts)
        row.metrics["macro_auroc"] = macro_auroc(stage_te[known], proba[known], classes)
        row.metrics["qwk"] = quadratic_weighted_kappa(stage_te[known].astype(int), classes[proba[known].argmax(1)])
        row.metrics["ece"] = expected_calibration_error(stage_te[known], proba[known], classes)

    def survival_metrics(row: Row, risk: np.ndarray, survival_fn) -> None:
        fitted["risks"][row.name] = risk
        if not ev_te.any():
            return  # no event among the test points: concordance is undefined
        row.metrics["c_index"] = harrell_c(ev_te, t_te, risk)
        if survival_fn is not None and len(times):
            # Survival is flat after a model's last event time: evaluate there beyond it.
            survival = np.vstack([fn(np.clip(times, fn.x[0], fn.x[-1])) for fn in survival_fn])
            row.metrics["ibs"] = integrated_brier((ev_tr, t_tr), (ev_te, t_te), survival, times)
            for years in CALIBRATION_YEARS:
                horizon = years * 365.25
                if horizon < t_te.max():
                    at = np.array([fn(np.clip(horizon, fn.x[0], fn.x[-1])) for fn in survival_fn])
                    row.metrics[f"ici_{years}y"] = survival_calibration(ev_te, t_te, 1 - at, horizon)["ici"]

    params = {**DEMO_MODEL_PARAMS, **(model_params or {}), "random_state": random_state}
    model = VisitProgressionEstimator(**params)
    row, (proba, risk) = _timed(
        "VisitProgressionEstimator",
        lambda: model.fit(X_tr, y_tr),
        lambda: (model.predict_proba(X_te), model.predict_risk(X_te)),
    )
    stage_metrics(row, proba, model.classes_)
    survival_metrics(row, risk, model.predict_survival_function(X_te))
    rows.append(row)
    fitted["model"] = model
    for name, extra in (variants or {}).items():
        variant = fitted[name] = VisitProgressionEstimator(**{**params, **extra})
        row, (proba, risk) = _timed(
            name, lambda v=variant: v.fit(X_tr, y_tr), lambda v=variant: (v.predict_proba(X_te), v.predict_risk(X_te))
        )
        stage_metrics(row, proba, variant.classes_)
        survival_metrics(row, risk, variant.predict_survival_function(X_te))
        rows.append(row)
    for name, baseline in [
        ("bag-of-codes logistic", StageBaseline("logistic")),
        ("bag-of-codes gradient boosting", StageBaseline("gbm", random_state=random_state)),
    ]:
        row, proba = _timed(name, lambda b=baseline: b.fit(X_tr, y_tr), lambda b=baseline: b.predict_proba(X_te))
        stage_metrics(row, proba, baseline.classes_)
        rows.append(row)
    cox = fitted["cox"] = CoxBaseline()
    row, risk = _timed("Cox PH (counts, last labs, eGFR)", lambda: cox.fit(X_tr, y_tr), lambda: cox.predict(X_te))
    survival_metrics(row, risk, cox.predict_survival_function(X_te))
    rows.append(row)
    boosted = fitted["boosted_cox"] = BoostedCoxBaseline(random_state=random_state)
    row, risk = _timed("gradient-boosted Cox (XGBoost)", lambda: boosted.fit(X_tr, y_tr), lambda: boosted.predict(X_te))
    survival_metrics(row, risk, boosted.predict_survival_function(X_te))
    rows.append(row)
    if reference:
        clinical = fitted["clinical_cox"] = ClinicalCoxBaseline()
        row, risk = _timed(REFERENCE, lambda: clinical.fit(X_tr, y_tr), lambda: clinical.predict(X_te))
        survival_metrics(row, risk, clinical.predict_survival_function(X_te))
        rows.append(row)
    kfre = KFREBaseline()
    row, risk = _timed("KFRE-style (age, sex, eGFR)", lambda: kfre.fit(X_tr), lambda: kfre.predict(X_te))
    survival_metrics(row, risk, None)
    rows.append(row)
    if oracle is not None:
        row = Row(ORACLE)
        survival_metrics(row, np.asarray(oracle, dtype=np.float64), None)
        rows.append(row)
    return rows, fitted


def _timed(name: str, fit: Callable[[], Any], predict: Callable[[], Any]) -> tuple[Row, Any]:
    """Run ``fit`` then ``predict``, timing each into a new :class:`Row`; return it and the predictions."""
    row = Row(name)
    started = time.perf_counter()
    fit()
    row.fit_s = time.perf_counter() - started
    started = time.perf_counter()
    predictions = predict()
    row.predict_s = time.perf_counter() - started
    return row, predictions


def format_table(rows: list[Row]) -> str:
    """The comparison table as fixed-width text ('-' where a metric does not apply)."""
    columns = [
        ("macro_auroc", "stage AUROC"),
        ("qwk", "stage QWK"),
        ("ece", "stage ECE"),
        ("c_index", "C-index"),
        ("ibs", "IBS"),
    ]
    header = f"{'model':34s}" + "".join(f"{title:>12s}" for _, title in columns) + f"{'fit s':>9s}{'predict s':>11s}"
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = "".join(f"{row.metrics[key]:12.3f}" if key in row.metrics else f"{'-':>12s}" for key, _ in columns)
        timing = f"{row.fit_s:9.1f}{row.predict_s:11.2f}" if np.isfinite(row.fit_s) else f"{'-':>9s}{'-':>11s}"
        lines.append(f"{row.name:34s}{cells}{timing}")
    return "\n".join(lines)
