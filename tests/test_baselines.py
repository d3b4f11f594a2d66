"""Baselines: every survival baseline ranks, gives survival curves, checks its targets; no torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import ehrprog as ep
from ehrprog.baselines import BoostedCoxBaseline, ClinicalCoxBaseline, CoxBaseline


@pytest.fixture(scope="module")
def split(sim_omop):
    cohort = ep.tasks.CKDProgression().build(ep.read_omop(sim_omop))
    subjects = np.unique(cohort.groups)
    test = np.isin(cohort.groups, subjects[::3])
    train_rows, test_rows = np.flatnonzero(~test), np.flatnonzero(test)
    return cohort.X[train_rows], cohort.y[train_rows], cohort.X[test_rows], cohort.y[test_rows]


@pytest.mark.parametrize("baseline", [CoxBaseline, BoostedCoxBaseline, ClinicalCoxBaseline])
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
    code = "import sys, ehrprog.baselines, ehrprog.features; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )
