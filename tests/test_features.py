"""Point features: what they compute, and that nothing after a prediction time reaches them."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

import ehrprog as ep
from ehrprog.cohorts.cohort import CohortX
from ehrprog.features.point import PointFeatures
from tests.helpers import events as make_events
from tests.helpers import points as make_points
from tests.helpers import truncated


@pytest.fixture(scope="module")
def cohort(sim_omop):
    return ep.tasks.CKDProgression().build(ep.read_omop(sim_omop))


def test_features_read_nothing_after_the_prediction_time(cohort):
    """Every feature of a point is the same when everything after its prediction time is deleted."""
    features = PointFeatures(max_history_codes=16).fit(cohort.X)
    assert features.history_codes
    full = features.transform(cohort.X)
    rng = np.random.default_rng(0)
    # Points with later history (not a subject's last point), where a leak would show.
    later = cohort.X.points.with_row_index("row").filter(
        pl.col("n_visits") < pl.col("n_visits").max().over("subject_id")
    )["row"]
    for row in rng.choice(later.to_numpy(), size=25, replace=False):
        alone = features.transform(truncated(cohort.X, int(row)))
        np.testing.assert_array_equal(alone[0], full[row], err_msg=f"point {row} reads past its prediction time")


def test_features_in_chunks_equal_the_features_at_once(cohort, monkeypatch):
    """A part is computed POINT_CHUNK points at a time; a chunk that splits a subject's points
    still gives exactly the rows the whole part gives (the memory bound changes no number)."""
    from ehrprog.cohorts import cohort as cohort_module

    features = PointFeatures(max_history_codes=16).fit(cohort.X)
    whole = features.transform(cohort.X)
    monkeypatch.setattr(cohort_module, "POINT_CHUNK", 97)  # a prime: chunks cut through subjects
    assert len(cohort.X) > 3 * 97
    np.testing.assert_array_equal(features.transform(cohort.X), whole)


def test_changing_a_later_reading_changes_no_earlier_point(cohort):
    """The same check on the inputs as given: later task-lab readings set to nonsense move nothing."""
    features = PointFeatures().fit(cohort.X)
    cut = cohort.X.points["prediction_time"].sort()[len(cohort.X) // 2]
    labs = cohort.X.labs.with_columns(
        pl.when(pl.col("time") > cut).then(pl.lit(1.0)).otherwise(pl.col("value")).alias("value")
    )
    changed = CohortX(cohort.X.points, cohort.X.visits, labs)
    early = (cohort.X.points["prediction_time"] <= cut).to_numpy()
    before, after = features.transform(cohort.X), features.transform(changed)
    np.testing.assert_array_equal(before[early], after[early])
    assert not np.array_equal(before[~early], after[~early])  # the check can fail


def _series_x(days: list[int], values: list[float], predict_at: int) -> CohortX:
    """One subject with one lab ``L/X`` read on ``days`` (since 2019-01-01) and one point at day ``predict_at``."""
    start = datetime(2019, 1, 1)
    rows = [(1, "1950-06-01", "MEDS_BIRTH"), (1, None, "Gender/F")]
    rows += [(1, (start + timedelta(days=d)).isoformat(), "L/X", v) for d, v in zip(days, values, strict=True)]
    visits = ep.group_visits(make_events(rows), "same_day")
    n_visits = sum(1 for d in days if d <= predict_at)
    points = make_points([1], [start + timedelta(days=predict_at, hours=23)], [n_visits])
    return CohortX(points, visits)


def test_last_value_trend_and_age_of_a_linear_series():
    days = [0, 100, 200, 300, 400]
    values = [60.0 - 0.03 * d for d in days]  # -0.03 per day: -10.9575 per year
    X = _series_x(days, values, predict_at=500)
    features = PointFeatures(min_readings=1).fit(X)
    row = dict(zip(features.names, features.transform(X)[0], strict=True))
    mean, std = features.lab_mean[0], features.lab_std[0]
    assert features.labs == ["L/X"]
    assert row["L/X:last"] * std + mean == pytest.approx(values[-1], abs=1e-4)
    assert row["L/X:slope"] * std == pytest.approx(-0.03 * 365.25, rel=1e-4)
    assert row["L/X:trend_value"] * std + mean == pytest.approx(values[-1], abs=1e-3)  # on the line
    assert row["L/X:age"] == pytest.approx(np.log1p((100 + 23 / 24) / 365.25), abs=1e-4)  # read 100 days 23 h before
    assert row["L/X:has"] == row["L/X:has_slope"] == 1.0
    assert row["female"] == 1.0 and row["male"] == 0.0
    assert row["age"] * features.age_std + features.age_mean == pytest.approx((500 + 365.25 * 68.6) / 365.25, abs=0.1)


def test_no_trend_from_readings_closer_than_min_trend_days():
    X = _series_x([0, 30, 60], [50.0, 48.0, 46.0], predict_at=61)
    row = dict(zip(*(lambda f: (f.names, f.transform(X)[0]))(PointFeatures(min_readings=1).fit(X)), strict=True))
    assert row["L/X:has"] == 1.0 and row["L/X:has_slope"] == 0.0 and row["L/X:slope"] == 0.0


def test_the_task_lab_comes_first_and_holds_computed_values(cohort, sim_omop):
    """CKD's eGFR (recorded or computed from creatinine) is a lab of its own, read from the task."""
    features = PointFeatures().fit(cohort.X)
    assert features.labs[0] == "egfr"
    # Every plausible reading, recorded or computed (the label options change only the labels).
    readings = (
        ep.tasks.CKDProgression()
        .stage_events(ep.read_omop(sim_omop))
        .filter((pl.col("source") == "egfr") & pl.col("subject_id").is_in(cohort.groups.tolist()))
    )
    assert cohort.X.labs.filter(pl.col("subject_id").is_in(cohort.groups.tolist())).height == readings.height
    table = features.transform(cohort.X)
    assert table.shape == (len(cohort.X), features.n_features)
    assert np.isfinite(table).all()
    assert table[:, features.names.index("egfr:has")].mean() > 0.95


def test_the_problem_list_flags_a_code_from_the_first_visit_holding_it(cohort):
    features = PointFeatures(max_history_codes=8).fit(cohort.X)
    assert len(features.history_codes) == 8 and not set(features.history_codes) & set(features.labs)
    table = features.transform(cohort.X)
    code = features.history_codes[0]
    column = table[:, features.names.index(f"history:{code}")]
    # By hand: the first visit index holding the code, per subject; a point sees it when it came earlier.
    visits = cohort.X.visits.frame.select("subject_id", "visits").explode("visits").unnest("visits")
    first = dict(
        visits.filter(pl.col("codes").list.contains(code))
        .group_by("subject_id")
        .agg(pl.col("visit_index").min())
        .iter_rows()
    )
    points = cohort.X.points
    expected = [
        float(s in first and first[s] < n)
        for s, n in zip(points["subject_id"].to_list(), points["n_visits"].to_list(), strict=True)
    ]
    np.testing.assert_array_equal(column, expected)
    assert 0 < column.mean() < 1
