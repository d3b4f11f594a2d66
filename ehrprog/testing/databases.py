"""Real databases for tests and benchmarks: a throw-away PostgreSQL server on loopback, and
loaders that copy an OMOP folder of Parquet files into PostgreSQL (ADBC bulk ingest) or DuckDB.

The server is started from the machine's own PostgreSQL binaries (``initdb``, ``pg_ctl``; on
Debian ``apt-get install postgresql`` puts them in ``/usr/lib/postgresql/<version>/bin``). When
run as root, the cluster is owned and run by the ``postgres`` system user, as PostgreSQL refuses
to run as root. Password authentication (scram-sha-256) is on, so wrong credentials fail as they
would on a real server.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


def postgres_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or ``None`` when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    """A PostgreSQL cluster in a temporary folder, listening on 127.0.0.1 only.

    Use as a context manager; ``uri(database)`` gives a connection URI with the password.
    """

    user: str = "ehrprog"
    password: str = "s3cret-pass"
    port: int = 0

    def __post_init__(self) -> None:
        self.bin = postgres_binaries()
        if self.bin is None:
            raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
        self.port = self.port or _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="ehrprog_pg_"))
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        command = list(args)
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=True, capture_output=True, text=True)

    def start(self) -> PostgresServer:
        data, socket_dir = self.root / "data", self.root / "sock"
        socket_dir.mkdir()
        secret = self.root / "pw"
        secret.write_text(self.password)
        if self._as_postgres:
            shutil.chown(self.root, "postgres")
            shutil.chown(socket_dir, "postgres")
            shutil.chown(secret, "postgres")
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(data),
            "-U",
            self.user,
            "--auth=scram-sha-256",
            f"--pwfile={secret}",
            "-E",
            "UTF8",
            "--locale=C",
        )
        options = f"-p {self.port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(self.root / "log"), "-w", "start")
        return self

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def uri(self, database: str = "postgres", password: str | None = None, user: str | None = None) -> str:
        return f"postgresql://{user or self.user}:{password or self.password}@127.0.0.1:{self.port}/{database}"

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def parquet_tables(folder: str | Path, tables: list[str] | None = None) -> dict[str, Path]:
    """``{table name: parquet file}`` of an OMOP folder (names lower-cased)."""
    files = {p.stem.lower(): p for p in Path(folder).glob("*.parquet")}
    return {k: v for k, v in sorted(files.items()) if tables is None or k in tables}


def load_postgres(uri: str, folder: str | Path, schema: str, tables: list[str] | None = None) -> list[str]:
    """Copy the Parquet tables of ``folder`` into ``schema`` (created) with ADBC's bulk ingest, and
    index the clinical tables by ``person_id`` as the OHDSI CDM DDL does."""
    import adbc_driver_postgresql.dbapi as adbc
    import pyarrow.parquet as pq

    loaded = []
    with adbc.connect(uri) as con, con.cursor() as cursor:
        cursor.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        for name, path in parquet_tables(folder, tables).items():
            table = pq.read_table(path)
            cursor.adbc_ingest(name, table, mode="replace", db_schema_name=schema)
            if "person_id" in table.column_names and name != "person":
                # As the OHDSI CDM DDL's indices do: clinical tables are indexed by person.
                cursor.execute(f'CREATE INDEX ON "{schema}"."{name}" (person_id)')
            loaded.append(name)
        cursor.execute("ANALYZE")
        con.commit()
    return loaded


def load_duckdb(
    path: str | Path, folder: str | Path, schema: str = "main", tables: list[str] | None = None
) -> list[str]:
    """Copy the Parquet tables of ``folder`` into a DuckDB file (``schema`` created)."""
    import duckdb

    loaded = []
    with duckdb.connect(str(path)) as con:
        catalog = con.execute("SELECT current_database()").fetchone()[0]  # a schema may share its name
        con.execute(f'CREATE SCHEMA IF NOT EXISTS "{catalog}"."{schema}"')
        for name, file in parquet_tables(folder, tables).items():
            target = f'"{catalog}"."{schema}"."{name}"'
            con.execute(f"CREATE OR REPLACE TABLE {target} AS SELECT * FROM read_parquet('{file}')")
            loaded.append(name)
    return loaded


__all__ = ["PostgresServer", "load_duckdb", "load_postgres", "parquet_tables", "postgres_binaries"]
