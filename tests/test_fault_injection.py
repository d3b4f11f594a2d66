"""Fault injection: valid OMOP and MEDS tables with faults of every class injected.

The invariant, for every generated case: each injected fault ends in an ``InputError`` naming the
file, or in a count in the ingest report (a dropped row, or a nulled value) with its reason; rows
read = kept + dropped for the table; and no kept value differs from what the file said.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ehrprog as ep
from tests.helpers import MEASUREMENT_HEADER

PERSON_HEADER = ["person_id", "gender_concept_id", "year_of_birth"]
NULLED_NUMBER = "value_as_number: not a finite number (nulled)"
#: "2,5" in a column that writes "2.5" elsewhere: the column's decimal mark is the dot.
NULLED_COMMA = "value_as_number: a comma in a column that writes decimals with a dot (nulled)"
DOT_DECIMAL = re.compile(r"[+-]?\d*\.\d+(?:[eE][+-]?\d+)?")
NULLED_VISIT = "visit_occurrence_id: not an integer (nulled)"
BAD_PERSON = "person_id: null or not an integer"

#: The order in which the reader's rules name a row's drop.
DROP_ORDER = [BAD_PERSON, "measurement_date: unparseable date", "person_id: not in the person table"]
#: fault -> (what the cell becomes, the expected outcome)
#: outcome: ("drop", reason) | ("null", reason) | ("value", kept value) | ("error", message)
ROW_FAULTS = {
    "fractional person id": ("person_id", lambda r: f"{r['person_id']}.7", ("drop", BAD_PERSON)),
    "null person id": ("person_id", lambda r: "", ("drop", BAD_PERSON)),
    "unknown person": ("person_id", lambda r: "999999", ("drop", "person_id: not in the person table")),
    "unparseable date": ("measurement_date", lambda r: "2020-13-45", ("drop", "measurement_date: unparseable date")),
    "text number": ("value_as_number", lambda r: "abc", ("null", NULLED_NUMBER)),
    "NaN": ("value_as_number", lambda r: "NaN", ("null", NULLED_NUMBER)),
    "infinity": ("value_as_number", lambda r: "-inf", ("null", NULLED_NUMBER)),
    "overflow": ("value_as_number", lambda r: "1e400", ("null", NULLED_NUMBER)),
    "decimal comma": ("value_as_number", lambda r: '"2,5"', ("value", 2.5)),
    "float-formatted person id": ("person_id", lambda r: f"{r['person_id']}.0", ("value", None)),
    "fractional visit id": ("visit_occurrence_id", lambda r: "3.5", ("null", NULLED_VISIT)),
}
FILE_FAULTS = {
    "ragged line": (lambda line: line + ",extra", "more fields than"),
    "broken quote": (lambda line: line.replace(",CREAT", ',"CREAT'), "never closed"),
    "latin-1 bytes": (None, "not valid UTF-8"),
}


@st.composite
def cases(draw):
    n_people = draw(st.integers(1, 4))
    n_rows = draw(st.integers(1, 8))
    rows = []
    for i in range(n_rows):
        value = draw(st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False).map(lambda v: round(v, 3))))
        rows.append(
            {
                "measurement_id": i + 1,
                "person_id": draw(st.integers(1, n_people)),
                "measurement_concept_id": 3016723,
                "measurement_date": f"2020-01-{i + 1:02d}",  # distinct dates: no row duplicates another
                "value_as_number": "" if value is None else repr(value),
                "visit_occurrence_id": draw(st.integers(1, 50)),
                "measurement_source_value": "CREAT",
            }
        )
    faults = draw(st.lists(st.tuples(st.integers(0, n_rows - 1), st.sampled_from(sorted(ROW_FAULTS))), max_size=4))
    file_fault = draw(st.one_of(st.none(), st.sampled_from(sorted(FILE_FAULTS))))
    return n_people, rows, faults, file_fault


def _write(root: Path, n_people: int, rows: list[dict], faults, file_fault) -> dict:
    """Write the folder; return the expected outcome per row."""
    root.mkdir(parents=True, exist_ok=True)
    people = "\n".join(f"{p},8532,1950" for p in range(1, n_people + 1))
    (root / "person.csv").write_text(",".join(PERSON_HEADER) + "\n" + people + "\n")
    expected = {i: [] for i in range(len(rows))}
    cells = [{k: str(v) for k, v in row.items()} for row in rows]
    for index, fault in faults:
        column, change, outcome = ROW_FAULTS[fault]
        if any(c == column for c, _ in expected[index]):
            continue  # one fault per cell
        cells[index][column] = change(rows[index])
        expected[index].append((column, outcome))
    # The decimal mark is the column's: "2,5" is 2.5 only where no other cell writes a decimal dot.
    if any(DOT_DECIMAL.fullmatch(cell["value_as_number"]) for cell in cells):
        for outcomes in expected.values():
            outcomes[:] = [(c, ("null", NULLED_COMMA) if o == ("value", 2.5) else o) for c, o in outcomes]
    lines = [",".join(cell[c] for c in MEASUREMENT_HEADER) for cell in cells]
    if file_fault in ("ragged line", "broken quote"):
        lines[-1] = FILE_FAULTS[file_fault][0](lines[-1])
    data = (",".join(MEASUREMENT_HEADER) + "\n" + "\n".join(lines) + "\n").encode()
    if file_fault == "latin-1 bytes":
        data = data.replace(b",CREAT", ",CR\xc9AT".encode("latin-1"), 1)
    (root / "measurement.csv").write_bytes(data)
    return expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_every_injected_omop_fault_is_an_error_or_a_count(case):
    n_people, rows, faults, file_fault = case
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "omop"
        expected = _write(root, n_people, rows, faults, file_fault)
        if file_fault is not None:
            with pytest.raises(ep.InputError, match=FILE_FAULTS[file_fault][1]) as info:
                ep.read_omop(root)
            assert info.value.file.endswith("measurement.csv")
            return
        events = ep.read_omop(root)
    report = events.report
    table = report.by_source().filter(pl.col("source") == "omop/measurement").row(0, named=True)
    assert table["read"] == len(rows) and table["read"] == table["kept"] + table["dropped"]
    want_drops: dict[str, int] = {}
    want_nulls: dict[str, int] = {}
    kept_rows = []
    for index, outcomes in expected.items():
        drops = [o[1] for _, o in outcomes if o[0] == "drop"]
        if drops:
            # the first rule broken names the drop, in the reader's order
            reason = min(drops, key=DROP_ORDER.index)
            want_drops[reason] = want_drops.get(reason, 0) + 1
            continue
        for _, outcome in outcomes:
            if outcome[0] == "null":
                want_nulls[outcome[1]] = want_nulls.get(outcome[1], 0) + 1
        kept_rows.append(index)
    counted = dict(
        report.counts.filter((pl.col("source") == "omop/measurement") & pl.col("reason").is_not_null())
        .select("reason", "rows")
        .iter_rows()
    )
    assert counted == want_drops
    values = dict(report.values.filter(pl.col("source") == "omop/measurement").select("reason", "values").iter_rows())
    assert values == want_nulls
    # No kept value differs from what the file said.
    kept = events.collect().filter(pl.col("source") == "omop/measurement").sort("time")
    assert kept.height == len(kept_rows)
    for got, index in zip(kept.iter_rows(named=True), kept_rows, strict=True):
        row, outcomes = rows[index], dict(expected[index])
        assert got["subject_id"] == row["person_id"]
        assert got["time"].day == index + 1
        value_outcome = outcomes.get("value_as_number")
        if value_outcome is None:
            want = None if row["value_as_number"] == "" else float(row["value_as_number"])
        elif value_outcome[0] == "value":
            want = value_outcome[1]
        else:
            want = None
        assert got["numeric_value"] == (pytest.approx(want, rel=1e-6) if want is not None else None)
        visit_outcome = outcomes.get("visit_occurrence_id")
        assert got["visit_id"] == (None if visit_outcome else row["visit_occurrence_id"])


@st.composite
def meds_cases(draw):
    n_rows = draw(st.integers(1, 8))
    values = draw(
        st.lists(
            st.one_of(
                st.floats(-1e6, 1e6, allow_nan=False).map(lambda v: (repr(round(v, 3)), round(v, 3), None)),
                st.sampled_from(
                    [
                        ("abc", None, "numeric_value: not a finite number (nulled)"),
                        ("nan", None, "numeric_value: not a finite number (nulled)"),
                        ("inf", None, "numeric_value: not a finite number (nulled)"),
                        ("1e400", None, "numeric_value: not a finite number (nulled)"),
                        ("3,25", 3.25, None),
                        ("", None, None),
                    ]
                ),
            ),
            min_size=n_rows,
            max_size=n_rows,
        )
    )
    subjects = draw(
        st.lists(
            st.sampled_from(
                [("1", 1, None), ("2", 2, None), ("2.0", 2, None), ("4.5", None, "subject_id: not an integer")]
            ),
            min_size=n_rows,
            max_size=n_rows,
        )
    )
    copies = draw(st.integers(1, 2))  # the same rows in one or two shards
    return values, subjects, copies


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(meds_cases())
def test_every_injected_meds_fault_is_a_count_and_copies_across_shards_are_one_event(case):
    values, subjects, copies = case
    n = len(values)
    frame = pl.DataFrame(
        {
            "subject_id": [s[0] for s in subjects],
            # one time for every row: a subject's copies from two shards interleave with its other rows
            "time": ["2020-01-01T00:00:00"] * n,
            "code": [f"LAB{i}" for i in range(n)],
            "numeric_value": [v[0] or None for v in values],
        },
        schema={"subject_id": pl.String, "time": pl.String, "code": pl.String, "numeric_value": pl.String},
    ).with_columns(pl.col("time").str.to_datetime())
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "d" / "data"
        data.mkdir(parents=True)
        for shard in range(copies):
            frame.write_parquet(data / f"{shard}.parquet")
        events = ep.read_meds(Path(folder) / "d")
    report = events.report
    bad_subject = sum(1 for s in subjects if s[2])
    assert report.rows_read == copies * n
    dropped = report.dropped
    assert dropped.get("subject_id: not an integer", 0) == copies * bad_subject
    duplicates = sum(count for reason, count in dropped.items() if reason.startswith("duplicate event"))
    assert duplicates == (copies - 1) * (n - bad_subject)
    if any(DOT_DECIMAL.fullmatch(v[0]) for v in values):  # the column writes a decimal dot: "3,25" is nulled
        comma = "numeric_value: a comma in a column that writes decimals with a dot (nulled)"
        values = [(v[0], None, comma) if v[0] == "3,25" else v for v in values]
    nulled: dict[str, int] = {}
    for v, s in zip(values, subjects, strict=True):
        if v[2] and not s[2]:
            nulled[v[2]] = nulled.get(v[2], 0) + 1
    assert report.values_nulled == nulled
    kept = events.collect().sort("code")
    want = [(s[1], v[1]) for v, s in zip(values, subjects, strict=True) if not s[2]]
    got = list(zip(kept["subject_id"].to_list(), kept["numeric_value"].to_list(), strict=True))
    assert len(got) == len(want)
    for (gs, gv), (ws, wv) in zip(got, want, strict=True):
        assert gs == ws and (gv == pytest.approx(wv, rel=1e-6) if wv is not None else gv is None)
