"""The estimator on a GPU beside the CPU of the same machine: training throughput, batched
inference latency and test C-index of the same fit on each device, in one run.

Usage: ``python benchmarks/bench_gpu.py [--subjects 2000]`` (on a machine with CUDA; the CPU
rows are measured in the same run as the baseline).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import polars as pl
import torch

import ehrprog as ep
from ehrprog.metrics import harrell_c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=2000)
    parser.add_argument("--devices", default="cuda,cpu")
    args = parser.parse_args()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    print(f"python {platform.python_version()}, torch {torch.__version__}, {gpu}")
    path = f"/tmp/ehrprog_bench_gpu_{args.subjects}"
    cohort = ep.tasks.CKDProgression().build(ep.read_omop(ep.datasets.simulate_ckd(args.subjects, 0, path)))
    subjects = np.unique(cohort.groups)
    held_out = np.random.default_rng(0).choice(subjects, len(subjects) * 3 // 10, replace=False)
    is_test = np.isin(cohort.groups, held_out)
    train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    visits = int(cohort.X[train].points.group_by("subject_id").agg(pl.col("n_visits").max())["n_visits"].sum())
    n_test_subjects = len(np.unique(cohort.groups[test]))
    y_test = cohort.y[test]
    for device in args.devices.split(","):
        for dim in (32, 128):
            est = ep.VisitProgressionEstimator(
                target="both",
                embedding_dim=dim,
                hidden_dim=dim,
                max_epochs=3,
                batch_size=32,
                validation_fraction=0.0,
                random_state=0,
                device=device,
            ).fit(cohort.X[train], cohort.y[train])
            per_epoch = np.median([h["seconds"] for h in est.history_])
            est.predict_risk(cohort.X[test])  # warm-up
            started = time.perf_counter()
            risk = est.predict_risk(cohort.X[test])  # returns numpy: the device work is done
            batched = (time.perf_counter() - started) / n_test_subjects
            c_index = harrell_c(y_test["event"].to_numpy(), y_test["time_to_event_days"].to_numpy(), risk)
            print(
                f"{device:4s} dim {dim:3d}: training {visits / per_epoch:9,.0f} visits/s (median epoch "
                f"{per_epoch:.2f} s, {visits:,} visits of {len(train):,} points); inference {batched * 1e3:.3f} ms "
                "per subject batched;"
                f" test C-index {c_index:.3f}"
            )


if __name__ == "__main__":
    main()
