"""The checked-events plan of an OMOP CDM source, files or database alike: each table typed and
checked (``ehrprog.io.tabular``), concept ids spelled as codes, the person and death rows, the
extract's end, the visit spans; every dropped row and nulled value counted by reason.

A source offers ``scan(name)`` (a lazy table, its schema and a label naming it in errors),
``has(name)``, ``notes`` and ``name``: a folder (:mod:`ehrprog.io.omop`) scans its files, a
database (:mod:`ehrprog.io.database`) one chunk of persons at a time.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Literal, NamedTuple

import polars as pl

from ehrprog.core.errors import InputError
from ehrprog.io import tabular
from ehrprog.io.accounting import DROP, NO_REASON, VALUE, reason, value_issues
from ehrprog.io.events import empty_codes, mark_event_drops
from ehrprog.io.omop_persons import Source, death_events, future_reason, person_events, require_columns
from ehrprog.io.omop_tables import DEFAULT_TABLES, EVENT_TABLES, KNOWN_CONCEPTS, EventTable
from ehrprog.io.schema import BIRTH_CODE, DEATH_CODE, EVENT_SCHEMA
from ehrprog.io.visit_spans import END_BEFORE_START, OUTSIDE_VISIT, VisitSpans, spans_from, visit_span_plan

log = logging.getLogger(__name__)

CodeMode = Literal["standard", "source", "concept_id"]


def _concepts(folder: Source) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(concept_id, code)`` for every known concept, and code metadata (``code``, ``description``).

    Codes are ``{vocabulary_id}/{concept_code}`` from the CONCEPT table where present, with a few
    built-in concepts (sex, visit types) known without one.
    """
    known = pl.DataFrame(
        {
            "concept_id": list(KNOWN_CONCEPTS),
            "code": [f"{v}/{c}" for v, c, _ in KNOWN_CONCEPTS.values()],
            "description": [n for _, _, n in KNOWN_CONCEPTS.values()],
        },
        schema={"concept_id": pl.Int64, "code": pl.String, "description": pl.String},
    )
    scanned = folder.scan("concept")
    if scanned is None:
        folder.notes.append("no CONCEPT table: concepts are coded OMOP/<concept_id>")
        names = folder.scan("source_to_standard_vocab_map")
        if names is not None:
            frame, schema, file = names
            require_columns(schema, ["target_concept_id", "target_concept_name"], file, "source_to_standard_vocab_map")
            described = (
                frame.select(
                    tabular.parse_int("target_concept_id", schema["target_concept_id"]).alias("concept_id"),
                    tabular.clean_string("target_concept_name", schema["target_concept_name"]).alias("description"),
                )
                .drop_nulls()
                .unique("concept_id", keep="first")
                .select(pl.format("OMOP/{}", "concept_id").alias("code"), "description")
                .collect()
            )
            folder.notes.append(f"concept names for {described.height:,} concepts from source_to_standard_vocab_map")
            return known.select("concept_id", "code"), pl.concat([known.select("code", "description"), described])
        return known.select("concept_id", "code"), known.select("code", "description")
    frame, schema, file = scanned
    require_columns(schema, ["concept_id", "vocabulary_id", "concept_code"], file, "concept")
    name = (
        tabular.clean_string("concept_name", schema["concept_name"])
        if "concept_name" in schema
        else pl.lit(None, pl.String)
    )
    table = (
        frame.select(
            tabular.parse_int("concept_id", schema["concept_id"]).alias("concept_id"),
            pl.format(
                "{}/{}",
                tabular.clean_string("vocabulary_id", schema["vocabulary_id"]),
                tabular.clean_string("concept_code", schema["concept_code"]),
            ).alias("code"),
            name.alias("description"),
        )
        .drop_nulls(["concept_id", "code"])
        .collect()
    )
    table = pl.concat([table, known.filter(~pl.col("concept_id").is_in(table["concept_id"].implode()))])
    table = table.unique("concept_id", keep="first")
    return table.select("concept_id", "code"), table.select("code", "description").unique("code", keep="first")


def _id_codes(ids: pl.Series, concepts: pl.DataFrame | None, *, fallback: bool = True) -> pl.Expr:
    """The code of each id in column ``ids.name`` (Categorical), for ids among the distinct
    ``ids``: the concept's code where ``concepts`` knows it, else ``OMOP/<id>`` (``fallback``)
    or null; null for null and 0.

    Codes are spelled once per distinct id and mapped back with ``replace_strict`` (a hash
    lookup per row producing one new column), not formatted or joined per row.
    """
    column = ids.name
    frame = ids.to_frame().filter(pl.col(column).is_not_null() & (pl.col(column) != 0))
    by_id = pl.format("OMOP/{}", column)
    if concepts is None:
        code = by_id
    else:
        frame = frame.join(concepts.rename({"concept_id": column}), on=column, how="left")
        code = pl.coalesce(pl.col("code"), by_id) if fallback else pl.col("code")
    return _mapped(frame.select(column, code.cast(pl.Categorical).alias("_value")))


def _cleaned_values(raw: pl.Series, dtype: pl.DataType) -> pl.Expr:
    """Column ``raw.name`` trimmed (blank -> null) as a Categorical, for values among the distinct
    ``raw``: cleaned once per distinct value and mapped back (units repeat a handful of strings
    over millions of rows; trimming and categorising each row cost 0.1 s per 2.5M)."""
    column = raw.name
    cleaned = tabular.clean_string_expr(pl.col(column), dtype).cast(pl.Categorical)
    return _mapped(raw.to_frame().select(column, cleaned.alias("_value")))


def _mapped(mapping: pl.DataFrame) -> pl.Expr:
    """Column ``mapping``'s first column's name, mapped row by row to ``mapping``'s second column
    (Categorical); values missing from the mapping, or mapped to null, become null."""
    key, value = mapping.columns
    mapping = mapping.drop_nulls()
    if mapping.height == 0:
        return pl.lit(None, pl.Categorical)
    return pl.col(key).replace_strict(mapping[key], mapping[value], default=None, return_dtype=pl.Categorical)


def _code_expr(has_source_concept: bool, has_source_value: bool, mode: CodeMode) -> tuple[pl.Expr, pl.Expr]:
    """The event code (Categorical) from the joined code columns, and where the source value is needed.

    ``_std_code``/``_src_code`` are the standard and source concepts' codes (``OMOP/<id>`` when
    ``mode == "concept_id"``); ``_src_value`` the cleaned source value.
    """
    std = pl.col("_std_code")
    src = pl.col("_src_code") if has_source_concept else pl.lit(None, pl.Categorical)
    if mode == "source":
        preferred, needs_value = [src], src.is_null()
        after = [std]
    else:  # "standard" and "concept_id": standard concept, else source concept, else source value
        preferred, needs_value = [std, src], std.is_null() & src.is_null()
        after = []
    if not has_source_value:
        return pl.coalesce(*preferred, *after), pl.lit(False)
    value = pl.when(needs_value).then(pl.format("SOURCE/{}", pl.col("_src_value"))).cast(pl.Categorical)
    return pl.coalesce(*preferred, value, *after), needs_value


class _TypedTable(NamedTuple):
    """An event table's columns parsed to event types, before its concept ids become codes."""

    spec: EventTable
    typed: pl.LazyFrame
    schema: dict[str, pl.DataType]
    times: list[str]
    source_value: str | None
    source_concept: str | None
    #: The value issues the table can have; ``typed`` holds the mask of issue ``i`` as ``_issue{i}``.
    issues: tuple[str, ...] = ()

    def distinct_ids(self) -> pl.LazyFrame:
        """The distinct ids of the three concept columns (and raw units), one list per column."""
        unit = ["_raw_unit"] if self.spec.unit in self.schema else []
        return self.typed.select(pl.col("_std_id", "_src_id", "_unit_id", *unit).unique().implode())


def _typed_table(folder: Source, spec: EventTable) -> _TypedTable | None:
    scanned = folder.scan(spec.name)
    if scanned is None:
        return None
    frame, schema, file = scanned
    times = [c for c in spec.times if c in schema]
    if not times:
        raise InputError(
            f"OMOP table {spec.name} needs one of the time columns {list(spec.times)}", file=file, column=spec.times[-1]
        )
    require_columns(schema, ["person_id", spec.concept], file, spec.name)

    def opt(column: str | None, parse) -> pl.Expr:
        if column is None or column not in schema:
            return pl.lit(None)
        return parse(column, schema[column])

    source_value = spec.source_value if spec.source_value in schema else None
    source_concept = spec.source_concept if spec.source_concept in schema else None
    time_exprs = [tabular.parse_datetime(c, schema[c]) for c in times]
    time_issues: list[tuple[pl.Expr, str] | None] = []
    if len(time_exprs) == 2:
        # Exports often fill *_datetime with a sentinel (1900-01-01) or a shifted value: trust
        # the datetime only where it falls on the row's date (counted where it does not).
        precise, day = time_exprs
        if isinstance(schema[times[1]], pl.Date):  # midnight: two comparisons, no conversions
            on_day = (precise >= day) & (precise < day + pl.duration(days=1))
        else:
            on_day = precise.dt.date() == day.dt.date()
        time_issues = [
            (
                tabular.present(times[0], schema[times[0]]).fill_null(False) & precise.is_null() & day.is_not_null(),
                f"{times[0]}: unreadable (not an ISO or YYYYMMDD time), the date used",
            ),
            (
                precise.is_not_null() & day.is_not_null() & ~on_day,
                f"{times[0]}: not on the row's date (a sentinel or shifted time), the date used",
            ),
        ]
        time_exprs = [pl.when(day.is_null() | on_day).then(precise), day]
    raw_time_present = pl.any_horizontal([tabular.present(c, schema[c]).fill_null(False) for c in times])
    visit_id = opt(spec.visit, tabular.parse_int)  # visit_occurrence_id in every table that has a visit
    numeric, number_issues = pl.lit(None), []
    if spec.numeric is not None and spec.numeric in schema:  # the decimal mark decided for the whole column
        mark, notes = tabular.decimal_mark(frame, spec.numeric, schema[spec.numeric])
        folder.notes.extend(f"{spec.name} {note}" for note in notes)
        numeric = tabular.parse_float(spec.numeric, schema[spec.numeric], mark)
        number_issues = tabular.number_issues(spec.numeric, schema[spec.numeric], numeric, mark)
    issues = [
        issue
        for issue in (
            *number_issues,
            tabular.value_issue(*tabular.in_schema(schema, spec.visit), visit_id, "not an integer"),
            *time_issues,
        )
        if issue is not None
    ]

    typed = frame.select(
        tabular.parse_int("person_id", schema["person_id"]).alias("subject_id"),
        pl.coalesce(time_exprs).alias("time"),
        raw_time_present.alias("_has_raw_time"),
        tabular.parse_int(spec.concept, schema[spec.concept]).alias("_std_id"),
        opt(source_concept, tabular.parse_int).cast(pl.Int64).alias("_src_id"),
        numeric.cast(pl.Float32).alias("numeric_value"),
        opt(spec.text, tabular.clean_string).cast(pl.String).alias("text_value"),
        visit_id.cast(pl.Int64).alias("visit_id"),
        opt(spec.unit_concept, tabular.parse_int).cast(pl.Int64).alias("_unit_id"),
        *([pl.col(source_value).alias("_raw_src_value")] if source_value else []),
        *([pl.col(spec.unit).alias("_raw_unit")] if spec.unit in schema else []),
        *(mask.fill_null(False).alias(f"_issue{i}") for i, (mask, _) in enumerate(issues)),
    )
    reasons = tuple(reason for _, reason in issues)
    return _TypedTable(spec, typed, schema, times, source_value, source_concept, reasons)


def _events_from(
    table: _TypedTable,
    distinct: pl.DataFrame,
    concepts: pl.DataFrame,
    mode: CodeMode,
    end: datetime,
    end_source: str,
    spans: VisitSpans | None,
) -> pl.LazyFrame:
    """The checked events of a typed table, its concept ids (``distinct``: the table's
    :meth:`_TypedTable.distinct_ids`) spelled as codes once each and mapped row by row; events at
    or after ``end`` (the extract's end, see :func:`extract_end`) are dropped and counted. With the
    visits' ``spans`` (:func:`visit_spans`), an event whose time falls outside the span of the
    visit its id names loses the id (the ``visit_id`` strategy then attaches it by time, as it
    does events without an id), counted among the value issues."""
    spec, typed, schema, times = table.spec, table.typed, table.schema, table.times
    issues = [(pl.col(f"_issue{i}"), reason) for i, reason in enumerate(table.issues)]
    if spans is not None and spec.visit is not None:
        outside = spans.outside(pl.col("visit_id"), pl.col("time"))
        typed = typed.with_columns(outside.alias("_outside_visit")).with_columns(
            pl.when("_outside_visit").then(None).otherwise(pl.col("visit_id")).alias("visit_id")
        )
        issues.append((pl.col("_outside_visit"), OUTSIDE_VISIT))
    typed = typed.with_columns(value_issues(*issues).alias(VALUE))
    source_value, source_concept = table.source_value, table.source_concept
    has_unit = spec.unit in schema
    ids = {name: distinct[name].explode() for name in distinct.columns}
    by_id = None if mode == "concept_id" else concepts
    unit_names = concepts.select("concept_id", pl.col("code").str.extract(r"/(.*)$", 1))
    joined = typed.with_columns(
        _id_codes(ids["_std_id"], by_id).alias("_std_code"),
        # A source concept missing from CONCEPT falls back to the source value, not to OMOP/<id>.
        _id_codes(ids["_src_id"], by_id, fallback=mode == "concept_id").alias("_src_code"),
        _id_codes(ids["_unit_id"], unit_names, fallback=False).alias("_unit_code"),
    )
    code, needs_value = _code_expr(source_concept is not None, source_value is not None, mode)
    if source_value:  # cleaned only where the code falls back to it
        raw = pl.when(needs_value).then(pl.col("_raw_src_value"))
        joined = joined.with_columns(tabular.clean_string_expr(raw, schema[source_value]).alias("_src_value"))
    unit = pl.lit(None, pl.Categorical)
    if has_unit:
        unit = _cleaned_values(ids["_raw_unit"], schema[spec.unit])
    # The visit type rides on the visit's own event; group_visits gives it to the whole visit.
    visit_type = pl.col("_std_code") if spec.name == "visit_occurrence" else pl.lit(None, pl.Categorical)
    drop = (
        pl.when(pl.col("subject_id").is_null())
        .then(reason("person_id: null or not an integer"))
        .when(pl.col("time").is_null() & pl.col("_has_raw_time"))
        .then(reason(f"{times[-1]}: unparseable date"))
        .when(pl.col("time").is_null())
        .then(reason(f"{times[-1]}: null date"))
        .when(pl.col("code").is_null())
        .then(reason(f"{spec.concept}: no concept and no source value"))
        .when(pl.col("time") >= end)
        .then(reason(future_reason(times[-1], end, end_source)))
        .otherwise(NO_REASON)
    )
    return (
        joined.with_columns(
            code.alias("code"),
            pl.coalesce(unit, "_unit_code").alias("unit"),
            visit_type.alias("visit_type"),
            pl.lit(f"omop/{spec.name}", pl.Categorical).alias("source"),
        )
        .with_columns(drop.alias(DROP))
        .select(*EVENT_SCHEMA, DROP, VALUE)
    )


def concept_table(folder, codes: CodeMode) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(concept_id, code)`` and code descriptions for a source, spelled as ``codes`` asks."""
    concepts, descriptions = _concepts(folder)
    if codes == "concept_id":  # the same names, keyed by OMOP/<concept_id>
        descriptions = pl.concat(
            [
                concepts.join(descriptions, on="code", how="inner").select(
                    pl.format("OMOP/{}", "concept_id").alias("code"), "description"
                ),
                descriptions.filter(pl.col("code").str.starts_with("OMOP/")),
            ]
        ).unique("code", keep="first")
    return concepts, descriptions


def tables_to_read(folder, tables, condition_era: bool | None) -> list[str]:
    """The event tables to read from a source (``condition_era`` added where it stands in for
    missing occurrences, with a note)."""
    wanted = list(tables) if tables is not None else list(DEFAULT_TABLES)
    unknown = [t for t in wanted if t not in EVENT_TABLES]
    if unknown:
        raise InputError(f"unknown OMOP event tables {unknown}; known: {sorted(EVENT_TABLES)}")
    has_occurrences = folder.has("condition_occurrence")
    if condition_era or (condition_era is None and not has_occurrences and "condition_era" not in wanted):
        if folder.has("condition_era"):
            wanted.append("condition_era")
            if condition_era is None:
                folder.notes.append("no condition_occurrence table: conditions read from condition_era")
    return wanted


def extract_end(folder) -> tuple[datetime, str]:
    """The day after the last day the extract can hold (events from it on are in the future), and
    where it came from: ``cdm_source``'s latest release date, else the latest
    ``observation_period_end_date``, else today (UTC)."""
    for table, columns in (
        ("cdm_source", ("cdm_release_date", "source_release_date")),
        ("observation_period", ("observation_period_end_date",)),
    ):
        scanned = folder.scan(table) if folder.has(table) else None
        if scanned is None:
            continue
        frame, schema, _ = scanned
        present = [c for c in columns if c in schema]
        if not present:
            continue
        latest = frame.select(
            pl.max_horizontal([tabular.parse_datetime(c, schema[c]).max() for c in present]).alias("end")
        ).collect()["end"][0]
        if latest is not None:
            return latest.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1), (
                f"the latest {' / '.join(present)} of {table}"
            )
    today = datetime.now(UTC).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    return today + timedelta(days=1), "today (no cdm_source or observation_period dates)"


def event_plan(folder, concepts: pl.DataFrame, wanted: list[str], codes: CodeMode):
    """The checked-events plan of a source (``plan(subjects=None) -> LazyFrame``) and its person ids."""
    end, end_source = extract_end(folder)
    person, death = person_events(folder, concepts, end), death_events(folder, end, end_source)
    tables = []
    for name in wanted:
        table = _typed_table(folder, EVENT_TABLES[name])
        if table is None:
            folder.notes.append(f"table {name} absent")
            continue
        tables.append(table)
    # The person and death rows, every table's distinct concept ids and the visits' spans, read in
    # one parallel pass.
    span_plan = visit_span_plan(folder) if any(t.spec.visit for t in tables) else None
    firsts = pl.collect_all(
        [
            person,
            *([death] if death is not None else []),
            *(t.distinct_ids() for t in tables),
            *([span_plan] if span_plan is not None else []),
        ],
        engine="in-memory",
    )
    spans = spans_from(firsts.pop()) if span_plan is not None else None
    n_vitals = 1 if death is None else 2
    people, vitals, distinct = firsts[0], pl.concat(firsts[:n_vitals]), firsts[n_vitals:]
    parts = [vitals.lazy()]
    if spans is not None and spans.n_backwards:
        folder.notes.append(f"{spans.n_backwards:,} visit(s) in visit_occurrence: {END_BEFORE_START}")
    for table, ids in zip(tables, distinct, strict=True):
        own_spans = None if table.spec.name == "visit_occurrence" else spans  # a visit row spans itself
        parts.append(_events_from(table, ids, concepts, codes, end, end_source, own_spans))
    vital_rows = vitals.filter(pl.col("code").is_in([BIRTH_CODE, DEATH_CODE]))

    def plan(subjects: pl.Expr | None = None) -> pl.LazyFrame:
        """The checked events, optionally for a subset of subjects only (filtered at every table)."""
        tables = parts if subjects is None else [part.filter(subjects) for part in parts]
        known = vital_rows if subjects is None else vital_rows.filter(subjects)
        # Every kept person row yields a MEDS_BIRTH row (a null birth drops the person), so the
        # vital rows also tell which subjects the person table knows.
        return mark_event_drops(pl.concat(tables, how="vertical_relaxed"), known, known_subjects=True)

    return plan, people["subject_id"]


def _code_metadata(descriptions: pl.DataFrame) -> pl.DataFrame:
    if descriptions.height == 0:
        return empty_codes()
    return descriptions.select(
        pl.col("code"), pl.col("description"), pl.lit(None, pl.List(pl.String)).alias("parent_codes")
    )
