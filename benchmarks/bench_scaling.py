"""Scaling benchmark: cohorts on disk, training that streams them, and the Ray build.

Usage: ``python benchmarks/bench_scaling.py [--sizes 100000 300000 1000000] [--ray-size 100000]``

Every figure is measured in this run, each step in its own process so that its peak resident
memory (ru_maxrss) is its own:

1. A simulated population of each size is written as a MEDS dataset of 50,000-subject shards
   (simulated shard by shard, so the simulator never holds the whole population; cached under
   ``benchmarks/_data``).
2. ``build_cohort`` (single process, shard by shard) writes the CKD cohort to disk: events/s and
   peak RSS.
3. One epoch of ``VisitProgressionEstimator`` from the cohort on disk (``load_cohort``; batches
   read shard by shard): the tabular part's time, the epoch's points/s, the peak RSS (VmHWM) and
   the peak of each phase (sampled every 50 ms). The tabular part is the linear one
   (``tabular=TabularModel(risk_model="cox")``, fitted on at most ``max_fit_points`` points, a
   seeded sample of subjects); the booster's time is measured by ``bench_quality.py``. Then
   ``ehrprog predict`` of the saved model on the whole cohort, shard by shard: time and peak RSS.
4. ``ehrprog pretrain`` (default backbone, time-to-event objective, one epoch of
   ``--pretrain-steps`` batches) from a population saved by ``ehrprog build --population`` (MEDS
   shards of ``--pretrain-per-file`` subjects), for each of ``--pretrain-sizes``: peak RSS (the
   build of the population is not counted).
5. The Ray build with 1 and 2 workers on a local cluster, beside the single-process build, on
   the ``--ray-size`` population written as ``--ray-per-file`` shards. The cluster is started
   before the timed build (as ``ray start`` leaves it); its start is printed on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "_data"
PER_FILE = 50_000

# The process's own peak resident memory (VmHWM; ru_maxrss can carry a parent's peak across exec).
PEAK = (
    "PEAK = lambda: next(int(line.split()[1]) for line in open('/proc/self/status') "
    "if line.startswith('VmHWM')) / 1024  # MiB\n"
)
SIMULATE = """
import sys, shutil
from pathlib import Path
import polars as pl
import ehrprog as ep
from ehrprog.datasets.omop_export import codes_metadata
from ehrprog.datasets.simulate import simulate_events
from ehrprog.io.events import EventFrame
from ehrprog.io.meds import write_meds
root, n, per_file = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
(root / "data").mkdir(parents=True, exist_ok=True)
for number, start in enumerate(range(0, n, per_file)):
    size = min(per_file, n - start)
    frame = simulate_events(size, seed=1000 + number).with_columns(pl.col("subject_id") + start)
    types = frame.filter(pl.col("domain") == "visit").select("visit_id", pl.col("code").alias("visit_type"))
    frame = frame.join(types, on="visit_id", how="left").with_columns(pl.format("sim/{}", "domain").alias("source"))
    scratch = root / f".part{number}"
    events = EventFrame.from_frame(frame, codes=codes_metadata(frame, {}), metadata={"dataset_name": f"sim_{n}"})
    write_meds(events, scratch)
    shutil.move(next((scratch / "data").rglob("*.parquet")), root / "data" / f"{number:04d}.parquet")
    if number == 0:
        shutil.copytree(scratch / "metadata", root / "metadata", dirs_exist_ok=True)
    shutil.rmtree(scratch)
"""
BUILD = (
    PEAK
    + """
import json, os, sys, time
from ehrprog.tasks.build import build_cohort
workers = None if sys.argv[3] == "0" else int(sys.argv[3])
cluster = 0.0
if workers is not None:  # a warm cluster, as `ray start` leaves one: its start is timed on its own
    import ray
    threads = str(max(1, os.cpu_count() // workers))
    started = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"POLARS_MAX_THREADS": threads, "OMP_NUM_THREADS": threads}})
    ray.get([ray.remote(lambda: None).remote() for _ in range(workers)])
    cluster = time.perf_counter() - started
start = time.perf_counter()
result = build_cohort(sys.argv[1], sys.argv[2], workers=workers, progress=False)
print(json.dumps({"events": result.events, "shards": len(result.built), "seconds": time.perf_counter() - start,
                  "cluster_s": cluster, "peak_mib": PEAK(), "piece_peak_mib": result.peak_mib}))
"""
)
TRAIN = (
    PEAK
    + """
import json, sys, threading, time
import numpy as np
import ehrprog as ep
from ehrprog.models import tabular as tabular_module

rss = {"now": 0.0, "tabular_peak": 0.0, "phase": "load"}
peaks = {}

def sample():
    while True:
        with open("/proc/self/status") as handle:
            now = next(int(line.split()[1]) for line in handle if line.startswith("VmRSS")) / 1024
        peaks[rss["phase"]] = max(peaks.get(rss["phase"], 0.0), now)
        time.sleep(0.05)

threading.Thread(target=sample, daemon=True).start()
fit_stacked, timing = tabular_module.TabularModel.fit_stacked, {}

def timed(self, *args, **kwargs):  # the tabular part of the fit, timed and its memory phase marked
    rss["phase"], started = "tabular", time.perf_counter()
    try:
        return fit_stacked(self, *args, **kwargs)
    finally:
        timing["tabular_s"], rss["phase"] = time.perf_counter() - started, "sequence"

tabular_module.TabularModel.fit_stacked = timed
start = time.perf_counter()
cohort = ep.load_cohort(sys.argv[1])
loaded = time.perf_counter()
rss["phase"] = "vocabulary"
est = ep.VisitProgressionEstimator(target="progression", max_epochs=1, random_state=0,
                                   tabular=ep.TabularModel(risk_model="cox"))
est.fit(cohort.X, cohort.y)
fitted = time.perf_counter()
est.save(sys.argv[2])
print(json.dumps({"points": len(cohort.X), "subjects": int(len(np.unique(cohort.groups))),
                  "load_s": loaded - start, "fit_s": fitted - loaded, **timing,
                  "epoch_s": est.history_[-1]["seconds"], "sample": est.tabular_.fit_sample_,
                  "peak_mib": PEAK(), "phase_peaks_mib": peaks}))
"""
)
PREDICT = (
    PEAK
    + """
import json, sys, time
from ehrprog.cli import main
start = time.perf_counter()
assert main(["predict", "--model", sys.argv[1], "--data", sys.argv[2], "--out", sys.argv[3], "--overwrite"]) == 0
print(json.dumps({"seconds": time.perf_counter() - start, "peak_mib": PEAK()}))
"""
)

PRETRAIN = (
    PEAK
    + """
import json, sys, time
from ehrprog.cli import main
start = time.perf_counter()
code = main(["pretrain", "--backbone", "default", "--objective", "tte", "--data", sys.argv[1], "--out", sys.argv[2],
             "--epochs", "1", "--steps-per-epoch", sys.argv[3], "--hidden", "64"])
assert code == 0
print(json.dumps({"seconds": time.perf_counter() - start, "peak_mib": PEAK()}))
"""
)


def run(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"step failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def population(n: int, per_file: int = PER_FILE) -> Path:
    root = DATA / f"meds_scaling_{n}_{per_file}"
    if not (root / "metadata").is_dir():
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run([sys.executable, "-c", SIMULATE, str(root), str(n), str(per_file)], check=True)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--pretrain-sizes", type=int, nargs="*", default=[20_000, 100_000, 300_000])
    parser.add_argument("--pretrain-steps", type=int, default=200)
    parser.add_argument("--pretrain-per-file", type=int, default=10_000, help="subjects per MEDS shard, pre-training")
    parser.add_argument("--ray-size", type=int, default=100_000)
    parser.add_argument("--ray-per-file", type=int, default=10_000, help="subjects per MEDS shard of the Ray build")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    rows = []
    for n in args.sizes:
        data = population(n)
        out = DATA / f"cohort_scaling_{n}"
        shutil.rmtree(out, ignore_errors=True)
        build = run(BUILD, str(data), str(out), "0")
        row = {"subjects": n, **{f"build_{k}": v for k, v in build.items()}}
        if not args.skip_train:
            model = DATA / f"model_scaling_{n}"
            shutil.rmtree(model, ignore_errors=True)
            row.update({f"train_{k}": v for k, v in run(TRAIN, str(out), str(model)).items()})
            predicted = run(PREDICT, str(model), str(out), str(DATA / f"predictions_scaling_{n}"))
            row.update({f"predict_{k}": v for k, v in predicted.items()})
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(
        "\n| population | events | build s | build events/s | build peak RSS | points | tabular s | epoch s | "
        "points/s | fit peak RSS | predict s | predict peak RSS |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        train = (
            f"{r['train_points']:,} | {r['train_tabular_s']:.0f} | {r['train_epoch_s']:.0f} | "
            f"{r['train_points'] / r['train_epoch_s']:,.0f} | {r['train_peak_mib']:,.0f} MiB | "
            f"{r['predict_seconds']:.0f} | {r['predict_peak_mib']:,.0f} MiB"
            if "train_points" in r
            else "- | - | - | - | - | - | -"
        )
        print(
            f"| {r['subjects']:,} | {r['build_events']:,} | {r['build_seconds']:.1f} | "
            f"{r['build_events'] / r['build_seconds']:,.0f} | {r['build_peak_mib']:,.0f} MiB | {train} |"
        )
    if args.pretrain_sizes:
        print("\n| population | events read | pre-training s | pre-training peak RSS |")
        print("|---:|---:|---:|---:|")
    for n in args.pretrain_sizes:
        data = population(n, args.pretrain_per_file)
        out = DATA / f"population_{n}"
        shutil.rmtree(out, ignore_errors=True)
        built = run(
            BUILD.replace("progress=False)", "progress=False, task=__import__('ehrprog').tasks.Population())"),
            str(data),
            str(out),
            "0",
        )
        result = run(PRETRAIN, str(out), str(DATA / f"pretrained_{n}"), str(args.pretrain_steps))
        print(
            f"| {n:,} | {built['events']:,} events | {result['seconds']:.0f} | {result['peak_mib']:,.0f} MiB |",
            flush=True,
        )
    if not args.skip_ray:
        data = population(args.ray_size, args.ray_per_file)
        walls = {}
        for label, workers in (("single process", "0"), ("Ray, 1 worker", "1"), ("Ray, 2 workers", "2")):
            out = DATA / f"cohort_ray_{workers}"
            shutil.rmtree(out, ignore_errors=True)
            result = run(BUILD, str(data), str(out), workers)
            print(
                f"{label}: {result['shards']} shards in {result['seconds']:.1f} s "
                f"({result['events'] / result['seconds']:,.0f} events/s)"
                + (f" on a cluster started beforehand in {result['cluster_s']:.1f} s" if workers != "0" else "")
                + f"; peak {result['peak_mib']:,.0f} MiB (driver), {result['piece_peak_mib']:,.0f} MiB (largest "
                "process that built a piece)",
                flush=True,
            )
            walls[label] = result["seconds"]
        one, two, single = walls["Ray, 1 worker"], walls["Ray, 2 workers"], walls["single process"]
        print(
            f"\n2 workers vs 1: {one / two:.2f}x (target >= 1.6x); Ray at 1 worker vs single process: "
            f"{(one / single - 1) * 100:+.0f}% (target < +15%)"
        )


if __name__ == "__main__":
    main()
