"""Before/after: this tree against an earlier checkout, on the data layer and the cohort load path.

Usage::

    git worktree add /tmp/base <rev>
    python benchmarks/bench_regression.py --base /tmp/base [--subjects 100000] [--repeat 7]

Each figure is a median over ``--repeat`` fresh processes per tree, the two trees alternating
(base, head, base, head, ...) so that the machine's drift falls on both alike. Both trees run on
this interpreter (the base tree first on ``PYTHONPATH``) on the same simulated OMOP folder:

1. ``bench_data_layer.py``'s pipeline: ``read_omop`` -> ``group_visits("same_day")`` ->
   ``CKDProgression.build`` (the retrospective cohort where the tree has the choice, so both
   build the same points); wall and its read / visits / cohort steps.
2. The cohort load path on that cohort saved by each tree: ``load_cohort`` and then a first read
   of every shard (arrays, visits, labs), in each process the median of 9 rounds (the head tree's
   once-per-process hash memo is cleared before each round, so every round verifies as a first
   read does).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "_data"

PIPELINE = """
import inspect, json, sys, time
import ehrprog as ep
task = ep.tasks.CKDProgression
retro = {"eligibility": "retrospective"} if "eligibility" in inspect.signature(task).parameters else {}
start = time.perf_counter()
events = ep.read_omop(sys.argv[1])
read = time.perf_counter()
visits = ep.group_visits(events, "same_day")
grouped = time.perf_counter()
cohort = task(visits="same_day", **retro).build(events, visits)
done = time.perf_counter()
if len(sys.argv) > 2 and not __import__("os").path.exists(sys.argv[2]):
    cohort.save(sys.argv[2])
print(json.dumps({"events": events.report.rows_kept, "points": len(cohort.X), "wall_s": done - start,
                  "read_s": read - start, "visits_s": grouped - read, "cohort_s": done - grouped}))
"""
LOAD = """
import json, statistics, sys, time
import ehrprog as ep
try:
    from ehrprog.cohorts.format import _VERIFIED as memo
except ImportError:  # a tree without verification
    memo = set()
rounds = []
for _ in range(9):
    memo.clear()
    start = time.perf_counter()
    cohort = ep.load_cohort(sys.argv[1])
    loaded = time.perf_counter()
    store = cohort.X.store
    for shard in range(len(store.names)):
        part = store.part(shard)
        part.arrays, part.visits, part.labs
    rounds.append((loaded - start, time.perf_counter() - loaded))
print(json.dumps({"points": len(cohort.X), "load_s": statistics.median(r[0] for r in rounds),
                  "first_read_s": statistics.median(r[1] for r in rounds),
                  "load_and_read_s": statistics.median(r[0] + r[1] for r in rounds)}))
"""
SIMULATE = "import sys, ehrprog as ep; ep.datasets.simulate_ckd(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])"


def run(tree: Path, code: str, *args: str) -> dict:
    """``code`` in a fresh interpreter importing ehrprog from ``tree``; its last line as JSON (``{}``
    where it printed nothing)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"step failed in {tree}:\n{out.stderr[-3000:]}")
    lines = out.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}  # the simulator prints nothing


def medians(runs: list[dict], keys: tuple[str, ...]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="a checkout of the earlier revision")
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    head, base = HERE.parent, args.base.resolve()
    revision = {
        tree: subprocess.run(
            ["git", "-C", str(tree), "log", "-1", "--format=%h %cs"], capture_output=True, text=True
        ).stdout.strip()
        for tree in (base, head)
    }
    dirty = subprocess.run(["git", "-C", str(head), "status", "--porcelain"], capture_output=True, text=True).stdout
    print(
        f"machine: {os.cpu_count()} cores; base {revision[base]}, head {revision[head]}{' + changes' if dirty else ''}"
    )

    omop = DATA / f"omop_{args.subjects}_{args.seed}"
    if not (omop / "person.parquet").exists():
        run(head, SIMULATE, str(args.subjects), str(args.seed), str(omop))
    saved = {
        tree: DATA / f"regression_cohort_{args.subjects}_{name}" for tree, name in ((base, "base"), (head, "head"))
    }
    for folder in saved.values():  # each tree saves its own (the formats differ)
        if folder.exists():
            shutil.rmtree(folder)

    pipeline: dict[Path, list[dict]] = {base: [], head: []}
    load: dict[Path, list[dict]] = {base: [], head: []}
    for _ in range(args.repeat):
        for tree in (base, head):
            pipeline[tree].append(run(tree, PIPELINE, str(omop), str(saved[tree])))
    for _ in range(args.repeat):
        for tree in (base, head):
            load[tree].append(run(tree, LOAD, str(saved[tree])))

    steps = ("wall_s", "read_s", "visits_s", "cohort_s")
    first = pipeline[head][0]
    print(
        f"\n[1] data layer, {args.subjects:,} subjects, {first['events']:,} events -> {first['points']:,} points "
        f"(median of {args.repeat} processes per tree)"
    )
    before, after = medians(pipeline[base], steps), medians(pipeline[head], steps)
    for key in steps:
        print(
            f"    {key[:-2]:<7} base {before[key]:6.2f} s   head {after[key]:6.2f} s   "
            f"head/base {after[key] / before[key]:.3f}"
        )
    keys = ("load_s", "first_read_s", "load_and_read_s")
    before, after = medians(load[base], keys), medians(load[head], keys)
    print(f"\n[2] cohort load path, {load[head][0]['points']:,} points (median of {args.repeat} processes x 9 rounds)")
    for key in keys:
        print(
            f"    {key[:-2]:<14} base {before[key]:6.3f} s   head {after[key]:6.3f} s   "
            f"head/base {after[key] / before[key]:.3f}"
        )


if __name__ == "__main__":
    main()
