"""Database benchmark: read the same simulated OMOP cohort from Parquet files, DuckDB and PostgreSQL.

Usage: ``python benchmarks/bench_databases.py [--subjects 100000] [--repeats 3]``

The cohort (simulated once, cached under benchmarks/_data) is copied into a DuckDB file and into a
PostgreSQL server started on loopback from the machine's binaries (ehrprog.testing.databases).
Each read runs ``read_omop`` to an in-memory EventFrame in a fresh Python process; the table
gives the median wall time of ``--repeats`` runs and the reading process's peak RSS (the
PostgreSQL server's own memory is not counted; DuckDB runs inside the reading process, so its
memory is). Every source must give the same number of kept events.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data_layer import ensure_cohort, run

READ = """
import json, sys, time
import ehrprog as ep
start = time.perf_counter()
kwargs = {"schema": sys.argv[2]} if sys.argv[2] != "-" else {}
if len(sys.argv) > 3:
    kwargs["chunk_subjects"] = int(sys.argv[3])
events = ep.read_omop(sys.argv[1], **kwargs)
print(json.dumps({"events": events.report.rows_kept, "seconds": time.perf_counter() - start}))
"""


LOAD = """
import json, sys, time
from ehrprog.testing.databases import load_duckdb, load_postgres
start = time.perf_counter()
if sys.argv[1].startswith("duckdb://"):
    load_duckdb(sys.argv[1][len("duckdb://"):], sys.argv[2], "cdm")
else:
    load_postgres(sys.argv[1], sys.argv[2], "cdm")
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def _server_module():
    """ehrprog/testing/databases.py loaded on its own (stdlib only at import): this parent process
    must stay small, as Linux children inherit its peak RSS."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "ehrprog" / "testing" / "databases.py"
    spec = importlib.util.spec_from_file_location("_ehrprog_databases", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def measure(label: str, source: str, schema: str, repeats: int, *extra: str) -> dict:
    results = [run(READ, source, schema, *extra) for _ in range(repeats)]
    seconds = [r["seconds"] for r in results]
    row = {
        "source": label,
        "events": results[0]["events"],
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "max_s": max(seconds),
        "peak_mib": max(r["peak_rss_mib"] for r in results),
    }
    print(
        f"  {label:38s} {row['median_s']:8.2f} s ({row['min_s']:.2f}-{row['max_s']:.2f})"
        f"  {row['events'] / row['median_s'] / 1e6:6.2f} M events/s  peak {row['peak_mib']:8,.0f} MiB",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    PostgresServer = _server_module().PostgresServer

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; run {time.strftime('%Y-%m-%d %H:%M')}")
    folder = ensure_cohort(args.subjects, 0)
    work = Path(tempfile.mkdtemp(prefix="ehrprog_bench_db_"))
    duck = run(LOAD, f"duckdb://{work / 'omop.duckdb'}", str(folder))
    print(f"simulated cohort: {args.subjects:,} subjects ({folder}); DuckDB copy in {duck['seconds']:.1f} s")
    rows = []
    with PostgresServer() as server:
        copy = run(LOAD, server.uri(), str(folder))
        print(f"PostgreSQL copy (ADBC bulk ingest) in {copy['seconds']:.1f} s")
        print(f"read_omop to memory, median of {args.repeats} runs, each in a fresh process:")
        rows.append(measure("Parquet files", str(folder), "-", args.repeats))
        rows.append(
            measure("DuckDB (chunks of 20,000 persons)", f"duckdb://{work / 'omop.duckdb'}", "cdm", args.repeats)
        )
        rows.append(measure("PostgreSQL (chunks of 20,000 persons)", server.uri(), "cdm", args.repeats))
        rows.append(measure("PostgreSQL (chunks of 5,000 persons)", server.uri(), "cdm", args.repeats, "5000"))
    counts = {r["events"] for r in rows}
    print(f"same kept events from every source: {'yes' if len(counts) == 1 else f'NO: {sorted(counts)}'}")


if __name__ == "__main__":
    main()
