"""A cohort's input visits as :class:`~ehrprog.visits.arrays.VisitArrays`: what the cohort
writer saves per shard and what the model's tensors encode, built once here for both."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from ehrprog.visits.arrays import VisitArrays

if TYPE_CHECKING:
    from ehrprog.cohorts.cohort import CohortX


def visit_arrays(X: CohortX) -> VisitArrays:
    """``X``'s input visits as :class:`~ehrprog.visits.arrays.VisitArrays` (those a part read from
    disk carries, else built from ``X.visits``)."""
    arrays = getattr(X, "arrays", None)
    if arrays is not None:
        return arrays
    return VisitArrays.from_visits(_input_visits(X).sort("subject_id", "visit_index"))


def _input_visits(X: CohortX) -> pl.DataFrame:
    """Visits that some point of ``X`` may read (index < that subject's largest ``n_visits``)."""
    needed = X.points.group_by("subject_id").agg(pl.col("n_visits").max().alias("_n"))
    return (
        X.visits.frame.join(needed, on="subject_id", how="inner")
        .select("subject_id", "_n", "visits")
        .explode("visits")
        .drop_nulls("visits")
        .unnest("visits")
        .filter(pl.col("visit_index") < pl.col("_n"))
    )


__all__ = ["visit_arrays"]
