"""The person and death rows of an OMOP CDM source as events: birth, sex, race and ethnicity
from ``person``, death from ``death`` (or ``person.death_datetime``), each checked against the
extract's end and DQD's plausibility rules, drops counted by reason. Part of
:mod:`ehrprog.io.omop_events`' plan."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

import polars as pl

from ehrprog.core.errors import InputError
from ehrprog.io import tabular
from ehrprog.io.accounting import DROP, NO_REASON, NO_VALUE_ISSUE, VALUE, reason, value_issues
from ehrprog.io.schema import BIRTH_CODE, DEATH_CODE, EVENT_SCHEMA


class Source(Protocol):
    """What the plan reads from: an OMOP folder (:mod:`ehrprog.io.omop`) or a database
    (:mod:`ehrprog.io.database`)."""

    name: str
    notes: list[str]

    def has(self, name: str) -> bool: ...

    def scan(self, name: str) -> tuple[pl.LazyFrame, dict[str, pl.DataType], str] | None:
        """The table ``name`` (lazy), its schema and a label naming it in errors; ``None`` if absent."""


def require_columns(schema: dict[str, pl.DataType], columns: list[str], file: str, table: str) -> None:
    """Refuse ``table`` (read from ``file``) when a required column is missing."""
    for column in columns:
        if column not in schema:
            raise InputError(f"required column of OMOP table {table} is missing", file=file, column=column)


def future_reason(column: str, end: datetime, end_source: str) -> str:
    last = (end - timedelta(days=1)).date().isoformat()
    return f"{column}: after the extract's end ({last}, {end_source}, DQD plausibleTemporalAfter)"


def person_events(folder: Source, concepts: pl.DataFrame, end: datetime) -> pl.LazyFrame:
    scanned = folder.scan("person")
    if scanned is None:
        inside = sorted(
            sub.name for sub in folder.root.iterdir() if sub.is_dir() and tabular.find_table(sub, "person") is not None
        )
        hint = f"; its subfolders {inside} each hold one: read one of them" if inside else ""
        raise InputError(
            f"an OMOP extract must hold a person table (person.csv or person.parquet){hint}", file=str(folder)
        )
    frame, schema, file = scanned
    require_columns(schema, ["person_id", "year_of_birth"], file, "person")

    def opt_int(column: str) -> pl.Expr:
        return tabular.parse_int(column, schema[column]) if column in schema else pl.lit(None, pl.Int64)

    year, month, day = opt_int("year_of_birth"), opt_int("month_of_birth"), opt_int("day_of_birth")
    # A month outside 1-12 or a day the month does not have is not clipped into another date: it
    # is left out (the 1st month / day), and counted.
    month_ok = month.is_between(1, 12)
    month_used = pl.when(month_ok).then(month).otherwise(1)
    days_in_month = pl.date(year, month_used, 1).dt.month_end().dt.day()
    day_ok = day.is_between(1, days_in_month)
    from_parts = pl.datetime(year, month_used, pl.when(day_ok).then(day).otherwise(1))
    given = tabular.parse_datetime("birth_datetime", schema["birth_datetime"]) if "birth_datetime" in schema else None
    # birth_datetime is trusted only where it agrees with year/month/day of birth (exports fill it
    # with a sentinel such as 1900-01-01, or shift it): otherwise the parts are used, and counted.
    contradicts = pl.lit(False)
    if given is not None:
        contradicts = (
            given.is_not_null()
            & year.is_not_null()
            & (
                (given.dt.year() != year)
                | (month.is_not_null() & (given.dt.month() != month))
                | (day.is_not_null() & (given.dt.day() != day))
            )
        ).fill_null(False)
        given = pl.when(contradicts).then(None).otherwise(given)
    birth = pl.coalesce(given, from_parts) if given is not None else from_parts
    parts_used = given.is_null() if given is not None else pl.lit(True)
    this_year = end.year
    implausible_year = year.is_not_null() & ~year.is_between(1900, this_year)
    person = frame.select(
        tabular.parse_int("person_id", schema["person_id"]).alias("subject_id"),
        birth.alias("_birth"),
        year.alias("_year"),
        (parts_used & month.is_not_null() & ~month_ok.fill_null(False)).alias("_bad_month"),
        (parts_used & month_ok.fill_null(False) & day.is_not_null() & ~day_ok.fill_null(False)).alias("_bad_day"),
        contradicts.alias("_contradicts"),
        implausible_year.alias("_bad_year"),
        opt_int("gender_concept_id").alias("_gender"),
        opt_int("race_concept_id").alias("_race"),
        opt_int("ethnicity_concept_id").alias("_ethnicity"),
    )
    # A second row for the same person: its attributes are not mixed in (the first row is kept).
    person = person.with_columns(
        (pl.int_range(pl.len()).over("subject_id") > 0).and_(pl.col("subject_id").is_not_null()).alias("_repeat")
    )
    codes = concepts.lazy()
    rows = []
    for column, time in (("_birth", pl.col("_birth")), ("_gender", None), ("_race", None), ("_ethnicity", None)):
        if column == "_birth":
            part = person.select(
                "subject_id",
                pl.lit(BIRTH_CODE).alias("code"),
                time.alias("time"),
                pl.col("_year").is_null().alias("_missing"),
                "_repeat",
                "_bad_month",
                "_bad_day",
                "_contradicts",
                "_bad_year",
            )
        else:
            # Attribute rows of a person row that is itself dropped are not counted again.
            part = (
                person.filter(
                    pl.col(column).is_not_null()
                    & (pl.col(column) != 0)
                    & pl.col("subject_id").is_not_null()
                    & pl.col("_year").is_not_null()
                    & ~pl.col("_repeat")
                    & ~pl.col("_bad_year")
                )
                .join(codes.rename({"concept_id": column}), on=column, how="left")
                .select(
                    "subject_id",
                    pl.coalesce("code", pl.format("OMOP/{}", column)).alias("code"),
                    pl.lit(None, pl.Datetime("us")).alias("time"),
                    pl.lit(False).alias("_missing"),
                    pl.lit(False).alias("_repeat"),
                    pl.lit(False).alias("_bad_month"),
                    pl.lit(False).alias("_bad_day"),
                    pl.lit(False).alias("_contradicts"),
                    pl.lit(False).alias("_bad_year"),
                )
            )
        rows.append(part)
    events = pl.concat(rows, how="vertical_relaxed")
    drop = (
        pl.when(pl.col("subject_id").is_null())
        .then(reason("person_id: null or not an integer"))
        .when(pl.col("_missing"))
        .then(reason("year_of_birth: null or not an integer"))
        .when(pl.col("_bad_year"))
        .then(reason(f"year_of_birth: before 1900 or after {this_year} (DQD plausibleValueLow/High)"))
        .when((pl.col("code") == BIRTH_CODE) & pl.col("time").is_null())
        .then(reason("birth_datetime: unparseable date"))
        .when(pl.col("_repeat"))
        .then(reason("person_id: more than one person row for the person (the first kept)"))
        .otherwise(NO_REASON)
    )
    issues = value_issues(
        (pl.col("_bad_month"), "month_of_birth: outside 1-12 (left out: January)"),
        (pl.col("_bad_day"), "day_of_birth: not a day of the month (left out: the 1st)"),
        (
            pl.col("_contradicts"),
            "birth_datetime: contradicts year/month/day_of_birth (a sentinel such as 1900-01-01?): those used",
        ),
    )
    return (
        events.with_columns(drop.alias(DROP), pl.lit("omop/person").alias("source"))
        .select(
            *[
                pl.col(c) if c in ("subject_id", "time", "code", "source") else pl.lit(None).cast(t).alias(c)
                for c, t in EVENT_SCHEMA.items()
            ],
            DROP,
            issues.alias(VALUE),
        )
        .with_columns([pl.col(c).cast(t) for c, t in EVENT_SCHEMA.items()])
    )


def death_events(folder: Source, end: datetime, end_source: str) -> pl.LazyFrame | None:
    scanned = folder.scan("death")
    if scanned is None:
        return None
    frame, schema, file = scanned
    require_columns(schema, ["person_id", "death_date"], file, "death")
    times = [c for c in ("death_datetime", "death_date") if c in schema]
    death = frame.select(
        tabular.parse_int("person_id", schema["person_id"]).alias("subject_id"),
        pl.coalesce([tabular.parse_datetime(c, schema[c]) for c in times]).alias("time"),
    )
    drop = (
        pl.when(pl.col("subject_id").is_null())
        .then(reason("person_id: null or not an integer"))
        .when(pl.col("time").is_null())
        .then(reason("death_date: null or unparseable date"))
        .when(pl.col("time") >= end)
        .then(reason(future_reason("death_date", end, end_source)))
        .when(pl.int_range(pl.len()).over("subject_id") > 0)
        .then(reason("death: more than one death record for the person (earliest kept)"))
        .otherwise(NO_REASON)
    )
    return (
        death.sort("subject_id", "time", nulls_last=True)
        .with_columns(drop.alias(DROP), pl.lit(DEATH_CODE).alias("code"), pl.lit("omop/death").alias("source"))
        .select(
            *[
                (pl.col(c) if c in ("subject_id", "time", "code", "source") else pl.lit(None)).cast(t).alias(c)
                for c, t in EVENT_SCHEMA.items()
            ],
            DROP,
            NO_VALUE_ISSUE.alias(VALUE),
        )
    )
