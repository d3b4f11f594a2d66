"""Visits as flat, vocabulary-free arrays: the form the model's inputs take before encoding.

:class:`VisitArrays` holds every visit of a set of subjects (sorted by subject, then visit) as
NumPy arrays: per visit its time features, and its codes in compressed-row form (the codes of
visit ``r`` are ``code_index[code_offsets[r]:code_offsets[r + 1]]``, rows of ``code_table``, in
the visit's order, with their raw values). Encoding them for a model (a vocabulary, standardised
values, padding to ``max_codes``) is :class:`~ehrprog.features.tensors.VisitTensors`' job. The same
arrays are built in memory from a :class:`~ehrprog.tasks.CohortX` or read from a cohort saved on
disk (one folder of ``.npy`` files per shard, see :mod:`ehrprog.cohorts.read`), so both paths encode
identically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

_DAY_US = 86_400_000_000
_ARRAYS = (
    "subject_ids",
    "starts",
    "lengths",
    "visit_index",
    "code_offsets",
    "code_index",
    "raw_values",
    "times",
    "visit_days",
    "visit_los",
    "visit_type",
)


@dataclass
class VisitArrays:
    """Every visit of some subjects, flat (see the module docstring).

    Attributes:
        subject_ids: ``[S]`` int64, ascending.
        starts: ``[S]`` int64, the first visit row of each subject.
        lengths: ``[S]`` int64, visit rows of each subject.
        visit_index: ``[R]`` int32, the visit's index in its subject's history.
        code_offsets: ``[R + 1]`` int64.
        code_index: ``[N]`` int32, rows of ``code_table``.
        raw_values: ``[N]`` float32, the code's numeric value as recorded (NaN where none).
        times: ``[R, 3]`` float32: years since the first visit, years since the previous one, age
            / 100 years (0 when unknown).
        visit_days: ``[R]`` float32, the visit's start in days since 1970-01-01.
        visit_los: ``[R]`` float32, the visit's length (end - start) in days.
        visit_type: ``[R]`` int32, rows of ``type_table`` (0 = unknown).
        code_table: the code strings, sorted.
        type_table: ``["<unknown>", *visit types sorted]``.
    """

    subject_ids: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    visit_index: np.ndarray
    code_offsets: np.ndarray
    code_index: np.ndarray
    raw_values: np.ndarray
    times: np.ndarray
    visit_days: np.ndarray
    visit_los: np.ndarray
    visit_type: np.ndarray
    code_table: list[str]
    type_table: list[str]

    @property
    def n_visits(self) -> int:
        return len(self.visit_index)

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in _ARRAYS)

    @classmethod
    def from_visits(cls, visits: pl.DataFrame) -> VisitArrays:
        """From one row per visit (``subject_id`` and the visit struct's fields), sorted by subject
        and visit index."""
        subjects = visits.group_by("subject_id", maintain_order=True).agg(pl.len().alias("n"))
        lengths = subjects["n"].to_numpy().astype(np.int64)
        codes = visits["codes"].cast(pl.List(pl.String))
        counts = codes.list.len().fill_null(0).to_numpy().astype(np.int64)
        flat_codes = codes.explode().drop_nulls()
        flat_values = visits["numeric_values"].explode()
        flat_values = flat_values.filter(codes.explode().is_not_null())
        code_table = flat_codes.unique().sort()
        index = pl.DataFrame({"code": code_table}).with_row_index("_i")
        code_index = (
            pl.DataFrame({"code": flat_codes})
            .join(index, on="code", how="left", maintain_order="left")["_i"]
            .to_numpy()
            .astype(np.int32)
        )
        types = visits["visit_type"].cast(pl.String)
        type_table = ["<unknown>", *sorted(types.drop_nulls().unique().to_list())]
        type_index = dict(zip(type_table[1:], range(1, len(type_table)), strict=True))
        return cls(
            subject_ids=subjects["subject_id"].to_numpy().astype(np.int64),
            starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
            lengths=lengths,
            visit_index=visits["visit_index"].to_numpy().astype(np.int32),
            code_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            code_index=code_index,
            raw_values=flat_values.to_numpy().astype(np.float32),
            times=visits.select(
                pl.col("days_since_first") / 365.25,
                pl.col("days_since_prev") / 365.25,
                (pl.col("age_days") / 36525.0).fill_null(0.0),
            )
            .to_numpy()
            .astype(np.float32),
            visit_days=(visits["start"].dt.epoch("us").to_numpy() / _DAY_US).astype(np.float32),
            visit_los=((visits["end"] - visits["start"]).dt.total_microseconds().to_numpy() / _DAY_US).astype(
                np.float32
            ),
            visit_type=types.replace_strict(type_index, default=0, return_dtype=pl.Int32).to_numpy(),
            code_table=code_table.to_list(),
            type_table=type_table,
        )

    def visits_needed(self, subject_ids: np.ndarray, n_visits: np.ndarray) -> np.ndarray:
        """``[R]`` bool: the visit rows some point reads, given the points' subjects and input
        visit counts (a visit is read when its index is below its subject's largest count)."""
        need = np.zeros(len(self.subject_ids), dtype=np.int64)
        where = np.searchsorted(self.subject_ids, subject_ids)
        inside = where < len(self.subject_ids)
        inside[inside] = self.subject_ids[where[inside]] == subject_ids[inside]
        np.maximum.at(need, where[inside], n_visits[inside])
        return self.visit_index < np.repeat(need, self.lengths)

    def code_stats(self, visit_rows: np.ndarray | None = None) -> pl.DataFrame:
        """Per code of ``code_table`` read in the visits ``visit_rows`` (``[R]`` bool; all when
        ``None``): ``code``, ``n`` (records), ``n_finite`` (finite values), ``total`` (their sum)
        and ``m2`` (their sum of squared deviations from this part's mean), all float64 but ``n``.
        Parts merge exactly in :func:`merge_code_stats`."""
        counts = np.diff(self.code_offsets)
        keep = np.repeat(visit_rows if visit_rows is not None else np.ones(len(counts), bool), counts)
        index = self.code_index[keep].astype(np.int64)
        values = self.raw_values[keep].astype(np.float64)
        finite = np.isfinite(values)
        size = len(self.code_table)
        n = np.bincount(index, minlength=size)
        n_finite = np.bincount(index[finite], minlength=size).astype(np.float64)
        total = np.bincount(index[finite], weights=values[finite], minlength=size)
        mean = np.divide(total, n_finite, out=np.zeros(size), where=n_finite > 0)
        m2 = np.bincount(index[finite], weights=(values[finite] - mean[index[finite]]) ** 2, minlength=size)
        frame = pl.DataFrame(
            {"code": self.code_table, "n": n, "n_finite": n_finite, "total": total, "m2": m2},
            schema={"code": pl.String, "n": pl.Int64, "n_finite": pl.Float64, "total": pl.Float64, "m2": pl.Float64},
        )
        return frame.filter(pl.col("n") > 0)

    def visit_counts(self, visit_rows: np.ndarray | None = None) -> pl.DataFrame:
        """Per code: ``code`` and ``visits``, the visits of ``visit_rows`` (``[R]`` bool; all when
        ``None``) that hold it at least once."""
        counts = np.diff(self.code_offsets)
        row = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        keep = np.repeat(visit_rows if visit_rows is not None else np.ones(len(counts), bool), counts)
        size = max(len(self.code_table), 1)
        pairs = np.unique(row[keep] * size + self.code_index[keep])
        visits = np.bincount(pairs % size, minlength=len(self.code_table))
        return pl.DataFrame({"code": self.code_table, "visits": visits}, schema={"code": pl.String, "visits": pl.Int64})

    def save(self, folder: str | Path) -> None:
        """One ``.npy`` file per array and ``tables.json`` (code and visit-type tables)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in _ARRAYS:
            np.save(folder / f"{name}.npy", np.ascontiguousarray(getattr(self, name)), allow_pickle=False)
        (folder / "tables.json").write_text(json.dumps({"codes": self.code_table, "visit_types": self.type_table}))

    @classmethod
    def load(cls, folder: str | Path, mmap: bool = False) -> VisitArrays:
        """Read what :meth:`save` wrote (``mmap``: memory-map the arrays instead of reading them).
        Only ``.npy`` arrays and JSON are read: no pickles."""
        folder = Path(folder)
        tables = json.loads((folder / "tables.json").read_text())
        arrays = {
            name: np.load(folder / f"{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
            for name in _ARRAYS
        }
        return cls(**arrays, code_table=tables["codes"], type_table=tables["visit_types"])


def merge_code_stats(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """Merge :meth:`VisitArrays.code_stats` of disjoint parts (Chan et al.'s pairwise update):
    ``code``, ``n``, ``mean`` (null without finite values) and ``std`` (ddof 1; null under two
    finite values), sorted by code. One part gives exactly its own figures (its update term is
    an exact zero)."""
    frame = pl.concat(parts)
    merged = (
        frame.with_columns(
            (pl.col("total") / pl.col("n_finite")).alias("_part_mean"),
            (pl.col("total").sum().over("code") / pl.col("n_finite").sum().over("code")).alias("_mean"),
        )
        .group_by("code")
        .agg(
            pl.col("n").sum(),
            pl.col("n_finite").sum(),
            pl.col("_mean").first().alias("mean"),
            (
                pl.col("m2")
                + pl.when(pl.col("n_finite") > 0)
                .then(pl.col("n_finite") * (pl.col("_part_mean") - pl.col("_mean")) ** 2)
                .otherwise(0.0)
            )
            .sum()
            .alias("m2"),
        )
        .sort("code")
    )
    return merged.select(
        "code",
        "n",
        pl.when(pl.col("n_finite") > 0).then(pl.col("mean")).alias("mean"),
        pl.when(pl.col("n_finite") >= 2).then((pl.col("m2") / (pl.col("n_finite") - 1)).sqrt()).alias("std"),
    )


__all__ = ["VisitArrays", "merge_code_stats"]
