"""No password is ever printed: one redaction function over every form a connection string takes."""

from __future__ import annotations

import logging

import pytest

from ehrprog.cli import main
from ehrprog.core.errors import InputError
from ehrprog.core.redaction import redact

SECRET = "Sup3r:s@cret/pw"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://alice:hunter22@db.example:5432/cdm", "postgresql://alice:***@db.example:5432/cdm"),
        ("postgresql+psycopg://alice:hunter22@db/cdm", "postgresql+psycopg://alice:***@db/cdm"),
        ("postgres://alice:p%40ss@h/db", "postgres://alice:***@h/db"),
        (f"postgresql://alice:{SECRET}@h:5432/db", "postgresql://alice:***@h:5432/db"),  # raw @ : / inside
        (
            "postgresql://alice@h/db?password=hunter22&sslmode=require",
            "postgresql://alice@h/db?password=***&sslmode=require",
        ),
        ("postgresql://h/db?user=a&PASSWORD=hunter22", "postgresql://h/db?user=a&PASSWORD=***"),
        ("host=h port=5432 password=hunter22 dbname=cdm", "host=h port=5432 password=*** dbname=cdm"),
        ("host=h password='hun ter 22' dbname=cdm", "host=h password=*** dbname=cdm"),
        ("dbname=cdm pwd = hunter22", "dbname=cdm pwd = ***"),
        (
            "error near 'postgresql:/alice:hunter22@h/db'",
            "error near 'postgresql:/alice:***@h/db'",
        ),  # a Path-collapsed URI
        ("postgresql://alice:pa ss/w?rd#1@h:5432/db", "postgresql://alice:***@h:5432/db"),  # space ? # too
        ("cannot connect to 'postgresql://a:two words@h/db'", "cannot connect to 'postgresql://a:***@h/db'"),
        ("postgresql://alice@h/db", "postgresql://alice@h/db"),  # nothing to hide
        ("no such file 'omop/person.csv' (column person_id)", "no such file 'omop/person.csv' (column person_id)"),
        ("time 12:30:00@UTC", "time 12:30:00@UTC"),
    ],
)
def test_every_form_of_a_password_is_redacted(text, expected):
    assert redact(text) == expected


def test_the_password_from_the_environment_is_redacted_wherever_it_appears(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "envhunter22")
    assert redact("connection to h failed for envhunter22 (user a)") == "connection to h failed for *** (user a)"
    monkeypatch.setenv("PGPASSWORD", "ab")  # too short to search for without blanking ordinary text
    assert redact("table ab") == "table ab"


def test_a_uri_is_encoded_for_libpq_and_every_spelling_of_its_password_is_known():
    from ehrprog.core.redaction import encoded_uri, uri_secrets

    uri = "postgresql://al ice:pa ss/w?rd@h:5432/db?sslmode=require"
    assert encoded_uri(uri) == "postgresql://al%20ice:pa%20ss%2Fw%3Frd@h:5432/db?sslmode=require"
    assert encoded_uri(encoded_uri(uri)) == encoded_uri(uri)  # already encoded: unchanged
    assert set(uri_secrets(uri)) == {"pa ss/w?rd", "pa%20ss%2Fw%3Frd"}  # pieces under 4 characters left out
    assert uri_secrets("postgresql://alice@h/db") == []


def test_input_errors_never_hold_a_password():
    error = InputError("cannot connect to postgresql://a:hunter22@h/db", file="postgresql://a:hunter22@h/db")
    assert "hunter22" not in str(error) and "hunter22" not in error.file and "hunter22" not in error.rule


@pytest.mark.parametrize(
    "argv",
    [
        ["inspect", "postgresql+psycopg://alice:hunter22@127.0.0.1:1/db"],
        ["inspect", "postgresql://alice:hunter22@127.0.0.1:1/db", "--format", "meds"],
        ["inspect", "postgresql://alice@127.0.0.1:1/db?password=hunter22"],
        ["pretrain", "--backbone", "default", "--data", "postgresql://alice:hunter22@127.0.0.1:1/db", "--out", "x"],
        ["convert", "omop-to-meds", "host=127.0.0.1 port=1 password=hunter22", "out"],
    ],
)
def test_the_cli_prints_one_line_without_the_password(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "hunter22" not in captured.out + captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ehrprog: error: ") and "Traceback" not in captured.err


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Exception):  # noqa: B017 (whatever the reader raises, --debug lets it through)
        main(["--debug", "inspect", "no/such/folder"])


def test_the_database_readers_log_records_are_redacted(caplog):
    with caplog.at_level(logging.DEBUG, logger="ehrprog.io.database"):
        import ehrprog.io.database  # noqa: F401 (installs the filter)

        logging.getLogger("ehrprog.io.database").debug("connecting to %s", "postgresql://a@h/db?password=hunter22")
    assert "hunter22" not in caplog.text and "password=***" in caplog.text
