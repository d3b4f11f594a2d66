"""Read an OMOP CDM 5.3/5.4 extract (a folder of CSV or Parquet tables, or a PostgreSQL or DuckDB
database) into an ``EventFrame``.

The same pipeline serves every source: a source object offers ``scan(name)`` (a lazy table, its
schema and a label naming it in errors), ``has(name)``, ``notes`` and ``name``. A folder scans its
files; a database (:mod:`ehrprog.io.database`) reads one chunk of persons at a time, so files,
DuckDB and PostgreSQL holding the same data give identical events and reports.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import polars as pl

from ehrprog.core.errors import InputError
from ehrprog.io import tabular
from ehrprog.io.events import EventFrame
from ehrprog.io.omop_events import CodeMode, _code_metadata, concept_table, event_plan, tables_to_read
from ehrprog.io.omop_tables import DDL


class _Folder:
    """An OMOP folder: finds, sniffs and scans its tables, recording what it saw as notes."""

    def __init__(self, root: Path, cdm_version: str | None) -> None:
        self.root = root
        # A folder named for its format ("csv", "parquet") names no dataset: take its parent's name too.
        generic = root.name.lower() in {"csv", "parquet", "tsv", "data", "tables", "omop", "cdm"}
        self.name = f"{root.resolve().parent.name}/{root.name}" if generic else root.name
        self.cdm_version = cdm_version
        self.notes: list[str] = []

    def has(self, name: str) -> bool:
        return tabular.find_table(self.root, name) is not None

    def __str__(self) -> str:
        return str(self.root)

    def scan(self, name: str) -> tuple[pl.LazyFrame, dict[str, pl.DataType], str] | None:
        path = tabular.find_table(self.root, name)
        if path is None:
            return None
        columns = {c for version in DDL[name].values() for c in version}
        table = tabular.sniff(path, columns)
        if table.fmt == "csv" and not table.has_header:
            self.notes.append(f"{path.name}: no header row; columns named from the CDM DDL")
        frame = tabular.scan_table(table, DDL[name], self.cdm_version)
        return frame, dict(frame.collect_schema()), str(path)


def read_omop(
    source: str | Path,
    *,
    tables: tuple[str, ...] | list[str] | None = None,
    codes: CodeMode = "standard",
    cdm_version: str | None = None,
    condition_era: bool | None = None,
    strict: bool = False,
    materialize: bool = True,
    schema: str = "public",
    vocabulary_schema: str | None = None,
    person_ids: Iterable[int] | None = None,
    chunk_subjects: int = 20_000,
    connect_timeout: float = 30.0,
    statement_timeout: float | None = None,
) -> EventFrame:
    """Read an OMOP CDM extract into an :class:`~ehrprog.io.events.EventFrame`.

    Args:
        source: a folder holding one file per table (``person.csv``, ``MEASUREMENT.parquet``,
            headerless TSV ...; table names matched case-insensitively), or a database URI:
            ``postgresql://user[:password]@host:port/db`` (ADBC) or ``duckdb:///path.duckdb``.
        tables: the clinical tables to read; default :data:`~ehrprog.io.omop_tables.DEFAULT_TABLES`.
        codes: ``"standard"`` codes events by their standard concept (``SNOMED/433144002``, or
            ``OMOP/<concept_id>`` with no CONCEPT table), falling back to the source concept and
            then the source value (``SOURCE/<value>``) when the concept id is 0 or null;
            ``"source"`` prefers the source concept and source value; ``"concept_id"`` spells every
            concept ``OMOP/<concept_id>`` (standard, else source concept id, else source value), the
            spelling concept-id vocabularies such as cehrbert's align with.
        cdm_version: ``"5.3"`` or ``"5.4"``, used to name the columns of headerless files whose
            column count fits both; by default 5.4 is preferred.
        condition_era: read ``condition_era`` as condition events. ``None`` (default) reads it only
            when the extract has no condition_occurrence table, with a note in the report.
        strict: raise :class:`~ehrprog.core.errors.InputError` instead of dropping any row.
        materialize: read everything now (fast repeated access); ``False`` keeps the frame lazy so
            that it can be streamed to disk (``write_meds``) without fitting in memory.
        schema: database only: the schema holding the CDM tables (``"public"`` by default).
        vocabulary_schema: database only: the schema holding CONCEPT (default: ``schema``).
        person_ids: read these persons only (a cohort; from a database, in the same chunks).
        chunk_subjects: database only: persons read per query round (bounds the memory of a read).
        connect_timeout: PostgreSQL only: seconds to wait for the server to answer when connecting
            (a server that accepts and never answers is an error naming host and port, not a hang).
        statement_timeout: PostgreSQL only: seconds a query may run (``None``: the server's setting).

    Returns:
        The events, ordered by subject and time when materialized, with ``.report`` counting rows
        read, kept and dropped per table and reason. Person rows become ``MEDS_BIRTH`` events and
        static sex/race/ethnicity codes; death rows become ``MEDS_DEATH``.

    Raises:
        InputError: the folder or its person table is missing, or a table lacks a required column.
    """
    if codes not in ("standard", "source", "concept_id"):
        raise InputError(f"codes must be 'standard', 'source' or 'concept_id', got {codes!r}")
    from ehrprog.io.database import is_database_uri, read_omop_database

    if is_database_uri(source):
        return read_omop_database(
            str(source),
            schema=schema,
            vocabulary_schema=vocabulary_schema,
            person_ids=person_ids,
            chunk_subjects=chunk_subjects,
            tables=tables,
            codes=codes,
            condition_era=condition_era,
            strict=strict,
            materialize=materialize,
            connect_timeout=connect_timeout,
            statement_timeout=statement_timeout,
        )
    root = Path(source)
    if not root.is_dir():
        raise InputError("an OMOP source must be a folder of table files or a database URI", file=str(root))
    if schema != "public" or vocabulary_schema is not None:
        raise InputError("schema and vocabulary_schema apply to database URIs only", file=str(root))
    folder = _Folder(root, cdm_version)
    concepts, descriptions = concept_table(folder, codes)
    wanted = tables_to_read(folder, tables, condition_era)
    plan, people = event_plan(folder, concepts, wanted, codes)
    if person_ids is not None:  # a cohort: every table filtered to its persons (below the parse)
        members = pl.Series("subject_id", list(person_ids), pl.Int64).unique()
        people = people.filter(people.is_in(members.implode()))
        folder.notes.append(f"cohort of {people.len():,} persons read (rows of other persons are not read)")
        full_plan = plan

        def plan(subjects: pl.Expr | None = None) -> pl.LazyFrame:
            cohort = pl.col("subject_id").is_in(members.implode())
            return full_plan(cohort if subjects is None else cohort & subjects)

    options = {
        "notes": folder.notes,
        "codes": _code_metadata(descriptions),
        "metadata": {"dataset_name": folder.name, "source_format": "omop"},
    }
    if materialize:
        events = EventFrame.from_plan(plan, people, **options)
    else:
        events = EventFrame(plan(), plan=plan, **options)
    if strict:
        events.report.raise_on_drops()
    from ehrprog.io.quality import add_plausibility_notes

    return add_plausibility_notes(events)
