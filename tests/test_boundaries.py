"""Boundaries that used to change values without a word: sentinel and implausible birth dates,
events after the extract's end, eGFR units, times with a UTC offset."""

from __future__ import annotations

from datetime import datetime

import polars as pl
import pytest
from helpers import MEASUREMENT_HEADER, write_csv

import ehrprog as ep

PERSON_HEADER = ["person_id", "gender_concept_id", "year_of_birth", "month_of_birth", "day_of_birth", "birth_datetime"]
COND_HEADER = ["condition_occurrence_id", "person_id", "condition_concept_id", "condition_start_date"]
MEAS_HEADER = [*MEASUREMENT_HEADER, "measurement_datetime", "unit_source_value"]


def _omop(root, persons, conditions=(), measurements=(), extra=None):
    root.mkdir(parents=True, exist_ok=True)
    write_csv(root / "person.csv", PERSON_HEADER, [list(p) for p in persons])
    write_csv(root / "condition_occurrence.csv", COND_HEADER, [list(c) for c in conditions])
    write_csv(root / "measurement.csv", MEAS_HEADER, [list(m) for m in measurements])
    for name, (header, rows) in (extra or {}).items():
        write_csv(root / f"{name}.csv", header, rows)
    return root


def _birth(events, subject):
    table = events.collect()
    return table.filter((pl.col("subject_id") == subject) & (pl.col("code") == "MEDS_BIRTH"))["time"].to_list()


def test_a_sentinel_birth_datetime_gives_way_to_year_month_and_day_and_is_counted(tmp_path):
    root = _omop(tmp_path / "o", [(1, 8507, 1949, 6, 15, "1900-01-01 00:00:00"), (2, 8532, 1960, 3, 2, "1960-03-02")])
    events = ep.read_omop(root)
    assert _birth(events, 1) == [datetime(1949, 6, 15)]
    assert _birth(events, 2) == [datetime(1960, 3, 2)]
    assert any("contradicts year/month/day_of_birth" in r for r in events.report.values_nulled)


def test_a_sentinel_birth_no_longer_moves_a_ckd_stage(tmp_path):
    """Creatinine 1.6 mg/dL in a man of 63 is eGFR ~48 (stage 3a); read as 112 years old it was 33."""
    measurements = [
        (i, 1, 3016723, f"20{10 + i}-01-01", 1.6, 1, "2160-0", f"20{10 + i}-01-01 10:00:00", "mg/dL")
        for i in range(1, 4)
    ]
    root = _omop(tmp_path / "o", [(1, 8507, 1949, 1, 1, "1900-01-01")], [(1, 1, 443597, "2010-06-01")], measurements)
    stages = ep.tasks.CKDProgression().stage_events(ep.read_omop(root))
    egfr = stages.filter(pl.col("source") == "egfr")["value"].to_list()
    assert egfr and all(45 < v < 55 for v in egfr)


def test_implausible_years_of_birth_are_dropped_and_counted(tmp_path):
    persons = [(1, 8507, 0, None, None, None), (2, 8507, -5, None, None, None), (3, 8507, 1850, None, None, None)]
    persons += [(4, 8507, 2999, None, None, None), (5, 8507, 1950, None, None, None)]
    events = ep.read_omop(_omop(tmp_path / "o", persons))
    dropped = events.report.dropped
    reason = next(r for r in dropped if r.startswith("year_of_birth: before 1900"))
    assert dropped[reason] == 4
    assert events.subjects()["subject_id"].to_list() == [5]


def test_events_after_the_extract_end_are_dropped_and_counted(tmp_path):
    conditions = [(1, 1, 443597, "2015-01-01"), (2, 1, 443611, "9999-12-31")]
    events = ep.read_omop(_omop(tmp_path / "today", [(1, 8507, 1950, 1, 1, None)], conditions))
    reasons = [r for r in events.report.dropped if "after the extract's end" in r]
    assert len(reasons) == 1 and events.report.dropped[reasons[0]] == 1 and "today" in reasons[0]
    # With cdm_source, its release date bounds the extract.
    source = (["cdm_source_name", "cdm_release_date"], [["test", "2016-06-30"]])
    later = [(1, 1, 443597, "2015-01-01"), (2, 1, 443612, "2016-07-01"), (3, 1, 443612, "2016-06-30")]
    events = ep.read_omop(_omop(tmp_path / "cdm", [(1, 8507, 1950, 1, 1, None)], later, extra={"cdm_source": source}))
    reason = next(r for r in events.report.dropped if "after the extract's end" in r)
    assert events.report.dropped[reason] == 1 and "2016-06-30" in reason and "cdm_source" in reason
    # Else the latest observation period end.
    period = (
        ["observation_period_id", "person_id", "observation_period_start_date", "observation_period_end_date"],
        [[1, 1, "2010-01-01", "2015-12-31"]],
    )
    events = ep.read_omop(
        _omop(tmp_path / "op", [(1, 8507, 1950, 1, 1, None)], later, extra={"observation_period": period})
    )
    reason = next(r for r in events.report.dropped if "after the extract's end" in r)
    assert events.report.dropped[reason] == 2 and "observation_period" in reason


def test_a_ckd_diagnosis_dated_9999_is_no_progression(tmp_path):
    conditions = [(1, 1, 443597, "2015-01-01"), (2, 1, 443597, "2016-01-01"), (3, 1, 443611, "9999-12-31")]
    cohort = ep.tasks.CKDProgression().build(
        ep.read_omop(_omop(tmp_path / "o", [(1, 8507, 1950, 1, 1, None)], conditions))
    )
    assert not cohort.y["event"].any()
    assert cohort.y["time_to_event_days"].max() < 400


def test_egfr_units_are_read(tmp_path):
    """eGFR 0.97 mL/s/1.73 m2 is 58 mL/min/1.73 m2 (stage 3), not stage 5; an eGFR row in mg/dL
    is no eGFR: left out of staging and counted."""
    rows = [
        (1, 1, 0, "2015-01-01", 0.97, 1, "62238-1", None, "mL/s/{1.73_m2}"),
        (2, 1, 0, "2015-06-01", 1.2, 2, "62238-1", None, "mg/dL"),
        (3, 1, 0, "2015-09-01", 44.0, 3, "62238-1", None, None),
        (4, 1, 0, "2015-12-01", 40.0, 4, "62238-1", None, "mL/min/1.73 m2"),
    ]
    concept = (
        ["concept_id", "concept_name", "vocabulary_id", "concept_code"],
        [[40764999, "eGFR CKD-EPI", "LOINC", "62238-1"], [443597, "CKD stage 3", "SNOMED", "433144002"]],
    )
    rows = [(m[0], m[1], 40764999, *m[3:]) for m in rows]
    root = _omop(
        tmp_path / "o", [(1, 8507, 1950, 1, 1, None)], [(1, 1, 443597, "2015-01-01")], rows, {"concept": concept}
    )
    events = ep.read_omop(root)
    task = ep.tasks.CKDProgression(confirm_days=None, compute_egfr=False)
    records, counts = task._stage(events, include_unstaged=False)
    egfr = records.filter(pl.col("source") == "egfr").sort("time")
    assert egfr["value"].to_list() == pytest.approx([0.97 * 60, 44.0, 40.0], rel=1e-6)
    assert egfr["stage"].to_list() == [3, 3, 3]
    assert any("unit not a unit of egfr" in r and "mg/dL" in r for r in counts)


def test_times_with_a_utc_offset_are_converted_and_unreadable_times_counted(tmp_path):
    rows = [
        (1, 1, 3016723, "2012-09-25", 1.0, 1, "2160-0", "2012-09-25T23:30:00+05:00", "mg/dL"),
        (2, 1, 3016723, "2012-09-26", 1.0, 2, "2160-0", "2012-09-26T10:00:00Z", "mg/dL"),
        (3, 1, 3016723, "2012-09-27", 1.0, 3, "2160-0", "1348615800", "mg/dL"),  # epoch seconds
    ]
    events = ep.read_omop(_omop(tmp_path / "o", [(1, 8507, 1950, 1, 1, None)], measurements=rows))
    times = events.collect().filter(pl.col("source") == "omop/measurement").sort("time")["time"].to_list()
    assert times == [datetime(2012, 9, 25, 18, 30), datetime(2012, 9, 26, 10, 0), datetime(2012, 9, 27)]
    nulled = events.report.values_nulled
    assert nulled.get("measurement_datetime: unreadable (not an ISO or YYYYMMDD time), the date used") == 1


def test_a_time_zone_aware_parquet_datetime_is_converted_to_utc(tmp_path):
    root = _omop(tmp_path / "o", [(1, 8507, 1950, 1, 1, None)])
    (root / "measurement.csv").unlink()
    pl.DataFrame(
        {
            "measurement_id": [1],
            "person_id": [1],
            "measurement_concept_id": [3016723],
            "measurement_date": [datetime(2012, 9, 25).date()],
            "measurement_datetime": pl.Series([datetime(2012, 9, 25, 23, 30)]).dt.replace_time_zone("Asia/Karachi"),
            "value_as_number": [1.0],
        }
    ).write_parquet(root / "measurement.parquet")
    events = ep.read_omop(root)
    time = events.collect().filter(pl.col("source") == "omop/measurement")["time"].to_list()
    assert time == [datetime(2012, 9, 25, 18, 30)]


def test_an_event_outside_its_visits_span_loses_the_id_and_is_counted(tmp_path):
    """A measurement carrying the first visit's id three years later stretched that visit from 2012
    to 2015 (and zeroed n_visits of every later point): its id is not kept, counted, and the
    visit_id strategy attaches it by time; a visit ending before it starts spans its start day."""
    visit_header = ["visit_occurrence_id", "person_id", "visit_concept_id", "visit_start_date", "visit_end_date"]
    visits = [[1, 1, 9202, "2012-01-10", "2012-01-10"], [2, 1, 9202, "2015-03-01", "2015-02-01"]]
    rows = [
        (1, 1, 3016723, "2012-01-10", 1.0, 1, "2160-0", None, "mg/dL"),
        (2, 1, 3016723, "2015-03-01", 1.1, 1, "2160-0", None, "mg/dL"),  # visit 1's id, three years on
        (3, 1, 3016723, "2015-03-01", 1.2, 2, "2160-0", None, "mg/dL"),
    ]
    root = _omop(
        tmp_path / "o",
        [(1, 8507, 1950, 1, 1, None)],
        measurements=rows,
        extra={"visit_occurrence": (visit_header, visits)},
    )
    events = ep.read_omop(root)
    labs = events.collect().filter(pl.col("source") == "omop/measurement").sort("time", "numeric_value")
    assert labs["visit_id"].to_list() == [1, None, 2]
    assert sum(n for r, n in events.report.values_nulled.items() if "outside its visit's span" in r) == 1
    assert any(
        "1 visit(s) in visit_occurrence: visit_end_date: before visit_start_date" in n for n in events.report.notes
    )
    visits_frame = ep.group_visits(events, "visit_id").visits()
    spans = visits_frame.select("visit_id", "start", "end").sort("start")
    assert spans["end"].dt.year().to_list() == [2012, 2015]  # visit 1 is not stretched to 2015
