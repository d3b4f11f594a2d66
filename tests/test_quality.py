"""DQD-style plausibility: sex-specific codes on the other sex (plausibleGender), check names."""

from __future__ import annotations

from datetime import datetime

import polars as pl

import ehrprog as ep
from ehrprog.io.quality import plausible_gender, sex_specific_codes
from tests.helpers import events as make_events


def test_sex_specific_codes_by_icd_chapter_and_by_description():
    codes = pl.Series(["ICD10CM/O80", "ICD10CM/C61", "ICD10CM/N18.3", "SNOMED/1", "SNOMED/2", "ICD10CM/Z34.0"])
    described = pl.DataFrame({"code": ["SNOMED/1", "SNOMED/2"], "description": ["Normal pregnancy", "Hypertension"]})
    table = dict(sex_specific_codes(codes, described).iter_rows())
    assert table == {"ICD10CM/O80": "F", "ICD10CM/C61": "M", "SNOMED/1": "F", "ICD10CM/Z34.0": "F"}


def test_plausible_gender_counts_codes_recorded_for_the_other_sex(tmp_path):
    rows = [
        (1, None, "Gender/M"),
        (1, "1950-01-01", "MEDS_BIRTH"),
        (1, "2020-01-01", "ICD10CM/O80"),  # pregnancy, male: implausible
        (2, None, "Gender/F"),
        (2, "1960-01-01", "MEDS_BIRTH"),
        (2, "2020-01-01", "ICD10CM/O80"),  # plausible
        (2, "2021-01-01", "ICD10CM/C61"),  # prostate cancer, female: implausible
        (3, "1970-01-01", "MEDS_BIRTH"),
        (3, "2020-01-01", "ICD10CM/C61"),  # sex unknown: not judged
    ]
    events = make_events(rows)
    found = plausible_gender(events)
    assert found["events"].sum() == 2
    # A reader adds the finding to the ingest report as a DQD-named note.
    out = ep.write_meds(events, tmp_path / "meds")
    notes = [n for n in ep.read_meds(out).report.notes if n.startswith("DQD plausibleGender")]
    assert len(notes) == 1 and "2 event(s)" in notes[0]


def test_events_outside_life_carry_the_dqd_check_names(tmp_path):
    root = tmp_path / "d" / "data"
    root.mkdir(parents=True)
    pl.DataFrame(
        {
            "subject_id": [1, 1, 1, 1],
            "time": [datetime(1950, 1, 1), datetime(1940, 1, 1), datetime(2000, 1, 1), datetime(2001, 1, 1)],
            "code": ["MEDS_BIRTH", "X", "MEDS_DEATH", "Y"],
        }
    ).write_parquet(root / "0.parquet")
    dropped = ep.read_meds(tmp_path / "d").report.dropped
    assert dropped == {
        "time: event before the subject's birth (DQD plausibleAfterBirth)": 1,
        "time: event after the day of the subject's death (DQD plausibleBeforeDeath)": 1,
    }
