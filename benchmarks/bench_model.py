"""Model benchmark: quality (model vs every baseline, same subject splits) and speed.

Usage: ``python benchmarks/bench_model.py [--subjects 2000] [--seeds 0 1 2]``

Quality: on the simulator for several seeds (mean and spread), and on the real OMOP extracts in
../shared/data that have CKD stage records (SynPUF condition eras, the two Synthea ETL sets),
each over several subject splits. Speed: training throughput (visits/s) and inference latency
per subject, one subject at a time and batched, on this machine's CPU (and GPU where present).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

import ehrprog as ep
from ehrprog.evaluation.heldout import evaluate, subject_split

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL = {
    "synpuf_1k_omop": "SynPUF 1k (condition eras)",
    "synthea_nj_tutorial_etl_2025_omop": "Synthea NJ 2025",
    "synthea_tutorial_etl_2019_omop": "Synthea 2019",
}
METRICS = ["macro_auroc", "qwk", "c_index", "ibs"]


def summarise(title: str, runs: list) -> None:
    print(f"\n{title}")
    names = [row.name for row in runs[0]]
    print(f"  {'model':34s}" + "".join(f"{m:>18s}" for m in METRICS))
    for i, name in enumerate(names):
        cells = []
        for metric in METRICS:
            values = [run[i].metrics[metric] for run in runs if metric in run[i].metrics]
            cells.append(f"{np.mean(values):8.3f} ± {np.std(values):5.3f}" if values else f"{'-':>16s}")
        print(f"  {name:34s}" + "".join(f"{c:>18s}" for c in cells))
    c_index = {name: [run[i].metrics.get("c_index") for run in runs] for i, name in enumerate(names)}
    model = [v for v in c_index[names[0]] if v is not None]
    best_name, best = max(
        (
            (n, np.mean([v for v in vs if v is not None]))
            for n, vs in list(c_index.items())[1:]
            if any(v is not None for v in vs)
        ),
        key=lambda item: item[1],
    )
    if model:
        verdict = "beats" if np.mean(model) > best else "does NOT beat"
        print(f"  -> the model {verdict} the best baseline on C-index ({np.mean(model):.3f} vs {best_name} {best:.3f})")


def speed(subjects: int) -> None:
    cohort = ep.tasks.CKDProgression().build(
        ep.read_omop(ep.datasets.simulate_ckd(subjects, 0, f"/tmp/ehrprog_bench_{subjects}"))
    )
    train, test = subject_split(cohort)
    est = ep.VisitProgressionEstimator(
        target="both",
        embedding_dim=32,
        hidden_dim=32,
        max_epochs=3,
        batch_size=32,
        validation_fraction=0.0,
        random_state=0,
    ).fit(cohort.X[train], cohort.y[train])
    visits = int(
        cohort.X[train].points.group_by("subject_id").agg(__import__("polars").col("n_visits").max())["n_visits"].sum()
    )
    per_epoch = np.median([h["seconds"] for h in est.history_])
    print(f"\nspeed ({platform.machine()}, {os.cpu_count()} cores, torch {__import__('torch').__version__}, CPU):")
    print(
        f"  training: {visits / per_epoch:,.0f} visits/s ({visits:,} visits of {len(train):,} points per epoch, "
        f"median epoch {per_epoch:.2f} s)"
    )
    X = cohort.X[test]
    subjects_te = np.unique(X.points["subject_id"].to_numpy())
    started = time.perf_counter()
    est.predict_risk(X)
    batched = (time.perf_counter() - started) / len(subjects_te)
    rows = X.points.with_row_index("row")
    singles = []
    for subject in subjects_te[:50]:
        part = X[rows.filter(__import__("polars").col("subject_id") == subject)["row"].to_numpy()]
        started = time.perf_counter()
        est.predict_risk(part)
        singles.append(time.perf_counter() - started)
    print(
        f"  inference: batched {batched * 1e3:.2f} ms per subject ({len(subjects_te):,} subjects, {len(X):,} points); "
        f"one subject at a time {np.median(singles) * 1e3:.1f} ms (median of {len(singles)})"
    )
    print(f"  target: under 2 ms per subject batched on CPU -> {'met' if batched < 2e-3 else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--speed-only", action="store_true", help="only the speed part (quality: bench_quality.py)")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; run {time.strftime('%Y-%m-%d %H:%M')}")
    if args.speed_only:
        speed(args.subjects)
        return
    runs = []
    for seed in args.seeds:
        cohort = ep.tasks.CKDProgression().build(
            ep.read_omop(ep.datasets.simulate_ckd(args.subjects, seed, f"/tmp/ehrprog_bench_{args.subjects}_{seed}"))
        )
        train, test = subject_split(cohort, seed=seed)
        rows, _ = evaluate(cohort, train, test, random_state=seed)
        runs.append(rows)
    summarise(f"simulator, {args.subjects:,} subjects, seeds {args.seeds} (mean ± sd over seeds)", runs)
    if not args.skip_real:
        for folder, title in REAL.items():
            if not (SHARED / folder).exists():
                print(f"\n{title}: skipped ({SHARED / folder} absent)")
                continue
            cohort = ep.tasks.CKDProgression().build(ep.read_omop(SHARED / folder))
            splits = []
            for seed in args.seeds:
                train, test = subject_split(cohort, seed=seed)
                try:
                    rows, _ = evaluate(cohort, train, test, {"max_epochs": 30}, random_state=seed)
                except ValueError as error:
                    print(f"\n{title}, split {seed}: not evaluable ({error})")
                    continue
                splits.append(rows)
            n_subjects = len(np.unique(cohort.groups))
            if splits:
                summarise(
                    f"{title}: {len(cohort.X):,} points from {n_subjects} subjects, "
                    f"{int(cohort.y['event'].sum())} progressions (mean ± sd over {len(splits)} splits)",
                    splits,
                )
    speed(args.subjects)


if __name__ == "__main__":
    main()
