"""OMOP from databases: a real PostgreSQL server on loopback and a DuckDB file, loaded with a shared
OMOP set, read into the same events as the files; errors for bad servers, credentials, schemas and
tables never show the password."""

from __future__ import annotations

import logging

import polars as pl
import pytest

import ehrprog as ep
from ehrprog.cli import main
from ehrprog.core.errors import InputError
from ehrprog.io.schema import EVENT_SORT
from ehrprog.testing.databases import PostgresServer, load_duckdb, load_postgres, postgres_binaries
from tests.conftest import shared_path

SET = "synthea27nj_omop/parquet"


@pytest.fixture(scope="module")
def files():
    return ep.read_omop(shared_path(SET))


@pytest.fixture(scope="module")
def pg():
    """A PostgreSQL server holding the set in schema ``cdm``, and again split into ``clinical``
    (no CONCEPT) and ``vocab`` (CONCEPT only)."""
    source = shared_path(SET)
    if postgres_binaries() is None:
        pytest.skip(
            "PostgreSQL server binaries not found (scripts/ensure-debian-package.sh installs Debian's postgresql)"
        )
    import os
    import pwd

    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a 'postgres' system user to run the server as")
    with PostgresServer() as server:
        uri = server.uri()
        load_postgres(uri, source, "cdm")
        tables = [p.stem.lower() for p in source.glob("*.parquet")]
        load_postgres(uri, source, "clinical", [t for t in tables if t != "concept"])
        load_postgres(uri, source, "vocab", ["concept"])
        yield server


@pytest.fixture(scope="module")
def duck(tmp_path_factory):
    path = tmp_path_factory.mktemp("duck") / "cdm.duckdb"
    load_duckdb(path, shared_path(SET), "cdm")
    return f"duckdb://{path}"


def _sorted(events) -> pl.DataFrame:
    return events.collect().sort(EVENT_SORT)


def test_files_duckdb_and_postgres_give_identical_events_reports_and_codes(files, duck, pg):
    from_duck = ep.read_omop(duck, schema="cdm")
    from_pg = ep.read_omop(pg.uri(), schema="cdm", chunk_subjects=7)  # many chunks: 108 persons
    expected = _sorted(files)
    assert expected.height > 20_000
    for events in (from_duck, from_pg):
        assert _sorted(events).equals(expected)
        assert events.report.counts.sort("source", "reason").equals(files.report.counts.sort("source", "reason"))
        assert events.codes.sort("code").equals(files.codes.sort("code"))
    # In memory, ordered by subject and time, like the file reader's frame.
    frame = from_pg.collect()
    assert frame.equals(frame.sort("subject_id", "time", maintain_order=True, nulls_last=False))


def test_vocabulary_schema_option(files, pg):
    split = ep.read_omop(pg.uri(), schema="clinical", vocabulary_schema="vocab")
    assert _sorted(split).equals(_sorted(files))
    without = ep.read_omop(pg.uri(), schema="clinical")
    assert any("no CONCEPT table" in note for note in without.report.notes)
    assert without.collect()["code"].cat.starts_with("OMOP/").any()


def test_a_cohort_of_person_ids_reads_only_those_persons(files, pg):
    people = files.collect()["subject_id"].unique().sort().to_list()[::5]
    cohort = ep.read_omop(pg.uri(), schema="cdm", person_ids=people, chunk_subjects=4)
    expected = _sorted(files).filter(pl.col("subject_id").is_in(people))
    assert _sorted(cohort).equals(expected)
    assert any(f"cohort of {len(people)} persons" in note for note in cohort.report.notes)
    # The same option on files, and the same report.
    from_files = ep.read_omop(shared_path(SET), person_ids=people)
    assert _sorted(from_files).equals(expected)
    assert from_files.report.counts.sort("source", "reason").equals(cohort.report.counts.sort("source", "reason"))
    with pytest.raises(InputError, match="database URIs only"):
        ep.read_omop(shared_path(SET), schema="cdm")


def test_only_the_needed_columns_are_queried(pg, caplog):
    with caplog.at_level(logging.DEBUG, logger="ehrprog.io.database"):
        ep.read_omop(pg.uri(), schema="cdm")
    queries = [r.getMessage() for r in caplog.records if "query on" in r.getMessage()]
    measurement = next(q for q in queries if '"measurement"' in q)
    assert (
        '"value_as_number"' in measurement and '"range_low"' not in measurement and '"provider_id"' not in measurement
    )
    assert not any('"care_site"' in q or '"cost"' in q for q in queries)  # tables it does not use
    assert all(pg.password not in r.getMessage() for r in caplog.records)


def test_convert_and_inspect_accept_database_uris_and_stream_by_chunk(files, pg, tmp_path, capsys):
    out = tmp_path / "meds"
    assert main(["convert", "omop-to-meds", pg.uri(), str(out), "--schema", "cdm"]) == 0
    printed = capsys.readouterr().out
    assert pg.password not in printed
    meds = ep.read_meds(out)
    assert (
        meds.collect()
        .sort(EVENT_SORT)
        .select("subject_id", "time", "code", "numeric_value")
        .equals(_sorted(files).select("subject_id", "time", "code", "numeric_value"))
    )
    assert main(["inspect", pg.uri(), "--schema", "cdm"]) == 0
    printed = capsys.readouterr().out
    assert "ingest report" in printed and pg.password not in printed and ":***@" in printed


def test_wrong_password_is_a_clear_error_without_the_password(pg):
    with pytest.raises(InputError, match="refused the credentials") as info:
        ep.read_omop(pg.uri(password="wrong-horse-battery"), schema="cdm")
    assert "wrong-horse-battery" not in str(info.value) and ":***@" in str(info.value)


def test_a_password_with_unencoded_at_slash_question_mark_and_space_connects_and_never_leaks(pg, files):
    """libpq split such a URI at the '/', '?' or space and printed the pieces (fragments of the
    password) in its errors; the user info is encoded before libpq reads it."""
    import adbc_driver_postgresql.dbapi as adbc

    secret = "Tw0 w@rds/and?more#x"
    with adbc.connect(pg.uri()) as con, con.cursor() as cursor:
        escaped = secret.replace("'", "''")
        cursor.execute("DROP ROLE IF EXISTS odd_pw")
        cursor.execute(f"CREATE ROLE odd_pw LOGIN SUPERUSER PASSWORD '{escaped}'")
        con.commit()
    uri = f"postgresql://odd_pw:{secret}@127.0.0.1:{pg.port}/postgres"
    assert ep.read_omop(uri, schema="cdm").report.rows_kept == files.report.rows_kept
    wrong = f"postgresql://odd_pw:{secret}X@127.0.0.1:{pg.port}/postgres"
    with pytest.raises(InputError, match="refused the credentials") as info:
        ep.read_omop(wrong, schema="cdm")
    for fragment in ("w@rds", "rds/and", "and?more", "more#x", "Tw0 w"):
        assert fragment not in str(info.value)
    assert ":***@127.0.0.1" in str(info.value)


def test_unreachable_server_is_a_clear_error(pg):
    port = pg.port + 1 if pg.port < 65535 else pg.port - 1
    uri = f"postgresql://ehrprog:topsecret@127.0.0.1:{port}/postgres"
    with pytest.raises(InputError, match="cannot reach the database server") as info:
        ep.read_omop(uri, schema="cdm")
    assert "topsecret" not in str(info.value)


def test_a_server_that_accepts_and_never_answers_times_out_naming_host_and_port(pg):
    """A listening socket that never speaks: without connect_timeout libpq waits for good."""
    import socket
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    port = server.getsockname()[1]
    try:
        started = time.perf_counter()
        with pytest.raises(InputError, match=f"127.0.0.1:{port} did not answer within 2 s") as info:
            ep.read_omop(f"postgresql://ehrprog:topsecret@127.0.0.1:{port}/postgres", schema="cdm", connect_timeout=2)
        assert time.perf_counter() - started < 20
        assert "topsecret" not in str(info.value)
    finally:
        server.close()


def test_a_statement_timeout_stops_a_long_query(pg):
    from ehrprog.io.database import _Connection

    connection = _Connection(pg.uri(), statement_timeout=0.5)
    with pytest.raises(InputError, match=r"statement timeout|canceling statement"):
        connection.frame("SELECT pg_sleep(5)")
    connection.close()


def test_missing_schema_database_and_tables_are_named(pg):
    with pytest.raises(InputError, match="schema 'nope' not found"):
        ep.read_omop(pg.uri(), schema="nope")
    with pytest.raises(InputError, match="holds no person table"):
        ep.read_omop(pg.uri(), schema="vocab")
    with pytest.raises(InputError, match="no such database"):
        ep.read_omop(pg.uri(database="absent_db"), schema="cdm")
    with pytest.raises(InputError, match="plain SQL identifier"):
        ep.read_omop(pg.uri(), schema='cdm"; DROP TABLE person; --')


def test_missing_duckdb_file_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no such DuckDB database file"):
        ep.read_omop(f"duckdb://{tmp_path / 'absent.duckdb'}")


def test_redaction():
    from ehrprog.io.database import redact

    assert redact("postgresql://u:p%40ss@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"


def test_the_password_can_stay_out_of_the_uri(pg, monkeypatch, files):
    """libpq's PGPASSWORD (or ~/.pgpass) supplies it, so URIs in scripts and logs hold none."""
    monkeypatch.setenv("PGPASSWORD", pg.password)
    events = ep.read_omop(f"postgresql://{pg.user}@127.0.0.1:{pg.port}/postgres", schema="cdm")
    assert events.report.rows_kept == files.report.rows_kept


def _hashed(ids: pl.Expr) -> pl.Expr:
    """A bijection of int64 that spreads small ids over the whole range, negative and positive,
    as the hashed visit ids of several OMOP exports are (multiply by an odd constant mod 2^64)."""
    return ids.cast(pl.UInt64).mul(pl.lit(0x9E3779B97F4A7C15, pl.UInt64)).reinterpret(signed=True)


def test_hashed_64_bit_visit_ids_read_through_files_and_duckdb(files, tmp_path):
    """The held-out kind of extract: every visit id hashed over int64 (differences overflow).
    It raised ``negative dimensions are not allowed`` in the visit-span check."""
    source, hashed = shared_path(SET), tmp_path / "hashed"
    hashed.mkdir()
    for file in source.glob("*.parquet"):
        table = pl.read_parquet(file)
        ids = [c for c in table.columns if c.lower().endswith("visit_occurrence_id")]
        table.with_columns(_hashed(pl.col(c)).alias(c) for c in ids).write_parquet(hashed / file.name)
    visit_ids = pl.read_parquet(hashed / "visit_occurrence.parquet")["visit_occurrence_id"]
    assert visit_ids.min() < -(2**62) and visit_ids.max() > 2**62  # the difference overflows int64
    expected = _sorted(files).with_columns(_hashed(pl.col("visit_id")).alias("visit_id")).sort(EVENT_SORT)
    path = tmp_path / "cdm.duckdb"
    load_duckdb(path, hashed, "cdm")
    for events in (ep.read_omop(hashed), ep.read_omop(f"duckdb://{path}", schema="cdm")):
        assert _sorted(events).equals(expected)
        assert events.report.counts.sort("source", "reason").equals(files.report.counts.sort("source", "reason"))
