"""Data-layer benchmark: OMOP Parquet -> VisitFrame -> CKD cohort, ehrprog vs a pandas loop.

Usage: ``python benchmarks/bench_data_layer.py [--subjects 100000] [--baseline-subjects 5000]``

Every figure is measured in this run, each pipeline in its own process so that its peak
resident memory (ru_maxrss) is its own:

1. ehrprog on the large simulated cohort (default 100,000 subjects): events/s and peak memory,
   beside the in-memory Arrow size of the input tables.
2. ehrprog and the pandas baseline (``pandas_baseline.py``, loops over patients and visits) on
   the same smaller cohort; the speed-up is the ratio of their wall times.
2b. ehrprog against a bare polars pipeline (``polars_baseline.py``: the same read, same-day
   visits and CKD stage events with no checks) on the ``--ratio-subjects`` cohort (20,000), each
   the median of ``--ratio-repeat`` fresh processes, timed after the imports: ehrprog / bare.
2c. ehrprog against meds_reader's whole path (``meds_reader_baseline.py``: ``meds_reader_convert``,
   then a Python function mapped over the subjects) on the MEDS form of that cohort, where
   meds_reader is installed: meds_reader / ehrprog.
3. Streaming conversion of the large cohort to MEDS (``read_omop(materialize=False)`` +
   ``write_meds``): time and peak memory.
4. The pipeline of 1. from that MEDS dataset (``read_meds``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "_data"

EHRPROG = """
import json, sys, time
import ehrprog as ep
start = time.perf_counter()
events = ep.read_omop(sys.argv[1])
read = time.perf_counter()
visits = ep.group_visits(events, "same_day")
grouped = time.perf_counter()
cohort = ep.tasks.CKDProgression(visits="same_day").build(events, visits)
done = time.perf_counter()
print(json.dumps({"events": events.report.rows_kept, "points": len(cohort.X), "seconds": done - start,
                  "read_s": read - start, "visits_s": grouped - read, "cohort_s": done - grouped}))
"""
PANDAS = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from pandas_baseline import build_cohort
start = time.perf_counter()
events, points = build_cohort(Path(sys.argv[1]))
print(json.dumps({"events": events, "points": len(points), "seconds": time.perf_counter() - start}))
"""
STAGES = """
import json, sys, time
import ehrprog as ep
start = time.perf_counter()
events = ep.read_omop(sys.argv[1])
read = time.perf_counter()
visits = ep.group_visits(events, "same_day")
grouped = time.perf_counter()
stages = ep.tasks.CKDProgression().stage_events(events)
done = time.perf_counter()
print(json.dumps({"events": events.report.rows_kept, "visits": visits.n_visits, "stages": stages.height,
                  "seconds": done - start, "read_s": read - start, "visits_s": grouped - read,
                  "stages_s": done - grouped}))
"""
BARE = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
import polars_baseline as bare
root = Path(sys.argv[1])
start = time.perf_counter()
frame = bare.events(root)
read = time.perf_counter()
visits = bare.same_day_visits(frame)
grouped = time.perf_counter()
stages = bare.stage_events(frame, root)
done = time.perf_counter()
print(json.dumps({"events": frame.height, "visits": visits.height, "stages": stages.height, "seconds": done - start,
                  "read_s": read - start, "visits_s": grouped - read, "stages_s": done - grouped}))
"""
FROM_MEDS = EHRPROG.replace("ep.read_omop(sys.argv[1])", "ep.read_meds(sys.argv[1])")
STAGES_FROM_MEDS = STAGES.replace("ep.read_omop(sys.argv[1])", "ep.read_meds(sys.argv[1])")
MEDS_READER = """
import json, shutil, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
import meds_reader
import meds_reader_baseline as mr
database = Path(sys.argv[3])
shutil.rmtree(database, ignore_errors=True)
start = time.perf_counter()
mr.convert(Path(sys.argv[1]), database, int(sys.argv[4]))
converted = time.perf_counter()
events, visits, stages = mr.run(database, int(sys.argv[4]))
done = time.perf_counter()
shutil.rmtree(database)
print(json.dumps({"events": events, "visits": visits, "stages": stages, "seconds": done - start,
                  "convert_s": converted - start, "process_s": done - converted}))
"""
CONVERT = """
import json, sys, time
import ehrprog as ep
start = time.perf_counter()
events = ep.read_omop(sys.argv[1], materialize=False)
ep.write_meds(events, sys.argv[2])
print(json.dumps({"events": events.report.rows_kept, "seconds": time.perf_counter() - start}))
"""


def run(code: str, *args: str) -> dict:
    """Run ``code`` in a fresh Python; return its JSON result plus its peak RSS in MiB."""
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    out = proc.stdout.read()
    if status != 0:
        raise SystemExit(f"benchmark step failed ({status}):\n{out}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mib"] = usage.ru_maxrss / 1024  # KiB on Linux
    return result


ARROW_SIZE = """
import json, sys
from pathlib import Path
import pyarrow.parquet as pq
print(json.dumps({"mib": sum(pq.read_table(p).nbytes for p in Path(sys.argv[1]).glob("*.parquet")) / 2**20}))
"""
SIMULATE = """
import json, sys
import ehrprog as ep
ep.datasets.simulate_ckd(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
print(json.dumps({}))
"""


def ensure_cohort(n: int, seed: int) -> Path:
    """Simulate (once, cached under benchmarks/_data) in a child process: Linux keeps a process's
    peak RSS across fork and exec, so this parent must stay small for the children's figures."""
    root = DATA / f"omop_{n}_{seed}"
    if not (root / "person.parquet").exists():
        run(SIMULATE, str(n), str(seed), str(root))
    return root


def meds_reader_section(omop: Path, args: argparse.Namespace) -> None:
    """[2c] ehrprog against meds_reader's whole path (convert, then map a Python function over the
    subjects: ``meds_reader_baseline.py``) on the MEDS form of the ``--ratio-subjects`` cohort."""
    import importlib.util

    if importlib.util.find_spec("meds_reader") is None:
        print("\n[2c] meds_reader not installed (pip install meds_reader==0.2.0): its comparison is skipped")
        return
    meds = DATA / f"meds_{args.ratio_subjects}_{args.seed}"
    if not (meds / "metadata").is_dir():
        run(CONVERT, str(omop), str(meds))
    threads = str(os.cpu_count() or 1)
    ours_runs, theirs_runs = [], []
    for _ in range(args.ratio_repeat):  # alternated, as in [2b]
        ours_runs.append(run(STAGES_FROM_MEDS, str(meds)))
        theirs_runs.append(run(MEDS_READER, str(meds), str(HERE), str(DATA / "meds_reader_db"), threads))
    ours, theirs = (sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2] for runs in (ours_runs, theirs_runs))
    print(
        f"\n[2c] from the MEDS form of the same {args.ratio_subjects:,} subjects: read + same-day visits + CKD stage "
        f"events (median of {args.ratio_repeat} processes each, after the imports; meds_reader with {threads} threads):"
    )
    print(
        f"    ehrprog      {ours['seconds']:6.2f} s (read {ours['read_s']:.2f}, visits {ours['visits_s']:.2f}, "
        f"stages {ours['stages_s']:.2f}); {ours['events']:,} events, {ours['visits']:,} visits, "
        f"{ours['stages']:,} stage events"
    )
    print(
        f"    meds_reader  {theirs['seconds']:6.2f} s (convert {theirs['convert_s']:.2f}, map "
        f"{theirs['process_s']:.2f}); {theirs['events']:,} events, {theirs['visits']:,} visits, "
        f"{theirs['stages']:,} stage events"
    )
    ratio = theirs["seconds"] / ours["seconds"]
    print(f"    meds_reader's whole path / ehrprog: {ratio:.2f}x (aim: 3x: {'met' if ratio >= 3 else 'not met'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--baseline-subjects", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="runs of the large pipeline (median reported)")
    parser.add_argument("--ratio-subjects", type=int, default=20_000, help="cohort of ehrprog vs bare polars")
    parser.add_argument("--ratio-repeat", type=int, default=5, help="processes per side (median reported)")
    parser.add_argument("--skip-convert", action="store_true")
    args = parser.parse_args()

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}"
    )
    large = ensure_cohort(args.subjects, args.seed)
    small = ensure_cohort(args.baseline_subjects, args.seed)
    arrow = run(ARROW_SIZE, str(large))["mib"]

    runs = sorted((run(EHRPROG, str(large)) for _ in range(args.repeat)), key=lambda r: r["seconds"])
    big = runs[len(runs) // 2]  # the median run
    walls = ", ".join(f"{r['seconds']:.2f}" for r in runs)
    print(
        f"\n[1] ehrprog, {args.subjects:,} subjects, {big['events']:,} events -> {big['points']:,} prediction points"
        f" (median of {args.repeat} runs; walls {walls} s)"
    )
    print(
        f"    wall {big['seconds']:.2f} s (read {big['read_s']:.2f}, visits {big['visits_s']:.2f}, "
        f"cohort {big['cohort_s']:.2f}) = {big['events'] / big['seconds']:,.0f} events/s"
    )
    print(
        f"    peak RSS {big['peak_rss_mib']:,.0f} MiB; input Arrow size {arrow:,.0f} MiB "
        f"(ratio {big['peak_rss_mib'] / arrow:.2f}x)"
    )

    ours = run(EHRPROG, str(small))
    theirs = run(PANDAS, str(small), str(HERE))
    print(f"\n[2] same {args.baseline_subjects:,}-subject cohort ({ours['events']:,} events):")
    print(
        f"    ehrprog          {ours['seconds']:8.2f} s  {ours['events'] / ours['seconds']:>12,.0f} events/s  "
        f"{ours['points']:,} points  peak {ours['peak_rss_mib']:,.0f} MiB"
    )
    print(
        f"    pandas loop      {theirs['seconds']:8.2f} s  {theirs['events'] / theirs['seconds']:>12,.0f} events/s  "
        f"{theirs['points']:,} points  peak {theirs['peak_rss_mib']:,.0f} MiB"
    )
    print(
        f"    speed-up {theirs['seconds'] / ours['seconds']:.1f}x; at 100k scale ehrprog's throughput is "
        f"{(big['events'] / big['seconds']) / (theirs['events'] / theirs['seconds']):.1f}x the baseline's"
    )

    middle = ensure_cohort(args.ratio_subjects, args.seed)
    ours_runs, bare_runs = [], []
    for _ in range(args.ratio_repeat):  # alternated, so drifts of the machine touch both sides alike
        ours_runs.append(run(STAGES, str(middle)))
        bare_runs.append(run(BARE, str(middle), str(HERE)))
    ours, bare = (sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2] for runs in (ours_runs, bare_runs))
    print(
        f"\n[2b] read + same-day visits + CKD stage events, {args.ratio_subjects:,} subjects (median of "
        f"{args.ratio_repeat} processes each, after the imports):"
    )
    for name, r in (("ehrprog", ours), ("bare polars", bare)):
        print(
            f"    {name:12s} {r['seconds']:6.2f} s (read {r['read_s']:.2f}, visits {r['visits_s']:.2f}, stages "
            f"{r['stages_s']:.2f}); {r['events']:,} events, {r['visits']:,} visits, {r['stages']:,} stage events"
        )
    ratio = ours["seconds"] / bare["seconds"]
    print(f"    ehrprog / bare polars: {ratio:.2f}x (target under 2x: {'met' if ratio < 2 else 'not met'})")

    meds_reader_section(middle, args)

    if not args.skip_convert:
        out = DATA / f"meds_{args.subjects}_{args.seed}"
        conv = run(CONVERT, str(large), str(out))
        print(
            f"\n[3] streaming OMOP -> MEDS, {args.subjects:,} subjects: {conv['seconds']:.2f} s, "
            f"{conv['events'] / conv['seconds']:,.0f} events/s, peak RSS {conv['peak_rss_mib']:,.0f} MiB "
            f"({conv['peak_rss_mib'] / arrow:.2f}x the input's Arrow size)"
        )
        meds_run = run(FROM_MEDS, str(out))
        print(
            f"\n[4] ehrprog from that MEDS dataset (8 hash shards): wall {meds_run['seconds']:.2f} s (read "
            f"{meds_run['read_s']:.2f}, visits {meds_run['visits_s']:.2f}, cohort {meds_run['cohort_s']:.2f}) = "
            f"{meds_run['events'] / meds_run['seconds']:,.0f} events/s, {meds_run['points']:,} points, "
            f"peak RSS {meds_run['peak_rss_mib']:,.0f} MiB"
        )
    print(f"\nrun at {time.strftime('%Y-%m-%d %H:%M:%S')}")


if __name__ == "__main__":
    main()
