"""Read and write MEDS v0.4 datasets.

A MEDS dataset is a folder with ``data/**/*.parquet`` shards (any depth), and optionally
``metadata/codes.parquet``, ``metadata/subject_splits.parquet`` and ``metadata/dataset.json``.
ehrprog's extension columns (``visit_id``, ``visit_type``, ``unit``, ``source``) are written as
extra data columns, which MEDS allows, so OMOP -> MEDS -> ehrprog is lossless.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import meds
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from ehrprog.core.errors import InputError
from ehrprog.core.output import OutputFolder, marked
from ehrprog.io import tabular
from ehrprog.io.accounting import DROP, NO_REASON, VALUE, reason, value_issues
from ehrprog.io.events import EventFrame, collect_two_at_a_time, empty_codes, mark_event_drops
from ehrprog.io.schema import CATEGORICAL_COLUMNS, EVENT_SCHEMA

#: What :func:`write_meds` writes, as its output marker names it.
MEDS_KIND = "MEDS dataset"

MEDS_VERSION = "0.4.1"
#: The split names MEDS defines (others are read, and noted).
MEDS_SPLITS = (meds.train_split, meds.tuning_split, meds.held_out_split)


def check_splits(splits: pl.DataFrame, file: str | None) -> None:
    """Refuse subject splits that put a subject in two splits (or in no split): written out, that
    subject's events would land in both (a train/test leak)."""
    if splits["split"].null_count():
        raise InputError("subject splits: a split is null", file=file, column="split")
    per = splits.unique().group_by("subject_id").agg(pl.col("split").sort())
    conflicts = per.filter(pl.col("split").list.len() > 1)
    if conflicts.height:
        first = conflicts.sort("subject_id").row(0, named=True)
        raise InputError(
            f"subject splits put {conflicts.height:,} subject(s) in more than one split (e.g. subject "
            f"{first['subject_id']} in {', '.join(first['split'])}): each subject belongs to one split",
            file=file,
            column="split",
        )


def data_shards(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    data = root / meds.data_subdirectory
    base = data if data.is_dir() else root
    shards = sorted(p for p in _parquet_files(base) if _METADATA not in p.relative_to(base).parts)
    if not shards:
        raise InputError("a MEDS dataset needs parquet shards under data/ (data/**/*.parquet)", file=str(root))
    return shards


def _parquet_files(base: Path) -> list[Path]:
    """Every ``*.parquet`` file under ``base``, following links to folders as links to files are
    followed (a split folder may live elsewhere), each real folder once (no cycles)."""
    found: list[Path] = []
    seen: set[str] = set()
    for folder, subfolders, names in os.walk(base, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders.sort()
        found += [Path(folder) / name for name in names if name.endswith(".parquet")]
    return found


def _read_shard(path: Path, root: Path, visit_id_column: str | None, notes: list[str]) -> pl.LazyFrame:
    frame = pl.scan_parquet(path)
    schema = tabular.readable_schema(frame, path, "Parquet")
    file = str(path)
    if "subject_id" not in schema and "patient_id" in schema:
        frame = frame.rename({"patient_id": "subject_id"})
        schema["subject_id"] = schema.pop("patient_id")
        notes.append(
            f"{path.relative_to(root) if path != root else path.name}: pre-0.3 MEDS column "
            "'patient_id' read as subject_id"
        )
    for column in ("subject_id", "time", "code"):
        if column not in schema:
            raise InputError("required MEDS data column is missing", file=file, column=column)
    if visit_id_column is not None:
        if visit_id_column not in schema:
            raise InputError(
                f"visit_id_column={visit_id_column!r} is not a column of this shard; it has {sorted(schema)}",
                file=file,
                column=visit_id_column,
            )
    if not (schema["code"] == pl.String or schema["code"] == pl.Categorical or schema["code"] == pl.Enum):
        raise InputError(f"MEDS codes must be strings, got {schema['code']}", file=file, column="code")

    def opt(column: str | None, parse, dtype: pl.DataType) -> pl.Expr:
        if column is None or column not in schema:
            return pl.lit(None, dtype)
        return parse(column, schema[column]).cast(dtype)

    def keep_str(column: str, dtype: pl.DataType) -> pl.Expr:
        return pl.col(column).cast(pl.String)

    time_present = pl.col("time").is_not_null()
    relative = str(path.relative_to(root)) if path != root else path.name
    source = (
        pl.coalesce(pl.col("source").cast(pl.String), pl.lit(f"meds/{relative}"))
        if "source" in schema
        else pl.lit(f"meds/{relative}")
    )
    visit = visit_id_column or ("visit_id" if "visit_id" in schema else None)
    numeric, number_issues = pl.lit(None, pl.Float64), []
    if "numeric_value" in schema:  # text numbers: the decimal mark decided for the shard's whole column
        mark, marks = tabular.decimal_mark(frame, "numeric_value", schema["numeric_value"])
        notes.extend(f"{relative} {note}" for note in marks)
        numeric = tabular.parse_float("numeric_value", schema["numeric_value"], mark)
        number_issues = tabular.number_issues("numeric_value", schema["numeric_value"], numeric, mark)
    visit_id = opt(visit, tabular.parse_int, pl.Int64)
    issues = value_issues(
        *number_issues,
        tabular.value_issue(*tabular.in_schema(schema, visit), visit_id, "not an integer"),
    )
    typed = frame.select(
        tabular.parse_int("subject_id", schema["subject_id"]).alias("subject_id"),
        tabular.parse_datetime("time", schema["time"]).alias("time"),
        pl.col("code").cast(pl.String).cast(pl.Categorical).alias("code"),
        numeric.cast(pl.Float32).alias("numeric_value"),
        opt("text_value", keep_str, pl.String).alias("text_value"),
        visit_id.alias("visit_id"),
        opt("visit_type", keep_str, pl.Categorical).alias("visit_type"),
        opt("unit", keep_str, pl.Categorical).alias("unit"),
        source.cast(pl.Categorical).alias("source"),
        time_present.alias("_has_raw_time"),
        pl.col("subject_id").is_not_null().alias("_has_raw_subject"),
        issues.alias(VALUE),
    )
    drop = (
        pl.when(pl.col("subject_id").is_null() & pl.col("_has_raw_subject"))
        .then(reason("subject_id: not an integer"))
        .when(pl.col("subject_id").is_null())
        .then(reason("subject_id: null"))
        .when(pl.col("code").is_null())
        .then(reason("code: null"))
        .when(pl.col("time").is_null() & pl.col("_has_raw_time"))
        .then(reason("time: unparseable"))
        .otherwise(NO_REASON)
    )
    return typed.with_columns(drop.alias(DROP)).select(*EVENT_SCHEMA, DROP, VALUE)


def read_meds(
    path: str | Path,
    *,
    visit_id_column: str | None = None,
    strict: bool = False,
    materialize: bool = True,
    files: list[str | Path] | None = None,
) -> EventFrame:
    """Read a MEDS dataset (or a single MEDS parquet file) into an :class:`~ehrprog.io.events.EventFrame`.

    Args:
        path: the dataset root (with ``data/`` and ``metadata/``) or one parquet file.
        visit_id_column: an extra data column to use as the visit id (e.g. ``"hadm_id"``).
        strict: raise instead of dropping rows.
        materialize: read now (default) or stay lazy for streaming.
        files: read only these data shards of the dataset (its metadata still from its
            ``metadata/``), e.g. one shard per worker.

    Static rows (null ``time``) are kept. Codes metadata, subject splits and dataset metadata are
    attached to the result (``.codes``, ``.splits``, ``.metadata``).
    """
    root = Path(path)
    if not root.exists():
        raise InputError("MEDS dataset not found", file=str(root))
    notes: list[str] = []
    shards = data_shards(root)
    if files is not None:
        wanted = [Path(f) for f in files]
        unknown = [str(f) for f in wanted if f.resolve() not in {s.resolve() for s in shards}]
        if unknown:
            raise InputError(f"not data shards of this MEDS dataset: {unknown}", file=str(root))
        shards = wanted
    parts = [_read_shard(shard, root, visit_id_column, notes) for shard in shards]

    def plan(subjects: pl.Expr | None = None) -> pl.LazyFrame:
        """The checked events, optionally for a subset of subjects only (filtered at every shard)."""
        shards = parts if subjects is None else [part.filter(subjects) for part in parts]
        return mark_event_drops(pl.concat(shards, how="vertical_relaxed"), across_sources=True)

    meta_dir = root / _METADATA if root.is_dir() else root.parent / _METADATA
    codes, splits, metadata = _read_metadata(meta_dir, notes)
    options = {"notes": notes, "codes": codes, "splits": splits, "metadata": metadata}
    if materialize:
        per_shard = pl.collect_all([part.select(pl.col("subject_id").unique()) for part in parts])
        subject_ids = pl.concat(per_shard)["subject_id"]
        known = subject_ids.drop_nulls()
        if splits is not None:
            absent = splits.filter(~pl.col("subject_id").is_in(known.implode()))["subject_id"].n_unique()
            if absent:
                notes.append(f"subject splits name {absent:,} subject(s) with no data in the shards (ignored)")
        if len(parts) > 1 and known.n_unique() == known.len():
            # Shards hold disjoint subjects (MEDS shards partition subjects, often by a hash): each
            # shard is a piece, read once. (Subject-range pieces would read every shard per piece.)
            pieces = collect_two_at_a_time(mark_event_drops(part, across_sources=True) for part in parts)
            events = EventFrame.from_pieces(pieces, ordered=False, plan=plan, **options)
        else:
            events = EventFrame.from_plan(plan, subject_ids, **options)
    else:
        events = EventFrame(plan(), plan=plan, **options)
    if strict:
        events.report.raise_on_drops()
    from ehrprog.io.quality import add_plausibility_notes

    return add_plausibility_notes(events)


def _read_metadata(meta_dir: Path, notes: list[str]) -> tuple[pl.DataFrame, pl.DataFrame | None, dict[str, Any]]:
    codes = empty_codes()
    codes_path = meta_dir / Path(meds.code_metadata_filepath).name
    if codes_path.is_file():
        raw = tabular.read_parquet_file(codes_path)
        if "code" not in raw.columns:
            raise InputError("codes metadata needs a 'code' column", file=str(codes_path), column="code")
        codes = raw.select(
            pl.col("code").cast(pl.String),
            (pl.col("description") if "description" in raw.columns else pl.lit(None)).cast(pl.String),
            (pl.col("parent_codes") if "parent_codes" in raw.columns else pl.lit(None)).cast(pl.List(pl.String)),
        )
    splits = None
    splits_path = meta_dir / Path(meds.subject_splits_filepath).name
    if splits_path.is_file():
        raw = tabular.read_parquet_file(splits_path)
        if "patient_id" in raw.columns and "subject_id" not in raw.columns:
            raw = raw.rename({"patient_id": "subject_id"})
        for column in ("subject_id", "split"):
            if column not in raw.columns:
                raise InputError("subject splits need this column", file=str(splits_path), column=column)
        parsed = raw.select(
            tabular.parse_int("subject_id", raw.schema["subject_id"]).alias("id"),
            pl.col("subject_id").cast(pl.String).alias("raw"),
        )
        bad = parsed.filter(pl.col("id").is_null())
        if bad.height:
            raise InputError(
                f"subject splits: {bad.height:,} subject_id value(s) are null or not integers "
                f"(e.g. {bad['raw'].head(3).to_list()})",
                file=str(splits_path),
                column="subject_id",
            )
        splits = pl.DataFrame({"subject_id": parsed["id"], "split": raw["split"].cast(pl.String)})
        check_splits(splits, str(splits_path))
        unknown = sorted(set(splits["split"].drop_nulls().unique()) - set(MEDS_SPLITS))
        if unknown:
            notes.append(f"subject splits name splits other than {', '.join(MEDS_SPLITS)}: {', '.join(unknown)}")
    metadata: dict[str, Any] = {}
    for name in (Path(meds.dataset_metadata_filepath).name, "metadata.json"):
        candidate = meta_dir / name
        if candidate.is_file():
            try:
                metadata = json.loads(candidate.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise InputError(f"dataset metadata is not valid JSON ({error})", file=str(candidate)) from None
            if not isinstance(metadata, dict):
                raise InputError(
                    f"dataset metadata must be a JSON object, not {type(metadata).__name__}", file=str(candidate)
                )
            if name == "metadata.json":
                notes.append("pre-0.3 MEDS metadata.json read as dataset metadata")
            break
    return codes, splits, metadata


def write_meds(
    events: EventFrame,
    path: str | Path,
    *,
    dataset_name: str | None = None,
    n_shards: int | None = None,
    overwrite: bool = False,
    inputs: Iterable[str | Path] = (),
) -> Path:
    """Write events as a MEDS v0.4 dataset.

    Layout: ``data/[<split>/]<shard>.parquet`` (a split level when the events carry subject
    splits; subjects without a split go to ``train``), ``metadata/codes.parquet``,
    ``metadata/dataset.json`` and, with splits, ``metadata/subject_splits.parquet``. Each shard
    holds whole subjects, ordered by subject and time, as MEDS requires.

    Args:
        events: the events; a lazy frame (``read_omop(..., materialize=False)``) is streamed shard
            by shard, so the dataset need not fit in memory.
        path: the dataset root (created).
        dataset_name: for ``dataset.json``; default the source's name.
        n_shards: subject shards to write; default 1 for in-memory events and 8 for lazy ones.
            Peak memory is about that of the largest shard.
        overwrite: write into a non-empty ``path`` that is not a MEDS dataset ehrprog wrote, or
            that holds files ehrprog did not write; those files are kept where they are (never
            deleted or replaced: a clash is refused). A MEDS dataset ehrprog wrote is replaced
            whole, never merged, so old shards and splits never mix with new ones.
        inputs: the folders the events were read from; ``path`` must not be, hold or lie in one.

    The dataset is written into a hidden sibling folder and renamed into place when complete
    (:class:`~ehrprog.core.output.OutputFolder`).

    Raises:
        InputError: ``path`` is not empty and not a MEDS dataset ehrprog wrote (without
            ``overwrite``), holds files ehrprog did not write, is or holds an input, or is not a folder.

    Returns:
        The dataset root.
    """
    out = OutputFolder(path, MEDS_KIND, owned=meds_files, inputs=inputs, overwrite=overwrite).check()
    with out.writing() as root:
        _write_dataset(events, root, dataset_name, n_shards)
    return out.final


def meds_files(root: Path) -> set[str] | None:
    """The files ehrprog wrote in a MEDS dataset: those its :data:`~ehrprog.core.output.MARKER` lists,
    or, in a dataset an earlier ehrprog wrote (``dataset.json`` naming ``etl_name`` ehrprog, no
    marker), its data shards and metadata files; ``None`` for any other folder."""
    owned = marked(MEDS_KIND)(root)
    if owned is not None:
        return owned
    try:
        metadata = json.loads((root / meds.dataset_metadata_filepath).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(metadata, dict) or metadata.get("etl_name") != "ehrprog":
        return None
    named = {meds.code_metadata_filepath, meds.dataset_metadata_filepath, meds.subject_splits_filepath}
    return named | {p.relative_to(root).as_posix() for p in (root / meds.data_subdirectory).rglob("*.parquet")}


def _write_dataset(events: EventFrame, root: Path, dataset_name: str | None, n_shards: int | None) -> None:
    """The shards and metadata of a MEDS dataset, written into the (new, empty) folder ``root``."""
    (root / meds.data_subdirectory).mkdir(parents=True, exist_ok=True)
    (root / _METADATA).mkdir(parents=True, exist_ok=True)
    shards = n_shards if n_shards is not None else (1 if events.in_memory else 8)
    split_of = events.splits.select("subject_id", "split").unique() if events.splits is not None else None
    if split_of is not None:
        check_splits(split_of, None)
    for index, shard in enumerate(events.shards(shards)):
        if split_of is None:
            _write_shard(shard, root / meds.data_subdirectory / f"{index}.parquet")
            continue
        tagged = shard.join(split_of, on="subject_id", how="left", maintain_order="left").with_columns(
            pl.col("split").fill_null(meds.train_split)
        )
        for (split,), part in tagged.group_by("split", maintain_order=True):
            (root / meds.data_subdirectory / split).mkdir(exist_ok=True)
            _write_shard(part.drop("split"), root / meds.data_subdirectory / split / f"{index}.parquet")
    if events.splits is not None:
        pq.write_table(
            events.splits.select("subject_id", "split").to_arrow().cast(_SPLITS_ARROW_SCHEMA),
            root / meds.subject_splits_filepath,
        )
    pq.write_table(events.codes.to_arrow().cast(_CODES_ARROW_SCHEMA), root / meds.code_metadata_filepath)
    metadata = {
        "dataset_name": dataset_name or events.metadata.get("dataset_name", root.name),
        "dataset_version": str(events.metadata.get("dataset_version", "1")),
        "etl_name": "ehrprog",
        "etl_version": _version(),
        "meds_version": MEDS_VERSION,
        "created_at": datetime.now(UTC).isoformat(),
    }
    (root / meds.dataset_metadata_filepath).write_text(json.dumps(metadata, indent=2))


#: Arrow types of a shard: the ``meds`` package's DataSchema (``string`` codes, ``large_string``
#: text values; polars alone would write ``large_string`` for both), then ehrprog's extension columns.
#: The metadata folder of a MEDS dataset (the ``meds`` package names its files inside it).
_METADATA = Path(meds.code_metadata_filepath).parent.name
_DATA_ARROW_SCHEMA = pa.schema(
    [
        *meds.DataSchema.schema(),
        ("visit_id", pa.int64()),
        ("visit_type", pa.string()),
        ("unit", pa.string()),
        ("source", pa.string()),
    ]
)
_CODES_ARROW_SCHEMA = meds.CodeMetadataSchema.schema()
_SPLITS_ARROW_SCHEMA = meds.SubjectSplitSchema.schema()


def _write_shard(frame: pl.DataFrame, path: Path) -> None:
    """Write one Parquet shard with the Arrow types the ``meds`` package validates."""
    as_text = frame.with_columns(pl.col(name).cast(pl.String) for name in CATEGORICAL_COLUMNS)
    pq.write_table(as_text.to_arrow().cast(_DATA_ARROW_SCHEMA), path, compression="zstd")


def _version() -> str:
    from ehrprog.core.version import __version__

    return __version__


__all__ = ["read_meds", "write_meds"]
