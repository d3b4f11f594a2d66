"""``EventFrame``: the one event table every adapter produces and every later stage reads."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import polars as pl

from ehrprog.io.accounting import DROP, DROP_DTYPE, NO_REASON, VALUE, IngestReport, kept, reason
from ehrprog.io.ordering import merge_on_subject, sort_canonically
from ehrprog.io.schema import BIRTH_CODE, DEATH_CODE, EVENT_SCHEMA, conform_events, row_hash


class EventFrame:
    """Events in the MEDS-compatible schema (:data:`ehrprog.io.schema.EVENT_SCHEMA`).

    Made by the readers (``read_omop``, ``read_meds``) or, for a clean table of your own, by
    :meth:`from_frame`. In memory, events are ordered by subject, time and a hash of the row, which
    visit grouping relies on.

    Attributes:
        lazy: the kept events as a polars LazyFrame.
        report: the ingest report (rows read, kept and dropped by source and reason); computed on
            first access when the frame was read lazily.
        codes: code metadata (``code``, ``description``, ``parent_codes``), possibly empty.
        splits: subject splits (``subject_id``, ``split``) when the source had them, else ``None``.
        metadata: dataset metadata (MEDS ``dataset.json`` fields).
    """

    def __init__(
        self,
        checked: pl.LazyFrame | pl.DataFrame,
        *,
        notes: list[str] | None = None,
        codes: pl.DataFrame | None = None,
        splits: pl.DataFrame | None = None,
        metadata: dict[str, Any] | None = None,
        plan: Callable[[pl.Expr | None], pl.LazyFrame] | None = None,
    ) -> None:
        self._plan = plan
        self._notes = list(notes or [])
        self._report: IngestReport | None = None
        self._unique_codes: pl.Series | None = None
        self._pieces: Callable[[], Iterator[pl.DataFrame]] | None = None
        self._subjects: pl.DataFrame | None = None
        if isinstance(checked, pl.DataFrame):
            if not checked["subject_id"].is_sorted(nulls_last=False):  # readers' frames are; a user's may not be
                checked = _canonical_order(checked.lazy()).collect(engine="in-memory")
            # Count once, then hold only the kept rows.
            self._report = IngestReport.from_checked(checked, self._notes)
            self._kept: pl.DataFrame | None = _compact(kept(checked))
            self._checked: pl.LazyFrame | None = None
        else:
            self._kept = None
            self._checked = checked
        self.codes = codes if codes is not None else empty_codes()
        self.splits = splits
        self.metadata = dict(metadata or {})

    @classmethod
    def from_plan(
        cls, plan: Callable[[pl.Expr | None], pl.LazyFrame], subject_ids: pl.Series, **kwargs: Any
    ) -> EventFrame:
        """Read a reader's plan into memory in subject-range pieces, to bound the peak memory.

        The pieces (about 12,500 subjects each, at most 16) are read two at a time and counted
        and filtered as they arrive, so the intermediate columns of only two pieces are alive at
        once; concatenated in subject order they keep the frame ordered by subject and time.
        (At 100,000 simulated subjects, 25,000-subject pieces read ~8% faster but peaked 330 MiB
        higher; 6,250-subject ones ~5% slower.)
        """
        ids = subject_ids.drop_nulls().unique().sort()
        n_pieces = max(1, min(16, -(-ids.len() // 12_500)))
        cuts = [ids[int(ids.len() * i / n_pieces)] for i in range(1, n_pieces)]

        def predicate(low: Any, high: Any) -> pl.Expr | None:
            if low is None and high is None:
                return None
            expr = pl.lit(True)
            if low is not None:
                expr = expr & (pl.col("subject_id") >= low)
            if high is not None:
                expr = expr & (pl.col("subject_id") < high)
            if high is None:  # rows with a null subject id land in the last piece
                expr = expr | pl.col("subject_id").is_null()
            return expr

        predicates = [predicate(low, high) for low, high in zip([None, *cuts], [*cuts, None], strict=True)]

        pieces = collect_two_at_a_time(plan(p) for p in predicates)
        return cls.from_pieces(pieces, plan=plan, **kwargs)

    @classmethod
    def from_pieces(cls, pieces: Iterator[pl.DataFrame], *, ordered: bool = True, **kwargs: Any) -> EventFrame:
        """Assemble checked pieces (each with the ``_drop`` column, holding whole subjects, each
        ordered by subject, time and row hash) into an in-memory frame; each piece's drops are
        counted and its kept rows retained as it arrives, so only one piece's dropped rows are
        alive at a time.

        With ``ordered=True`` the pieces come in ascending subject order; otherwise (MEDS shards
        partitioned by a hash of the subject) the kept rows are put in subject order at the end
        by a stable sort, which keeps each subject's rows in their order.
        """
        retained, reports = [], []
        for piece in pieces:
            reports.append(IngestReport.from_checked(piece, []))
            retained.append(kept(piece))
            del piece
        frame = cls(pl.DataFrame(schema={**EVENT_SCHEMA, DROP: DROP_DTYPE, VALUE: DROP_DTYPE}), **kwargs)
        events = _compact(pl.concat(retained)) if retained else pl.DataFrame(schema=EVENT_SCHEMA)
        del retained  # the pieces' columns now live in ``events`` only
        if not ordered and not events["subject_id"].is_sorted():
            events = _stable_order_by_subject(events)
        frame._kept = events
        frame._report = IngestReport.merge(reports, frame._notes)
        return frame

    @classmethod
    def from_piece_stream(cls, make_pieces: Callable[[], Iterator[pl.DataFrame]], **kwargs: Any) -> EventFrame:
        """A lazy frame read in pieces on demand (database sources): :meth:`shards` streams the
        pieces, so memory is bounded by one piece; anything else reads every piece (again)."""
        schema = {**EVENT_SCHEMA, DROP: DROP_DTYPE, VALUE: DROP_DTYPE}
        checked = pl.defer(lambda: pl.concat(list(make_pieces())), schema=schema)
        frame = cls(checked, **kwargs)
        frame._pieces = make_pieces
        return frame

    @classmethod
    def from_frame(cls, frame: pl.DataFrame | pl.LazyFrame, **kwargs: Any) -> EventFrame:
        """Wrap an event table that is already clean (no rows are checked or dropped)."""
        lazy = _canonical_order(conform_events(frame.lazy()).with_columns(NO_REASON.alias(DROP)))
        checked = lazy.collect() if isinstance(frame, pl.DataFrame) else lazy
        return cls(checked, **kwargs)

    @property
    def lazy(self) -> pl.LazyFrame:
        if self._kept is not None:
            return self._kept.lazy()
        return kept(self._checked)

    def collect(self) -> pl.DataFrame:
        """The kept events as a DataFrame, ordered by subject and time."""
        return self._kept if self._kept is not None else self.lazy.collect()

    def materialize(self) -> EventFrame:
        """Read a lazy frame into memory (no-op when it already is)."""
        if self._kept is None:
            self.__init__(
                self._checked.collect(), notes=self._notes, codes=self.codes, splits=self.splits, metadata=self.metadata
            )
        return self

    @property
    def report(self) -> IngestReport:
        if self._report is None:
            self._report = IngestReport.from_checked(self._checked, self._notes)
        return self._report

    @property
    def in_memory(self) -> bool:
        """Whether the events are held in memory (then ordered by subject, time and row hash)."""
        return self._kept is not None

    def shards(self, n_shards: int) -> Iterator[pl.DataFrame]:
        """The kept events in ``n_shards`` subject shards (by subject-id hash), each ordered by subject and time.

        For a lazy frame each shard is computed on its own, so memory stays bounded by the
        largest shard, and the ingest report is accumulated shard by shard as they are read.
        """
        if n_shards < 1:
            raise ValueError(f"n_shards must be at least 1, got {n_shards}")
        bucket = pl.col("subject_id").hash(seed=0) % n_shards
        if self._kept is not None:
            for shard in range(n_shards):
                yield self._kept.filter(bucket == shard)
            return
        reports = []
        if self._pieces is not None:  # a database read: its person chunks are the shards
            for piece in self._pieces():
                reports.append(IngestReport.from_checked(piece, self._notes))
                yield kept(piece)
            if self._report is None:
                self._report = IngestReport.merge(reports, self._notes)
            return
        for shard in range(n_shards):
            # The reader's plan applies the subject filter at every source, below the sort.
            plan = self._plan(bucket == shard) if self._plan is not None else self._checked.filter(bucket == shard)
            part = plan.collect(engine="streaming")
            reports.append(IngestReport.from_checked(part, self._notes))
            yield kept(part)
        if self._report is None:
            self._report = IngestReport.merge(reports, self._notes)

    def subject_slices(self, rows: int = 1_000_000) -> list[pl.DataFrame]:
        """The in-memory events cut into zero-copy slices of about ``rows`` rows, never splitting a subject."""
        frame = self.collect()
        ids = frame["subject_id"]
        starts = {0}
        for position in range(rows, frame.height, rows):
            starts.add(int(ids.search_sorted(ids[position], side="left")))
        bounds = [*sorted(starts), frame.height]
        return [frame.slice(a, b - a) for a, b in itertools.pairwise(bounds) if b > a]

    def unique_codes(self) -> pl.Series:
        """The distinct codes of the kept events (cached for in-memory frames)."""
        if self._kept is None:
            return self.lazy.select(pl.col("code").unique()).collect()["code"]
        if self._unique_codes is None:
            self._unique_codes = self._kept["code"].unique()
        return self._unique_codes

    def subjects(self) -> pl.DataFrame:
        """Subjects with a birth, death or sex record: ``subject_id``, ``birth``, ``death``, ``sex``."""
        if self._subjects is None or self._kept is None:
            self._subjects = subject_attributes(self.lazy, self.unique_codes()).collect(engine="in-memory")
        return self._subjects

    def __repr__(self) -> str:
        return f"EventFrame(columns={list(EVENT_SCHEMA)})"


def collect_two_at_a_time(plans: Iterable[pl.LazyFrame]) -> Iterator[pl.DataFrame]:
    """Collect lazy frames in order, two in flight at a time.

    polars leaves a core idle in a piece's serial stretches, which the other piece fills (~10%
    faster on 2 cores, for one more piece's memory). The in-memory engine, as everywhere the
    data is headed for memory anyway: polars' default ("auto", often streaming) was ~5% slower
    and peaked ~130 MiB higher at 100k subjects.
    """
    plans = iter(plans)
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending = [pool.submit(plan.collect, engine="in-memory") for plan in itertools.islice(plans, 2)]
        while pending:
            piece = pending.pop(0).result()
            for plan in itertools.islice(plans, 1):
                pending.append(pool.submit(plan.collect, engine="in-memory"))
            yield piece


def _stable_order_by_subject(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame ordered by ``subject_id``, each subject's rows kept in their order.

    The frame is a concatenation of pieces each already ordered by subject (hash-partitioned
    MEDS shards), so numpy's stable sort merges a few sorted runs (0.08 s for 7.5M ids, against
    0.18 s for polars' order-keeping arg sort). Columns are then reordered one by one, two at a
    time (0.69 s in all instead of 1.03 s one at a time for 7.5M events), which keeps the peak
    near the frame and its ordered copy (a whole-frame gather peaked at 1,578 instead of 982 MiB
    for a 100,000-subject MEDS dataset; the read now peaks at ~1,015 MiB). Null-literal columns
    (see :func:`_compact`) stay literals.
    """
    order = pl.Series(np.argsort(frame["subject_id"].to_numpy(), kind="stable"))
    schema, literals = frame.schema, set(_all_null(frame))
    columns = {name: frame[name] for name in schema if name not in literals}
    del frame

    def ordered(name: str) -> tuple[str, pl.Series]:
        return name, columns.pop(name).gather(order)

    with ThreadPoolExecutor(max_workers=2) as pool:
        gathered = dict(pool.map(ordered, list(columns)))
    nulls = [pl.lit(None, schema[name]).alias(name) for name in literals]
    return pl.DataFrame(gathered).with_columns(nulls).select(list(schema))


def _all_null(frame: pl.DataFrame) -> list[str]:
    return [name for name in frame.columns if frame.height and frame[name].null_count() == frame.height]


def _compact(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame with each column that holds only nulls replaced by a null literal.

    polars keeps a literal as one value however long the column (and keeps it so through
    filters, slices and concatenation): an all-null string column of 7.5M rows otherwise holds
    115 MiB of empty string views (``text_value`` of an extract without text values).
    """
    empty = _all_null(frame)
    if not empty:
        return frame
    return frame.with_columns(pl.lit(None, frame.schema[name]).alias(name) for name in empty)


def _canonical_order(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Order events by subject, time and a hash of the row's content (independent of input order)."""
    return (
        frame.with_columns(row_hash().alias("_hash"))
        .map_batches(sort_canonically, predicate_pushdown=True)
        .drop("_hash")
    )


def empty_codes() -> pl.DataFrame:
    """An empty code-metadata table in the MEDS ``codes.parquet`` schema."""
    return pl.DataFrame(schema={"code": pl.String, "description": pl.String, "parent_codes": pl.List(pl.String)})


_SEX_PATTERN = r"^(?:GENDER|SEX|OMOP)/+(F|M|FEMALE|MALE|8532|8507)$"


def sex_expr() -> pl.Expr:
    """``"F"``/``"M"`` for codes that state a subject's sex (``Gender/F``, ``SEX//MALE``, ``OMOP/8532``), else null."""
    value = pl.col("code").cast(pl.String).str.to_uppercase().str.extract(_SEX_PATTERN, 1)
    return (
        pl.when(value.is_in(["F", "FEMALE", "8532"]))
        .then(pl.lit("F"))
        .when(value.is_in(["M", "MALE", "8507"]))
        .then(pl.lit("M"))
        .otherwise(None)
    )


def subject_attributes(events: pl.LazyFrame, codes: pl.Series | None = None) -> pl.LazyFrame:
    """Birth (earliest birth record), death (earliest death record) and sex, per subject that has one.

    Only rows whose code is a birth, death or sex code are read (``codes``: the distinct codes of
    ``events``, computed when not given), so this is cheap on large frames.
    """
    if codes is None:
        codes = events.select(pl.col("code").unique()).collect()["code"]
    # Sex is read from each distinct code once, not per row.
    table = pl.DataFrame({"code": codes}).with_columns(sex_expr().alias("sex"))
    sex_codes = table.filter(pl.col("sex").is_not_null())
    wanted = table.filter(pl.col("code").is_in([BIRTH_CODE, DEATH_CODE]) | pl.col("sex").is_not_null())["code"]
    sex = pl.col("code").replace_strict(
        sex_codes["code"].cast(pl.String).to_list(), sex_codes["sex"].to_list(), default=None, return_dtype=pl.String
    )
    return (
        events.filter(pl.col("code").is_in(wanted.implode()))
        .group_by("subject_id")
        .agg(
            pl.col("time").filter(pl.col("code") == BIRTH_CODE).min().alias("birth"),
            pl.col("time").filter(pl.col("code") == DEATH_CODE).min().alias("death"),
            sex.drop_nulls().first().alias("sex"),
        )
    )


def mark_event_drops(
    checked: pl.LazyFrame,
    vitals: pl.DataFrame | None = None,
    *,
    known_subjects: bool = False,
    across_sources: bool = False,
) -> pl.LazyFrame:
    """Mark the rows that break cross-row rules (each row keeps the first reason it got).

    Rules: events timed before the subject's birth day, or after the end of the day of death;
    exact duplicate rows (the first copy is kept). The result is ordered by subject and time.

    ``vitals`` are the birth and death rows (with ``_drop``), when the caller has them at hand;
    otherwise they are read from ``checked`` first, so the big plan is not evaluated twice. With
    ``known_subjects=True`` (OMOP), rows of subjects without a kept vital row (no person row) are
    dropped too. With ``across_sources=True`` (MEDS: the source is the shard a row came from)
    rows equal in every column but ``source`` are duplicates too.
    """
    if vitals is None:
        vitals = checked.filter(pl.col("code").is_in([BIRTH_CODE, DEATH_CODE])).collect()
    kept = vitals.lazy().filter(pl.col(DROP).is_null()).select("subject_id", "time", "code")
    bounds = (
        kept.group_by("subject_id")
        .agg(
            pl.col("time").filter(pl.col("code") == BIRTH_CODE).min().alias("birth"),
            # a death before the birth day is no bound (that death row is dropped below)
            pl.col("time")
            .filter(
                (pl.col("code") == DEATH_CODE)
                & (
                    pl.col("time").dt.truncate("1d")
                    >= pl.col("time").filter(pl.col("code") == BIRTH_CODE).min().dt.truncate("1d")
                ).fill_null(True)
            )
            .min()
            .alias("death"),
        )
        .select(
            "subject_id",
            pl.col("birth").is_not_null().alias("_known"),
            pl.col("birth").dt.truncate("1d").alias("_birth"),
            (pl.col("death").dt.truncate("1d") + pl.duration(days=1)).alias("_death_end"),
        )
        .sort("subject_id")
    )
    is_vital = pl.col("code").is_in([BIRTH_CODE, DEATH_CODE])
    ignore = ("source",) if across_sources else ()
    event_cols = [c for c in EVENT_SCHEMA if c not in ignore]
    # Sorting by subject, time and a row hash puts exact duplicates next to each other, so one
    # comparison with the previous row finds them (O(n) after the sort, which ordering needs anyway).
    same_as_previous = pl.all_horizontal([pl.col(c).eq_missing(pl.col(c).shift(1)) for c in [*event_cols, DROP]])
    return (
        checked.with_columns(row_hash().alias("_hash"))
        .map_batches(sort_canonically, predicate_pushdown=True)
        # Ordered by subject, each row finds its subject's bounds by an as-of merge of equal ids
        # (a hash join of 940k rows against 12.5k subjects cost 5% of the read); rows of a
        # subject without bounds get nulls.
        .pipe(merge_on_subject, bounds)
        .with_columns(
            pl.when(pl.col(DROP).is_not_null())
            .then(pl.col(DROP))
            .when(pl.lit(known_subjects) & ~pl.col("_known").fill_null(False))
            .then(reason("person_id: not in the person table"))
            .when((pl.col("code") == DEATH_CODE) & (pl.col("time").dt.truncate("1d") < pl.col("_birth")))
            .then(reason("death: before the subject's birth day (DQD plausibleAfterBirth)"))
            .when(~is_vital & (pl.col("time") < pl.col("_birth")))
            .then(reason("time: event before the subject's birth (DQD plausibleAfterBirth)"))
            .when(~is_vital & (pl.col("time") >= pl.col("_death_end")))
            .then(reason("time: event after the day of the subject's death (DQD plausibleBeforeDeath)"))
            .otherwise(NO_REASON)
            .alias(DROP)
        )
        .drop("_birth", "_death_end", "_known")
        .with_columns(
            pl.when(pl.col(DROP).is_null() & same_as_previous)
            .then(reason("duplicate event: same subject, time, code, value, unit and visit as another row"))
            .otherwise(pl.col(DROP))
            .alias(DROP)
        )
        .drop("_hash")
    )
