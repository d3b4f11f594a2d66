"""OMOP CDM read where it lives: PostgreSQL (through ADBC) and DuckDB.

``read_omop("postgresql://user@host:5432/db", schema="cdm")`` and
``read_omop("duckdb:///path/to/cdm.duckdb", schema="main")`` run the file reader's pipeline on
rows fetched from the database as Arrow:

* only the tables the reader uses, and of each only the columns it uses, are selected;
* persons are read in chunks of ``chunk_subjects`` (ranges of ``person_id``, or explicit id lists
  for a cohort given as ``person_ids``): every table is queried for one chunk at a time and the
  chunk's events are checked, counted and kept before the next chunk is fetched, so the raw rows
  of one chunk only are in memory;
* the vocabulary (CONCEPT) comes from ``vocabulary_schema`` (default: the CDM schema).

Errors name the server or file, schema, table and rule; a password in the URI is replaced by
``***`` in every message, label and log line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import polars as pl

from ehrprog.core.errors import InputError
from ehrprog.core.redaction import RedactingFilter, encoded_uri, redact, uri_secrets
from ehrprog.io.events import EventFrame
from ehrprog.io.omop_events import _code_metadata, concept_table, event_plan, tables_to_read
from ehrprog.io.omop_tables import EVENT_TABLES

log = logging.getLogger(__name__)
log.addFilter(RedactingFilter())

SCHEMES = ("postgresql://", "postgres://", "duckdb://")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")

#: Columns the reader uses outside the event tables (the event tables' come from their specs).
_OTHER_COLUMNS = {
    "person": (
        "person_id",
        "year_of_birth",
        "month_of_birth",
        "day_of_birth",
        "birth_datetime",
        "gender_concept_id",
        "race_concept_id",
        "ethnicity_concept_id",
    ),
    "death": ("person_id", "death_date", "death_datetime"),
    "concept": ("concept_id", "vocabulary_id", "concept_code", "concept_name"),
    "source_to_standard_vocab_map": ("target_concept_id", "target_concept_name"),
    "cdm_source": ("cdm_release_date", "source_release_date"),
    "observation_period": ("person_id", "observation_period_end_date"),
}
_VOCABULARY_TABLES = ("concept", "source_to_standard_vocab_map")
#: Tables read whole, once (not by chunk of persons): the vocabulary, and what dates the extract's end.
_WHOLE_TABLES = (*_VOCABULARY_TABLES, "cdm_source", "observation_period")


def is_database_uri(source: Any) -> bool:
    """Whether ``source`` is a database URI this reader handles."""
    return isinstance(source, str) and source.lower().startswith(SCHEMES)


def needed_columns(table: str) -> tuple[str, ...]:
    """The columns of an OMOP table that ``read_omop`` reads."""
    if table in _OTHER_COLUMNS:
        return _OTHER_COLUMNS[table]
    spec = EVENT_TABLES[table]
    columns = ["person_id", spec.concept, *spec.times]
    for name in (spec.source_value, spec.source_concept, spec.numeric, spec.text, spec.unit, spec.unit_concept):
        if name:
            columns.append(name)
    if spec.visit:
        columns.append(spec.visit)
    if table == "visit_occurrence":
        columns.append("visit_end_date")  # the visit's span (events outside it lose its id)
    if spec.row_id:
        columns.append(spec.row_id)
    return tuple(dict.fromkeys(columns))


def _quote(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise InputError(f"{name!r} is not a plain SQL identifier (letters, digits, _)", column=name)
    return f'"{name}"'


def _driver(module: str):
    """Import a database driver, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"reading OMOP from a database needs {module.split('.')[0]}: pip install 'ehrprog[db]'"
        ) from error


def _with_timeouts(uri: str, connect_timeout: float, statement_timeout: float | None) -> str:
    """The libpq URI with ``connect_timeout`` (seconds; a server that accepts and never answers
    cannot hang a read) and, where given, ``statement_timeout`` (seconds, sent as a session
    option), unless the URI sets them itself."""
    from urllib.parse import parse_qsl, quote, urlencode

    if not connect_timeout > 0:
        raise InputError(f"connect_timeout must be a positive number of seconds, got {connect_timeout!r}")
    parts = urlsplit(uri.replace("postgres://", "postgresql://", 1))
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.setdefault("connect_timeout", str(max(1, round(connect_timeout))))
    if statement_timeout is not None:
        if not statement_timeout > 0:
            raise InputError(f"statement_timeout must be a positive number of seconds, got {statement_timeout!r}")
        option = f"-c statement_timeout={round(statement_timeout * 1000)}"
        query["options"] = f"{query['options']} {option}" if "options" in query else option
    return parts._replace(query=urlencode(query, quote_via=quote)).geturl()


class _Connection:
    """A DuckDB or PostgreSQL connection that answers SQL with Arrow tables."""

    def __init__(self, uri: str, connect_timeout: float = 30.0, statement_timeout: float | None = None) -> None:
        self.uri = uri
        self.label = redact(uri)
        self.connect_timeout = connect_timeout
        self._secrets = uri_secrets(uri) if not uri.lower().startswith("duckdb://") else []
        self.kind = "duckdb" if uri.lower().startswith("duckdb://") else "postgresql"
        if self.kind == "duckdb":
            duckdb = _driver("duckdb")

            path = uri[len("duckdb://") :]
            if path.startswith("/") and path[1:2] == "/":  # duckdb:////abs -> /abs
                path = path[1:]
            if path not in ("", ":memory:") and not Path(path).is_file():
                raise InputError("no such DuckDB database file", file=self.label)
            try:
                self._con = duckdb.connect(path or ":memory:", read_only=bool(path and path != ":memory:"))
            except duckdb.Error as error:
                raise InputError(f"cannot open the DuckDB database: {self._scrub(error)}", file=self.label) from None
        else:
            adbc = _driver("adbc_driver_postgresql.dbapi")

            try:
                # The user info encoded: libpq splits an unencoded password at '/', '?' or a space.
                self._con = adbc.connect(_with_timeouts(encoded_uri(uri), connect_timeout, statement_timeout))
            except Exception as error:
                raise InputError(self._explain(error), file=self.label) from None

    def _scrub(self, error: Any) -> str:
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        for secret in self._secrets:  # longest first; pieces under 4 characters are not searched for
            text = text.replace(secret, "***")
        return redact(text.replace(self.uri, self.label))

    def _explain(self, error: Exception) -> str:
        text = self._scrub(error)
        lowered = text.lower()
        if "password authentication failed" in lowered or "no password supplied" in lowered:
            return f"the server refused the credentials (wrong user or password): {text}"
        if "does not exist" in lowered and "database" in lowered:
            return f"no such database on the server: {text}"
        if "timeout expired" in lowered or "timed out" in lowered:
            where = urlsplit(encoded_uri(self.uri))
            return (
                f"the database server {where.hostname}:{where.port or 5432} did not answer within "
                f"{self.connect_timeout:g} s (connect_timeout; raise it with --connect-timeout): {text}"
            )
        if any(
            s in lowered for s in ("connection refused", "could not connect", "timeout", "no route", "translate host")
        ):
            return f"cannot reach the database server: {text}"
        return f"cannot connect to the database: {text}"

    def arrow(self, sql: str):
        """Run ``sql``; the result as a pyarrow Table."""
        log.debug("query on %s: %s", self.label, sql if len(sql) < 2000 else sql[:2000] + " ...")
        try:
            if self.kind == "duckdb":
                return self._con.sql(sql).to_arrow_table()
            with self._con.cursor() as cursor:
                cursor.execute(sql)
                return cursor.fetch_arrow_table()
        except Exception as error:
            raise InputError(f"query failed: {self._scrub(error)}", file=self.label) from None

    def frame(self, sql: str) -> pl.DataFrame:
        return pl.from_arrow(self.arrow(sql))

    def close(self) -> None:
        self._con.close()


class Database:
    """The OMOP tables of a database schema, read one chunk of persons at a time.

    Offers the source interface of :mod:`ehrprog.io.omop` (``scan``, ``has``, ``notes``, ``name``).
    """

    def __init__(
        self,
        uri: str,
        schema: str,
        vocabulary_schema: str | None = None,
        connect_timeout: float = 30.0,
        statement_timeout: float | None = None,
    ) -> None:
        self.connection = _Connection(uri, connect_timeout, statement_timeout)
        self.schema = schema
        self.vocabulary_schema = vocabulary_schema or schema
        self.name = f"{self.connection.label.rsplit('/', 1)[-1]}.{schema}"
        self.notes: list[str] = []
        self._fetched: dict[str, pl.DataFrame] = {}
        self._cache: dict[str, pl.DataFrame | None] = {}
        schemas = sorted({schema, self.vocabulary_schema})
        # DuckDB names the catalog after the file, which a schema may share: qualify every table.
        self._catalog = ""
        restrict = ""
        if self.connection.kind == "duckdb":
            catalog = self.connection.frame("SELECT current_database() AS c")["c"][0]
            self._catalog = _quote(catalog) + "."
            restrict = f"table_catalog = '{_quote(catalog)[1:-1]}' AND "
        listed = self.connection.frame(
            "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
            f"WHERE {restrict}table_schema IN (" + ", ".join("'" + _quote(s)[1:-1] + "'" for s in schemas) + ")"
        )
        present = set(listed["table_schema"].to_list()) if listed.height else set()
        for wanted in schemas:
            if wanted not in present:
                raise InputError(f"schema {wanted!r} not found (or holds no tables)", file=self.connection.label)
        self._columns: dict[tuple[str, str], dict[str, str]] = {}  # (schema, lower name) -> lower -> actual column
        self._tables: dict[tuple[str, str], str] = {}  # (schema, lower name) -> actual table name
        self._numeric: set[tuple[str, str, str]] = set()  # (schema, lower name, column) of NUMERIC type
        for (table_schema, table), group in listed.group_by("table_schema", "table_name"):
            key = (table_schema, table.lower())
            self._tables[key] = table
            self._columns[key] = {c.lower(): c for c in group["column_name"]}
            for column, kind in zip(group["column_name"], group["data_type"], strict=True):
                if self.connection.kind == "postgresql" and kind.lower() == "numeric":
                    self._numeric.add((*key, column))
        if not self.has("person"):
            raise InputError(f"the schema {schema!r} holds no person table", file=self.connection.label)

    def __str__(self) -> str:
        return f"{self.connection.label} schema {self.schema}"

    def _where(self, name: str) -> str:
        return self.vocabulary_schema if name in _VOCABULARY_TABLES else self.schema

    def has(self, name: str) -> bool:
        return (self._where(name), name) in self._columns

    def label(self, name: str) -> str:
        return f"{self.connection.label} {self._where(name)}.{self._tables[(self._where(name), name)]}"

    def person_ids(self, cohort: Iterable[int] | None) -> pl.Series:
        """Sorted person ids of the person table (only the cohort's, when given)."""
        column = self._columns[(self.schema, "person")].get("person_id")
        if column is None:
            raise InputError(
                "required column of OMOP table person is missing", file=self.label("person"), column="person_id"
            )
        table = f"{self._catalog}{_quote(self.schema)}.{_quote(self._tables[(self.schema, 'person')])}"
        ids = self.connection.frame(
            f"SELECT DISTINCT {_quote(column)} AS id FROM {table} WHERE {_quote(column)} IS NOT NULL"
        )
        series = ids["id"].cast(pl.Int64).sort() if ids.height else pl.Series("id", [], pl.Int64)
        if cohort is not None:
            wanted = pl.Series("id", list(cohort), pl.Int64).unique()
            series = series.filter(series.is_in(wanted.implode()))
        return series

    def fetch(self, names: Iterable[str], chunk: tuple[Any, Any, list[int] | None, bool]) -> dict[str, pl.DataFrame]:
        """The rows of one chunk of persons (``(low, high, ids, with_nulls)``: ids in
        ``[low, high)``, or the listed ``ids``; null person ids too when ``with_nulls``) from each
        named clinical table, only the columns the reader uses."""
        fetched = {}
        for name in names:
            where = self._where(name)
            if (where, name) not in self._columns:
                continue
            available = self._columns[(where, name)]
            columns = [available[c] for c in needed_columns(name) if c in available]
            if not columns:
                continue
            # PostgreSQL NUMERIC arrives through ADBC as an opaque extension type: read it as double.
            select = ", ".join(
                (f"CAST({_quote(c)} AS DOUBLE PRECISION)" if (where, name, c) in self._numeric else _quote(c))
                + f" AS {_quote(c.lower())}"
                for c in columns
            )
            sql = f"SELECT {select} FROM {self._catalog}{_quote(where)}.{_quote(self._tables[(where, name)])}"
            person = available.get("person_id")
            if person is not None and name not in _WHOLE_TABLES:
                sql += " WHERE " + _predicate(_quote(person), chunk)
            fetched[name] = self.connection.frame(sql)
        return fetched

    def use(self, tables: dict[str, pl.DataFrame]) -> None:
        """Serve ``scan`` of clinical tables from these fetched rows (one chunk's)."""
        self._fetched = tables

    def scan(self, name: str) -> tuple[pl.LazyFrame, dict[str, pl.DataType], str] | None:
        if name in _WHOLE_TABLES:
            if name not in self._cache:
                everything = (None, None, None, True)
                self._cache[name] = self.fetch([name], everything).get(name)
            frame = self._cache[name]
        else:
            frame = self._fetched.get(name)
        if frame is None:
            return None
        return frame.lazy(), dict(frame.schema), self.label(name)


def _predicate(column: str, chunk: tuple[Any, Any, list[int] | None, bool]) -> str:
    low, high, ids, with_nulls = chunk
    if ids is not None:
        clause = f"{column} IN ({', '.join(str(int(i)) for i in ids)})" if ids else "FALSE"
    else:
        parts = []
        if low is not None:
            parts.append(f"{column} >= {int(low)}")
        if high is not None:
            parts.append(f"{column} < {int(high)}")
        clause = " AND ".join(parts) if parts else "TRUE"
    return f"(({clause}) OR {column} IS NULL)" if with_nulls else f"({clause})"


def read_omop_database(
    uri: str,
    *,
    schema: str,
    vocabulary_schema: str | None,
    person_ids: Iterable[int] | None,
    chunk_subjects: int,
    tables,
    codes,
    condition_era,
    strict: bool,
    materialize: bool,
    connect_timeout: float = 30.0,
    statement_timeout: float | None = None,
) -> EventFrame:
    """:func:`ehrprog.read_omop` for a database URI (see the module docstring)."""
    if chunk_subjects < 1:
        raise InputError(f"chunk_subjects must be at least 1, got {chunk_subjects}")
    db = Database(uri, schema, vocabulary_schema, connect_timeout, statement_timeout)
    concepts, descriptions = concept_table(db, codes)
    for name in _WHOLE_TABLES:  # read once now: chunks are fetched in a thread, one query at a time
        if db.has(name):
            db.scan(name)
    wanted = tables_to_read(db, tables, condition_era)
    ids = db.person_ids(person_ids)
    cohort = person_ids is not None
    if cohort:
        db.notes.append(f"cohort of {ids.len():,} persons read (rows of other persons are not read)")
    chunks = _chunks(ids, chunk_subjects, cohort)

    names = ["person", "death", *wanted]

    def pieces() -> Iterator[pl.DataFrame]:
        # The next chunk's rows are fetched (in a thread: the drivers release the GIL) while this
        # chunk's events are built, so transfer and processing overlap.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=1) as pool:
            upcoming = pool.submit(db.fetch, names, chunks[0])
            for index in range(len(chunks)):
                tables = upcoming.result()
                if index + 1 < len(chunks):
                    upcoming = pool.submit(db.fetch, names, chunks[index + 1])
                db.use(tables)
                del tables
                plan, _ = event_plan(db, concepts, wanted, codes)
                yield plan().collect()
                db.use({})

    options = {
        "codes": _code_metadata(descriptions),
        "metadata": {"dataset_name": db.name, "source_format": f"omop/{db.connection.kind}"},
    }
    if materialize:
        events = EventFrame.from_pieces(pieces(), notes=db.notes, **options)
    else:
        events = EventFrame.from_piece_stream(pieces, notes=db.notes, **options)
    # Each chunk repeats the same notes ("table ... absent"): keep one of each, in order.
    db.notes[:] = list(dict.fromkeys(db.notes))
    if strict:
        events.report.raise_on_drops()
    from ehrprog.io.quality import add_plausibility_notes

    return add_plausibility_notes(events)


def _chunks(ids: pl.Series, size: int, cohort: bool) -> list[tuple[Any, Any, list[int] | None, bool]]:
    """``(low, high, ids, with_nulls)`` per chunk: id ranges covering every id (and null ids in
    the last), or for a cohort explicit id lists."""
    n = ids.len()
    if cohort:
        values = ids.to_list()
        return [(None, None, values[i : i + size], False) for i in range(0, max(n, 1), size)] or [
            (None, None, [], False)
        ]
    if n <= size:
        return [(None, None, None, True)]
    cuts = [ids[i] for i in range(size, n, size)]
    lows, highs = [None, *cuts], [*cuts, None]
    return [(low, high, None, high is None) for low, high in zip(lows, highs, strict=True)]


__all__ = ["Database", "is_database_uri", "needed_columns", "read_omop_database", "redact"]
