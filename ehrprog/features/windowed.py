"""Code counts over look-back windows, in the manner of MEDS-Tab: the tabular features that make
gradient boosting the baseline EHR models find hardest to beat.

For each prediction point and each kept code: how many times it was recorded in the input visits
that ended in the last 30 days, the last 365 days, and in all of the history; for each kept coded
measurement, its latest value. Only a point's input visits are read (the first ``n_visits`` of
its subject, all ended by the prediction time), so nothing after it enters. The result is a
sparse matrix (SciPy CSR) whose absent entries mean "not recorded": a count of zero, or no value.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ehrprog.cohorts.cohort import CohortX

_DAY_US = 86_400_000_000


class WindowedCounts(TransformerMixin, BaseEstimator):
    """Counts of each code over look-back windows, and the latest value of each coded measurement.

    Args:
        windows_days: the look-back windows (days before the prediction time; ``None`` = all history).
        min_subjects: a code is kept when at least this many training subjects have it.
        max_codes: at most this many codes (those recorded for the most training subjects).
        min_readings: a coded measurement gets a latest-value column with this many training values.

    Attributes:
        codes_: the kept codes (a count column per code and window, codes outermost).
        lab_codes_: the coded measurements with a latest-value column (after the counts).
    """

    def __init__(
        self,
        windows_days: tuple[float | None, ...] = (30.0, 365.0, None),
        min_subjects: int = 5,
        max_codes: int = 2000,
        min_readings: int = 20,
    ) -> None:
        self.windows_days = windows_days
        self.min_subjects = min_subjects
        self.max_codes = max_codes
        self.min_readings = min_readings

    def fit(self, X: CohortX, y: Any = None) -> WindowedCounts:
        """Choose the codes on ``X``'s points, piece by piece (:meth:`~ehrprog.cohorts.cohort.CohortX.parts`:
        a cohort on disk shard by shard; its shards hold disjoint subjects, so per-piece counts
        of subjects and readings add up exactly)."""
        self._fit([_code_tallies(_flat_codes(part)) for part, _ in X.parts()])
        return self

    def fit_transform(self, X: CohortX, y: Any = None) -> sparse.csr_matrix:
        """``fit`` then :meth:`transform`, reading the points' histories once (in memory)."""
        parts = list(X.parts())
        if len(parts) != 1 or not np.array_equal(parts[0][1], np.arange(len(X))):  # several pieces: two passes
            return self.fit(X).transform(X)
        flat = _flat_codes(parts[0][0])
        self._fit([_code_tallies(flat)])
        return self._transform(flat, len(X))

    def _fit(self, tallies: list[tuple[pl.DataFrame, pl.DataFrame]]) -> None:
        subjects = pl.concat([t[0] for t in tallies]).group_by("code").agg(pl.col("subjects").sum())
        by_subject = (
            subjects.filter(pl.col("subjects") >= self.min_subjects)
            .sort(["subjects", "code"], descending=[True, False])
            .head(self.max_codes)
        )
        self.codes_ = by_subject["code"].to_list()
        readings = pl.concat([t[1] for t in tallies]).group_by("code").agg(pl.col("n").sum())
        self.lab_codes_ = readings.filter(pl.col("n") >= self.min_readings).sort("code")["code"].to_list()

    @property
    def names(self) -> list[str]:
        """The name of each column, in order."""
        windows = ["all" if w is None else f"{w:g}d" for w in self.windows_days]
        return [f"{code}:count_{w}" for code in self.codes_ for w in windows] + [
            f"{code}:last" for code in self.lab_codes_
        ]

    def transform(self, X: CohortX) -> sparse.csr_matrix:
        """``[n_points, len(names)]`` float32 CSR: counts per code and window, then latest values
        (piece by piece, rows in the order of ``X``)."""
        check_is_fitted(self, "codes_")
        pieces = [(self._transform(_flat_codes(part), len(part)), rows) for part, rows in X.parts()]
        if len(pieces) == 1 and np.array_equal(pieces[0][1], np.arange(len(X))):
            return pieces[0][0]
        if not pieces:
            return sparse.csr_matrix((0, len(self.names)), dtype=np.float32)
        stacked = sparse.vstack([matrix for matrix, _ in pieces], format="csr")
        return stacked[np.argsort(np.concatenate([rows for _, rows in pieces]), kind="stable")]

    def _transform(self, flat: pl.DataFrame, n: int) -> sparse.csr_matrix:
        n_windows = len(self.windows_days)
        dtype = flat.schema["code"]  # Categorical in a visit frame: join on the same type
        index = pl.DataFrame({"code": self.codes_, "_col": np.arange(len(self.codes_), dtype=np.int64)})
        index = index.with_columns(pl.col("code").cast(dtype))
        counted = flat.join(index, on="code", how="inner")
        window_counts = [
            (pl.col("age_days") <= w).sum().alias(f"_w{i}") if w is not None else pl.len().alias(f"_w{i}")
            for i, w in enumerate(self.windows_days)
        ]
        per = counted.group_by("point", "_col").agg(window_counts)
        rows, cols, vals = [], [], []
        for i in range(n_windows):
            part = per.filter(pl.col(f"_w{i}") > 0)
            rows.append(part["point"].to_numpy())
            cols.append(part["_col"].to_numpy() * n_windows + i)
            vals.append(part[f"_w{i}"].to_numpy().astype(np.float32))
        labs = pl.DataFrame({"code": self.lab_codes_, "_lab": np.arange(len(self.lab_codes_), dtype=np.int64)})
        labs = labs.with_columns(pl.col("code").cast(dtype))
        last = (
            flat.filter(pl.col("value").is_not_null())
            .join(labs, on="code", how="inner")
            .sort("point", "visit_index")
            .group_by("point", "_lab")
            .agg(pl.col("value").last())
        )
        rows.append(last["point"].to_numpy())
        cols.append(last["_lab"].to_numpy() + len(self.codes_) * n_windows)
        vals.append(last["value"].to_numpy().astype(np.float32))
        width = len(self.codes_) * n_windows + len(self.lab_codes_)
        matrix = sparse.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, width), dtype=np.float32
        )
        matrix.sum_duplicates()
        return matrix


def _code_tallies(flat: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per code (as a string): the subjects who have it, and its readings with a value."""
    code = pl.col("code").cast(pl.String)
    subjects = flat.group_by(code).agg(pl.col("subject_id").n_unique().alias("subjects"))
    readings = flat.filter(pl.col("value").is_not_null()).group_by(code).agg(pl.len().alias("n"))
    return subjects, readings


def _flat_codes(X: CohortX) -> pl.DataFrame:
    """One row per code recorded in a point's input visits: ``point``, ``subject_id``,
    ``visit_index``, ``code``, ``value`` and ``age_days`` (days from the visit's end to the
    prediction time, >= 0)."""
    histories = X.histories()
    return (
        histories.select(
            "point",
            "subject_id",
            "visit_index",
            ((pl.col("prediction_time") - pl.col("end")).dt.total_microseconds() / _DAY_US).alias("age_days"),
            pl.col("codes").alias("code"),
            pl.col("numeric_values").alias("value"),
        )
        .explode("code", "value")
        .drop_nulls("code")
    )


__all__ = ["WindowedCounts"]
