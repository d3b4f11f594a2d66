"""Group events into visits: ``group_visits(events, strategy)`` -> ``VisitFrame``.

Strategies:

* ``"same_day"``: all events of a subject on one calendar day form a visit.
* ``Gap(hours=H)``: a new visit starts when an event is more than ``H`` hours after the previous
  event of the same subject; so consecutive events inside a visit are at most ``H`` apart and
  consecutive visits are more than ``H`` apart.
* ``"visit_id"``: events sharing a ``visit_id`` form a visit (OMOP visit_occurrence, MEDS
  ``hadm_id``-style ids). An event without an id joins the visit whose time span encloses it,
  else the nearest visit in time (ties go to the earlier one); a subject with no visit ids at all
  falls back to ``same_day``.

Birth and death records (``MEDS_BIRTH``, ``MEDS_DEATH``) and static rows (null time) are
subject attributes, not visit contents. Every other timed event lands in exactly one visit, and
the result does not depend on input row order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from ehrprog.io.events import EventFrame, collect_two_at_a_time, subject_attributes
from ehrprog.io.schema import BIRTH_CODE, DEATH_CODE, VISIT_STRUCT, conform_events, row_hash
from ehrprog.io.units import code_units, in_model_units, unit_table

_DAY_US = 86_400_000_000


@dataclass(frozen=True)
class Gap:
    """Split a subject's events into visits wherever two consecutive events are more than ``hours`` apart."""

    hours: float

    def __post_init__(self) -> None:
        if not (isinstance(self.hours, int | float) and 0 <= self.hours < float("inf")):
            raise ValueError(f"Gap(hours=...) must be a finite non-negative number of hours, got {self.hours!r}")


Strategy = Literal["same_day", "visit_id"] | Gap


@dataclass
class VisitFrame:
    """Visits nested per subject.

    Attributes:
        frame: one row per subject: ``subject_id``, ``birth``, ``death``, ``sex``, ``static_codes``
            (list of codes with no time) and ``visits``, a list of
            :data:`~ehrprog.io.schema.VISIT_STRUCT` in time order. Within a visit, ``codes`` and
            ``numeric_values`` are aligned and ordered by (time, code string, value); ``days_since_first``,
            ``days_since_prev`` and ``age_days`` are in days (float32).
        strategy: the grouping strategy used.
        codes: code metadata carried over from the events (``code``, ``description``,
            ``parent_codes``), for backbones that read code descriptions; may be empty.
    """

    frame: pl.DataFrame
    strategy: Strategy
    codes: pl.DataFrame | None = None

    @property
    def n_subjects(self) -> int:
        return self.frame.height

    @property
    def n_visits(self) -> int:
        return int(self.frame["visits"].list.len().sum())

    def __repr__(self) -> str:
        return f"VisitFrame(subjects={self.n_subjects:,}, visits={self.n_visits:,}, strategy={self.strategy!r})"

    def visits(self) -> pl.DataFrame:
        """One row per visit (``subject_id`` plus the visit struct's fields)."""
        return self.frame.select("subject_id", "visits").explode("visits").drop_nulls("visits").unnest("visits")


def run_starts(*columns: str) -> pl.Expr:
    """Whether a row starts a run: the first row, or any of ``columns`` differs from the row before."""
    return pl.any_horizontal([pl.col(c) != pl.col(c).shift(1) for c in columns]).fill_null(True)


def run_number(*columns: str) -> pl.Expr:
    """A run number (UInt32, from 1, flagged sorted) that rises wherever any of ``columns``
    changes from the previous row: in a frame ordered by those columns, equal keys form runs, and
    grouping by the run number is a sorted single-key group-by, several times faster in polars
    than hashing the keys."""
    return run_starts(*columns).cum_sum().set_sorted()


def _visit_keys(timed: pl.LazyFrame, strategy: Strategy) -> pl.LazyFrame:
    """Add ``_key`` (a visit key unique within the subject) and ``_vid`` (the source visit id or null)."""
    day_key = pl.col("time").dt.epoch("d").cast(pl.Int64)
    if strategy == "same_day":
        return timed.with_columns(day_key.alias("_key"), pl.lit(None, pl.Int64).alias("_vid"))
    if isinstance(strategy, Gap):  # timed is ordered by subject and time (see _group)
        gap_us = round(strategy.hours * 3_600_000_000)
        step = pl.col("time").diff().dt.total_microseconds()
        new_visit = (pl.col("subject_id") != pl.col("subject_id").shift(1)).fill_null(True) | (step > gap_us)
        return timed.with_columns(
            new_visit.cast(pl.Int64).cum_sum().alias("_key"), pl.lit(None, pl.Int64).alias("_vid")
        )
    if strategy == "visit_id":
        return _attach_to_visits(timed, day_key)
    raise ValueError(f"unknown visit strategy {strategy!r}; use 'same_day', 'visit_id' or ehrprog.Gap(hours=...)")


def _attach_to_visits(timed: pl.LazyFrame, day_key: pl.Expr) -> pl.LazyFrame:
    with_id = timed.filter(pl.col("visit_id").is_not_null())
    orphans = timed.filter(pl.col("visit_id").is_null())
    spans = (
        with_id.group_by("subject_id", "visit_id")
        .agg(pl.col("time").min().alias("_start"), pl.col("time").max().alias("_end"))
        .sort("subject_id", "_start", "_end", "visit_id")
    )
    # Orphans may be unsorted: join_asof needs both sides sorted by the key within groups.
    orphans = orphans.with_row_index("_row").sort("subject_id", "time")
    before = orphans.join_asof(
        spans.select("subject_id", "_start", pl.col("visit_id").alias("_before"), pl.col("_end").alias("_before_end")),
        left_on="time",
        right_on="_start",
        by="subject_id",
        strategy="backward",
        check_sortedness=False,
    ).drop("_start")
    both = before.join_asof(
        spans.select("subject_id", "_start", pl.col("visit_id").alias("_after")),
        left_on="time",
        right_on="_start",
        by="subject_id",
        strategy="forward",
        check_sortedness=False,
    )
    # An earlier, longer visit may enclose the event even when the latest-started one does not.
    enclosing = (
        orphans.select("_row", "subject_id", "time")
        .join(spans, on="subject_id", how="inner")
        .filter((pl.col("_start") <= pl.col("time")) & (pl.col("time") <= pl.col("_end")))
        .group_by("_row")
        .agg(pl.col("visit_id").sort_by("_start", "visit_id").first().alias("_enclosing"))
    )
    after_gap = (pl.col("_start") - pl.col("time")).dt.total_microseconds()
    before_gap = (pl.col("time") - pl.col("_before_end")).dt.total_microseconds()
    nearest = (
        pl.when(pl.col("_before").is_null())
        .then(pl.col("_after"))
        .when(pl.col("_after").is_null() | (before_gap <= after_gap))
        .then(pl.col("_before"))
        .otherwise(pl.col("_after"))
    )
    attached = (
        both.join(enclosing, on="_row", how="left")
        .with_columns(pl.coalesce("_enclosing", nearest).alias("visit_id"))
        .drop("_row", "_before", "_before_end", "_after", "_start", "_enclosing")
    )
    combined = pl.concat([with_id, attached], how="vertical_relaxed")
    has_visit = pl.col("visit_id").is_not_null()
    return combined.with_columns(
        pl.when(has_visit).then(pl.col("visit_id")).otherwise(day_key).alias("_key"),
        pl.col("visit_id").alias("_vid"),
    )


def group_visits(events: EventFrame | pl.DataFrame | pl.LazyFrame, strategy: Strategy = "same_day") -> VisitFrame:
    """Group events into visits, nested per subject.

    Args:
        events: an :class:`~ehrprog.io.events.EventFrame` or a frame in the event schema.
        strategy: ``"same_day"``, ``"visit_id"`` or :class:`Gap` (see the module docstring).

    Returns:
        A :class:`VisitFrame` with one row per subject, subjects in ascending id order. Inside a
        visit, codes are ordered by (time, code string, value), so the result never depends on
        input row order nor on the polars version. Each code's values are in one unit
        (:func:`~ehrprog.io.units.value_unit`: creatinine in mg/dL whatever a site records, any mass
        concentration in mg/dL, substance concentration in mmol/L; a value in a unit its lab
        cannot be converted from is not read), named in the code metadata's ``unit`` column.
    """
    if not (strategy in ("same_day", "visit_id") or isinstance(strategy, Gap)):
        raise ValueError(f"unknown visit strategy {strategy!r}; use 'same_day', 'visit_id' or ehrprog.Gap(hours=...)")
    if isinstance(events, EventFrame):
        attributes = events.subjects()
        units = unit_table(events.lazy)  # each code's values in one unit (ehrprog.io.units)
        if events.in_memory:
            # In-memory events are ordered by subject, time and row hash: group them slice by slice
            # (never splitting a subject), two slices at a time, so only two slices' intermediate
            # lists are alive at once.
            ranks = code_ranks(events.unique_codes())
            slices = [
                _group(in_model_units(piece.lazy(), units), attributes.lazy(), True, strategy, ranks)
                for piece in events.subject_slices()
            ]
            # One chunk per column per slice: columns whose chunks do not line up are copied
            # whole by every later select or drop (0.02 s each at 100k subjects); a slice's
            # stray second chunk costs far less to merge here.
            pieces = [piece.rechunk() for piece in collect_two_at_a_time(slices)]
            if not pieces:
                lazy = in_model_units(events.lazy, units)
                pieces = [_collect(_group(lazy, attributes.lazy(), True, strategy, ranks))]
            return VisitFrame(pl.concat(pieces), strategy, with_units(events.codes, units))
        lazy = in_model_units(events.lazy, units)
        frame = _collect(_group(lazy, attributes.lazy(), False, strategy, code_ranks(events.unique_codes())))
        return VisitFrame(frame, strategy, with_units(events.codes, units))
    lazy = conform_events(events.lazy())
    codes = lazy.select(pl.col("code").unique()).collect()["code"]
    units = unit_table(lazy)
    frame = _collect(
        _group(in_model_units(lazy, units), subject_attributes(lazy, codes), False, strategy, code_ranks(codes))
    )
    return VisitFrame(frame, strategy, with_units(None, units))


def with_units(codes: pl.DataFrame | None, units: pl.DataFrame) -> pl.DataFrame | None:
    """The code metadata with ``unit`` (the unit a model reads each code's values in) and
    ``values_not_read`` (values in a unit that cannot be converted) from
    :func:`~ehrprog.io.units.code_units`; codes with values in a unit and no metadata row get one."""
    per_code = code_units(units)
    if codes is None or codes.height == 0:
        if per_code.height == 0:
            return codes
        codes = pl.DataFrame(schema={"code": pl.String, "description": pl.String, "parent_codes": pl.List(pl.String)})
    base = codes.drop("unit", "values_not_read", strict=False).with_columns(pl.col("code").cast(pl.String))
    missing = per_code.join(base.select("code"), on="code", how="anti").select("code")
    return (
        pl.concat([base, missing], how="diagonal_relaxed")
        .join(per_code, on="code", how="left")
        .with_columns(pl.col("values_not_read").fill_null(0))
        .sort("code")
    )


def code_ranks(codes: pl.Series) -> pl.Series:
    """Each code's rank in string order, indexed by its categorical id (``UInt32``; codes not in
    ``codes`` get 0): sorting a visit's codes by this integer is sorting them by their strings,
    without casting every event's code to a string (which cost two thirds of the grouping)."""
    codes = codes.drop_nulls().unique()
    ids = codes.to_physical().cast(pl.Int64).to_numpy()
    ranks = np.zeros(int(ids.max()) + 1 if len(ids) else 1, dtype=np.uint32)
    ranks[ids[codes.cast(pl.String).arg_sort().to_numpy()]] = np.arange(len(ids), dtype=np.uint32)
    return pl.Series("_rank", ranks)


def _in_content_order(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` (ordered by ``_moment``, a run number of subject and time) in (``_moment``,
    ``_rank``, ``numeric_value``) order, ties kept in their order: one stable sort of the packed
    ``_moment``/``_rank`` key (rows arrive nearly in order), then value order only where a code
    repeats at one moment."""
    moment = frame["_moment"].to_numpy().astype(np.uint64)
    rank = frame["_rank"].to_numpy().astype(np.uint64)
    key = (moment << np.uint64(32)) | rank
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    tied = np.flatnonzero(ordered[1:] == ordered[:-1])
    if len(tied):  # a code recorded more than once at one moment: its values in order (nulls first)
        values = frame["numeric_value"].to_numpy()[order].astype(np.float64)
        starts = np.r_[True, ordered[1:] != ordered[:-1]]
        group = np.cumsum(starts)
        within = np.lexsort((np.nan_to_num(values, nan=np.inf), ~np.isnan(values), group))
        order = order[within]
    return frame[pl.Series(order)]


def _collect(frame: pl.LazyFrame) -> pl.DataFrame:
    return frame.collect(engine="in-memory")


def _group(
    lazy: pl.LazyFrame, attributes: pl.LazyFrame, ordered: bool, strategy: Strategy, ranks: pl.Series
) -> pl.LazyFrame:
    """The plan grouping events (of whole subjects) into the nested visit frame; see
    :func:`group_visits` (``ranks``: :func:`code_ranks` of the events' codes)."""
    vital = pl.col("code").is_in([BIRTH_CODE, DEATH_CODE])
    timed = lazy.filter(pl.col("time").is_not_null() & ~vital)
    content_hash = row_hash().alias("_hash")
    if not ordered:
        timed = timed.with_columns(content_hash).sort("subject_id", "time", "_hash")
    elif strategy == "visit_id":
        timed = timed.with_columns(content_hash)
    columns = ["subject_id", "time", "code", "numeric_value", "visit_id", "visit_type"]
    rank = pl.lit(ranks).gather(pl.col("code").to_physical()).alias("_rank")
    timed = timed.select(*columns, rank, *(["_hash"] if strategy == "visit_id" else []))
    keyed = _visit_keys(timed, strategy)
    # Rows are in time order within a visit: its start and end are its first and last times.
    # (first/last and filter-then-first are several times faster than min/max and drop_nulls
    # in polars' grouped aggregation.)
    # Inside a visit, codes (and their values) are in (time, code string, value) order: the
    # documented order, the same under any polars version (row hashes are stable within one only).
    content_order = ("time", "_rank", "numeric_value")
    visit_values = [
        pl.col("time").first().alias("start"),
        pl.col("time").last().alias("end"),
        pl.col("visit_type").filter(pl.col("visit_type").is_not_null()).first().alias("visit_type"),
        pl.col("code").sort_by(*content_order).alias("codes"),
        pl.col("numeric_value").sort_by(*content_order).alias("numeric_values"),
    ]
    if strategy == "visit_id":
        # Attaching orphans reorders rows: restore the canonical order; visits may interleave.
        keyed = keyed.sort("subject_id", "time", "_hash")
        per_visit = (
            keyed.group_by("subject_id", "_key", maintain_order=True)
            .agg(pl.col("_vid").first().alias("visit_id"), *visit_values)
            .sort("subject_id", "start", "end", "_key")
        )
    else:
        # Same-day and gap keys rise with time, so a visit is a run of consecutive rows: a run
        # number is a sorted group key, and aggregating runs beats hashing (subject, key). The
        # rows are put in content order first (one stable sort of a packed key, see
        # _in_content_order), so the visit lists need no sort of their own; the visit type is
        # the first recorded one in the events' order, taken before.
        runs = keyed.with_columns(run_number("subject_id", "_key").alias("_run"))
        types = runs.group_by("_run", maintain_order=True).agg(visit_values[2])
        ordered = runs.with_columns(run_number("subject_id", "time").alias("_moment")).map_batches(
            _in_content_order, predicate_pushdown=True
        )
        lists = ordered.group_by("_run", maintain_order=True).agg(
            pl.col("subject_id").first(),
            *visit_values[:2],
            pl.col("code").alias("codes"),
            pl.col("numeric_value").alias("numeric_values"),
        )
        per_visit = pl.concat([lists, types.drop("_run")], how="horizontal").select(
            "subject_id",
            pl.lit(None, pl.Int64).alias("visit_id"),
            "start",
            "end",
            "visit_type",
            "codes",
            "numeric_values",
        )
    # per_visit is ordered by subject (then start): a subject's first visit is where subject_id
    # changes, and forward-filling values taken there replaces three window functions (~3x faster).
    first = (pl.col("subject_id") != pl.col("subject_id").shift(1)).fill_null(True)
    row = pl.int_range(pl.len())
    visits = (
        per_visit.join(attributes.select("subject_id", "birth"), on="subject_id", how="left", maintain_order="left")
        .with_columns(first.alias("_first"))
        .with_columns(
            (row - pl.when("_first").then(row).forward_fill()).cast(pl.Int32).alias("visit_index"),
            (
                (pl.col("start") - pl.when("_first").then(pl.col("start")).forward_fill()).dt.total_microseconds()
                / _DAY_US
            )
            .cast(pl.Float32)
            .alias("days_since_first"),
            pl.when("_first")
            .then(0.0)
            .otherwise((pl.col("start") - pl.col("start").shift(1)).dt.total_microseconds() / _DAY_US)
            .cast(pl.Float32)
            .alias("days_since_prev"),
            ((pl.col("start") - pl.col("birth")).dt.total_microseconds() / _DAY_US).cast(pl.Float32).alias("age_days"),
        )
        .drop("_first")
    )
    nested = (
        visits.with_columns(pl.col("subject_id").set_sorted())
        .group_by("subject_id", maintain_order=True)
        .agg(pl.struct(*VISIT_STRUCT.to_schema()).alias("visits"))
    )
    static = (
        lazy.filter(pl.col("time").is_null())
        .sort("subject_id", "code")
        .group_by("subject_id")
        .agg(pl.col("code").alias("static_codes"))
    )
    # Subjects are ordered before the joins, so no frame holding visit lists is ever sorted.
    subjects = lazy.select(pl.col("subject_id").unique().sort())
    return (
        subjects.join(attributes, on="subject_id", how="left", maintain_order="left")
        .join(static, on="subject_id", how="left", maintain_order="left")
        .join(nested, on="subject_id", how="left", maintain_order="left")
        .with_columns(
            pl.col("static_codes").fill_null(pl.lit([], pl.List(pl.Categorical))),
            pl.col("visits").fill_null(pl.lit([], pl.List(VISIT_STRUCT))),
        )
        .select("subject_id", "birth", "death", "sex", "static_codes", "visits")
    )
