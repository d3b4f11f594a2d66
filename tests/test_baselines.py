"""Baselines: every survival baseline ranks, gives survival curves, checks its targets; no torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import ehrprog as ep
from ehrprog.features.windowed import WindowedCounts
from ehrprog.models.baselines import (
    BoostedCoxBaseline,
    ClinicalCoxBaseline,
    CoxBaseline,
    PointFeaturesBoostedCox,
    WindowedCountsBoostedCox,
)
from ehrprog.models.boosted_cox import TunedBoostedCox


@pytest.fixture(scope="module")
def split(sim_omop):
    cohort = ep.tasks.CKDProgression().build(ep.read_omop(sim_omop))
    subjects = np.unique(cohort.groups)
    test = np.isin(cohort.groups, subjects[::3])
    train_rows, test_rows = np.flatnonzero(~test), np.flatnonzero(test)
    return cohort.X[train_rows], cohort.y[train_rows], cohort.X[test_rows], cohort.y[test_rows]


@pytest.mark.parametrize(
    "baseline",
    [CoxBaseline, BoostedCoxBaseline, ClinicalCoxBaseline, PointFeaturesBoostedCox, WindowedCountsBoostedCox],
)
def test_survival_baselines_rank_held_out_subjects_and_give_survival_curves(split, baseline):
    X_tr, y_tr, X_te, y_te = split
    model = baseline().fit(X_tr, y_tr)
    assert model.score(X_te, y_te) > 0.7
    survival = model.predict_survival_function(X_te, return_array=True)
    assert survival.shape[0] == len(X_te)
    assert np.all((survival >= 0) & (survival <= 1)) and np.all(np.diff(survival, axis=1) <= 1e-12)
    curves = model.predict_survival_function(X_te[:3])
    assert len(curves) == 3 and curves[0](curves[0].x[0]) <= 1.0


def test_boosted_cox_is_reproducible_and_checks_its_targets(split):
    X_tr, y_tr, X_te, _ = split
    a = BoostedCoxBaseline(random_state=1).fit(X_tr, y_tr).predict(X_te)
    b = BoostedCoxBaseline(random_state=1).fit(X_tr, y_tr).predict(X_te)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="at least one observed event"):
        BoostedCoxBaseline().fit(X_tr, y_tr.with_columns(event=False))


def test_importing_the_baselines_loads_no_torch():
    code = "import sys, ehrprog.models.baselines, ehrprog.features.point; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


@pytest.mark.parametrize("baseline", [PointFeaturesBoostedCox, WindowedCountsBoostedCox])
def test_tuned_boosting_searches_its_grid_on_the_training_subjects_and_clones(split, baseline):
    from sklearn.base import clone

    X_tr, y_tr, X_te, _ = split
    model = baseline(param_grid={"max_depth": [1, 3], "n_estimators": [20, 60]}, random_state=2).fit(X_tr, y_tr)
    searched = [r["params"] for r in model.booster_.cv_results_]
    assert len(searched) == 4 and model.best_params_ in searched
    best = max(model.booster_.cv_results_, key=lambda r: r["mean_c"])
    assert model.best_params_ == best["params"]
    again = clone(model).fit(X_tr, y_tr)  # same data, same seed: the same model
    np.testing.assert_array_equal(again.predict(X_te), model.predict(X_te))
    assert clone(model).get_params()["param_grid"] == {"max_depth": [1, 3], "n_estimators": [20, 60]}


def test_the_search_never_scores_a_subject_it_fitted_on():
    """Folds are by subject: a booster fitted on one subject's points and scored on another's.
    A feature that identifies the subject and its outcome (the event flag repeated per subject)
    is perfect in-sample; the search's held-out C shows no leak across subjects."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(60), 10)
    event = np.repeat(rng.random(60) < 0.5, 10)
    time = rng.uniform(10, 1000, 600)
    features = np.column_stack([groups * 1.0, rng.normal(size=600)])  # the subject id only
    model = TunedBoostedCox({"max_depth": [3], "n_estimators": [50, 100]}, cv=3).fit(features, event, time, groups)
    assert max(r["mean_c"] for r in model.cv_results_) < 0.7  # ids of unseen subjects tell nothing


def test_windowed_counts_count_each_window_and_read_nothing_after_the_point():
    from helpers import events as make_events

    rows = [(1, None, "Gender/F"), (1, "1950-01-01", "MEDS_BIRTH")]
    days = {"2020-01-01": 500, "2021-02-05": 100, "2021-05-06": 10}  # days before 2021-05-16
    for day in days:
        rows += [(1, day, "ICD10CM/I10"), (1, day, "LOINC/62238-1", 50.0)]
    rows += [(1, "2021-05-16", "LOINC/62238-1", 25.0), (1, "2021-05-16", "ICD10CM/N18.4")]
    rows += [(1, "2021-09-01", "ICD10CM/I10"), (1, "2021-12-01", "LOINC/62238-1", 14.0)]
    cohort = ep.tasks.CKDProgression(confirm_days=None, eligibility="retrospective").build(make_events(rows))
    X = cohort.X
    counts = WindowedCounts(min_subjects=1, min_readings=1).fit(X)
    table = counts.transform(X).toarray()
    names = counts.names
    point = int(np.flatnonzero(X.points["prediction_time"].dt.strftime("%Y-%m-%d").to_numpy() == "2021-05-16")[0])
    row = dict(zip(names, table[point], strict=True))
    assert (row["ICD10CM/I10:count_30d"], row["ICD10CM/I10:count_365d"], row["ICD10CM/I10:count_all"]) == (1, 2, 3)
    assert row["LOINC/62238-1:last"] == 25.0  # the prediction visit's own reading, never a later one
    assert row["ICD10CM/N18.4:count_all"] == 1
    earliest = int(np.argmin(X.points["prediction_time"].to_numpy()))
    assert dict(zip(names, table[earliest], strict=True))["ICD10CM/I10:count_all"] == 1


def test_the_history_ablation_is_the_tabular_part_and_changes_nothing_in_the_model(sim_cohort):
    """The ablation row scores ``decision_components``' tabular part: it equals the same network
    with the heads' weights on the sequence state at zero, and the fitted model is never touched."""
    import torch

    from ehrprog.evaluation.heldout import history_zeroed

    X, y = sim_cohort.X[:800], sim_cohort.y[:800]
    model = ep.VisitProgressionEstimator(
        target="both",
        max_epochs=1,
        embedding_dim=8,
        hidden_dim=8,
        tabular=ep.TabularModel(risk_model="cox"),
        random_state=0,
    ).fit(X, y)
    with torch.no_grad():  # give the state a weight (a short fit may keep epoch 0's zero offsets)
        for head in (model.model_.risk_head, model.model_.stage_head):
            head.weight.copy_(torch.randn_like(head.weight))
    before = model.predict_risk(X)
    parts = model.decision_components(X)
    np.testing.assert_allclose(parts["tabular_risk"] + parts["history_risk"], before, rtol=1e-5, atol=1e-5)
    alone = history_zeroed(model)
    zeroed, proba = alone.predict_risk(X), alone.predict_proba(X)
    np.testing.assert_array_equal(model.predict_risk(X), before)  # nothing in the model changed
    assert not np.allclose(zeroed, before)
    with torch.no_grad():
        for head in (model.model_.risk_head, model.model_.stage_head):
            head.weight.zero_()
    np.testing.assert_allclose(model.predict_risk(X), zeroed, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.predict_proba(X), proba, rtol=1e-5, atol=1e-6)
    assert np.abs(model.decision_components(X)["history_risk"]).max() < 1e-5
