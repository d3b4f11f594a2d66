"""Label options a nephrologist accepts: sustained eGFR stages, progression above the highest
stage so far, and a warning when recorded stages swing implausibly."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
from helpers import events as make_events

from ehrprog.tasks import CKDProgression

PERSON = [(1, None, "Gender/M"), (1, "1950-01-01", "MEDS_BIRTH")]
EGFR = "LOINC/62238-1"
START = datetime(2020, 1, 1)


def _egfr_series(values: list[float], every_days: int, diagnosis: str = "ICD10CM/N18.3") -> list[tuple]:
    rows = [*PERSON, (1, START.isoformat(), diagnosis)]
    return rows + [(1, (START + timedelta(days=i * every_days)).isoformat(), EGFR, v) for i, v in enumerate(values)]


def test_a_swinging_egfr_is_progression_only_with_single_readings():
    """eGFR alternating monthly between stage 4 (25) and stage 1 (95): single readings make a
    'progression' at every swing; stages sustained for 90 days never exceed the lowest recent one."""
    events = make_events(_egfr_series([25.0, 95.0] * 8, every_days=30))
    single = CKDProgression(confirm_days=None, progression="above_current").build(events)
    assert single.y["event"].sum() >= 6
    sustained = CKDProgression(confirm_days=90, progression="above_current").build(events)
    assert sustained.stages.filter(pl.col("source") == "egfr")["stage"].max() == 1
    assert sustained.y["event"].sum() == 0
    assert sum(count for reason, count in sustained.report.items() if "not yet sustained" in reason) == 3


def test_a_sustained_decline_is_progression_at_the_confirming_reading():
    """Stage 3 (50) for a year, then 25 (stage 4) from day 390 on, read every 30 days: the fall is
    confirmed 90 days later at the first reading whose last 90+ days are all stage 4."""
    values = [50.0] * 13 + [25.0] * 8  # days 0..360 at 50, days 390..600 at 25
    events = make_events(_egfr_series(values, every_days=30))
    cohort = CKDProgression(confirm_days=90).build(events)
    egfr = cohort.stages.filter(pl.col("source") == "egfr")
    first_four = egfr.filter(pl.col("stage") == 4)["time"].min()
    assert first_four == START + timedelta(days=390 + 90)  # readings on days 390, 420, 450, 480
    single = CKDProgression(confirm_days=None).build(events)
    assert single.stages.filter(pl.col("stage") == 4)["time"].min() == START + timedelta(days=390)


def test_a_confirmed_stage_reads_nothing_after_its_reading():
    """Deleting every later reading changes no earlier confirmed stage (decided when it is read)."""
    rng = np.random.default_rng(0)
    values = list(np.clip(60 - np.arange(30) * 1.5 + rng.normal(0, 6, 30), 5, 120))
    full = CKDProgression(confirm_days=90).build(make_events(_egfr_series(values, every_days=20)))
    full_egfr = full.stages.filter(pl.col("source") == "egfr").select("time", "stage")
    for cut in (10, 18, 25):
        part = CKDProgression(confirm_days=90).build(make_events(_egfr_series(values[:cut], every_days=20)))
        part_egfr = part.stages.filter(pl.col("source") == "egfr").select("time", "stage")
        assert part_egfr.equals(full_egfr.head(part_egfr.height))


def test_above_highest_counts_no_return_to_a_former_stage():
    """4 -> 2 -> 4 by diagnosis: above the current stage the return is a progression; above the
    highest stage so far it is not."""
    rows = [
        *PERSON,
        (1, "2020-01-01", "ICD10CM/N18.4"),
        (1, "2020-06-01", "ICD10CM/N18.2"),
        (1, "2021-01-01", "ICD10CM/N18.4"),
        (1, "2021-06-01", "X"),
    ]
    current = CKDProgression(progression="above_current").build(make_events(rows))
    assert current.y["event"].to_list() == [False, True, False]
    highest = CKDProgression(progression="above_highest").build(make_events(rows))
    assert highest.X.points["current_stage"].to_list() == [4, 4, 4]
    assert highest.y["event"].to_list() == [False, False, False]


def test_the_summary_warns_when_recorded_stages_swing():
    rows = [*PERSON]
    for i, code in enumerate(["N18.4", "N18.1", "N18.4", "N18.1", "N18.4"]):
        rows.append((1, (START + timedelta(days=60 * i)).isoformat(), f"ICD10CM/{code}"))
    rows.append((1, (START + timedelta(days=400)).isoformat(), "X"))
    naive = CKDProgression(progression="above_current", confirm_days=None).build(make_events(rows))
    assert len(naive.warnings) == 1
    assert "subject 1: 4 -> 1 -> 4 -> 1 -> 4" in naive.warnings[0]
    assert "consider confirm_days=90" in naive.summary()
    robust = CKDProgression().build(make_events(rows))
    assert "absorb such swings" in robust.warnings[0]


def test_no_warning_for_a_steady_decline():
    rows = [*PERSON]
    for i, code in enumerate(["N18.2", "N18.3", "N18.3", "N18.4"]):
        rows.append((1, (START + timedelta(days=90 * i)).isoformat(), f"ICD10CM/{code}"))
    assert CKDProgression().build(make_events(rows)).warnings == []


@pytest.mark.parametrize("bad", [0, -5, float("nan")])
def test_confirm_days_must_be_positive(bad):
    with pytest.raises(ValueError, match="confirm_days"):
        CKDProgression(confirm_days=bad)


def _late_diagnosis() -> list[tuple]:
    """eGFR 75 (stage 2) every 60 days for two years, a CKD stage 3 diagnosis on day 400, then
    readings at 50 (stage 3, sustained) and 25 (stage 4)."""
    rows = list(PERSON)
    for i, value in enumerate([75.0] * 7 + [50.0] * 6 + [25.0] * 4):
        rows.append((1, (START + timedelta(days=60 * i)).isoformat(), EGFR, value))
    return [*rows, (1, (START + timedelta(days=400)).isoformat(), "ICD10CM/N18.3")]


def test_prospective_eligibility_starts_points_at_the_first_evidence_on_record():
    events = make_events(_late_diagnosis())
    prospective = CKDProgression().build(events)
    retrospective = CKDProgression(eligibility="retrospective").build(events)
    evidence = START + timedelta(days=400)  # the diagnosis; no lab stage >= 3 is sustained before it
    assert prospective.X.points["prediction_time"].min() >= evidence
    assert retrospective.X.points["prediction_time"].min() < evidence
    assert set(prospective.X.points["prediction_time"]) <= set(retrospective.X.points["prediction_time"])
    left_out = [n for reason, n in prospective.report.items() if "prospective eligibility" in reason]
    assert left_out and left_out[0] == len(retrospective.X) - len(prospective.X)
    # The points kept have the same targets under both rules (only the selection differs).
    kept = retrospective.X.points.with_row_index("_r").join(
        prospective.X.points.select("prediction_time"), on="prediction_time"
    )["_r"]
    assert retrospective.y[kept.to_numpy()].equals(prospective.y)


def test_prospective_eligibility_reads_nothing_after_the_prediction_time():
    """Deleting everything after a point (the diagnosis included) never removes an earlier point:
    whether a point qualifies is decided by what was recorded up to it."""
    rows = _late_diagnosis()
    full = CKDProgression().build(make_events(rows))
    cut_at = START + timedelta(days=600)
    kept = [r for r in rows if r[1] is None or datetime.fromisoformat(r[1]) <= cut_at]
    part = CKDProgression().build(make_events(kept))
    early = full.X.points.filter(pl.col("prediction_time") < cut_at)["prediction_time"]
    assert set(early) <= set(part.X.points["prediction_time"])


def test_eligibility_must_be_prospective_or_retrospective():
    with pytest.raises(ValueError, match="eligibility must be"):
        CKDProgression(eligibility="ever")
