"""VisitProgressionEstimator behaves like a scikit-learn estimator and trains correctly."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils._param_validation import InvalidParameterError
from sksurv.metrics import concordance_index_censored
from sksurv.util import Surv

import ehrprog as ep
from ehrprog import TabularModel, VisitProgressionEstimator
from tests.helpers import explained_vs_output_change

SMALL = {"embedding_dim": 16, "hidden_dim": 16, "max_epochs": 3, "batch_size": 32, "lr": 1e-2, "random_state": 0}


@pytest.fixture(scope="module")
def cohort(sim_omop):
    return ep.tasks.CKDProgression().build(ep.read_omop(sim_omop))


@pytest.fixture(scope="module")
def stage_model(cohort):
    return VisitProgressionEstimator(target="stage", **SMALL).fit(cohort.X, cohort.y)


@pytest.fixture(scope="module")
def progression_model(cohort):
    return VisitProgressionEstimator(target="progression", **SMALL).fit(cohort.X, cohort.y)


def test_init_only_stores_parameters_and_clone_round_trips():
    est = VisitProgressionEstimator(target="both", hidden_dim=8, backbone__dim=16, tabular=TabularModel(cv=4))
    assert est.get_params()["backbone__dim"] == 16
    assert est.get_params()["tabular__cv"] == 4  # the component's parameters, routed with __
    twin = clone(est)
    assert twin.get_params(deep=False).keys() == est.get_params(deep=False).keys()
    assert twin.tabular is not est.tabular and twin.tabular.get_params() == est.tabular.get_params()
    assert not [k for k in vars(est) if k.endswith("_") and not k.startswith("backbone__")]
    default = VisitProgressionEstimator().set_params(tabular__risk_model="cox")  # the default made explicit
    assert default.tabular.risk_model == "cox"


def test_unknown_extra_parameter_is_rejected():
    with pytest.raises(TypeError, match="backbone__"):
        VisitProgressionEstimator(hidden=3)


def test_invalid_parameters_fail_in_fit_not_init(cohort):
    est = VisitProgressionEstimator(target="severity")
    with pytest.raises(InvalidParameterError, match="target"):
        est.fit(cohort.X, cohort.y)
    with pytest.raises(ValueError, match="available"):
        VisitProgressionEstimator(backbone="nope", **SMALL).fit(cohort.X, cohort.y)


def test_prediction_before_fit_raises_not_fitted(cohort):
    with pytest.raises(NotFittedError):
        VisitProgressionEstimator().predict(cohort.X)


def test_stage_model_predicts_probabilities_and_scores_macro_auroc(stage_model, cohort):
    proba = stage_model.predict_proba(cohort.X)
    assert proba.shape == (len(cohort.X), len(stage_model.classes_))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert set(stage_model.predict(cohort.X)) <= set(stage_model.classes_)
    assert 0.5 < stage_model.score(cohort.X, cohort.y) <= 1.0
    assert [h["epoch"] for h in stage_model.history_] == [1, 2, 3]
    assert "valid_score" in stage_model.initial_validation_  # the tabular model alone, before epoch 1
    assert {"train_loss", "valid_loss", "seconds"} <= set(stage_model.history_[0])


def test_progression_model_risk_survival_and_harrell_c(progression_model, cohort):
    risk = progression_model.predict(cohort.X)
    assert risk.shape == (len(cohort.X),)
    event = cohort.y["event"].to_numpy()
    time = cohort.y["time_to_event_days"].to_numpy()
    expected = concordance_index_censored(event, time, risk)[0]
    assert progression_model.score(cohort.X, cohort.y) == pytest.approx(expected)
    survival = progression_model.predict_survival_function(cohort.X[:20], return_array=True)
    assert ((survival >= 0) & (survival <= 1)).all()
    assert (np.diff(survival, axis=1) <= 1e-12).all()  # non-increasing in time
    functions = progression_model.predict_survival_function(cohort.X[:3])
    assert functions[0](progression_model.event_times_[0]) == pytest.approx(survival[0, 0])
    with pytest.raises(AttributeError, match="target='stage' or 'both'"):
        progression_model.predict_proba(cohort.X)


def test_y_as_structured_survival_array_or_stage_array(cohort):
    structured = Surv.from_arrays(cohort.y["event"].to_numpy(), cohort.y["time_to_event_days"].to_numpy())
    est = VisitProgressionEstimator(target="progression", **SMALL).fit(cohort.X, structured)
    assert hasattr(est, "cumulative_baseline_hazard_")
    known = cohort.y["stage"].is_not_null().to_numpy()
    stages = cohort.y["stage"].to_numpy()[known]
    est = VisitProgressionEstimator(target="stage", **SMALL).fit(cohort.X[known], stages)
    assert est.classes_.tolist() == sorted(set(stages.tolist()))
    with pytest.raises(ValueError, match="needs 'event'"):
        VisitProgressionEstimator(target="progression", **SMALL).fit(cohort.X[known], stages)


def test_same_random_state_gives_the_same_predictions_on_cpu(cohort):
    first = VisitProgressionEstimator(target="both", **SMALL).fit(cohort.X, cohort.y)
    second = VisitProgressionEstimator(target="both", **SMALL).fit(cohort.X, cohort.y)
    np.testing.assert_array_equal(first.predict_proba(cohort.X), second.predict_proba(cohort.X))
    np.testing.assert_array_equal(first.predict_risk(cohort.X), second.predict_risk(cohort.X))
    other = VisitProgressionEstimator(target="both", **{**SMALL, "random_state": 1}).fit(cohort.X, cohort.y)
    assert not np.array_equal(first.predict_risk(cohort.X), other.predict_risk(cohort.X))


def test_save_and_load_round_trip_without_pickle(tmp_path, cohort):
    est = VisitProgressionEstimator(target="both", **SMALL).fit(cohort.X, cohort.y)
    root = est.save(tmp_path / "model")
    # weights, configuration and (target with survival, enough events) the booster's JSON model
    assert est.tabular_.booster_ is not None
    assert sorted(p.name for p in root.iterdir()) == [
        "MODEL_CARD.md",
        "booster.json",
        "config.json",
        "model.safetensors",
    ]
    assert json.loads((root / "config.json").read_text())["params"]["target"] == "both"
    loaded = VisitProgressionEstimator.load(root)
    np.testing.assert_allclose(loaded.predict_proba(cohort.X), est.predict_proba(cohort.X), rtol=1e-6)
    np.testing.assert_allclose(
        loaded.predict_survival_function(cohort.X[:5], return_array=True),
        est.predict_survival_function(cohort.X[:5], return_array=True),
        rtol=1e-6,
    )


def test_works_in_a_pipeline(cohort):
    pipe = Pipeline(
        [
            ("identity", FunctionTransformer(validate=False)),
            ("model", VisitProgressionEstimator(target="stage", **SMALL)),
        ]
    )
    pipe.fit(cohort.X, cohort.y)
    assert pipe.predict(cohort.X).shape == (len(cohort.X),)
    assert 0.0 <= pipe.score(cohort.X, cohort.y) <= 1.0


def test_grid_search_over_routed_and_plain_parameters_with_group_k_fold(cohort):
    search = GridSearchCV(
        VisitProgressionEstimator(target="progression", **SMALL),
        {"hidden_dim": [8, 16], "tabular__risk_model": ["cox"]},
        cv=GroupKFold(n_splits=2),
        n_jobs=2,
    )
    search.fit(cohort.X, cohort.y, groups=cohort.groups)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    # The chosen parameters reached the refitted module (checked on the module, not on get_params).
    assert search.best_estimator_.model_.sequence.hidden_size == search.best_params_["hidden_dim"]
    assert search.best_estimator_.tabular_.risk_model_ == "cox"


def test_a_grid_search_shows_its_fits_and_each_fit_its_epochs(cohort, capsys):
    small = {**SMALL, "max_epochs": 1}
    search = GridSearchCV(
        VisitProgressionEstimator(target="progression", verbose=1, **small),
        {"hidden_dim": [8, 16]},
        cv=GroupKFold(n_splits=2),
        verbose=1,  # scikit-learn's line per search; the estimator's bar per epoch of every fit
    )
    search.fit(cohort.X, cohort.y, groups=cohort.groups)
    captured = capsys.readouterr()
    assert "Fitting 2 folds for each of 2 candidates, totalling 4 fits" in captured.out
    # A bar is one line (its refreshes are carriage returns): four fits and the refit, each with its loss.
    bars = [line for line in captured.err.split("\n") if "epoch 1" in line and "loss=" in line]
    assert len(bars) == 5


def test_cross_val_score_with_group_k_fold_in_two_processes(cohort):
    scores = cross_val_score(
        VisitProgressionEstimator(target="stage", **SMALL),
        cohort.X,
        cohort.y,
        groups=cohort.groups,
        cv=GroupKFold(n_splits=3),
        n_jobs=2,
    )
    assert scores.shape == (3,)
    assert ((scores >= 0) & (scores <= 1)).all()


@pytest.mark.parametrize("sequence_encoder", ["gru", "lstm", "transformer"])
@pytest.mark.parametrize("visit_encoder", ["attention", "transformer"])
def test_every_encoder_combination_trains(cohort, sequence_encoder, visit_encoder):
    est = VisitProgressionEstimator(
        target="both", visit_encoder=visit_encoder, sequence_encoder=sequence_encoder, **{**SMALL, "max_epochs": 1}
    ).fit(cohort.X[:300], cohort.y[:300])
    assert np.isfinite(est.history_[0]["train_loss"])


def test_fit_on_a_non_cohort_input_is_a_clear_error(cohort):
    with pytest.raises(TypeError, match="CohortX"):
        VisitProgressionEstimator(**SMALL).fit(np.zeros((10, 3)), np.arange(10))


def test_explain_gives_per_code_and_per_visit_attributions_that_add_up(progression_model, cohort):

    X = cohort.X[np.arange(3)]
    attributions = progression_model.explain(X, steps=64)
    assert set(attributions["point"].unique().to_list()) == {0, 1, 2}
    history = X.histories()
    assert (
        attributions.filter(pl.col("point") == 0)["visit_index"].max()
        < history.filter(pl.col("point") == 0)["n_visits"][0]
    )
    # Completeness: attributions sum to risk(x) - risk(all-padding embeddings).
    total, change = explained_vs_output_change(progression_model, X, attributions)
    assert total == pytest.approx(change, rel=0.05, abs=1e-3)


def test_fit_groups_are_the_units_the_validation_split_holds_out(cohort):
    """``fit(groups=)`` sets what the early-stopping split holds out whole: one group for all
    points leaves nothing to hold out (no validation curve), the subjects (the default) do; a
    grouping that splits a subject, or of the wrong length, is refused."""
    quick = {**SMALL, "max_epochs": 1, "tabular": TabularModel(risk_model="cox")}
    by_subject = VisitProgressionEstimator(target="progression", **quick).fit(cohort.X, cohort.y)
    assert len(by_subject.validation_loss_curve_) == 1
    same_as_default = VisitProgressionEstimator(target="progression", **quick).fit(
        cohort.X, cohort.y, groups=cohort.groups
    )
    np.testing.assert_allclose(same_as_default.predict_risk(cohort.X), by_subject.predict_risk(cohort.X))
    one_site = VisitProgressionEstimator(target="progression", **quick).fit(
        cohort.X, cohort.y, groups=np.zeros(len(cohort.X))
    )
    assert one_site.validation_loss_curve_ == []
    with pytest.raises(ValueError, match="one group"):
        VisitProgressionEstimator(target="progression", **quick).fit(
            cohort.X, cohort.y, groups=np.arange(len(cohort.X))
        )
    with pytest.raises(ValueError, match="one value per point"):
        VisitProgressionEstimator(target="progression", **quick).fit(cohort.X, cohort.y, groups=cohort.groups[:-1])
