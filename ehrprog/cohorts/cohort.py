"""``Cohort`` and ``CohortX``: prediction points, their targets, and leakage-safe inputs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ehrprog.visits.grouping import VisitFrame

#: Points whose features are computed at once (:meth:`CohortX.chunks`): the joins, rolling
#: trends and dense tables of a chunk hold ~2.6 KB a point while they run (a 50,000-subject shard
#: of ~350,000 points at once: ~900 MB), so 50,000 points keep that near 130 MB whatever a part's
#: size. A point's features read only its own subject's records, so chunks give exactly the rows
#: the whole part would.
POINT_CHUNK = 50_000


class CohortX:
    """Model inputs, one row per prediction point, sharing (not copying) the subjects' visits.

    ``points`` holds ``subject_id``, ``prediction_time``, ``n_visits``, ``current_stage`` and
    ``current_value`` (the mean staging-lab value at the prediction visit, e.g. eGFR; null when
    the visit was staged by diagnosis only).
    The input history of a point is the first ``n_visits`` visits of its subject in
    ``visits.frame``: every one of them ended at or before the prediction time, so nothing
    recorded after it (in particular the records that define the label) can be read. The visit
    frame carries no death date. ``labs`` (optional, shared like the visits) holds the task's
    staging-lab readings of these subjects, recorded or derived (``subject_id``, ``time``, ``lab``,
    ``value``; for CKD, eGFR including the values computed from creatinine); a reader takes only
    those at or before a point's prediction time (:class:`~ehrprog.features.point.PointFeatures`);
    ``lab_bands`` maps each of those labs to its staging bands (``(lower bound, stage)``, bounds
    descending, as :class:`~ehrprog.tasks.rules.LabThreshold` holds them).
    Indexing (``X[idx]`` with ints, slices, boolean masks or integer arrays) returns a new
    ``CohortX`` over the same visits, so scikit-learn's splitters work on it.
    """

    def __init__(
        self,
        points: pl.DataFrame,
        visits: VisitFrame,
        labs: pl.DataFrame | None = None,
        lab_bands: dict[str, list[tuple[float, int]]] | None = None,
    ) -> None:
        self.points = points
        self.visits = visits
        self.labs = labs
        self.lab_bands = lab_bands or {}

    @property
    def shape(self) -> tuple[int, int]:
        return (self.points.height, self.points.width)

    def __len__(self) -> int:
        return self.points.height

    def __getitem__(self, key: Any) -> CohortX:
        if isinstance(key, tuple):  # sklearn's _array_indexing passes (rows, Ellipsis)
            key = key[0]
        if isinstance(key, int | np.integer):
            key = [int(key)]
        if isinstance(key, slice):
            key = np.arange(len(self))[key]
        index = np.asarray(key)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return self._take(index.astype(np.int64))

    def _take(self, index: np.ndarray) -> CohortX:
        """The points at positions ``index``, over the same visits."""
        return CohortX(self.points[index], self.visits, self.labs, self.lab_bands)

    def __repr__(self) -> str:
        return f"CohortX(points={self.points.height}, subjects={self.points['subject_id'].n_unique()})"

    @property
    def column_names(self) -> list[str]:
        """The names of the point columns."""
        return self.points.columns

    def column(self, name: str) -> pl.Series:
        """One point column (``subject_id``, ``n_visits``, ``current_value``...) ``[len(X)]``,
        without the others: on a cohort on disk, a subset's points are never gathered whole."""
        return self.points[name]

    def parts(self) -> Iterator[tuple[CohortX, np.ndarray]]:
        """The pieces ``X`` is processed in, each with the rows of ``X`` it holds: here ``X``
        itself; a cohort on disk (:class:`~ehrprog.cohorts.read.StoredCohortX`) yields one in-memory
        ``CohortX`` per shard, so statistics and features are computed shard by shard."""
        yield self, np.arange(len(self), dtype=np.int64)

    def chunks(self, size: int | None = None) -> Iterator[tuple[CohortX, np.ndarray]]:
        """:meth:`parts` cut into pieces of at most ``size`` points (``POINT_CHUNK``, 50,000, by
        default), each over its part's visits and labs, with the rows of ``X`` it holds."""
        size = POINT_CHUNK if size is None else size
        for part, rows in self.parts():
            if len(part) <= size:
                yield part, rows
                continue
            for start in range(0, len(part), size):
                piece = slice(start, start + size)
                yield CohortX(part.points[piece], part.visits, part.labs, part.lab_bands), rows[piece]

    @property
    def code_metadata(self) -> pl.DataFrame | None:
        """Code metadata (``code``, ``description``, ...) of the data, where it has any."""
        return self.visits.codes

    def histories(self) -> pl.DataFrame:
        """The input visits of every point, long form (one row per point and visit).

        This materialises a copy per point; it is meant for baselines and inspection, not for the
        model, which reads ``visits`` once per subject.
        """
        visits = self.visits.visits()
        return (
            self.points.with_row_index("point")
            .join(visits, on="subject_id", how="inner")
            .filter(pl.col("visit_index") < pl.col("n_visits"))
            .sort("point", "visit_index")
        )


@dataclass(repr=False)
class Cohort:
    """A labelled cohort.

    Attributes:
        X: inputs (:class:`CohortX`), one row per prediction point.
        y: targets per point: ``stage`` (the next recorded stage after the prediction time, null
            when none is recorded), ``event`` (a higher stage is recorded later) and
            ``time_to_event_days`` (to that record, or to the end of follow-up when censored);
            with death competing, ``death`` (the follow-up ended in death, no progression first).
        groups: the subject id of each point (numpy int64), for ``GroupKFold``.
        labels: the same targets in the MEDS label schema (:data:`~ehrprog.io.schema.LABEL_SCHEMA`);
            a ``polars.LazyFrame`` for a cohort loaded from disk.
        stages: every stage record found (``stage_events``); a ``polars.LazyFrame`` for a cohort
            loaded from disk.
        report: counts of points and records left out, by reason.
        warnings: what makes the labels look implausible (e.g. many subjects whose recorded stage
            falls by two or more stages and rises again), for the summary and the report.
    """

    X: CohortX
    y: pl.DataFrame
    groups: np.ndarray
    labels: pl.DataFrame
    stages: pl.DataFrame
    report: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        events = int(self.y["event"].sum()) if "event" in self.y.columns else 0
        return (
            f"Cohort(points={len(self.X):,}, subjects={len(np.unique(self.groups)):,}, progression events={events:,}; "
            "cohort.summary() describes it)"
        )

    def subset(self, subject_ids: np.ndarray) -> Cohort:
        """The part of the cohort about ``subject_ids`` (points, visits, labs, labels, stages)."""
        keep = np.isin(self.groups, subject_ids)
        wanted = pl.col("subject_id").is_in(pl.Series(subject_ids, dtype=pl.Int64).implode())
        X = self.X
        visits = VisitFrame(X.visits.frame.filter(wanted), X.visits.strategy, X.visits.codes)
        labs = X.labs.filter(wanted) if X.labs is not None else None
        rows = np.flatnonzero(keep)
        part = CohortX(X.points[rows], visits, labs, X.lab_bands)
        stages = self.stages.filter(wanted)
        return Cohort(part, self.y[rows], self.groups[rows], self.labels[rows], stages, {}, [])

    def save(self, path: str | Path, *, subjects_per_shard: int = 5_000) -> Path:
        """Write the cohort to ``path`` as subject shards (see :mod:`ehrprog.cohorts.read`); read it back
        with :func:`ehrprog.load_cohort`, whose inputs stay on disk."""
        from ehrprog.cohorts.write import save_cohort

        return save_cohort(self, path, subjects_per_shard=subjects_per_shard)

    def summary(self) -> str:
        """A short human-readable description of the cohort."""
        y = self.y
        lines = [
            f"prediction points {len(self.X):,} from {len(np.unique(self.groups)):,} subjects",
            f"progression events {int(y['event'].sum()):,} ({y['event'].mean():.1%}), "
            f"median time to event/censoring {y['time_to_event_days'].median():.0f} days",
        ]
        if "death" in y.columns:
            lines.append(f"deaths competing with progression {int(y['death'].sum()):,} ({y['death'].mean():.1%})")
        # One column, read shard by shard for a stored cohort (never every point column at once).
        counts = self.X.column("current_stage").to_frame().group_by("current_stage").len().sort("current_stage")
        lines.append(
            "current stage at prediction: "
            + ", ".join(f"{r['current_stage']}: {r['len']:,}" for r in counts.iter_rows(named=True))
        )
        nxt = y.group_by("stage").len().sort("stage", nulls_last=True)
        lines.append(
            "next recorded stage: "
            + ", ".join(
                f"{r['stage'] if r['stage'] is not None else 'none'}: {r['len']:,}" for r in nxt.iter_rows(named=True)
            )
        )
        by_source = self.stages.lazy().group_by("source").len().sort("source").collect()
        lines.append(
            "stage records: " + ", ".join(f"{r['source']}: {r['len']:,}" for r in by_source.iter_rows(named=True))
        )
        for reason, count in self.report.items():
            lines.append(f"left out: {reason}: {count:,}")
        lines += [f"warning: {warning}" for warning in self.warnings]
        return "\n".join(lines)
