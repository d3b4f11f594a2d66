"""The clinical booster: stacked out-of-fold, part of the clinical inputs, saved as JSON."""

from __future__ import annotations

import numpy as np
import pytest

from ehrprog import VisitProgressionEstimator
from ehrprog.booster import ClinicalBooster
from ehrprog.errors import SavedModelError

TINY = {"embedding_dim": 8, "hidden_dim": 8, "max_epochs": 1, "batch_size": 16, "lr": 1e-2, "random_state": 0}


def test_training_margins_are_out_of_fold():
    rng = np.random.default_rng(0)
    n = 600
    groups = np.repeat(np.arange(150), 4)
    x = rng.normal(size=(n, 3))
    time = rng.exponential(np.exp(-x[:, 0]))
    event = rng.random(n) < 0.7
    train = np.arange(n)
    booster = ClinicalBooster(seed=0)
    stacked = booster.fit_stacked(x, event, time, groups, train)
    in_sample = booster.predict(x)
    # Out-of-fold margins differ from the in-sample ones (the booster saw those points), but rank alike.
    assert not np.allclose(stacked, in_sample)
    assert np.corrcoef(stacked, in_sample)[0, 1] > 0.8
    # A point's out-of-fold margin does not move when its own label changes.
    flipped = event.copy()
    flipped[:4] = ~flipped[:4]  # subject 0's points
    again = ClinicalBooster(seed=0).fit_stacked(x, flipped, time, groups, train)
    fold_of_subject0 = np.isclose(again[:4], stacked[:4])
    assert fold_of_subject0.all()


def test_the_booster_margin_is_one_more_clinical_input_and_reloads(tmp_path, sim_cohort):
    est = VisitProgressionEstimator(target="progression", clinical_booster=True, **TINY).fit(sim_cohort.X, sim_cohort.y)
    assert est.model_.n_point_features == est.point_features_.n_features + 1
    risk = est.predict_risk(sim_cohort.X)
    est.save(tmp_path / "m")
    assert (tmp_path / "m" / "booster.json").is_file()
    loaded = VisitProgressionEstimator.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict_risk(sim_cohort.X), risk, rtol=1e-5, atol=1e-6)
    (tmp_path / "m" / "booster.json").write_text("{not json")
    with pytest.raises(SavedModelError, match=r"booster\.json"):
        VisitProgressionEstimator.load(tmp_path / "m")


def test_the_booster_needs_a_survival_target(sim_cohort):
    with pytest.raises(ValueError, match="clinical_booster"):
        VisitProgressionEstimator(target="stage", clinical_booster=True, **TINY).fit(sim_cohort.X, sim_cohort.y)


def test_a_saved_booster_with_non_finite_leaves_is_refused(tmp_path):
    """Leaves edited to NaN loaded and predicted NaN; they are refused as NaN weights are."""
    import json

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    booster = ClinicalBooster(seed=0)
    booster.fit_stacked(x, rng.random(200) < 0.6, rng.exponential(size=200), np.arange(200) // 2, np.arange(200))
    booster.save(tmp_path / "b.json")
    np.testing.assert_allclose(ClinicalBooster.load(tmp_path / "b.json").predict(x), booster.predict(x))
    model = json.loads((tmp_path / "b.json").read_text())
    tree = model["learner"]["gradient_booster"]["model"]["trees"][0]
    leaf = tree["left_children"].index(-1)
    tree["split_conditions"][leaf] = float("nan")
    (tmp_path / "b.json").write_text(json.dumps(model))  # json writes the token NaN
    with pytest.raises(SavedModelError, match=r"non-finite") as caught:
        ClinicalBooster.load(tmp_path / "b.json")
    assert caught.value.file.endswith("b.json")
