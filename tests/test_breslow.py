"""The one survival-function component (``ehrprog.models.breslow.BreslowSurvival``) against
scikit-survival's ``BreslowEstimator``, and every Cox-type model giving its survival through it."""

from __future__ import annotations

import numpy as np
import pytest
from sksurv.linear_model.coxph import BreslowEstimator

import ehrprog as ep
from ehrprog.models.baselines import ClinicalCoxBaseline, CoxBaseline, PointFeaturesBoostedCox
from ehrprog.models.breslow import BreslowSurvival


def _data(n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    time = np.ceil(rng.exponential(1 / np.exp(risk)) * 30)  # integer days: many ties
    censor = np.ceil(rng.exponential(2.0, n) * 30)
    return risk, np.minimum(time, censor), time <= censor


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_survival_matches_scikit_survivals_breslow_estimator(seed):
    risk, time, event = _data(seed=seed)
    ours = BreslowSurvival().fit(risk, time, event)
    reference = BreslowEstimator().fit(risk, event, time)
    test_risk = np.random.default_rng(seed + 10).normal(size=7)
    expected = np.array([fn(ours.event_times_) for fn in reference.get_survival_function(test_risk)])
    np.testing.assert_allclose(ours.survival(test_risk), expected, rtol=1e-10, atol=1e-12)
    assert np.array_equal(ours.event_times_, np.unique(time[event]))
    curves = ours.survival_function(test_risk)
    np.testing.assert_allclose(curves[3](ours.event_times_), expected[3], rtol=1e-10)


def test_the_baseline_summed_in_chunks_is_the_same(monkeypatch):
    """Risk sets are summed a chunk of points at a time: chunks of 7 give the baseline of one pass
    (float32 risks as the estimator passes them)."""
    from ehrprog.cohorts import targets

    risk, time, event = _data(n=500, seed=3)
    whole = BreslowSurvival().fit(risk.astype(np.float32), time, event)
    monkeypatch.setattr(targets, "BRESLOW_CHUNK", 7)
    chunked = BreslowSurvival().fit(risk.astype(np.float32), time, event)
    np.testing.assert_array_equal(chunked.event_times_, whole.event_times_)
    np.testing.assert_allclose(chunked.cumulative_baseline_hazard_, whole.cumulative_baseline_hazard_, rtol=1e-12)


def test_a_given_baseline_hazard_gives_the_same_survival_as_the_fitted_one():
    risk, time, event = _data()
    fitted = BreslowSurvival().fit(risk, time, event)
    given = BreslowSurvival(fitted.event_times_, fitted.cumulative_baseline_hazard_)
    np.testing.assert_array_equal(given.survival(risk[:5]), fitted.survival(risk[:5]))


@pytest.fixture(scope="module")
def split(sim_omop):
    cohort = ep.tasks.CKDProgression().build(ep.read_omop(sim_omop))
    test = np.isin(cohort.groups, np.unique(cohort.groups)[::3])
    train_rows, test_rows = np.flatnonzero(~test), np.flatnonzero(test)
    return cohort.X[train_rows], cohort.y[train_rows], cohort.X[test_rows]


def test_ridge_cox_baselines_survival_is_scikit_survivals_at_the_event_times(split):
    """The ridge Cox baselines' survival comes from the component, equal to scikit-survival's own
    ``predict_survival_function`` of the same fitted Cox at every training event time."""
    X_tr, y_tr, X_te = split
    for baseline in (CoxBaseline(), ClinicalCoxBaseline()):
        baseline.fit(X_tr, y_tr)
        ours = baseline.predict_survival_function(X_te, return_array=True)
        theirs = baseline.model_.predict_survival_function(baseline._features(X_te))
        expected = np.array([fn(baseline.event_times_) for fn in theirs])
        np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-9)


def test_the_model_and_the_booster_give_survival_through_the_component(split):
    X_tr, y_tr, X_te = split
    booster = PointFeaturesBoostedCox(random_state=0).fit(X_tr, y_tr)
    component = BreslowSurvival(booster.event_times_, booster.cumulative_baseline_hazard_)
    np.testing.assert_allclose(
        booster.predict_survival_function(X_te, return_array=True), component.survival(booster.predict(X_te))
    )
    model = ep.VisitProgressionEstimator(target="progression", max_epochs=1, random_state=0).fit(X_tr, y_tr)
    component = BreslowSurvival(model.event_times_, model.cumulative_baseline_hazard_)
    np.testing.assert_allclose(
        model.predict_survival_function(X_te, return_array=True), component.survival(model.predict_risk(X_te))
    )
