"""The tabular component alone (ehrprog.models.tabular): the one clinical table, its number of stages
from the task, stacked out-of-fold outputs, attributions that add up, a state that round-trips,
and the estimator at epoch 0 being exactly this model."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from ehrprog import VisitProgressionEstimator
from ehrprog.cohorts.cohort import CohortX
from ehrprog.features.clinical import ClinicalTable
from ehrprog.models.tabular import TabularModel


def _survival(cohort):
    y = cohort.y
    return y["event"].to_numpy().astype(bool), y["time_to_event_days"].to_numpy().astype(float)


def test_the_number_of_stages_comes_from_the_task_not_a_constant(sim_cohort):
    """A rule with 6 stages: stage 6 reached the model as stage 5 (clamped)."""
    X = sim_cohort.X
    points = X.points.with_columns(
        pl.when(pl.arange(0, pl.len()) % 7 == 0).then(6).otherwise(pl.col("current_stage")).alias("current_stage")
    )
    bands = {"egfr": [*X.lab_bands["egfr"][:-1], (10.0, 5), (float("-inf"), 6)]}
    six = CohortX(points, X.visits, X.labs, bands)
    table = ClinicalTable(point_features=False).fit(six)
    assert table.n_stages_ == 6
    assert table.names_[-3] == "stage=6"
    values = table.transform(six)
    stage = points["current_stage"].to_numpy()
    np.testing.assert_array_equal(values[:, 6], (stage == 6).astype(float))  # not folded into stage 5
    assert ClinicalTable(point_features=False).fit(X).n_stages_ == 5


def test_stacked_outputs_of_a_training_point_never_saw_its_subject(sim_cohort):
    X = sim_cohort.X
    event, time = _survival(sim_cohort)
    subjects = X.points["subject_id"].to_numpy()
    rows = np.arange(len(X))
    model = TabularModel(risk_model="cox", stack_folds=5)
    stacked = model.fit_stacked(X, event=event, time=time, groups=subjects, train_rows=rows)
    assert stacked.shape == (len(X), 1)
    in_sample = model.transform(X)
    assert not np.allclose(stacked, in_sample)  # the full-data model saw every point
    # A subject's own labels cannot move its stacked output: the fold that scores it never saw them.
    first = subjects == subjects[0]
    flipped = event.copy()
    flipped[first] = ~flipped[first]
    again = TabularModel(risk_model="cox", stack_folds=5).fit_stacked(
        X, event=flipped, time=time, groups=subjects, train_rows=rows
    )
    np.testing.assert_allclose(again[first], stacked[first], rtol=1e-5)
    assert not np.allclose(again[~first], stacked[~first])  # other folds did see them


@pytest.mark.parametrize("risk_model", ["cox", "booster"])
def test_attributions_add_up_to_the_output_and_the_state_round_trips(sim_cohort, risk_model):
    X = sim_cohort.X
    event, time = _survival(sim_cohort)
    subjects = X.points["subject_id"].to_numpy()
    stage = sim_cohort.y["stage"].fill_null(0).to_numpy().astype(np.int64)
    classes = np.unique(stage[stage > 0])
    labels = np.where(stage > 0, np.searchsorted(classes, stage), -1)
    model = TabularModel(risk_model=risk_model, booster_grid={"max_depth": [2], "n_estimators": [20]})
    model.fit_stacked(
        X, stage=labels, n_classes=len(classes), event=event, time=time, groups=subjects, train_rows=np.arange(len(X))
    )
    outputs = model.transform(X)
    assert outputs.shape == (len(X), 1 + len(classes))
    risk = model.contributions(X, "risk").sum(axis=1)
    assert np.corrcoef(risk, outputs[:, 0])[0, 1] > 0.999  # the same up to the constant left out
    np.testing.assert_allclose(np.diff(risk[:50]), np.diff(outputs[:50, 0]), rtol=1e-3, atol=1e-3)
    twin = TabularModel.from_state(model.state(), model.booster_.model_ if model.booster_ is not None else None)
    np.testing.assert_allclose(twin.transform(X), outputs, rtol=1e-6)


def test_at_epoch_0_the_estimator_is_the_tabular_model(sim_cohort):
    """The offsets start at exactly zero: before any training step the estimator's outputs are
    the tabular model's."""
    X, y = sim_cohort.X, sim_cohort.y
    est = VisitProgressionEstimator(
        target="both", tabular=TabularModel(risk_model="cox"), embedding_dim=8, hidden_dim=8, max_epochs=1,
        random_state=0,
    )  # fmt: skip
    est.fit(X, y)
    with torch.no_grad():  # back to epoch 0: offsets zero, the tabular outputs kept whole
        for head in (est.model_.risk_head, est.model_.stage_head):
            head.weight.zero_()
            head.bias.zero_()
        est.model_.risk_scale.fill_(1.0)
        est.model_.stage_scale.fill_(1.0)
    tabular = est.tabular_.transform(X)
    np.testing.assert_allclose(est.predict_risk(X), tabular[:, 0], rtol=1e-5, atol=1e-6)
    expected = torch.softmax(torch.from_numpy(tabular[:, 1:]), dim=1).numpy()
    np.testing.assert_allclose(est.predict_proba(X), expected, rtol=1e-5, atol=1e-6)


def test_the_paired_gain_is_zero_for_identical_outputs_and_sees_a_better_ranking():
    from ehrprog.networks.inference import paired_gain

    rng = np.random.default_rng(0)
    n = 400
    time = rng.exponential(size=n)
    event = rng.random(n) < 0.7
    targets = {"stage_label": np.full(n, -1), "event": event.astype(np.float32), "time": time.astype(np.float32)}
    subjects = np.repeat(np.arange(n // 4), 4)
    noisy = -time + rng.normal(scale=2.0, size=n)
    assert paired_gain((None, noisy), (None, noisy), targets, subjects, 0) == (0.0, 0.0)
    gain, se = paired_gain((None, -time + rng.normal(scale=0.3, size=n)), (None, noisy), targets, subjects, 0)
    assert gain > 3 * se > 0


def test_the_history_is_kept_only_beyond_its_noise_else_the_estimator_is_its_tabular_model(sim_cohort):
    X, y = sim_cohort.X, sim_cohort.y
    est = VisitProgressionEstimator(
        target="progression", tabular=TabularModel(risk_model="cox"), embedding_dim=8, hidden_dim=8, max_epochs=3,
        random_state=0,
    ).fit(X, y)  # fmt: skip
    assert est.history_gain_ is not None and est.history_gain_se_ is not None
    assert est.history_kept_ == (est.best_epoch_ > 0)
    parts = est.decision_components(X)
    if est.history_kept_:
        assert est.history_gain_ > est.history_gain_se_
    else:
        assert est.history_gain_ == 0.0
        assert np.abs(parts["history_risk"]).max() < 1e-5  # the offsets are exactly zero again
        np.testing.assert_allclose(est.predict_risk(X), est.tabular_.transform(X)[:, 0], rtol=1e-5, atol=1e-6)


def test_above_max_fit_points_the_models_fit_a_seeded_sample_of_whole_subjects(sim_cohort):
    X = sim_cohort.X
    event, time = _survival(sim_cohort)
    subjects = X.points["subject_id"].to_numpy()
    rows = np.arange(len(X))
    model = TabularModel(risk_model="cox", max_fit_points=1000, random_state=3)
    stacked = model.fit_stacked(X, event=event, time=time, groups=subjects, train_rows=rows)
    sample = model.fit_sample_
    assert sample["of_points"] == len(X) and sample["points"] <= 1000 and sample["seed"] == 3
    assert sample["of_subjects"] == len(np.unique(subjects)) > sample["subjects"]
    # Whole subjects: the sample is every point of the subjects drawn (found again from its seed).
    again = TabularModel(risk_model="cox", max_fit_points=1000, random_state=3)
    drawn = again._fitting_sample(rows, subjects)
    assert again.fit_sample_ == sample and len(drawn) == sample["points"]
    assert np.isin(subjects, subjects[drawn]).sum() == len(drawn)
    # Outside the sample, the outputs of the model fitted on it (points it never saw); inside, out-of-fold.
    outside = np.setdiff1d(rows, drawn)
    np.testing.assert_allclose(stacked[outside], model.transform(X[outside]), rtol=1e-6)
    assert not np.allclose(stacked[drawn], model.transform(X[drawn]))
    # The linear Cox saw only the sample: fitting on the sample alone gives the same coefficients.
    alone = TabularModel(risk_model="cox", max_fit_points=None)
    alone.fit_stacked(
        X[drawn], event=event[drawn], time=time[drawn], groups=subjects[drawn], train_rows=np.arange(len(drawn))
    )
    np.testing.assert_allclose(alone.cox_.coef, model.cox_.coef, rtol=1e-6)
    twin = TabularModel.from_state(model.state())
    assert twin.fit_sample_ == sample
    assert (
        TabularModel(risk_model="cox").fit_stacked(X, event=event, time=time, groups=subjects, train_rows=rows)
        is not None
    )


@pytest.mark.parametrize("max_fit_points", [None, 1000])
def test_fitted_outputs_are_the_transform_without_a_second_pass(sim_cohort, max_fit_points):
    """What the survival baseline reads: the fitted models' outputs on every point, from the
    stacked outputs and the rows the fit kept (sampled or not, a training subset or all)."""
    X = sim_cohort.X
    event, time = _survival(sim_cohort)
    subjects = X.points["subject_id"].to_numpy()
    train = np.flatnonzero(subjects % 5 != 0)  # some points never trained on
    model = TabularModel(risk_model="cox", max_fit_points=max_fit_points, random_state=1)
    stacked = model.fit_stacked(X, event=event, time=time, groups=subjects, train_rows=train)
    before = stacked.copy()
    fitted = model.fitted_outputs(stacked)
    np.testing.assert_array_equal(stacked, before)  # left as it was
    np.testing.assert_allclose(fitted, model.transform(X), rtol=1e-6, atol=1e-6)
    assert not np.allclose(fitted, stacked)  # the stacked rows were replaced
    with pytest.raises(ValueError, match="fit_stacked just run"):
        model.fitted_outputs(stacked)  # given once


def test_a_cohort_on_disk_gives_the_tabular_model_of_the_cohort_in_memory(sim_cohort, tmp_path):
    import ehrprog as ep

    loaded = ep.load_cohort(sim_cohort.save(tmp_path / "cohort", subjects_per_shard=60))
    assert len(loaded.X.store.names) > 1
    key = ["subject_id", "prediction_time"]
    order = (
        loaded.X.points.select(key)
        .with_row_index("disk")
        .join(sim_cohort.X.points.select(key).with_row_index("memory"), on=key)
    )
    disk_rows, memory_rows = order["disk"].to_numpy(), order["memory"].to_numpy()
    fits = []
    for cohort in (sim_cohort, loaded):
        event, time = _survival(cohort)
        subjects = cohort.X.points["subject_id"].to_numpy()
        model = TabularModel(booster_grid={"max_depth": [2], "n_estimators": [20]}, min_booster_events=1)
        stacked = model.fit_stacked(
            cohort.X, event=event, time=time, groups=subjects, train_rows=np.arange(len(subjects))
        )
        fits.append((model, stacked))
    (memory, _), (disk, _) = fits
    assert disk.windowed_.codes_ == memory.windowed_.codes_ and disk.windowed_.lab_codes_ == memory.windowed_.lab_codes_
    # The windowed counts, read shard by shard, are the in-memory ones point by point.
    counts_disk = disk.windowed_.transform(loaded.X)[disk_rows].toarray()
    counts_memory = memory.windowed_.transform(sim_cohort.X)[memory_rows].toarray()
    np.testing.assert_array_equal(counts_disk, counts_memory)
    # One fitted model gives the same outputs from disk, shard by shard, as from memory.
    np.testing.assert_allclose(
        memory.transform(loaded.X)[disk_rows], memory.transform(sim_cohort.X)[memory_rows], rtol=1e-5, atol=1e-6
    )
