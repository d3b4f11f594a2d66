"""The modelling path is correct in every case: windows, non-finite values, devices, targets,
code order, routing and a live sequence encoder (each defect found once, pinned here)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ehrprog as ep
from ehrprog import TabularModel, VisitProgressionEstimator
from ehrprog.cohorts.cohort import CohortX
from ehrprog.features.tensors import VisitTensors, Vocabulary
from ehrprog.models.baselines import CoxBaseline
from ehrprog.networks.training import NonFiniteLossError
from tests.helpers import events as make_events
from tests.helpers import points as make_points

TINY = {"embedding_dim": 8, "hidden_dim": 8, "max_epochs": 2, "batch_size": 16, "lr": 1e-2, "random_state": 0}


# ----------------------------------------------------------------- hand-made cohorts
def _cohort_x(rows: list[tuple], points: list[tuple[int, int]]) -> CohortX:
    """``CohortX`` over hand-made events; ``points`` are ``(subject_id, n_visits)``."""
    visits = ep.group_visits(make_events(rows), "same_day")
    frame = make_points([p[0] for p in points], [datetime(2020, 1, 1)] * len(points), [p[1] for p in points])
    return CohortX(frame, visits)


def _marker_cohort(n_subjects: int, seed: int) -> tuple[CohortX, pl.DataFrame]:
    """Subjects whose first visit holds marker ``M/A`` or ``M/B``, then 3-6 visits of filler codes;
    the one prediction point, at the last visit, has the same current stage for everyone. The
    next stage (4 after ``A``, 3 after ``B``) and the time to progression (short after ``A``)
    depend only on the marker, i.e. on the history: a model whose sequence encoder is dead can
    do no better than chance, as a current-stage-only model cannot."""
    rng = np.random.default_rng(seed)
    rows, points, stages, events, times = [], [], [], [], []
    start = datetime(2018, 1, 1)
    for subject in range(1, n_subjects + 1):
        marked = bool(rng.random() < 0.5)
        n = int(rng.integers(4, 8))
        rows.append((subject, start.isoformat(), "M/A" if marked else "M/B"))
        for visit in range(1, n):
            day = (start + timedelta(days=30 * visit)).isoformat()
            for code in rng.choice(["F/1", "F/2", "F/3", "F/4"], size=2, replace=False):
                rows.append((subject, day, str(code)))
        points.append((subject, n))
        stages.append(4 if marked else 3)
        events.append(bool(marked or rng.random() < 0.3))
        times.append(float(rng.uniform(30, 200) if marked else rng.uniform(300, 900)))
    X = _cohort_x(rows, points)
    y = pl.DataFrame({"stage": stages, "event": events, "time_to_event_days": times})
    return X, y


# ----------------------------------------------------------------- 1. windows never read later visits
@st.composite
def _histories(draw):
    n_subjects = draw(st.integers(1, 4))
    rows, points = [], []
    for subject in range(1, n_subjects + 1):
        n_visits = draw(st.integers(1, 12))
        for visit in range(n_visits):
            day = (datetime(2020, 1, 1) + timedelta(days=visit)).isoformat()
            codes = draw(st.lists(st.sampled_from(["A", "B", "C", "D", "E"]), min_size=1, max_size=3))
            rows += [(subject, day, f"X/{code}{visit % 3}") for code in codes]
        for n in draw(st.lists(st.integers(1, n_visits), min_size=1, max_size=5)):
            points.append((subject, n))
    return rows, points, draw(st.integers(1, 5)), draw(st.integers(1, 3))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_histories())
def test_every_point_reads_exactly_its_own_last_max_visits_visits(case):
    """Checked on the arrays the model reads: for every point of every batch, the row it reads,
    up to its position, holds its own last ``max_visits`` visits and nothing after them."""
    rows, points, max_visits, batch_size = case
    X = _cohort_x(rows, points)
    vocabulary = Vocabulary.fit(X)
    ids = vocabulary.lookup(pl.col("code"))
    tensors = VisitTensors(X, vocabulary, max_codes=8, max_visits=max_visits)
    own = X.histories()
    seen = 0
    for batch in tensors.subject_batches(np.arange(len(X)), batch_size, np.random.default_rng(0)):
        for k, point in enumerate(batch.point_index):
            row, last = batch.point_subject[k], batch.point_visit[k]
            history = own.filter(pl.col("point") == point)
            expected = history.tail(max_visits)
            assert last + 1 == expected.height  # the window is exactly as long as its own tail
            assert batch.visit_offset[row] + last == history["visit_index"].max()  # ends at its own last visit
            assert batch.visit_mask[row, : last + 1].all()
            assert batch.row_subject[row] == history["subject_id"][0]
            for position, codes in enumerate(expected["codes"].to_list()):
                want = pl.DataFrame({"code": codes}).select(ids)["code"].to_numpy()[:8]
                got = batch.codes[row, position]
                np.testing.assert_array_equal(got[got > 0], want)
            seen += 1
    assert seen == len(X)


def test_a_point_at_the_first_visit_of_a_long_history_reads_no_later_visit():
    """12 visits, max_visits=4, points after visit 1 and visit 12 in one batch: the early point's
    state is the state of its own first visit (the leak read visit 8)."""
    rows = [(1, (datetime(2020, 1, 1) + timedelta(days=v)).isoformat(), f"X/{v}") for v in range(12)]
    X = _cohort_x(rows, [(1, 1), (1, 12)])
    tensors = VisitTensors(X, Vocabulary.fit(X), max_codes=4, max_visits=4)
    batch = tensors.batch(np.arange(2))
    early = batch.point_subject[0]
    assert batch.visit_offset[early] + batch.point_visit[0] == 0
    late = batch.point_subject[1]
    assert batch.visit_offset[late] == 8 and batch.point_visit[1] == 3


# ----------------------------------------------------------------- 2. non-finite values
@pytest.fixture(scope="module")
def cohort(sim_omop):
    return ep.tasks.CKDProgression().build(ep.read_omop(sim_omop))


def _with_one_nan_lab(cohort) -> CohortX:
    visits = cohort.X.visits
    frame = visits.frame.with_row_index("_r")
    exploded = frame.explode("visits")
    values = exploded["visits"].struct.field("numeric_values")
    target = int(np.flatnonzero(values.list.eval(pl.element().is_not_null().any()).explode().fill_null(False))[0])
    poisoned = values.to_list()
    row = poisoned[target]
    poisoned[target] = [float("nan") if v is not None else None for v in row]
    exploded = exploded.with_columns(
        pl.col("visits").struct.with_fields(pl.Series("numeric_values", poisoned, pl.List(pl.Float32)))
    )
    nested = exploded.group_by("_r", maintain_order=True).agg(pl.exclude("visits").first(), pl.col("visits"))
    new = type(visits)(nested.drop("_r").select(visits.frame.columns), visits.strategy, visits.codes)
    return CohortX(cohort.X.points, new)


def test_one_nan_lab_value_neither_poisons_the_vocabulary_nor_the_model(cohort):
    X = _with_one_nan_lab(cohort)
    est = VisitProgressionEstimator(target="both", **TINY).fit(X, cohort.y)
    assert np.isfinite(est.vocabulary_.value_mean).all() and np.isfinite(est.vocabulary_.value_std).all()
    assert all(np.isfinite(record["train_loss"]) for record in est.history_)
    assert np.isfinite(est.predict_risk(X)).all() and np.isfinite(est.predict_proba(X)).all()


def test_non_finite_current_value_is_no_value(cohort):
    points = cohort.X.points.with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(float("inf"))
        .otherwise(pl.col("current_value"))
        .alias("current_value")
    )
    X = CohortX(points, cohort.X.visits)
    est = VisitProgressionEstimator(target="progression", **TINY).fit(X, cohort.y)
    assert all(np.isfinite(v) for v in est.value_scale_)
    assert np.isfinite(est.predict_risk(X)).all()


def test_a_loss_turning_non_finite_stops_fit_naming_epoch_and_batch(cohort, monkeypatch):
    import ehrprog.networks.visit_model as model_module

    real = model_module.supervised_loss
    calls = {"n": 0}

    def poisoned(logits, risk, targets):
        calls["n"] += 1
        loss = real(logits, risk, targets)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(model_module, "supervised_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, batch 3 of \d+"):
        VisitProgressionEstimator(target="stage", **TINY).fit(cohort.X, cohort.y)


# ----------------------------------------------------------------- 4. prediction on the estimator's device
def test_prediction_runs_on_the_estimators_device(cohort):
    """Predicting sends the batches to the estimator's device (was: always the CPU). Here the
    device the estimator resolves is switched after fitting to ``meta`` (no data; every CPU machine
    has it; not a device a user may ask for): the backbone must see its inputs there."""
    est = VisitProgressionEstimator(target="progression", **TINY).fit(cohort.X[:200], cohort.y[:200])
    seen = []
    est.model_.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0].device.type))
    est._device = lambda: torch.device("meta")
    with pytest.raises((NotImplementedError, RuntimeError)):
        est.predict_risk(cohort.X[:5])
    assert seen and set(seen) == {"meta"}


def test_gpu_training_and_prediction_run_on_the_gpu_when_one_is_present(cohort):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine; the GPU path is checked where one is lent")
    est = VisitProgressionEstimator(target="both", device="cuda", **TINY).fit(cohort.X, cohort.y)
    seen = []
    est.model_.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0].device.type))
    assert np.isfinite(est.predict_risk(cohort.X)).all()
    assert set(seen) == {"cuda"} and next(est.model_.parameters()).device.type == "cuda"


def test_a_device_that_does_not_exist_is_a_clear_error(cohort):
    with pytest.raises(ValueError, match="CUDA device"):
        VisitProgressionEstimator(device="cuda:7", **TINY).fit(cohort.X[:50], cohort.y[:50])


# ----------------------------------------------------------------- 5. code order inside a visit
def test_codes_at_the_same_time_are_ordered_by_code_string_with_their_values():
    time = "2020-01-01T10:00:00"
    rows = [(1, time, "LOINC/2160-0", 1.5), (1, time, "ICD10CM/N18.3"), (1, time, "A/zz", 7.0), (1, time, "A/b")]
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]):
        visit = ep.group_visits(make_events([rows[i] for i in order]), "same_day").visits()
        assert visit["codes"][0].to_list() == ["A/b", "A/zz", "ICD10CM/N18.3", "LOINC/2160-0"]
        assert visit["numeric_values"][0].to_list() == [None, 7.0, None, 1.5]


def test_codes_keep_time_order_before_code_order():
    rows = [(1, "2020-01-01T12:00:00", "A/a"), (1, "2020-01-01T08:00:00", "Z/z")]
    visit = ep.group_visits(make_events(rows), "same_day").visits()
    assert visit["codes"][0].to_list() == ["Z/z", "A/a"]


# ----------------------------------------------------------------- 6. survival targets
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.with_columns(pl.lit(float("nan")).alias("time_to_event_days")), "must be finite"),
        (lambda t: t.with_columns(pl.lit(-1.0).alias("time_to_event_days")), "must not be negative"),
        (lambda t: t.with_columns(pl.lit(False).alias("event")), "at least one observed event"),
    ],
)
def test_survival_targets_that_cannot_be_fitted_are_a_clear_error(cohort, change, message):
    y = change(cohort.y)
    with pytest.raises(ValueError, match=message):
        VisitProgressionEstimator(target="progression", **TINY).fit(cohort.X, y)
    with pytest.raises(ValueError, match=message):
        CoxBaseline().fit(cohort.X, y)


# ----------------------------------------------------------------- 8. a live sequence encoder, routing
def test_the_model_learns_from_history_what_a_current_stage_model_cannot():
    """On the marker cohort the answer lies only in the first visit: a current-stage-only model
    scores 0.5 by construction; the model must read the history (fails when the encoder is dead)."""
    X, y = _marker_cohort(240, seed=0)
    X_test, y_test = _marker_cohort(120, seed=1)
    # Without point features: with them, a dead encoder still reads age and visit counts.
    params = {**TINY, "max_epochs": 25, "n_iter_no_change": 25, "embedding_dim": 16, "hidden_dim": 16}
    params["tabular"] = TabularModel(point_features=False)
    stage = VisitProgressionEstimator(target="stage", **params).fit(X, y)
    assert stage.score(X_test, y_test) > 0.9
    progression = VisitProgressionEstimator(target="progression", **params).fit(X, y)
    assert progression.score(X_test, y_test) > 0.75
    dead = VisitProgressionEstimator(target="stage", **params).fit(X, y)
    dead.model_.sequence.register_forward_hook(lambda module, args, out: (torch.zeros_like(out[0]), out[1]))
    assert dead.score(X_test, y_test) == pytest.approx(0.5, abs=0.05)


def test_a_history_judged_on_too_few_validation_subjects_is_dropped_however_well_it_did(monkeypatch):
    """The marker cohort's history wins by far (the test above), yet below MIN_VALIDATION_SUBJECTS
    it is not kept: the estimator is its tabular part, which cannot see the marker."""
    import ehrprog.models.history_fit as history_fit

    X, y = _marker_cohort(240, seed=0)
    X_test, y_test = _marker_cohort(120, seed=1)
    params = {**TINY, "max_epochs": 25, "n_iter_no_change": 25, "embedding_dim": 16, "hidden_dim": 16}
    params["tabular"] = TabularModel(point_features=False)
    kept = VisitProgressionEstimator(target="stage", **params).fit(X, y)
    assert kept.history_kept_ and kept.score(X_test, y_test) > 0.9  # 36 validation subjects: judged
    monkeypatch.setattr(history_fit, "MIN_VALIDATION_SUBJECTS", 37)
    dropped = VisitProgressionEstimator(target="stage", **params).fit(X, y)
    assert dropped.history_trial_gain_ == kept.history_trial_gain_  # the same fit, judged differently
    assert not dropped.history_kept_ and dropped.best_epoch_ == 0 and dropped.history_gain_ == 0.0
    assert dropped.score(X_test, y_test) == pytest.approx(0.5, abs=0.05)


def test_routed_parameters_reach_the_module(cohort):
    from sklearn.model_selection import GridSearchCV, GroupKFold

    search = GridSearchCV(
        VisitProgressionEstimator(target="progression", **TINY),
        {"hidden_dim": [8, 12], "tabular__cox_alpha": [0.5, 2.0], "sequence_encoder": ["lstm"]},
        cv=GroupKFold(n_splits=2),
    ).fit(cohort.X, cohort.y, groups=cohort.groups)
    model = search.best_estimator_.model_
    assert model.sequence.hidden_size == search.best_params_["hidden_dim"]
    assert search.best_estimator_.tabular_.cox_alpha == search.best_params_["tabular__cox_alpha"]
    assert isinstance(model.sequence, torch.nn.LSTM)


def test_only_the_heads_a_target_needs_are_built(cohort):
    stage = VisitProgressionEstimator(target="stage", **TINY).fit(cohort.X[:200], cohort.y[:200])
    assert stage.model_.risk_head is None and stage.model_.stage_head is not None
    progression = VisitProgressionEstimator(target="progression", **TINY).fit(cohort.X[:200], cohort.y[:200])
    assert progression.model_.stage_head is None and progression.model_.risk_head is not None


# ----------------------------------------------------------------- sklearn conventions
def test_sklearn_style_training_attributes_and_fresh_randomness(cohort, monkeypatch):
    monkeypatch.setattr("ehrprog.models.history_fit.MIN_VALIDATION_SUBJECTS", 0)  # the selection, not the judge
    X, y = cohort.X[:300], cohort.y[:300]
    est = VisitProgressionEstimator(target="stage", **{**TINY, "max_epochs": 3}).fit(X, y)
    assert est.n_iter_ == len(est.history_) == len(est.loss_curve_) == len(est.validation_loss_curve_)
    assert 0 <= est.best_epoch_ <= est.n_iter_
    scores = [est.initial_validation_["valid_score"]] + [h["valid_score"] for h in est.history_]
    assert scores[est.best_epoch_] == max(scores)  # selection="score": the best validation score is kept
    by_loss = VisitProgressionEstimator(target="stage", **{**TINY, "max_epochs": 3, "selection": "loss"}).fit(X, y)
    losses = [by_loss.initial_validation_["valid_loss"], *by_loss.validation_loss_curve_]
    assert losses[by_loss.best_epoch_] == min(losses)
    fresh = {**TINY, "random_state": None, "validation_fraction": 0.0}  # trained epochs kept, not epoch 0
    a = VisitProgressionEstimator(target="stage", **fresh).fit(X, y).predict_proba(X)
    b = VisitProgressionEstimator(target="stage", **fresh).fit(X, y).predict_proba(X)
    assert not np.array_equal(a, b)
