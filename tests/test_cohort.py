"""Cohorts: targets, censoring, no leakage, no copied histories, and scikit-learn splitting."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl
import pytest
from conftest import shared_path
from helpers import events as make_events
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.model_selection import GroupKFold
from sklearn.utils import _safe_indexing

import ehrprog as ep
from ehrprog.tasks import CKDProgression, CohortX

PERSON = [(1, None, "Gender/M"), (1, "1950-01-01", "MEDS_BIRTH")]


def _simple_history():
    return make_events(
        [
            *PERSON,
            (1, "2020-01-01", "ICD10CM/N18.2"),
            (1, "2020-01-01", "X"),
            (1, "2020-03-01", "Y"),
            (1, "2020-06-01", "ICD10CM/N18.2"),
            (1, "2020-09-01", "ICD10CM/N18.3"),
            (1, "2020-09-01", "Z"),
            (1, "2021-01-01", "ICD10CM/N18.3"),
            (1, "2021-06-01", "W"),
        ]
    )


def test_targets_are_next_stage_and_time_to_first_higher_stage():
    cohort = CKDProgression().build(_simple_history())
    points = cohort.X.points
    assert points["prediction_time"].to_list() == [
        datetime(2020, 1, 1),
        datetime(2020, 6, 1),
        datetime(2020, 9, 1),
        datetime(2021, 1, 1),
    ]
    assert points["current_stage"].to_list() == [2, 2, 3, 3]
    assert cohort.y["stage"].to_list() == [2, 3, 3, None]
    assert cohort.y["event"].to_list() == [True, True, False, False]
    # 2020-01-01 -> 2020-09-01 is 244 days; 2020-06-01 -> 92; censored at the last record 2021-06-01.
    assert cohort.y["time_to_event_days"].to_list() == [244.0, 92.0, 273.0, 151.0]
    assert points["n_visits"].to_list() == [1, 3, 4, 5]
    assert cohort.groups.tolist() == [1, 1, 1, 1]
    assert cohort.labels.columns[:5] == [
        "subject_id",
        "prediction_time",
        "boolean_value",
        "integer_value",
        "float_value",
    ]


def test_death_censors_follow_up():
    ev = make_events(
        [*PERSON, (1, "2020-01-01", "ICD10CM/N18.3"), (1, "2020-03-01", "MEDS_DEATH"), (1, "2020-03-01", "X")]
    )
    cohort = CKDProgression().build(ev)
    assert cohort.y["event"].to_list() == [False]
    assert cohort.y["time_to_event_days"].to_list() == [60.0]


def test_stage_decrease_is_not_progression():
    ev = make_events(
        [
            *PERSON,
            (1, "2020-01-01", "ICD10CM/N18.3"),
            (1, "2020-05-01", "ICD10CM/N18.2"),
            (1, "2021-01-01", "ICD10CM/N18.4"),
        ]
    )
    current = CKDProgression(progression="above_current").build(ev)
    assert current.y["stage"].to_list() == [2, 4]
    assert current.y["event"].to_list() == [True, True]
    assert current.y["time_to_event_days"].to_list() == [366.0, 245.0]
    # The default: a chronic stage does not regress; the N18.2 record leaves the stage at 3.
    highest = CKDProgression().build(ev)
    assert highest.X.points["current_stage"].to_list() == [3, 3]
    assert highest.y["stage"].to_list() == [3, 4]
    assert highest.y["event"].to_list() == [True, True]
    assert highest.y["time_to_event_days"].to_list() == [366.0, 245.0]


def test_points_at_the_final_stage_and_without_follow_up_are_left_out_and_counted():
    ev = make_events(
        [
            *PERSON,
            (1, "2020-01-01", "ICD10CM/N18.3"),
            (1, "2020-06-01", "ICD10CM/N18.6"),
            (1, "2020-09-01", "ICD10CM/N18.6"),
        ]
    )
    cohort = CKDProgression().build(ev)
    assert len(cohort.X) == 1
    assert cohort.report["points already at the final stage 5"] == 2


def test_empty_cohort_is_a_clear_error():
    with pytest.raises(ep.EmptyCohortError, match="no CKD stage records"):
        CKDProgression().build(make_events([*PERSON, (1, "2020-01-01", "X")]))


def test_inputs_hold_nothing_recorded_after_the_prediction_time(sim_omop):
    events = ep.read_omop(sim_omop)
    cohort = CKDProgression().build(events)
    history = cohort.X.histories()
    assert history.height > 0
    assert (history["end"] <= history["prediction_time"]).all()
    # The records that define each label (the next stage record after the prediction time) are not inputs.
    future = cohort.stages.join(cohort.X.points.with_row_index("point"), on="subject_id").filter(
        pl.col("time") > pl.col("prediction_time")
    )
    leaked = future.join(history.select("point", "start", "end"), on="point").filter(
        (pl.col("time") >= pl.col("start")) & (pl.col("time") <= pl.col("end"))
    )
    assert leaked.height == 0
    assert "death" not in cohort.X.visits.frame.columns


def test_a_longer_visit_still_open_at_the_prediction_time_is_not_an_input():
    # visit_id grouping: admission 10 runs 2020-01-01..01-10; clinic visits 20 (01-03) and 30
    # (01-05) lie inside it. A point at visit 30 may read none of them: the admission (visit 0
    # in start order) has not ended, and inputs are a prefix of the visits in start order.
    ev = make_events(
        [
            *PERSON,
            (1, "2020-01-01 08:00", "ADMIT", None, None, 10),
            (1, "2020-01-03 09:00", "X", None, None, 20),
            (1, "2020-01-05 09:00", "ICD10CM/N18.3", None, None, 30),
            (1, "2020-01-10 17:00", "DISCHARGE", None, None, 10),
            (1, "2020-06-01 09:00", "ICD10CM/N18.4", None, None, 40),
        ]
    )
    cohort = CKDProgression(visits="visit_id").build(ev)
    points = cohort.X.points.sort("prediction_time")
    assert points["prediction_time"].to_list()[0] == datetime(2020, 1, 5, 9)
    assert points["n_visits"].to_list()[0] == 0
    assert (cohort.X.histories()["end"] <= cohort.X.histories()["prediction_time"]).all()


def test_x_shares_one_history_per_subject_instead_of_copying_it(sim_omop):
    cohort = CKDProgression().build(ep.read_omop(sim_omop))
    assert len(cohort.X) > 3 * cohort.X.visits.n_subjects
    assert cohort.X.visits.n_subjects >= len(np.unique(cohort.groups))
    part = cohort.X[np.arange(5)]
    assert part.visits is cohort.X.visits and len(part) == 5


def test_x_splits_by_subject_with_group_k_fold(sim_omop):
    cohort = CKDProgression().build(ep.read_omop(sim_omop))
    for train, test in GroupKFold(n_splits=3).split(cohort.X, cohort.y, groups=cohort.groups):
        x_train, x_test = _safe_indexing(cohort.X, train), _safe_indexing(cohort.X, test)
        assert isinstance(x_train, CohortX) and len(x_test) == len(test)
        assert not set(x_train.points["subject_id"]) & set(x_test.points["subject_id"])
        assert _safe_indexing(cohort.y, test).height == len(test)
    mask = np.zeros(len(cohort.X), dtype=bool)
    mask[:3] = True
    assert len(cohort.X[mask]) == 3 and len(cohort.X[2:7]) == 5 and len(cohort.X[0]) == 1


def test_omop_and_meds_copies_of_a_simulation_give_the_same_cohort(sim_omop, sim_meds):
    a = CKDProgression().build(ep.read_omop(sim_omop))
    b = CKDProgression().build(ep.read_meds(sim_meds))
    assert a.labels.equals(b.labels)


def test_real_extract_progression_cohort():
    cohort = CKDProgression().build(ep.read_omop(shared_path("synthea_nj_tutorial_etl_2025_omop")))
    progressed = cohort.X.points.filter(cohort.y["event"])["subject_id"].unique()
    # SOURCE.md: 12 of the 13 CKD patients show a stage progression.
    assert progressed.len() == 12
    assert cohort.y["time_to_event_days"].min() > 0


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 4), st.integers(0, 5), st.integers(1, 5), st.one_of(st.none(), st.floats(0, 150))),
        max_size=40,
    ),
    st.booleans(),
)
def test_per_time_reduction_equals_a_grouped_maximum_and_mean(rows, presorted):
    """The run-by-run reduction gives the (subject, time) group maximum stage and mean value, in order."""
    from ehrprog.tasks.points import one_row_per_time

    if presorted:
        rows = sorted(rows, key=lambda r: r[:2])
    records = pl.DataFrame(
        {
            "subject_id": [r[0] for r in rows],
            "time": [datetime(2020, 1, 1 + r[1]) for r in rows],
            "stage": [r[2] for r in rows],
            "value": [r[3] for r in rows],
        },
        schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "stage": pl.Int8, "value": pl.Float64},
    )
    expected = (
        records.group_by("subject_id", "time")
        .agg(pl.col("stage").max(), pl.col("value").mean())
        .sort("subject_id", "time")
    )
    got = one_row_per_time(records, "time", "value")
    assert got.select("subject_id", "time", "stage").equals(expected.select("subject_id", "time", "stage"))
    assert got["value"].is_null().to_list() == expected["value"].is_null().to_list()
    assert got["value"].fill_null(0).to_list() == pytest.approx(expected["value"].fill_null(0).to_list(), rel=1e-12)
    assert one_row_per_time(records, "time").columns == ["subject_id", "time", "stage"]


def test_per_time_reduction_of_no_records_is_empty():
    from ehrprog.tasks.points import one_row_per_time

    empty = pl.DataFrame(schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "stage": pl.Int8, "v": pl.Float32})
    assert one_row_per_time(empty, "time", "v").schema == pl.Schema(
        {"subject_id": pl.Int64, "time": pl.Datetime("us"), "stage": pl.Int8, "v": pl.Float64}
    )
    assert one_row_per_time(empty, "time").columns == ["subject_id", "time", "stage"]
