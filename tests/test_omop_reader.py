"""OMOP reading: every shared extract loads, messy exports are understood, bad input is reported."""

from __future__ import annotations

from datetime import date, datetime

import polars as pl
import pytest
from conftest import OMOP_SETS, shared_path
from helpers import MEASUREMENT_HEADER, write_csv

import ehrprog as ep
from ehrprog.io.schema import EVENT_SCHEMA

PERSON_HEADER = [
    "person_id",
    "gender_concept_id",
    "year_of_birth",
    "month_of_birth",
    "day_of_birth",
    "birth_datetime",
    "race_concept_id",
    "ethnicity_concept_id",
]
COND_HEADER = [
    "condition_occurrence_id",
    "person_id",
    "condition_concept_id",
    "condition_start_date",
    "condition_start_datetime",
    "visit_occurrence_id",
    "condition_source_value",
    "condition_source_concept_id",
]


@pytest.mark.parametrize("name", OMOP_SETS)
def test_every_shared_omop_extract_loads_in_the_event_schema(name):
    events = ep.read_omop(shared_path(name))
    frame = events.collect()
    assert dict(frame.schema) == EVENT_SCHEMA
    assert frame.height > 1000
    assert frame["subject_id"].null_count() == 0
    assert frame["code"].null_count() == 0
    report = events.report
    assert report.rows_read == report.rows_kept + report.rows_dropped
    assert report.rows_kept == frame.height


def test_csv_and_parquet_copies_of_synthea27_give_identical_events():
    csv = ep.read_omop(shared_path("synthea27nj_omop/csv")).collect()
    parquet = ep.read_omop(shared_path("synthea27nj_omop/parquet")).collect()
    assert csv.equals(parquet)


def test_concept_table_gives_vocabulary_codes_and_the_ckd_patient_is_found():
    events = ep.read_omop(shared_path("synthea27nj_omop/parquet")).collect()
    ckd = events.filter(pl.col("code") == "SNOMED/431855005")
    assert ckd["subject_id"].to_list() == [10]
    assert ckd["time"].to_list() == [datetime(2020, 9, 6)]
    assert events.filter(pl.col("code") == "LOINC/2160-0").height == 12


def test_yyyymmdd_integer_dates_are_parsed():
    events = ep.read_omop(shared_path("synthea_nj_tutorial_etl_2025_omop")).collect()
    row = events.filter((pl.col("subject_id") == 1) & (pl.col("code") == "OMOP/4112343"))
    assert datetime(2011, 7, 22) in row["time"].to_list()
    assert events["time"].drop_nulls().dt.year().min() > 1900


def test_headerless_tab_separated_extract_uses_ddl_columns_and_condition_era():
    events = ep.read_omop(shared_path("synpuf_1k_omop"))
    frame = events.collect()
    assert frame["subject_id"].n_unique() == 1000
    assert frame.filter(pl.col("source") == "omop/condition_era").height > 90_000
    notes = " ".join(events.report.notes)
    assert "no header row" in notes and "condition_era" in notes
    # The 443597 (CKD stage 3) era concept is present as an OMOP concept code without a vocabulary.
    assert frame.filter(pl.col("code") == "OMOP/443597")["subject_id"].n_unique() > 100


def test_sentinel_datetimes_fall_back_to_the_date_column():
    frame = ep.read_omop(shared_path("synpuf_1k_omop")).collect()
    devices = frame.filter(pl.col("source") == "omop/device_exposure")
    assert devices.height > 0
    assert devices["time"].dt.year().min() >= 2007


def test_source_mode_uses_source_values(tmp_path):
    events = ep.read_omop(shared_path("synthea_tutorial_etl_2019_omop"), codes="source").collect()
    assert events.filter(pl.col("code").cat.starts_with("SOURCE/")).height > 1000


def _write_minimal(root, person_rows, cond_rows, sep=",", header=True):
    root.mkdir(exist_ok=True)
    write_csv(root / "person.csv", PERSON_HEADER if header else None, person_rows, sep)
    write_csv(root / "condition_occurrence.csv", COND_HEADER if header else None, cond_rows, sep)


def test_messy_values_padded_negative_ids_and_mixed_date_formats(tmp_path):
    big = -9_123_456_789_012_345_678
    _write_minimal(
        tmp_path / "omop",
        [[big, 8532, 1950, 3, 4, None, 0, 0], [2, 8507, 1960, None, None, None, 0, 0]],
        [
            [1, big, 443597, "20200115", None, None, "  N18.3  ", 0],
            [2, big, 443612, "2021-02-03", "2021-02-03 10:30:00", None, "N18.4", 0],
            [3, 2, 0, "2020-01-01", None, None, "N18.9", 0],
        ],
    )
    events = ep.read_omop(tmp_path / "omop")
    frame = events.collect()
    conds = frame.filter(pl.col("source") == "omop/condition_occurrence").sort("time")
    assert conds["subject_id"].to_list() == [2, big, big]
    assert conds["code"].to_list() == ["SOURCE/N18.9", "OMOP/443597", "OMOP/443612"]
    assert conds["time"].to_list() == [datetime(2020, 1, 1), datetime(2020, 1, 15), datetime(2021, 2, 3, 10, 30)]
    source_codes = ep.read_omop(tmp_path / "omop", codes="source").collect()
    assert "SOURCE/N18.3" in source_codes["code"].to_list()
    births = frame.filter(pl.col("code") == "MEDS_BIRTH").sort("subject_id")
    assert births["time"].to_list() == [datetime(1950, 3, 4), datetime(1960, 1, 1)]
    assert set(frame.filter(pl.col("time").is_null())["code"].to_list()) == {"Gender/F", "Gender/M"}


def test_units_are_trimmed_blank_units_are_null_and_unit_concepts_are_named(tmp_path):
    root = tmp_path / "omop"
    _write_minimal(root, [[1, 8532, 1950, 3, 4, None, 0, 0]], [])
    header = ["measurement_id", "person_id", "measurement_concept_id", "measurement_date"]
    header += ["value_as_number", "unit_concept_id", "unit_source_value"]
    rows = [
        [1, 1, 3016723, "2020-01-01", 1.2, None, "  mg/dL "],
        [2, 1, 3016723, "2020-01-02", 1.3, None, "mg/dL"],
        [3, 1, 3016723, "2020-01-03", 1.4, None, "   "],
        [4, 1, 3016723, "2020-01-04", 1.5, 8840, None],  # no unit text: named from the unit concept
        [5, 1, 3016723, "2020-01-05", 1.6, 123, None],  # unknown unit concept: no unit
    ]
    write_csv(root / "measurement.csv", header, rows)
    header = ["concept_id", "concept_name", "vocabulary_id", "concept_code"]
    write_csv(root / "concept.csv", header, [[8840, "milligram per deciliter", "UCUM", "mg/dL"]])
    labs = ep.read_omop(root).collect().filter(pl.col("source") == "omop/measurement").sort("time")
    assert labs["unit"].to_list() == ["mg/dL", "mg/dL", None, "mg/dL", None]
    assert labs["unit"].dtype == pl.Categorical


def test_missing_person_table_is_an_error_naming_the_folder(tmp_path):
    (tmp_path / "omop").mkdir()
    write_csv(tmp_path / "omop" / "condition_occurrence.csv", COND_HEADER, [])
    with pytest.raises(ep.InputError, match="person table") as info:
        ep.read_omop(tmp_path / "omop")
    assert info.value.file == str(tmp_path / "omop")


def test_missing_required_column_is_an_error_naming_file_and_column(tmp_path):
    root = tmp_path / "omop"
    _write_minimal(root, [[1, 8532, 1950, 1, 1, None, 0, 0]], [])
    write_csv(
        root / "condition_occurrence.csv",
        ["condition_occurrence_id", "person_id", "condition_start_date"],
        [[1, 1, "2020-01-01"]],
    )
    with pytest.raises(ep.InputError) as info:
        ep.read_omop(root)
    assert info.value.column == "condition_concept_id"
    assert info.value.file.endswith("condition_occurrence.csv")


def test_bad_rows_are_dropped_and_counted_by_reason(tmp_path):
    root = tmp_path / "omop"
    _write_minimal(
        root,
        [[1, 8532, 1950, 1, 1, None, 0, 0], [None, 8532, 1950, 1, 1, None, 0, 0], ["x", 8507, 1950, 1, 1, None, 0, 0]],
        [
            [1, 1, 443597, "2020-01-01", None, None, "N18.3", 0],
            [2, 1, 443597, "2020-01-01", None, None, "N18.3", 0],  # duplicate of the row above
            [3, None, 443597, "2020-01-01", None, None, "N18.3", 0],  # null person
            [4, 1, 443597, "not a date", None, None, "N18.3", 0],  # unparseable
            [5, 1, 443597, None, None, None, "N18.3", 0],  # null date
            [6, 1, 443597, "1940-01-01", None, None, "N18.3", 0],  # before birth
            [7, 99, 443597, "2020-01-01", None, None, "N18.3", 0],  # unknown person
            [8, 1, 0, "2020-02-01", None, None, None, 0],  # no concept, no source value
        ],
    )
    write_csv(root / "death.csv", ["person_id", "death_date"], [[1, "2021-01-01"]])
    write_csv(
        root / "condition_era.csv",
        ["condition_era_id", "person_id", "condition_concept_id", "condition_era_start_date"],
        [],
    )
    with open(root / "condition_occurrence.csv", "a") as handle:
        handle.write("9,1,443612,2022-01-01,,,N18.4,0\n")  # after death
    events = ep.read_omop(root)
    dropped = events.report.dropped
    assert dropped["person_id: null or not an integer"] == 2 + 1  # two person rows, one condition row
    assert any("duplicate event" in r and n == 1 for r, n in dropped.items())
    assert dropped["condition_start_date: unparseable date"] == 1
    assert dropped["condition_start_date: null date"] == 1
    assert dropped["time: event before the subject's birth (DQD plausibleAfterBirth)"] == 1
    assert dropped["time: event after the day of the subject's death (DQD plausibleBeforeDeath)"] == 1
    assert dropped["person_id: not in the person table"] == 1
    assert dropped["condition_concept_id: no concept and no source value"] == 1
    kept = events.collect().filter(pl.col("source") == "omop/condition_occurrence")
    assert kept.height == 1
    with pytest.raises(ep.InputError, match="break the rule"):
        ep.read_omop(root, strict=True)


def test_fractional_or_float_formatted_ids_are_never_truncated_onto_another_person(tmp_path):
    huge = 9007199254740993  # 2^53 + 1: a float64 would turn it into its neighbour
    _write_minimal(
        tmp_path / "omop",
        [
            [2, 8532, 1950, 1, 1, None, 0, 0],
            ["3.0", 8532, 1950, 1, 1, None, 0, 0],
            [f"{huge}.0", 8507, 1960, 1, 1, None, 0, 0],
        ],
        [
            [1, "2.7", 443612, "2020-01-01", None, None, "N18.4", 0],  # not person 2: dropped, counted
            [2, "3.000", 443597, "2020-01-01", None, None, "N18.3", 0],  # person 3
            [3, f"{huge}.0", 443597, "2020-01-01", None, None, "N18.3", 0],  # exactly 2^53 + 1
            [4, "1e0", 443597, "2020-01-01", None, None, "N18.3", 0],  # not an integer as written
        ],
    )
    events = ep.read_omop(tmp_path / "omop")
    conds = events.collect().filter(pl.col("source") == "omop/condition_occurrence")
    assert sorted(conds["subject_id"].to_list()) == [3, huge]
    assert 2 not in conds["subject_id"].to_list()
    assert events.report.dropped["person_id: null or not an integer"] == 2


def test_float_id_columns_in_parquet_are_exact_or_dropped(tmp_path):
    root = tmp_path / "omop"
    root.mkdir()
    pl.DataFrame(
        {"person_id": [1.0, 2.5], "gender_concept_id": [8532, 8507], "year_of_birth": [1950, 1960]}
    ).write_parquet(root / "person.parquet")
    pl.DataFrame(
        {
            "condition_occurrence_id": [1, 2, 3],
            "person_id": [1.0, 1.5, float(2**53 + 2)],
            "condition_concept_id": [443597, 443597, 443597],
            "condition_start_date": ["2020-01-01"] * 3,
        }
    ).write_parquet(root / "condition_occurrence.parquet")
    events = ep.read_omop(root)
    conds = events.collect().filter(pl.col("source") == "omop/condition_occurrence")
    assert conds["subject_id"].to_list() == [1]
    assert events.report.dropped["person_id: null or not an integer"] == 1 + 2  # person 2.5; rows 1.5 and 2^53+2


def test_values_that_cannot_be_kept_are_nulled_and_counted_by_column_and_reason(tmp_path):
    root = tmp_path / "omop"
    _write_minimal(root, [[1, 8532, 1950, 1, 1, None, 0, 0]], [])
    values = ["1.5", "2,5", "abc", "NaN", "inf", "1e400", "", "-0.25"]
    rows = [[i, 1, 3016723, f"2020-01-{i + 1:02d}", v, 7, "CREAT"] for i, v in enumerate(values)]
    rows.append([99, 1, 3016723, "2020-02-01", "1.0", "2.7", "CREAT"])  # a fractional visit id
    write_csv(root / "measurement.csv", MEASUREMENT_HEADER, rows, sep=";")  # so "2,5" needs no quoting
    events = ep.read_omop(root)
    labs = events.collect().filter(pl.col("source") == "omop/measurement").sort("time")
    assert labs.height == len(rows)  # no row dropped for a bad value
    kept = labs["numeric_value"].to_list()
    assert kept[0] == 1.5 and kept[7] == -0.25 and kept[8] == 1.0
    assert all(v is None for v in kept[1:7])  # "2,5" beside "1.5": the column's decimal mark is the dot
    assert labs["visit_id"].to_list()[-1] is None
    nulled = events.report.values_nulled
    assert nulled == {
        "value_as_number: not a finite number (nulled)": 4,  # abc, NaN, inf, 1e400 (a blank is no value)
        "value_as_number: a comma in a column that writes decimals with a dot (nulled)": 1,
        "visit_occurrence_id: not an integer (nulled)": 1,
    }
    assert "values nulled 4 in omop/measurement: value_as_number: not a finite number (nulled)" in str(events.report)


def test_a_line_with_more_fields_than_the_header_is_an_error_naming_file_and_line(tmp_path):
    root = tmp_path / "omop"
    _write_minimal(root, [[1, 8532, 1950, 1, 1, None, 0, 0]], [[1, 1, 0, "2020-01-01", None, None, "N18.4", 0]])
    with open(root / "condition_occurrence.csv", "a") as handle:
        handle.write('2,1,0,2020-01-02,,,"CKD, stage 4",0\n')  # quoted: fine
        handle.write("3,1,0,2020-01-03,,,CKD, stage 4,0\n")  # unquoted: one field too many
    with pytest.raises(
        ep.InputError, match=r"1 line\(s\) hold more fields than the 8 columns.*first at line 4"
    ) as info:
        ep.read_omop(root)
    assert info.value.file.endswith("condition_occurrence.csv")
    # quoted, the same value is read whole
    lines = (root / "condition_occurrence.csv").read_text().splitlines()
    (root / "condition_occurrence.csv").write_text("\n".join(lines[:-1]) + "\n")
    codes = ep.read_omop(root).collect().filter(pl.col("source") == "omop/condition_occurrence")["code"].to_list()
    assert "SOURCE/CKD, stage 4" in codes


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("person.parquet", b"", "the file is empty"),
        ("person.parquet", b"PAR1 this is not parquet at all", "not a readable Parquet file"),
        ("person.csv", b"", "the file is empty"),
        ("person.csv", b"person_id,gender_concept_id,year_of_birth\n1,8532,1950\n2;8507;1960\n", "another separator"),
        ("person.csv", b'person_id,gender_concept_id,year_of_birth\n1,8532,"1950\n2,8507,1960\n', "never closed"),
        (
            "person.csv",
            "person_id,gender_concept_id,year_of_birth,gender_source_value\n1,8532,1950,M\xe4nnlich\n".encode(
                "latin-1"
            ),
            "not valid UTF-8 .first at line 2",
        ),
    ],
)
def test_corrupt_files_are_errors_naming_the_file(tmp_path, name, content, message):
    root = tmp_path / "omop"
    root.mkdir()
    (root / name).write_bytes(content)
    with pytest.raises(ep.InputError, match=message) as info:
        ep.read_omop(root)
    assert info.value.file.endswith(name)


def test_a_truncated_parquet_file_is_an_error_naming_it(tmp_path):
    root = tmp_path / "omop"
    root.mkdir()
    pl.DataFrame({"person_id": list(range(1000)), "gender_concept_id": 8532, "year_of_birth": 1950}).write_parquet(
        root / "person.parquet"
    )
    data = (root / "person.parquet").read_bytes()
    (root / "person.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(ep.InputError, match="not a readable Parquet file") as info:
        ep.read_omop(root)
    assert info.value.file.endswith("person.parquet")


def test_person_records_that_contradict_themselves_are_counted_not_resolved_silently(tmp_path):
    root = tmp_path / "omop"
    _write_minimal(
        root,
        [
            [1, 8532, 1950, 13, 5, None, 0, 0],  # month 13: not December
            [2, 8507, 1960, 2, 30, None, 0, 0],  # 30 February
            [3, 8507, 1970, 1, 1, None, 0, 0],
            [3, 8532, 1975, 1, 1, None, 0, 0],  # a second, different row for person 3
            [4, 8532, 1980, 4, 30, None, 0, 0],  # a valid 30th
        ],
        [[1, 4, 443597, "2020-01-01", None, None, "N18.3", 0]],
    )
    write_csv(root / "death.csv", ["person_id", "death_date"], [[4, "1979-01-01"]])  # death before birth
    events = ep.read_omop(root)
    births = events.collect().filter(pl.col("code") == "MEDS_BIRTH").sort("subject_id")
    assert births["time"].dt.date().to_list() == [
        date(1950, 1, 5),
        date(1960, 2, 1),
        date(1970, 1, 1),
        date(1980, 4, 30),
    ]
    sex = events.subjects().sort("subject_id")["sex"].to_list()
    assert sex[2] == "M"  # person 3 keeps its first row's attributes
    assert events.report.values_nulled == {
        "month_of_birth: outside 1-12 (left out: January)": 1,
        "day_of_birth: not a day of the month (left out: the 1st)": 1,
    }
    dropped = events.report.dropped
    assert dropped["person_id: more than one person row for the person (the first kept)"] == 1
    assert dropped["death: before the subject's birth day (DQD plausibleAfterBirth)"] == 1
    # the bogus death bounds nothing: person 4's condition in 2020 is kept
    assert (
        events.collect().filter((pl.col("subject_id") == 4) & (pl.col("source") == "omop/condition_occurrence")).height
        == 1
    )


@pytest.mark.parametrize(
    "other",
    ["person.parquet", "person.csv.gz", "PERSON.csv"],
)
def test_two_files_for_one_table_are_refused_naming_both(tmp_path, other):
    """``person.csv`` beside a stale ``person.parquet`` (or a gzip copy, or another spelling of
    the name): one was read and the other ignored without a word."""
    import shutil

    root = tmp_path / "o"
    root.mkdir()
    write_csv(root / "person.csv", PERSON_HEADER, [[1, 8507, 1950, 1, 1, "", 0, 0]])
    assert ep.read_omop(root).collect()["subject_id"].unique().to_list() == [1]
    if other.endswith(".parquet"):
        pl.read_csv(root / "person.csv").write_parquet(root / other)
    elif other.endswith(".gz"):
        import gzip

        (root / other).write_bytes(gzip.compress((root / "person.csv").read_bytes()))
    else:
        shutil.copyfile(root / "person.csv", root / "tmp")
        (root / "tmp").rename(root / other)
        if len(list(root.iterdir())) == 1:
            pytest.skip("a case-insensitive file system holds one of PERSON.csv and person.csv")
    with pytest.raises(ep.InputError, match="2 files hold") as caught:
        ep.read_omop(root)
    assert "person.csv" in str(caught.value) and other in str(caught.value)


@pytest.mark.parametrize(
    "values, read, note",
    [
        (["2,5", "1,234", "7"], [2.5, 1.234, 7.0], "2 values read with a decimal comma"),  # the column's mark
        (["2.5", "1,234", "12,345.5"], [2.5, 1234.0, 12345.5], "2 values read with ',' as a thousands separator"),
        (["2.5", "2,5", "7"], [2.5, None, 7.0], "1 values hold a comma in a column that writes decimals with a dot"),
    ],
)
def test_the_decimal_mark_is_decided_per_column_and_counted(tmp_path, values, read, note):
    """ "1,234" was read as 1.234 even where the same column wrote decimals with a dot."""
    root = tmp_path / "omop"
    _write_minimal(root, [[1, 8532, 1950, 1, 1, None, 0, 0]], [])
    rows = [[i, 1, 3016723, f"2020-01-{i + 1:02d}", v, 7, "CREAT"] for i, v in enumerate(values)]
    write_csv(root / "measurement.csv", MEASUREMENT_HEADER, rows, sep=";")
    events = ep.read_omop(root)
    labs = events.collect().filter(pl.col("source") == "omop/measurement").sort("time")
    assert [v is None for v in labs["numeric_value"].to_list()] == [v is None for v in read]
    kept = [(g, w) for g, w in zip(labs["numeric_value"].to_list(), read, strict=True) if w is not None]
    assert all(g == pytest.approx(w, rel=1e-6) for g, w in kept)
    assert any(note in line for line in events.report.notes), events.report.notes
