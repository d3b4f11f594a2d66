"""Targets ``y`` as the estimator and the baselines read them: events are bool or 0/1, stages are
whole numbers, and every other coding is refused naming the column (each of these was read
silently before: 1/2-coded events made every point an event, -1 counted as an event, stage 3.5
became classes 3 and 4)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sksurv.util import Surv

from ehrprog.cohorts.targets import split_targets


def _y(**columns) -> pl.DataFrame:
    base = {"stage": [1.0, 2.0, 3.0], "event": [False, True, False], "time_to_event_days": [10.0, 20.0, 30.0]}
    return pl.DataFrame({**base, **columns}, strict=False)


def test_bool_and_0_1_events_read_alike():
    for event in ([False, True, False], [0, 1, 0], [0.0, 1.0, 0.0]):
        assert split_targets(_y(event=event), 3)[1].tolist() == [False, True, False]


@pytest.mark.parametrize(
    "event, rule",
    [
        ([1, 2, 2], "must be bool or 0/1.*first at row 1: 2.*R's survival convention"),
        ([-1, 0, 1], "must be bool or 0/1.*first at row 0: -1"),
        ([None, 1, 0], "column 'event' must not be null.*first at row 0"),
        (["yes", "no", "no"], "column 'event' must be bool or 0/1.*String"),
    ],
)
def test_events_other_than_bool_or_0_1_are_refused_naming_the_column(event, rule):
    with pytest.raises(ValueError, match=rule):
        split_targets(_y(event=event), 3)


def test_a_stage_that_is_not_a_whole_number_is_refused():
    with pytest.raises(ValueError, match=r"column 'stage' must hold whole-number stages.*row 1: 3.5"):
        split_targets(_y(stage=[1.0, 3.5, 2.0]), 3)
    with pytest.raises(ValueError, match=r"the stages must hold whole-number stages"):
        split_targets(np.array([1.0, 2.0, 2.5]), 3)
    stage = split_targets(_y(stage=[1, None, 3]), 3)[0]  # a missing stage stays missing
    assert np.isnan(stage[1]) and stage[[0, 2]].tolist() == [1.0, 3.0]


def test_structured_survival_arrays_need_bool_or_0_1_events():
    assert split_targets(Surv.from_arrays([True, False], [1.0, 2.0]), 2)[1].tolist() == [True, False]
    coded = np.array([(2, 1.0), (1, 2.0)], dtype=[("status", "i8"), ("time", "f8")])
    with pytest.raises(ValueError, match="field 'status' must be bool or 0/1"):
        split_targets(coded, 2)


def test_the_estimator_refuses_1_2_coded_events(sim_cohort):
    from ehrprog import VisitProgressionEstimator

    y = sim_cohort.y.with_columns(pl.col("event").cast(pl.Int64) + 1)
    with pytest.raises(ValueError, match="column 'event' must be bool or 0/1"):
        VisitProgressionEstimator(target="progression", max_epochs=1).fit(sim_cohort.X, y)
