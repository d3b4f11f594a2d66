"""MEDS reading and writing: shared sets load, output validates with the meds package, round trips."""

from __future__ import annotations

import json
from datetime import datetime

import meds
import polars as pl
import pyarrow.parquet as pq
import pytest
from conftest import MEDS_SETS, shared_path

import ehrprog as ep
from ehrprog.io.schema import EVENT_SCHEMA, EVENT_SORT


@pytest.mark.parametrize("name", MEDS_SETS)
def test_every_shared_meds_set_loads(name):
    root = shared_path(name)
    events = ep.read_meds(root)
    frame = events.collect()
    assert dict(frame.schema) == EVENT_SCHEMA
    raw_rows = sum(pq.read_metadata(p).num_rows for p in (root / "data").rglob("*.parquet"))
    assert events.report.rows_read == raw_rows
    assert frame.height == raw_rows - events.report.rows_dropped


def test_sharded_dataset_keeps_static_rows_splits_and_code_metadata():
    events = ep.read_meds(shared_path("meds_transforms_example_meds"))
    frame = events.collect()
    assert frame["subject_id"].n_unique() == 6
    assert frame.filter(pl.col("time").is_null()).height > 0  # EYE_COLOR and HEIGHT static rows
    assert sorted(events.splits["split"].unique().to_list()) == ["held_out", "train", "tuning"]
    parents = events.codes.filter(pl.col("code") == "HR")["parent_codes"].to_list()
    assert parents == [["LOINC/8867-4"]]
    assert {s.split("/")[1] for s in frame["source"].unique().to_list()} == {"data"}


def test_older_patient_id_column_is_accepted_with_a_note(tmp_path):
    root = tmp_path / "old"
    (root / "data").mkdir(parents=True)
    pl.DataFrame(
        {"patient_id": [1, 1], "time": [None, "2020-01-01"], "code": ["Gender/F", "ICD10CM/N18.3"]}
    ).with_columns(pl.col("time").str.to_datetime()).write_parquet(root / "data" / "0.parquet")
    events = ep.read_meds(root)
    assert events.collect()["subject_id"].to_list() == [1, 1]
    assert any("patient_id" in note for note in events.report.notes)


def test_extra_column_can_be_chosen_as_visit_id(tmp_path):
    root = tmp_path / "hadm"
    (root / "data").mkdir(parents=True)
    pl.DataFrame(
        {
            "subject_id": [1, 1, 1],
            "time": ["2020-01-01 10:00", "2020-01-02 10:00", "2020-01-09 10:00"],
            "code": ["A", "B", "C"],
            "hadm_id": [7, 7, 8],
        }
    ).with_columns(pl.col("time").str.to_datetime()).write_parquet(root / "data" / "0.parquet")
    events = ep.read_meds(root, visit_id_column="hadm_id")
    assert events.collect()["visit_id"].to_list() == [7, 7, 8]
    visits = ep.group_visits(events, "visit_id").visits()
    assert visits["codes"].to_list() == [["A", "B"], ["C"]]
    with pytest.raises(ep.InputError) as info:
        ep.read_meds(root, visit_id_column="stay_id")
    assert info.value.column == "stay_id"


def test_missing_code_column_is_an_error_naming_the_shard(tmp_path):
    (tmp_path / "bad" / "data").mkdir(parents=True)
    pl.DataFrame({"subject_id": [1], "time": [None]}).write_parquet(tmp_path / "bad" / "data" / "0.parquet")
    with pytest.raises(ep.InputError) as info:
        ep.read_meds(tmp_path / "bad")
    assert info.value.column == "code" and info.value.file.endswith("0.parquet")


def test_null_subject_ids_and_codes_are_counted(tmp_path):
    (tmp_path / "d" / "data").mkdir(parents=True)
    pl.DataFrame(
        {"subject_id": [1, None, 2], "time": [None, None, None], "code": ["A", "B", None]},
        schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.String},
    ).write_parquet(tmp_path / "d" / "data" / "0.parquet")
    events = ep.read_meds(tmp_path / "d")
    assert events.report.dropped == {"subject_id: null": 1, "code: null": 1}


def _validate_meds(root):
    for shard in (root / "data").rglob("*.parquet"):
        meds.DataSchema.validate(pq.read_table(shard))
    meds.CodeMetadataSchema.validate(pq.read_table(root / "metadata" / "codes.parquet"))
    metadata = json.loads((root / "metadata" / "dataset.json").read_text())
    assert metadata["meds_version"].startswith("0.4")
    assert metadata["etl_name"] == "ehrprog"


def test_omop_to_meds_passes_meds_validation_and_round_trips_losslessly(tmp_path):
    source = shared_path("synthea27nj_omop/parquet")
    events = ep.read_omop(source)
    out = ep.write_meds(events, tmp_path / "meds")
    _validate_meds(out)
    back = ep.read_meds(out)
    assert back.report.rows_dropped == 0
    original = events.collect().sort(EVENT_SORT, nulls_last=False)
    assert back.collect().sort(EVENT_SORT, nulls_last=False).equals(original)
    assert back.codes.height == events.codes.height


def test_write_meds_streams_a_lazy_frame_and_writes_splits(tmp_path, sim_omop):
    events = ep.read_omop(sim_omop, materialize=False)
    splits = (
        events.collect()
        .select("subject_id")
        .unique()
        .with_columns(
            pl.when(pl.col("subject_id") % 5 == 0).then(pl.lit("held_out")).otherwise(pl.lit("train")).alias("split")
        )
    )
    events.splits = splits
    out = ep.write_meds(events, tmp_path / "meds")
    _validate_meds(out)
    meds.SubjectSplitSchema.validate(pq.read_table(out / "metadata" / "subject_splits.parquet"))
    assert (out / "data" / "held_out" / "0.parquet").exists()
    back = ep.read_meds(out).collect()
    assert back.height == events.report.rows_kept


def test_streamed_conversion_counts_the_same_rows_as_an_in_memory_read(tmp_path):
    source = shared_path("synpuf_1k_omop")
    eager = ep.read_omop(source)
    lazy = ep.read_omop(source, materialize=False)
    out = ep.write_meds(lazy, tmp_path / "meds", n_shards=4)
    assert len(list((out / "data").glob("*.parquet"))) == 4
    assert lazy.report.counts.equals(eager.report.counts)
    back = ep.read_meds(out).collect().sort(EVENT_SORT, nulls_last=False)
    assert back.equals(eager.collect().sort(EVENT_SORT, nulls_last=False))
    assert back.group_by("subject_id").agg(pl.col("source").n_unique()).height == 1000


def test_hash_sharded_dataset_reads_each_shard_once_into_canonical_order(tmp_path):
    # write_meds shards by a hash of the subject, so every shard spans the whole id range; the
    # reader takes each shard as a piece and must still give the canonical (subject, time, hash)
    # order of an in-memory read, row for row.
    events = ep.read_omop(shared_path("synpuf_1k_omop"))
    out = ep.write_meds(events, tmp_path / "meds", n_shards=4)
    back = ep.read_meds(out)
    assert back.collect().equals(events.collect())
    assert back.report.rows_dropped == 0


def test_a_subject_split_across_shards_is_merged_in_time_order(tmp_path):
    # Shards that share a subject cannot be read shard by shard: the reader falls back to
    # subject-range pieces across all shards, so subject 1's rows interleave in time order.
    root = tmp_path / "meds"
    (root / "data").mkdir(parents=True)
    rows = {"subject_id": [1, 1, 2], "time": ["2020-01-02", "2020-01-04", "2020-01-01"], "code": ["B", "E", "C"]}
    pl.DataFrame(rows).with_columns(pl.col("time").str.to_datetime()).write_parquet(root / "data" / "0.parquet")
    rows = {"subject_id": [1, 1], "time": ["2020-01-01", "2020-01-03"], "code": ["A", "D"]}
    pl.DataFrame(rows).with_columns(pl.col("time").str.to_datetime()).write_parquet(root / "data" / "1.parquet")
    frame = ep.read_meds(root).collect()
    assert frame["subject_id"].to_list() == [1, 1, 1, 1, 2]
    assert frame["code"].to_list() == ["A", "B", "D", "E", "C"]


def test_fractional_subject_and_visit_ids_are_counted_not_truncated(tmp_path):
    (tmp_path / "d" / "data").mkdir(parents=True)
    pl.DataFrame(
        {"subject_id": ["4", "4.5", "5.0"], "time": [None, None, None], "code": ["A", "B", "C"]},
        schema={"subject_id": pl.String, "time": pl.Datetime("us"), "code": pl.String},
    ).write_parquet(tmp_path / "d" / "data" / "0.parquet")
    pl.DataFrame(
        {"subject_id": [1.0, 4.5], "time": [None, None], "code": ["A", "B"]},
        schema={"subject_id": pl.Float64, "time": pl.Datetime("us"), "code": pl.String},
    ).write_parquet(tmp_path / "d" / "data" / "1.parquet")
    events = ep.read_meds(tmp_path / "d")
    assert sorted(events.collect()["subject_id"].to_list()) == [1, 4, 5]
    assert events.report.dropped == {"subject_id: not an integer": 2}


def test_meds_values_that_cannot_be_kept_are_nulled_and_counted(tmp_path):
    (tmp_path / "d" / "data").mkdir(parents=True)
    pl.DataFrame(
        {
            "subject_id": [1, 1, 1, 1],
            "time": [None] * 4,
            "code": ["A", "B", "C", "D"],
            "numeric_value": ["2,5", "x", "inf", "3"],
        },
        schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.String, "numeric_value": pl.String},
    ).write_parquet(tmp_path / "d" / "data" / "0.parquet")
    pl.DataFrame(
        {"subject_id": [2, 2], "time": [None] * 2, "code": ["B"] * 2, "numeric_value": [float("nan"), 1.0]},
        schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.String, "numeric_value": pl.Float64},
    ).write_parquet(tmp_path / "d" / "data" / "1.parquet")
    events = ep.read_meds(tmp_path / "d")
    frame = events.collect().sort("subject_id", "numeric_value", nulls_last=True)
    assert frame.height == 6 and frame["numeric_value"].drop_nulls().to_list() == [2.5, 3.0, 1.0]
    assert events.report.values_nulled == {"numeric_value: not a finite number (nulled)": 3}


def test_the_same_rows_in_two_shards_are_one_event_and_the_copy_is_counted(tmp_path):
    (tmp_path / "d" / "data").mkdir(parents=True)
    rows = {"subject_id": [1, 1], "time": [datetime(2020, 1, 1), datetime(2020, 2, 1)], "code": ["A", "B"]}
    for shard in ("0", "1"):
        pl.DataFrame(rows, schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.String}).write_parquet(
            tmp_path / "d" / "data" / f"{shard}.parquet"
        )
    events = ep.read_meds(tmp_path / "d")
    assert events.collect().height == 2
    assert sum(n for r, n in events.report.dropped.items() if r.startswith("duplicate event")) == 2


@pytest.mark.parametrize("where", ["data/0.parquet", "metadata/codes.parquet", "metadata/subject_splits.parquet"])
def test_corrupt_meds_files_are_errors_naming_the_file(tmp_path, where):
    (tmp_path / "d" / "data").mkdir(parents=True)
    (tmp_path / "d" / "metadata").mkdir()
    pl.DataFrame({"subject_id": [1], "time": [datetime(2020, 1, 1)], "code": ["A"]}).write_parquet(
        tmp_path / "d" / "data" / "0.parquet"
    )
    (tmp_path / "d" / where).write_bytes(b"garbage, not parquet")
    with pytest.raises(ep.InputError, match="not a readable Parquet file") as info:
        ep.read_meds(tmp_path / "d")
    assert info.value.file.endswith(where.split("/")[-1])
