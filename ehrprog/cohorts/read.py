"""Cohorts on disk: subject shards that the estimator reads lazily, one shard at a time.

A saved cohort is a folder::

    manifest.json            format, shards in order, counts, the ingest/cohort report
    codes.parquet            code metadata (descriptions), when the data had any
    shards/<name>/
        shard.json           what the shard holds, its source, and the SHA-256 of every file
        points.parquet       one row per prediction point: the inputs' point columns and the targets
        labels.parquet       the same points in the MEDS label schema
        visits.parquet       the subjects' visit frame (for point features and inspection)
        labs.parquet         the task's staging-lab readings of the subjects
        stages.parquet       every stage record found
        arrays/*.npy         the visits as :class:`~ehrprog.visits.arrays.VisitArrays` (the array
                             form the model reads, vocabulary-free; memory-mappable)

A shard is written to a hidden temporary folder and renamed into place when complete, so a
crashed writer never leaves a shard that looks whole; :func:`shard_is_complete` checks a shard
against its ``shard.json`` (file sizes and content hashes), which is how a re-run skips the
shards already written.

:func:`load_cohort` gives a :class:`~ehrprog.tasks.Cohort` whose ``X`` is a
:class:`StoredCohortX`: each point's subject, shard and targets are in memory (22 bytes a point);
its other columns, the visits and the labs stay on disk and are read shard by shard, for statistics
(:meth:`StoredCohortX.parts`) and for batches (:class:`~ehrprog.features.sharded.ShardedVisitTensors`).
``GroupKFold``, ``GridSearchCV`` and the estimator take it as they take an in-memory cohort.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ehrprog.cohorts.cohort import Cohort, CohortX
from ehrprog.cohorts.format import (
    ShardMeta,
    read_manifest,
    read_shard_meta,
    verify_file,
)
from ehrprog.cohorts.write import (
    OPTIONAL_TARGET_COLUMNS,
    POINT_COLUMNS,
    SUBJECTS_PER_SHARD,
    TARGET_COLUMNS,
    finalize,
    save_cohort,
    shard_is_complete,
    write_empty_shard,
    write_shard,
)
from ehrprog.core.errors import InputError
from ehrprog.visits.arrays import VisitArrays
from ehrprog.visits.grouping import Gap, VisitFrame


def _strategy_from_json(value: Any) -> Any:
    return Gap(hours=value["gap_hours"]) if isinstance(value, dict) else value


# ----------------------------------------------------------------------------------------- read
class CohortStore:
    """A saved cohort's manifest, its points' subjects, shards and targets in memory, and its
    shards (the other point columns included) read on demand."""

    def __init__(self, path: str | Path, verify: str = "lazy") -> None:
        if verify not in ("lazy", "all"):
            raise ValueError(f"verify must be 'lazy' or 'all', got {verify!r}")
        self.root = Path(path)
        parsed = read_manifest(self.root)
        self.manifest = parsed.model_dump()
        self.names = [shard.name for shard in parsed.shards]
        # Every shard's record validated and every file's size checked now; the small tables'
        # hashes too (points, labels, stages); visits, labs and arrays when first read (once per
        # process), or now with verify="all".
        self.meta: list[ShardMeta] = [read_shard_meta(self.shard_folder(entry.name), entry) for entry in parsed.shards]
        eager = [
            (shard, relative)
            for shard, meta in enumerate(self.meta)
            for relative in (meta.files if verify == "all" else ("labels.parquet", "stages.parquet"))
            if relative != "points.parquet"
        ]
        # Hashed on a second thread while the points are read here (hashlib and polars both
        # release the GIL); the first mismatch in shard order is raised.
        # Only the subject and target columns are parsed, one shard at a time into arrays of the
        # cohort's size (shard.json records each shard's points): a load holds one shard's file
        # at once, never every shard's point columns (~40 bytes a point, 280 MB at 7M points).
        counts = np.array([meta.points for meta in self.meta], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.subject_ids = np.empty(int(self.offsets[-1]), dtype=np.int64)
        wanted = ["subject_id", *TARGET_COLUMNS, *OPTIONAL_TARGET_COLUMNS]
        targets = []
        with ThreadPoolExecutor(max_workers=1) as pool:  # a pool per call: safe in forked workers
            hashing = pool.submit(lambda: [self.verified(shard, relative) for shard, relative in eager])
            for shard in range(len(self.meta)):
                frame = self._shard_points_file(shard, wanted)
                self.subject_ids[self.offsets[shard] : self.offsets[shard + 1]] = frame["subject_id"].to_numpy()
                targets.append(frame.drop("subject_id"))
                del frame
            hashing.result()
        # In memory per point: the subject (for splitters), the targets (the cohort's y) and the
        # shard (int32): 8 + 10 + 4 bytes. The other point columns are read with their shard.
        optional = [c for c in OPTIONAL_TARGET_COLUMNS if all(c in part.columns for part in targets)]
        self.targets = pl.concat([part.select(TARGET_COLUMNS + optional) for part in targets])
        del targets
        self.point_shard = np.repeat(np.arange(len(self.names), dtype=np.int32), counts)
        self._last_points: tuple[int, pl.DataFrame] | None = None
        self.strategy = _strategy_from_json(self.manifest["strategy"])
        self.lab_bands = {lab: [tuple(band) for band in bands] for lab, bands in self.manifest["lab_bands"].items()}
        codes = self.root / "codes.parquet"
        self.codes = pl.read_parquet(codes) if codes.is_file() else None

    def _shard_points_file(self, shard: int, columns: list[str] | None = None) -> pl.DataFrame:
        """One shard's ``points.parquet`` (hashed as it is read), checked against ``shard.json``;
        only ``columns`` of it parsed (those it has), else every column."""
        meta = self.meta[shard]
        data = io.BytesIO(self.verified(shard, "points.parquet", contents=True))
        names = list(pl.read_parquet_schema(data))
        data.seek(0)
        frame = pl.read_parquet(data, columns=[c for c in names if c in columns] if columns else None)
        if frame.height != meta.points or not set(POINT_COLUMNS + TARGET_COLUMNS) <= set(names):
            raise InputError(
                f"shard {meta.name!r}: points.parquet holds {frame.height:,} rows and columns "
                f"{names}; shard.json records {meta.points:,} points",
                file=str(self.shard_folder(meta.name) / "points.parquet"),
            )
        return frame

    def shard_folder(self, name: str) -> Path:
        return self.root / "shards" / name

    def verified(self, shard: int, relative: str, contents: bool = False) -> Path | bytes:
        """The path of one file of a shard (its bytes, with ``contents``), checked against its
        ``shard.json`` record (size, and the SHA-256 once per process); an :class:`InputError`
        naming the shard and file if not."""
        meta = self.meta[shard]
        record = meta.files.get(relative)
        if record is None:
            raise InputError(
                f"shard {meta.name!r}: shard.json lists no {relative}", file=str(self.shard_folder(meta.name))
            )
        return verify_file(self.shard_folder(meta.name), meta.name, relative, record, contents)

    @property
    def n_points(self) -> int:
        return int(self.offsets[-1])

    @property
    def points(self) -> pl.DataFrame:
        """Every shard's point columns (subject, prediction time, visit count, current stage and
        value), read now: for inspection; the estimator reads them shard by shard (:meth:`shard_points`)."""
        return pl.concat([self.shard_points(shard) for shard in range(len(self.names))], rechunk=True)

    def shard_points(self, shard: int) -> pl.DataFrame:
        """One shard's point columns (as :attr:`points`), read from its ``points.parquet`` (the last
        shard read is kept)."""
        if self._last_points is None or self._last_points[0] != shard:
            self._last_points = (shard, self._shard_points_file(shard, POINT_COLUMNS).select(POINT_COLUMNS))
        return self._last_points[1]

    def column(self, name: str, shards: np.ndarray | None = None) -> pl.Series:
        """One point column over ``shards`` (all by default), in point order, read shard by shard."""
        if name == "subject_id" and shards is None:
            return pl.Series("subject_id", self.subject_ids)
        shards = range(len(self.names)) if shards is None else shards
        pieces = [self.shard_points(int(shard))[name] for shard in shards]
        return pl.concat(pieces) if pieces else pl.Series(name, [], dtype=pl.Int64)

    def read(self, shard: int, table: str) -> pl.DataFrame:
        """One table (``visits``, ``labs``, ``labels``, ``stages``) of one shard, verified first."""
        return pl.read_parquet(io.BytesIO(self.verified(shard, f"{table}.parquet", contents=True)))

    def arrays(self, shard: int, mmap: bool = False) -> VisitArrays:
        """One shard's visit arrays (every ``arrays/`` file verified first)."""
        files = [relative for relative in self.meta[shard].files if relative.startswith("arrays/")]
        with ThreadPoolExecutor(max_workers=2) as pool:  # hashlib releases the GIL
            list(pool.map(lambda relative: self.verified(shard, relative), files))
        return VisitArrays.load(self.shard_folder(self.names[shard]) / "arrays", mmap=mmap)

    def part(self, shard: int, local_rows: np.ndarray | None = None) -> ShardPart:
        """Shard ``shard`` as a :class:`ShardPart` (its points ``local_rows``, all by default)."""
        points = self.shard_points(shard)
        return ShardPart(self, shard, points if local_rows is None else points[local_rows])


class ShardPart(CohortX):
    """One shard's points as a :class:`CohortX` whose visit arrays, visits and labs are read from
    disk when first asked for (the vocabulary needs only the arrays; point features the visits)."""

    def __init__(self, store: CohortStore, shard: int, points: pl.DataFrame) -> None:
        self.store, self.shard, self.points, self.lab_bands = store, shard, points, store.lab_bands

    @cached_property
    def arrays(self) -> VisitArrays:
        return self.store.arrays(self.shard)

    @cached_property
    def visits(self) -> VisitFrame:  # type: ignore[override]
        return VisitFrame(self.store.read(self.shard, "visits"), self.store.strategy, self.store.codes)

    @cached_property
    def labs(self) -> pl.DataFrame:  # type: ignore[override]
        return self.store.read(self.shard, "labs")

    @property
    def code_metadata(self) -> pl.DataFrame | None:
        return self.store.codes


class StoredCohortX(CohortX):
    """The inputs of a saved cohort: points in memory, visits on disk (see the module docstring).

    Indexing gives a ``StoredCohortX`` over the same store, holding only its row numbers (int32, 4 bytes
    a point): its ``points`` are gathered from the store when first asked for, and
    :meth:`column` and :meth:`parts` never gather them whole. ``visits`` and ``labs`` read every
    shard that holds one of its points into memory (for baselines and inspection on cohorts that
    fit); the estimator never asks for them.
    """

    def __init__(self, store: CohortStore, rows: np.ndarray) -> None:
        self.store = store
        # int32 row numbers (4 bytes a point) while the store holds fewer than 2**31 points
        self.rows = np.asarray(rows).astype(np.int32 if store.n_points < 2**31 else np.int64, copy=False)
        self.whole = len(self.rows) == store.n_points and bool((self.rows == np.arange(len(self.rows))).all())
        self.lab_bands = store.lab_bands
        self._loaded: tuple[VisitFrame, pl.DataFrame] | None = None

    @cached_property
    def points(self) -> pl.DataFrame:  # type: ignore[override]
        """The points' columns, read from their shards when first asked for (and kept)."""
        points = self.store.points
        return points if self.whole else points[self.rows]

    @property
    def column_names(self) -> list[str]:
        return list(POINT_COLUMNS)

    def column(self, name: str) -> pl.Series:
        if name == "subject_id":
            return pl.Series("subject_id", self.store.subject_ids if self.whole else self.store.subject_ids[self.rows])
        if self.whole:
            return self.store.column(name)
        shards = self._shards()  # only the shards holding these points, then these points of them
        first = np.searchsorted(shards, self.store.point_shard[self.rows])
        sizes = np.diff(self.store.offsets)[shards]
        start = np.concatenate([[0], np.cumsum(sizes)])[first]
        return self.store.column(name, shards).gather(start + self.rows - self.store.offsets[shards[first]])

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), len(POINT_COLUMNS))

    def _take(self, index: np.ndarray) -> StoredCohortX:
        return StoredCohortX(self.store, self.rows[index])

    def __repr__(self) -> str:
        return f"StoredCohortX(points={len(self)}, shards={len(self._shards())}, path={str(self.store.root)!r})"

    def _shards(self) -> np.ndarray:
        return np.unique(self.store.point_shard[self.rows])

    def _load(self) -> tuple[VisitFrame, pl.DataFrame]:
        if self._loaded is None:
            shards = self._shards()
            frame = pl.concat([self.store.read(s, "visits") for s in shards]) if len(shards) else None
            labs = pl.concat([self.store.read(s, "labs") for s in shards]) if len(shards) else None
            self._loaded = (VisitFrame(frame, self.store.strategy, self.store.codes), labs)
        return self._loaded

    @property
    def visits(self) -> VisitFrame:  # type: ignore[override]
        return self._load()[0]

    @property
    def labs(self) -> pl.DataFrame:  # type: ignore[override]
        return self._load()[1]

    @property
    def code_metadata(self) -> pl.DataFrame | None:
        return self.store.codes

    def parts(self) -> Iterator[tuple[CohortX, np.ndarray]]:
        """One in-memory :class:`CohortX` per shard holding some of these points, with the rows
        of ``self`` it holds (shard order)."""
        shard_of = self.store.point_shard[self.rows]
        for shard in np.unique(shard_of):
            positions = np.flatnonzero(shard_of == shard)
            yield self.store.part(int(shard), self.rows[positions] - self.store.offsets[shard]), positions


def load_cohort(path: str | Path, *, verify: str = "lazy") -> Cohort:
    """A saved cohort (see :func:`save_cohort`), its inputs on disk.

    Nothing in the folder is trusted unchecked (:mod:`ehrprog.cohorts.format`): the manifest and
    every ``shard.json`` are validated, every file's size is checked, and the hashes of the points,
    labels and stages are verified at load; the visits, labs and visit arrays are verified when
    first read (once per process), or at load with ``verify="all"``.

    Raises:
        InputError: naming the shard and file of any mismatch (invalid or inconsistent manifest,
            a shard outside the folder or listed twice, a missing, resized or edited file).

    Returns:
        A :class:`~ehrprog.tasks.Cohort` whose ``X`` is a :class:`StoredCohortX`; ``y`` and
        ``groups`` are in memory (one row per point), ``labels`` and ``stages`` are
        ``polars.LazyFrame`` scans over the shards.
    """
    store = CohortStore(path, verify)
    labels = pl.scan_parquet([store.shard_folder(name) / "labels.parquet" for name in store.names])
    stages = pl.scan_parquet([store.shard_folder(name) / "stages.parquet" for name in store.names])
    X = StoredCohortX(store, np.arange(store.n_points))
    return Cohort(
        X,
        store.targets,
        store.subject_ids,
        labels,
        stages,
        dict(store.manifest.get("report", {})),
        list(store.manifest.get("warnings", [])),
    )


__all__ = [
    "SUBJECTS_PER_SHARD",
    "CohortStore",
    "StoredCohortX",
    "finalize",
    "load_cohort",
    "save_cohort",
    "shard_is_complete",
    "write_empty_shard",
    "write_shard",
]
