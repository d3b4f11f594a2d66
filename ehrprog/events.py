"""``EventFrame``: the one event table every adapter produces and every later stage reads."""

from __future__ import annotations

from typing import Any

import polars as pl

from ehrprog.accounting import DROP, IngestReport
from ehrprog.schema import BIRTH_CODE, DEATH_CODE, EVENT_SCHEMA, conform_events


class EventFrame:
    """Events in the MEDS-compatible schema (:data:`ehrprog.schema.EVENT_SCHEMA`).

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
    ) -> None:
        self._checked = checked
        self._notes = list(notes or [])
        self._report: IngestReport | None = None
        self.codes = codes if codes is not None else empty_codes()
        self.splits = splits
        self.metadata = dict(metadata or {})

    @classmethod
    def from_frame(cls, frame: pl.DataFrame | pl.LazyFrame, **kwargs: Any) -> EventFrame:
        """Wrap an event table that is already clean (no rows are checked or dropped)."""
        lazy = conform_events(frame.lazy()).with_columns(pl.lit(None, pl.String).alias(DROP))
        checked = lazy.collect() if isinstance(frame, pl.DataFrame) else lazy
        return cls(checked, **kwargs)

    @property
    def lazy(self) -> pl.LazyFrame:
        return self._checked.lazy().filter(pl.col(DROP).is_null()).drop(DROP)

    def collect(self) -> pl.DataFrame:
        """The kept events as a DataFrame, ordered by subject and time."""
        return self.lazy.collect()

    @property
    def report(self) -> IngestReport:
        if self._report is None:
            self._report = IngestReport.from_checked(self._checked, self._notes)
        return self._report

    def subjects(self) -> pl.DataFrame:
        """One row per subject: ``subject_id``, ``birth`` and ``death`` (datetimes or null) and ``sex``."""
        return subject_attributes(self.lazy).collect()

    def __repr__(self) -> str:
        return f"EventFrame(columns={list(EVENT_SCHEMA)})"


def empty_codes() -> pl.DataFrame:
    """An empty code-metadata table in the MEDS ``codes.parquet`` schema."""
    return pl.DataFrame(schema={"code": pl.String, "description": pl.String, "parent_codes": pl.List(pl.String)})


_SEX_PATTERN = r"^(?:GENDER|SEX|OMOP)/+(F|M|FEMALE|MALE|8532|8507)$"


def sex_expr() -> pl.Expr:
    """``"F"``/``"M"`` for codes that state a subject's sex (``Gender/F``, ``SEX//MALE``, ``OMOP/8532``), else null."""
    value = pl.col("code").str.to_uppercase().str.extract(_SEX_PATTERN, 1)
    return (
        pl.when(value.is_in(["F", "FEMALE", "8532"]))
        .then(pl.lit("F"))
        .when(value.is_in(["M", "MALE", "8507"]))
        .then(pl.lit("M"))
        .otherwise(None)
    )


def subject_attributes(events: pl.LazyFrame) -> pl.LazyFrame:
    """Birth (earliest birth record), death (earliest death record) and sex for each subject."""
    return events.group_by("subject_id").agg(
        pl.col("time").filter(pl.col("code") == BIRTH_CODE).min().alias("birth"),
        pl.col("time").filter(pl.col("code") == DEATH_CODE).min().alias("death"),
        sex_expr().drop_nulls().first().alias("sex"),
    )


def mark_event_drops(checked: pl.LazyFrame) -> pl.LazyFrame:
    """Mark the rows that break cross-row rules (each row keeps the first reason it got).

    Rules: events timed before the subject's birth day, or after the end of the day of death;
    exact duplicate rows (the first copy is kept).
    """
    kept = checked.filter(pl.col(DROP).is_null())
    bounds = subject_attributes(kept.drop(DROP)).select(
        "subject_id",
        pl.col("birth").dt.truncate("1d").alias("_birth"),
        (pl.col("death").dt.truncate("1d") + pl.duration(days=1)).alias("_death_end"),
    )
    is_vital = pl.col("code").is_in([BIRTH_CODE, DEATH_CODE])
    event_cols = list(EVENT_SCHEMA)
    return (
        checked.join(bounds, on="subject_id", how="left")
        .with_columns(
            pl.when(pl.col(DROP).is_not_null())
            .then(pl.col(DROP))
            .when(~is_vital & (pl.col("time") < pl.col("_birth")))
            .then(pl.lit("time: event before the subject's birth"))
            .when(~is_vital & (pl.col("time") >= pl.col("_death_end")))
            .then(pl.lit("time: event after the day of the subject's death"))
            .otherwise(None)
            .alias(DROP)
        )
        .drop("_birth", "_death_end")
        .with_columns(
            pl.when(pl.col(DROP).is_null() & (pl.int_range(pl.len()).over(event_cols + [DROP]) > 0))
            .then(pl.lit("duplicate event: same subject, time, code, value, unit and visit as another row"))
            .otherwise(pl.col(DROP))
            .alias(DROP)
        )
    )
