"""Fit the model and the baselines on one subject split and measure them the same way.

Used by ``make demo`` and by the quality benchmark, so both report identical metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from sklearn.model_selection import GroupShuffleSplit

from ehrprog.cohorts.cohort import Cohort, CohortX
from ehrprog.cohorts.targets import competing_causes
from ehrprog.core.errors import InputError
from ehrprog.evaluation.competing import CompetingScoring, concordance_targets
from ehrprog.evaluation.evidence import Evidence
from ehrprog.evaluation.pretraining import TRANSFER, OnOverlap, apart_from_pretraining, scratch_variant
from ehrprog.evaluation.subgroups import subgroup_record, subgroups_of_model
from ehrprog.metrics import (
    evaluation_times,
    expected_calibration_error,
    harrell_c,
    incidence_calibration,
    integrated_brier,
    integrated_brier_competing,
    macro_auroc,
    quadratic_weighted_kappa,
    survival_at,
    survival_calibration,
)
from ehrprog.models.baselines import (
    BoostedCoxBaseline,
    ClinicalCoxBaseline,
    CoxBaseline,
    KFREBaseline,
    PointFeaturesBoostedCox,
    StageBaseline,
    WindowedCountsBoostedCox,
)
from ehrprog.models.competing import FineGrayCox

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

#: The name of the estimator's row (and of its risks in ``evaluate_split``'s ``fitted["risks"]``).
MODEL = "VisitProgressionEstimator"
#: Names of the tuned boosting baselines' rows.
BOOSTED_POINT_FEATURES = "boosted Cox on point features (tuned)"
BOOSTED_WINDOWED = "boosted Cox, windowed counts (tuned)"
#: The name of the oracle row (the simulator's true risk): a ceiling, not a competitor.
ORACLE = "oracle (true simulated risk)"
#: The name of the reference row: Cox on the model's own clinical inputs (what the sequence adds).
REFERENCE = "ref: Cox on the model's inputs"
#: The suffix of an ablation row, and the model's: the fitted model with its visit history zeroed
#: (not a competitor).
ZEROED = "history zeroed"
ABLATION = f"model, {ZEROED}"
#: Rows that are not competitors of the model (never the "best baseline").
NOT_BASELINES = (MODEL, ORACLE, REFERENCE, ABLATION)


def is_measurement(name: str) -> bool:
    """Whether a row is a measurement beside the methods rather than a method: the oracle, or a
    model with its history zeroed (never "best" in a table, never a competitor)."""
    return name == ORACLE or name.endswith(ZEROED)


class TabularPart:
    """A fitted :class:`~ehrprog.VisitProgressionEstimator`'s tabular part alone, scored as a
    method: its outputs are the estimator's
    :meth:`~ehrprog.models.estimator.VisitProgressionEstimator.tabular_outputs` (the offsets' weights at
    zero, no visit read; nothing in the fitted model is changed). The difference to the model is
    what the visit history adds. Survival curves: the piecewise head's own hazards, or (Cox head)
    the model's Breslow baseline applied to the tabular risk, exact where the history was dropped."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.target = model.target
        self.classes_ = getattr(model, "classes_", None)

    def predict_risk(self, X: CohortX) -> np.ndarray:
        from ehrprog.networks.inference import ranking_score

        return ranking_score(self.model.tabular_outputs(X)[1])

    def predict_proba(self, X: CohortX) -> np.ndarray:
        logits = self.model.tabular_outputs(X)[0].astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        proba = np.exp(logits)
        return proba / proba.sum(axis=1, keepdims=True)

    def predict_survival_function(self, X: CohortX, return_array: bool = False):
        from ehrprog.models.breslow import BreslowSurvival, step_functions

        model = self.model
        if model.survival_head == "piecewise":
            import torch

            from ehrprog.networks.piecewise import DAYS_PER_YEAR, SURVIVAL_PIECES_YEARS, cumulative_hazard

            log_hazard = torch.from_numpy(model.tabular_outputs(X)[1]).double()
            years = torch.from_numpy(model.event_times_ / DAYS_PER_YEAR)
            hazard = cumulative_hazard(log_hazard, years, SURVIVAL_PIECES_YEARS)
            return step_functions(model.event_times_, torch.exp(-hazard).numpy(), return_array)
        breslow = BreslowSurvival(model.event_times_, model.cumulative_baseline_hazard_)
        return breslow.survival_function(self.predict_risk(X), return_array)


def history_zeroed(model: Any) -> TabularPart:
    """The fitted estimator ``model``'s tabular part alone (:class:`TabularPart`): the row beside
    the model that says what its visit history adds."""
    return TabularPart(model)


@dataclass
class Row:
    """One method's line of the comparison table: its metrics by name and its fit and predict
    times (seconds; NaN for rows that fit nothing, such as the oracle)."""

    name: str
    metrics: dict[str, float] = field(default_factory=dict)
    fit_s: float = float("nan")
    predict_s: float = float("nan")
    #: what the figures stand on (the held-out set's counts), where the scorer knew the subjects
    evidence: Evidence | None = None


class Scorer:
    """Scores methods on one test set the same way: stage metrics (macro AUROC, QWK, ECE) on the test
    points with a known next stage; survival metrics (Harrell's C, integrated Brier score over
    :func:`~ehrprog.metrics.evaluation_times`, calibration by 1/2/5 years) on every test point.

    ``y_tr`` (training targets) gives the censoring distribution of the Brier score; ``risks``
    collects each scored method's test risk (name -> ``[n]``) for paired comparisons;
    ``subjects`` (the test points' subject ids ``[n]``) gives every row the :class:`Evidence` behind
    its figures (what is too few to judge is then marked wherever the row is shown). Where ``y_te``
    has ``death`` (death competes), the C-index is Wolbers' (:func:`~ehrprog.metrics.wolbers_c`),
    and with ``competing`` (the shared death model and the test points) the Brier score and
    calibration are of the cumulative incidence.
    """

    def __init__(
        self,
        y_tr: pl.DataFrame,
        y_te: pl.DataFrame,
        subjects: np.ndarray | None = None,
        competing: tuple[CompetingScoring, CohortX] | None = None,
    ) -> None:
        #: with death competing: the shared death model and the test points it reads
        self.competing = competing
        if competing is not None:
            self.causes_te = competing_causes(y_te, y_te.height)
        self.evidence = Evidence.of(y_te, subjects) if subjects is not None else None
        self.stage_te = y_te["stage"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        self.known = ~np.isnan(self.stage_te)
        self.ev_tr, self.t_tr = y_tr["event"].to_numpy(), y_tr["time_to_event_days"].to_numpy()
        self.ev_te, self.t_te = y_te["event"].to_numpy(), y_te["time_to_event_days"].to_numpy()
        # Harrell's C on these is the C-index of the table: Wolbers' where y_te has death.
        self.c_event, self.c_time = concordance_targets(y_te)
        any_events = self.ev_te.any() and self.ev_tr.any()
        self.times = evaluation_times(self.t_tr, self.t_te) if any_events else np.array([])
        self.risks: dict[str, np.ndarray] = {}

    def stage(self, row: Row, proba: np.ndarray, classes: np.ndarray) -> None:
        """Add ``macro_auroc``, ``qwk`` and ``ece`` of stage probabilities ``proba`` ``[n, k]`` to ``row``."""
        stage_te, known = self.stage_te, self.known
        row.evidence = self.evidence
        if len(np.unique(stage_te[known])) < 2:
            return  # undefined on a test set with one stage (tiny real cohorts)
        row.metrics["macro_auroc"] = macro_auroc(stage_te[known], proba[known], classes)
        row.metrics["qwk"] = quadratic_weighted_kappa(stage_te[known].astype(int), classes[proba[known].argmax(1)])
        row.metrics["ece"] = expected_calibration_error(stage_te[known], proba[known], classes)

    def survival(
        self, row: Row, risk: np.ndarray, survival_fn, incidence: Callable[[np.ndarray], np.ndarray] | None = None
    ) -> None:
        """Add ``c_index`` of ``risk`` ``[n]`` and, given survival functions, ``ibs`` and ``ici_{1,2,5}y``.

        With death competing (``competing``): Wolbers' C, and the Brier score and calibration of
        the cumulative incidence of progression: the method's progression curves combined with the
        shared death model, or ``incidence`` (days -> ``[n, len(days)]``) for a method that models it itself
        (:mod:`~ehrprog.evaluation.competing`)."""
        ev_te, t_te, times = self.ev_te, self.t_te, self.times
        row.evidence = self.evidence
        self.risks[row.name] = risk
        if not ev_te.any():
            return  # no event among the test points: concordance is undefined
        row.metrics["c_index"] = harrell_c(self.c_event, self.c_time, risk)
        if self.competing is not None:
            self._competing(row, survival_fn, incidence)
            return
        if survival_fn is not None and len(times):
            # Survival is flat after a model's last event time: evaluate there beyond it.
            survival = survival_at(survival_fn, times)
            row.metrics["ibs"] = integrated_brier((self.ev_tr, self.t_tr), (ev_te, t_te), survival, times)
            for years in CALIBRATION_YEARS:
                horizon = years * 365.25
                if horizon < t_te.max():
                    at = survival_at(survival_fn, horizon)
                    row.metrics[f"ici_{years}y"] = survival_calibration(ev_te, t_te, 1 - at, horizon)["ici"]

    def _competing(self, row: Row, survival_fn, incidence: Callable[[np.ndarray], np.ndarray] | None) -> None:
        scoring, X_te = self.competing
        causes, t_te, times = self.causes_te, self.t_te, self.times
        if (incidence is None and survival_fn is None) or not len(times):
            return
        years = [y for y in CALIBRATION_YEARS if y * 365.25 < t_te.max()]
        horizons = [y * 365.25 for y in years]
        days = np.concatenate([times, horizons])
        at = incidence(days) if incidence is not None else scoring.incidence(survival_fn, X_te, days)
        train = (scoring.causes, scoring.times)
        row.metrics["ibs"] = integrated_brier_competing(train, (causes, t_te), at[:, : len(times)], times)
        for k, horizon in enumerate(horizons):
            calibration = incidence_calibration(causes, t_te, at[:, len(times) + k], horizon)
            row.metrics[f"ici_{years[k]}y"] = calibration["ici"]

    def model(self, name: str, model: Any, X_te: CohortX) -> Row:
        """Score a fitted :class:`~ehrprog.VisitProgressionEstimator` on the test points ``X_te``."""
        row = Row(name)
        if model.target in ("stage", "both"):
            self.stage(row, model.predict_proba(X_te), model.classes_)
        if model.target in ("progression", "both"):
            self.survival(row, model.predict_risk(X_te), model.predict_survival_function(X_te))
        return row


def heldout_record(metrics: dict[str, float], X_te: CohortX, y_te: pl.DataFrame | None = None) -> dict[str, Any]:
    """What a model card says of held-out scores: the metrics, which points they come from and
    (with ``y_te``) the :class:`Evidence` behind them and the figures too few to judge."""
    subject_ids = X_te.column("subject_id").to_numpy()
    subjects = len(np.unique(subject_ids))
    record: dict[str, Any] = {
        "description": f"{len(X_te):,} prediction points of {subjects:,} subjects held out by subject "
        "(never trained on)",
        "metrics": {k: float(v) for k, v in metrics.items()},
    }
    if y_te is not None:
        evidence = Evidence.of(y_te, subject_ids)
        record["evidence"] = evidence.record()
        record["too_few"] = {k: reason for k in metrics if (reason := evidence.too_few(k)) is not None}
    return record


def heldout_metrics(model: Any, y_tr: pl.DataFrame, X_te: CohortX, y_te: pl.DataFrame) -> dict[str, float]:
    """The model's metrics on held-out points (see :class:`Scorer`), as :func:`evaluate_split` reports them."""
    return Scorer(y_tr, y_te, X_te.column("subject_id").to_numpy()).model("model", model, X_te).metrics


def subject_split(cohort: Cohort, test_size: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train and test rows of ``cohort``, split by subject.

    Raises:
        InputError: naming the counts, where ``test_size`` of the subjects leaves no subject on
            one side (scikit-learn's rule: ``ceil(test_size * n)`` held out).
    """
    rows = np.arange(len(cohort.X))
    n_subjects = len(np.unique(cohort.groups))
    held_out = int(np.ceil(test_size * n_subjects))
    if held_out < 1 or n_subjects - held_out < 1:
        raise InputError(
            f"{n_subjects} subject(s) with {len(rows):,} prediction point(s) cannot be split by subject with "
            f"{test_size:.0%} held out ({held_out} held out, {n_subjects - held_out} to fit on): the data are "
            "too small to fit and score a model; more subjects with a staged visit are needed"
        )
    return next(GroupShuffleSplit(1, test_size=test_size, random_state=seed).split(rows, groups=cohort.groups))


def evaluate(
    cohort: Cohort,
    train: np.ndarray,
    test: np.ndarray,
    model_params: dict[str, Any] | None = None,
    random_state: int = 0,
    oracle: np.ndarray | None = None,
    on_pretraining_overlap: OnOverlap = "refuse",
    applied: dict[str, Any] | None = None,
    subgroups: Sequence[str] = (),
) -> tuple[list[Row], dict[str, Any]]:
    """Fit the estimator and every baseline on the rows ``train`` of ``cohort``, score them on ``test``
    (see :func:`evaluate_split`). With a pre-trained checkpoint (``backbone__checkpoint`` in
    ``model_params``), held-out subjects it was pre-trained on are refused, or left out with
    ``on_pretraining_overlap="exclude"`` (:func:`~ehrprog.evaluation.pretraining.apart_from_pretraining`;
    ``fitted["overlap"]`` says what was found, ``fitted["test"]`` the held-out rows scored), and the
    same model from scratch is fitted beside it (:func:`~ehrprog.evaluation.pretraining.scratch_variant`).
    ``applied``: fitted models from elsewhere (name -> estimator, e.g. another site's saved model),
    scored as they are."""
    overlap = apart_from_pretraining(
        cohort.groups[test], (model_params or {}).get("backbone__checkpoint"), on_pretraining_overlap
    )
    test = np.asarray(test)[overlap.keep]
    rows, fitted = evaluate_split(
        cohort.X[train],
        cohort.y[train],
        cohort.X[test],
        cohort.y[test],
        model_params,
        random_state,
        oracle,
        variants=scratch_variant(model_params),
        applied=applied,
        subgroups=subgroups,
    )
    fitted["overlap"] = overlap
    fitted["test"] = test
    return rows, fitted


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
    ablation: bool = True,
    applied: dict[str, Any] | None = None,
    subgroups: Sequence[str] = (),
) -> tuple[list[Row], dict[str, Any]]:
    """Fit the estimator and every baseline on ``X_tr``/``y_tr``, score them on ``X_te``/``y_te``.

    The model is also scored per subgroup of the held-out subjects (by sex, by age band, and by
    the static codes starting with each prefix in ``subgroups``, e.g. ``"RACE/"``;
    :mod:`~ehrprog.evaluation.subgroups`): ``fitted["subgroups"]``, kept in its model card too.

    Survival rows with a survival function also get ``ici_1y``, ``ici_2y``, ``ici_5y``: the
    calibration (integrated calibration index over risk deciles, Kaplan-Meier observed) of the
    predicted risk of progression by 1, 2 and 5 years (:func:`~ehrprog.metrics.survival_calibration`),
    where the horizon is inside the test follow-up. ``variants`` adds estimator rows: name ->
    parameters over the model's (e.g. ``{"model, piecewise head": {"survival_head": "piecewise"}}``;
    a ``backbone__`` parameter set to ``None`` is removed). ``applied`` adds models fitted elsewhere,
    scored as they are (rows named ``"applied as it is: <name>"``).

    ``oracle`` (simulated data only): the true risk of each test point
    (:func:`~ehrprog.datasets.oracle_risk`), scored as a last row: the ceiling. ``reference``
    adds :class:`~ehrprog.models.baselines.ClinicalCoxBaseline` (Cox on the model's own clinical inputs).
    ``ablation`` adds the fitted model with its history zeroed (:func:`history_zeroed`) as the row
    after the model's, so what the visit history contributes is measured beside every table.
    The baselines include gradient-boosted Cox on the model's point features and on windowed code
    counts (both tuned on the training subjects): "best baseline" is the best of all of them.

    With death competing (``y_tr`` has ``death``: ``CKDProgression(death="competing")``), every
    survival row is scored on the cumulative incidence of progression
    (:mod:`~ehrprog.evaluation.competing`: Wolbers' C, Aalen-Johansen calibration), the Cox row is
    the cause-specific Cox and a Fine-Gray row is added; ``fitted["notes"]`` says so and
    ``fitted["competing"]`` holds the shared death model.

    Baselines are named for the inputs they read on this data (``Cox PH (counts)`` on data without
    labs); one that cannot run on it is left out, with a sentence under ``"left_out"``.

    Returns the rows of the comparison table and the fitted objects (``model``, ``cox``...) and,
    under ``"risks"``, every method's test risk scores by row name (for paired comparisons), under
    ``"evidence"`` what the figures stand on (:class:`~ehrprog.evaluation.evidence.Evidence`).
    """
    from ehrprog.models.estimator import VisitProgressionEstimator

    params = {**DEMO_MODEL_PARAMS, **(model_params or {}), "random_state": random_state}
    model = VisitProgressionEstimator().set_params(**params)  # routed parameters (tabular__...) too
    row, (proba, risk) = _timed(
        MODEL,
        lambda: model.fit(X_tr, y_tr),
        lambda: (model.predict_proba(X_te), model.predict_risk(X_te)),
    )
    # With death competing: the model's own death model, shared by every method's incidence.
    competing = CompetingScoring.fit(X_tr, y_tr, model) if "death" in y_tr.columns else None
    scorer = Scorer(
        y_tr, y_te, X_te.column("subject_id").to_numpy(), competing=(competing, X_te) if competing else None
    )
    rows: list[Row] = []
    fitted: dict[str, Any] = {
        "risks": scorer.risks,
        "evidence": scorer.evidence,
        "left_out": [],
        "notes": [competing.line()] if competing else [],
        "competing": competing,
    }
    scorer.stage(row, proba, model.classes_)
    scorer.survival(row, risk, model.predict_survival_function(X_te))
    rows.append(row)
    fitted["model"] = model
    model.heldout_ = heldout_record(row.metrics, X_te, y_te)
    fitted["subgroups"] = subgroups_of_model(model, X_te, y_te, subgroups, competing)
    model.heldout_["subgroups"] = subgroup_record(fitted["subgroups"])
    if ablation:
        rows.append(scorer.model(ABLATION, history_zeroed(model), X_te))
    for name, model_applied in (applied or {}).items():
        rows.append(scorer.model(f"{TRANSFER}{name}", model_applied, X_te))
    for name, extra in (variants or {}).items():
        merged = {k: v for k, v in {**params, **extra}.items() if not (k.startswith("backbone__") and v is None)}
        variant = fitted[name] = VisitProgressionEstimator().set_params(**merged)
        row, (proba, risk) = _timed(
            name, lambda v=variant: v.fit(X_tr, y_tr), lambda v=variant: (v.predict_proba(X_te), v.predict_risk(X_te))
        )
        scorer.stage(row, proba, variant.classes_)
        scorer.survival(row, risk, variant.predict_survival_function(X_te))
        rows.append(row)
        if ablation:
            rows.append(scorer.model(f"{name}, {ZEROED}", history_zeroed(variant), X_te))
    for name, baseline in [
        ("bag-of-codes logistic", StageBaseline("logistic")),
        ("bag-of-codes gradient boosting", StageBaseline("gbm", random_state=random_state)),
    ]:
        row, proba = _timed(name, lambda b=baseline: b.fit(X_tr, y_tr), lambda b=baseline: b.predict_proba(X_te))
        scorer.stage(row, proba, baseline.classes_)
        rows.append(row)
    cox = fitted["cox"] = CoxBaseline()
    row, risk = _timed("Cox PH", lambda: cox.fit(X_tr, y_tr), lambda: cox.predict(X_te))
    row.name = f"{'cause-specific ' if competing else ''}Cox PH ({cox.inputs_})"  # the inputs it read on this data
    scorer.survival(row, risk, cox.predict_survival_function(X_te))
    rows.append(row)
    if competing is not None:  # the incidence modelled itself (its own fit of death's competition)
        fine_gray = fitted["fine_gray"] = FineGrayCox()
        row, risk = _timed("Fine-Gray", lambda: fine_gray.fit(X_tr, y_tr), lambda: fine_gray.predict(X_te))
        row.name = f"Fine-Gray ({fine_gray.inputs_})"
        scorer.survival(row, risk, None, lambda days: fine_gray.predict_cumulative_incidence(X_te, days))
        rows.append(row)
    for key, name, boosted in [
        ("boosted_cox", "gradient-boosted Cox (XGBoost)", BoostedCoxBaseline(random_state=random_state)),
        ("boosted_point_features", BOOSTED_POINT_FEATURES, PointFeaturesBoostedCox(random_state=random_state)),
        ("boosted_windowed", BOOSTED_WINDOWED, WindowedCountsBoostedCox(random_state=random_state)),
    ]:
        fitted[key] = boosted
        row, risk = _timed(name, lambda b=boosted: b.fit(X_tr, y_tr), lambda b=boosted: b.predict(X_te))
        scorer.survival(row, risk, boosted.predict_survival_function(X_te))
        rows.append(row)
    if reference:
        clinical = fitted["clinical_cox"] = ClinicalCoxBaseline()
        row, risk = _timed(REFERENCE, lambda: clinical.fit(X_tr, y_tr), lambda: clinical.predict(X_te))
        scorer.survival(row, risk, clinical.predict_survival_function(X_te))
        rows.append(row)
    kfre = KFREBaseline()
    row, risk = _timed("KFRE-style (age, sex, eGFR)", lambda: kfre.fit(X_tr), lambda: kfre.predict(X_te))
    if kfre.egfr_points_:
        scorer.survival(row, risk, None)
        rows.append(row)
    else:
        fitted["left_out"].append(
            "KFRE-style (age, sex, eGFR) left out: no training point has an eGFR (recorded, or computed from "
            "creatinine), so it would rank by age and sex alone"
        )
    if oracle is not None:
        row = Row(ORACLE)
        scorer.survival(row, np.asarray(oracle, dtype=np.float64), None)
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
