"""Progression with death competing: the task's ``death`` target, the metrics (Aalen-Johansen,
Wolbers' C, the IPCW Brier score, calibration) against direct computations of their definitions,
and the cause-specific and Fine-Gray models against scikit-survival's Cox where they reduce to it."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.nonparametric import kaplan_meier_estimator
from sksurv.util import Surv

import ehrprog as ep
from ehrprog.cohorts.targets import competing_causes
from ehrprog.metrics import (
    aalen_johansen,
    harrell_c,
    incidence_calibration,
    integrated_brier_competing,
    survival_calibration,
    wolbers_c,
)
from ehrprog.metrics.competing import brier_competing, incidence_at
from ehrprog.models.breslow import BreslowSurvival
from ehrprog.models.competing import CauseSpecificCox, FineGrayCox, fine_gray
from ehrprog.models.incidence import incidence_from_hazards


def _competing_data(n: int, seed: int, censoring: bool = True):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    progression = rng.exponential(1000 * np.exp(-(0.8 * x[:, 0] - 0.4 * x[:, 1])))
    death = rng.exponential(1500 * np.exp(-0.6 * x[:, 2]))
    censor = rng.uniform(200, 3000, n) if censoring else np.full(n, np.inf)
    time = np.round(np.minimum.reduce([progression, death, censor])) + 1  # whole days: ties
    cause = np.where(progression <= np.minimum(death, censor), 1, np.where(death <= censor, 2, 0))
    return x, cause, time.astype(float)


def _aalen_johansen_by_hand(cause, time):
    times = np.unique(time)
    survival, incidence, out = 1.0, 0.0, []
    for t in times:
        at_risk = (time >= t).sum()
        d1, d = ((time == t) & (cause == 1)).sum(), ((time == t) & (cause != 0)).sum()
        incidence += survival * d1 / at_risk
        survival *= 1 - d / at_risk
        out.append(incidence)
    return times, np.array(out)


def test_aalen_johansen_is_the_product_limit_incidence_and_one_minus_km_without_deaths():
    _, cause, time = _competing_data(400, 0)
    times, incidence = aalen_johansen(cause, time)
    hand_times, hand = _aalen_johansen_by_hand(cause, time)
    np.testing.assert_allclose(times, hand_times)
    np.testing.assert_allclose(incidence, hand, atol=1e-12)
    no_deaths = np.where(cause == 2, 0, cause)
    times, incidence = aalen_johansen(no_deaths, time)
    km_times, km = kaplan_meier_estimator(no_deaths == 1, time)
    np.testing.assert_allclose(incidence, 1 - km)
    # Censoring the dead overstates the incidence: 1 - KM counts them as still able to progress.
    km_times, km = kaplan_meier_estimator(cause == 1, time)
    assert 1 - km[-1] > incidence_at(*aalen_johansen(cause, time), km_times[-1]) + 0.02


def test_wolbers_c_counts_the_pairs_of_its_definition():
    _, cause, time = _competing_data(150, 1)
    risk = np.round(np.random.default_rng(2).normal(size=150), 1)  # ties in risk count one half
    concordant = comparable = 0.0
    for i in np.flatnonzero(cause == 1):
        for j in range(len(time)):
            if time[j] > time[i] or (cause[j] == 2 and time[j] <= time[i] and j != i):
                comparable += 1
                concordant += 1.0 if risk[i] > risk[j] else 0.5 if risk[i] == risk[j] else 0.0
    assert wolbers_c(cause, time, risk) == pytest.approx(concordant / comparable, abs=1e-12)
    alive = np.where(cause == 2, 0, cause)
    assert wolbers_c(alive, time, risk) == pytest.approx(harrell_c(alive == 1, time, risk))


def test_the_competing_brier_score_weights_by_the_censoring_distribution():
    x, cause, time = _competing_data(300, 3)
    times = np.array([300.0, 700.0, 1200.0])
    predicted = np.clip(0.1 + 0.1 * x[:, :1] + times[None, :] / 4000, 0, 1)
    scores = brier_competing((cause, time), (cause, time), predicted, times)
    g_times, g = kaplan_meier_estimator(cause == 0, time)

    def G(t, left):
        index = np.searchsorted(g_times, t, side="left" if left else "right") - 1
        return g[index] if index >= 0 else 1.0

    for k, t in enumerate(times):
        total = 0.0
        for i in range(len(time)):
            if time[i] <= t and cause[i] != 0:
                total += ((cause[i] == 1) - predicted[i, k]) ** 2 / G(time[i], True)
            elif time[i] > t:
                total += predicted[i, k] ** 2 / G(t, False)
        assert scores[k] == pytest.approx(total / len(time), rel=1e-10)
    _, uncensored_cause, uncensored = _competing_data(300, 3, censoring=False)
    progressed = (uncensored[:, None] <= times) & (uncensored_cause[:, None] == 1)
    mse = np.mean((progressed - predicted) ** 2, axis=0)
    fair = (uncensored_cause, uncensored)
    np.testing.assert_allclose(brier_competing(fair, fair, predicted, times), mse)
    assert 0 < integrated_brier_competing((cause, time), (cause, time), predicted, times) < 0.25


def test_incidence_calibration_is_survival_calibration_where_nobody_dies():
    x, cause, time = _competing_data(500, 4)
    alive = np.where(cause == 2, 0, cause)
    predicted = 1 / (1 + np.exp(-x[:, 0]))
    a = incidence_calibration(alive, time, predicted, 730)
    b = survival_calibration(alive == 1, time, predicted, 730)
    np.testing.assert_allclose(a["observed"], b["observed"])
    assert a["ici"] == pytest.approx(b["ici"])
    with_deaths = incidence_calibration(cause, time, predicted, 730)
    assert with_deaths["observed"].sum() < b["observed"].sum()  # the dead no longer progress


def test_incidence_from_constant_hazards_matches_the_closed_form():
    grid = np.linspace(0, 5, 5001)[1:]
    l1, l2 = np.array([[0.2], [0.5]]), np.array([[0.3], [0.1]])
    incidence = incidence_from_hazards(l1 * grid, l2 * grid)
    exact = l1 / (l1 + l2) * (1 - np.exp(-(l1 + l2) * grid))
    np.testing.assert_allclose(incidence, exact, rtol=1e-10)  # exact for hazards constant within steps
    # Without death it is the model's own one minus survival, exactly.
    steps = np.cumsum(np.random.default_rng(0).exponential(0.05, size=(3, 40)), axis=1)
    np.testing.assert_allclose(incidence_from_hazards(steps, np.zeros_like(steps)), 1 - np.exp(-steps))


def _sksurv_cox(x, event, time, alpha):
    return CoxPHSurvivalAnalysis(alpha=alpha, ties="breslow").fit(x, Surv.from_arrays(event, time))


def test_fine_gray_reduces_to_cox_without_deaths_and_without_censoring():
    x, cause, time = _competing_data(400, 5)
    alive = np.where(cause == 2, 0, cause)
    coef, _, baseline = fine_gray(x, alive, time, alpha=1.0)
    cox = _sksurv_cox(x, alive == 1, time, 1.0)
    np.testing.assert_allclose(coef, cox.coef_, atol=1e-6)
    breslow = BreslowSurvival().fit(x @ coef, time, alive == 1)
    np.testing.assert_allclose(baseline, breslow.cumulative_baseline_hazard_, rtol=1e-8)
    # No censoring: the weights are 1 and the dead stay in every later risk set, as if
    # followed past every time (Fine and Gray 1999).
    x, cause, time = _competing_data(400, 6, censoring=False)
    coef, _, _ = fine_gray(x, cause, time, alpha=0.5)
    beyond = np.where(cause == 2, time.max() + 1, time)
    np.testing.assert_allclose(coef, _sksurv_cox(x, cause == 1, beyond, 0.5).coef_, atol=1e-6)
    # With censoring the weighted fit recovers the direction of the simulated effects.
    x, cause, time = _competing_data(3000, 7)
    coef, _, _ = fine_gray(x, cause, time, alpha=0.0)
    assert coef[0] > 0.4 and coef[1] < -0.15 and coef[2] < 0  # progression up, death's x lowers F1


@pytest.fixture(scope="module")
def competing_cohort(tmp_path_factory):
    folder = ep.datasets.simulate_ckd(1200, 0, tmp_path_factory.mktemp("cr") / "omop")
    events = ep.read_omop(folder)
    visits = ep.group_visits(events, "same_day")
    return (
        ep.tasks.CKDProgression().build(events, visits),
        ep.tasks.CKDProgression(death="competing").build(events, visits),
        events,
    )


def test_a_competing_task_marks_the_deaths_that_end_a_follow_up(competing_cohort):
    censored, competing, events = competing_cohort
    assert "death" not in censored.y.columns
    assert competing.y.drop("death").equals(censored.y)  # the same points, times and events
    deaths = events.lazy.filter(pl.col("code") == ep.io.schema.DEATH_CODE).select(
        "subject_id", pl.col("time").alias("died")
    )
    points = pl.concat([competing.X.points.select("subject_id", "prediction_time"), competing.y], how="horizontal")
    points = points.join(deaths.collect(), on="subject_id", how="left")
    dead = points.filter(pl.col("death"))
    assert dead.height > 20 and not dead["event"].any()
    days = (dead["died"] - dead["prediction_time"]).dt.total_microseconds() / 86_400e6
    np.testing.assert_allclose(days.to_numpy(), dead["time_to_event_days"].to_numpy())
    # Every point of a subject who died, with no progression first, ends in death.
    assert points.filter(pl.col("died").is_not_null() & ~pl.col("event"))["death"].all()
    causes = competing_causes(competing.y, len(competing.X))
    assert set(np.unique(causes)) == {0, 1, 2}
    with pytest.raises(ValueError, match="death must be 'censor' or 'competing'"):
        ep.tasks.CKDProgression(death="ignore")
    both = competing.y.with_columns(pl.lit(True).alias("death"))
    with pytest.raises(ValueError, match="'event' and 'death' must not both be true"):
        competing_causes(both, both.height)


def test_a_saved_cohort_keeps_its_death_target(competing_cohort, tmp_path):
    _, competing, _ = competing_cohort
    loaded = ep.load_cohort(competing.save(tmp_path / "cohort", subjects_per_shard=300))
    assert loaded.y.equals(competing.y)


def test_competing_models_predict_the_observed_incidence(competing_cohort):
    _, competing, _ = competing_cohort
    X, y = competing.X, competing.y
    causes, time = competing_causes(y, len(X)), y["time_to_event_days"].to_numpy()
    horizons = np.array([365.25, 730.5, 1826.25])
    observed = [incidence_at(*aalen_johansen(causes, time), h) for h in horizons]
    for model in (CauseSpecificCox(), FineGrayCox()):
        model.fit(X, y)
        incidence = model.predict_cumulative_incidence(X, horizons)
        assert incidence.shape == (len(X), 3) and np.all(np.diff(incidence, axis=1) >= -1e-12)
        np.testing.assert_allclose(incidence.mean(axis=0), observed, atol=0.05)
        assert model.score(X, y) > 0.75
    with pytest.raises(ValueError, match="no 'death' column"):
        FineGrayCox().fit(X, y.drop("death"))


def test_the_comparison_scores_every_method_on_the_incidence_with_death_competing(competing_cohort, tmp_path):
    from ehrprog.evaluation.competing import COMPETING_LINE, incidence_by_horizon
    from ehrprog.evaluation.heldout import MODEL, evaluate, subject_split
    from ehrprog.evaluation.predictions import meds_predictions
    from ehrprog.models.model_card import model_card

    _, cohort, _ = competing_cohort
    train, test = subject_split(cohort, seed=0)
    rows, fitted = evaluate(cohort, train, test, {"max_epochs": 1, "embedding_dim": 8, "hidden_dim": 8})
    y_te = cohort.y[test]
    causes, time = competing_causes(y_te, y_te.height), y_te["time_to_event_days"].to_numpy()
    names = [row.name for row in rows]
    assert any(n.startswith("cause-specific Cox PH (") for n in names)
    assert any(n.startswith("Fine-Gray (") for n in names)
    assert fitted["notes"] == [f"{COMPETING_LINE} (the model's own Cox model of death, on its clinical table)"]
    for row in rows:  # every C-index is Wolbers' of the row's own risks
        if "c_index" in row.metrics:
            assert row.metrics["c_index"] == pytest.approx(wolbers_c(causes, time, fitted["risks"][row.name]))
    model, X_te = fitted["model"], cohort.X[test]
    by_2y = np.array([730.5])
    incidence = incidence_by_horizon(model, X_te, by_2y, fitted["competing"])[:, 0]
    one_minus_survival = incidence_by_horizon(model, X_te, by_2y, None)[:, 0]
    # The dead no longer progress: the incidence is below one minus the progression-free survival.
    assert np.all(incidence <= one_minus_survival + 1e-9) and incidence.mean() < one_minus_survival.mean()
    # The shared death model is the model's own: the table's incidence is the model's.
    np.testing.assert_allclose(model.predict_cumulative_incidence(X_te, 730.5), incidence, atol=1e-9)
    model_row = rows[names.index(MODEL)]
    expected = incidence_calibration(causes, time, incidence, 730.5)["ici"]
    assert model_row.metrics["ici_2y"] == pytest.approx(expected, abs=1e-9)
    assert fitted["evidence"].deaths == int(y_te["death"].sum()) > 0
    # The predictions file: the incidence, and a death before the horizon a known "did not progress".
    censored_frame, censored_unlabelled = meds_predictions(model, X_te, y_te.drop("death"), 2.0)
    frame, unlabelled = meds_predictions(model, X_te, y_te, 2.0, fitted["competing"])
    died_early = int((y_te["death"] & (y_te["time_to_event_days"] <= 730.5)).sum())
    assert died_early > 0 and unlabelled == censored_unlabelled - died_early
    assert frame.height == censored_frame.height + died_early
    event, days = y_te["event"].to_numpy(), y_te["time_to_event_days"].to_numpy()
    known = (days > 730.5) | ((event | y_te["death"].to_numpy()) & (days <= 730.5))
    np.testing.assert_allclose(frame["predicted_boolean_probability"].to_numpy(), incidence[known], rtol=1e-6)
    assert "`predict_cumulative_incidence` and `ehrprog predict` give the cumulative incidence" in model_card(model)
    # Saved and loaded (numbers only): the same incidence.
    loaded = ep.VisitProgressionEstimator.load(model.save(tmp_path / "model"))
    np.testing.assert_allclose(loaded.predict_cumulative_incidence(X_te, [365.25, 730.5])[:, 1], incidence, atol=1e-9)


def test_a_model_fitted_with_death_censored_has_no_incidence(competing_cohort):
    censored, _, _ = competing_cohort
    model = ep.VisitProgressionEstimator(target="progression", max_epochs=1, embedding_dim=8, hidden_dim=8)
    model.fit(censored.X[:2000], censored.y[:2000])
    assert model.death_ is None
    with pytest.raises(AttributeError, match="needs a model fitted with death competing"):
        model.predict_cumulative_incidence(censored.X[:10], 365.25)
