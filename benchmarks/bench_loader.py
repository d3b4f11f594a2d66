"""The loader alone against the training step: can batch assembly keep a model busy?

Usage: ``python benchmarks/bench_loader.py [--cohort DIR] [--backbones default cehrbert] [--steps 60]``

On a cohort saved by ``ehrprog build`` (default: the 100,000-person cohort ``bench_scaling.py``
builds under ``benchmarks/_data``), in one run:

1. **The loader alone**: every batch of one epoch (the estimator's batch size, shards and
   subjects shuffled as in training), read from disk and turned into tensors, with no model, in
   the caller's thread (shard reads and encodings included): batches/s.
2. **The training step** of each backbone (forward, backward, AdamW step) on ``--steps`` batches
   already in memory: steps/s, on the CPU (and on CUDA where present, said otherwise).
3. **One epoch's steps with the loader in front**, prefetching on its background thread
   (``ehrprog.networks.prefetch``) and inline, for the default backbone: what the overlap gives.

The ratio loader / step is what the issue asks to be at least 3.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

import ehrprog as ep
from ehrprog.features.sharded import ShardedVisitTensors
from ehrprog.features.tensors import Vocabulary
from ehrprog.models.history_fit import value_scale
from ehrprog.networks.inference import with_targets
from ehrprog.networks.prefetch import prefetched
from ehrprog.networks.visit_model import SupervisedObjective

HERE = Path(__file__).resolve().parent


def setup(cohort: ep.tasks.Cohort, backbone: str):
    """An estimator's vocabulary, scaling and network for ``backbone``, and the cohort's tensors."""
    X = cohort.X
    est = ep.VisitProgressionEstimator(target="progression", backbone=backbone, random_state=0)
    est.vocabulary_ = Vocabulary.fit(X, min_count=est.min_code_count)
    est.value_scale_ = value_scale(X)
    features = np.zeros((len(X), 1), np.float32)  # the tabular part's risk (its values do not change the cost)
    tensors = ShardedVisitTensors(
        X, est.vocabulary_, est.max_codes_per_visit, est.max_visits, est.value_scale_, features
    )
    targets = {
        "event": cohort.y["event"].to_numpy().astype(np.float32),
        "time": cohort.y["time_to_event_days"].to_numpy().astype(np.float32),
    }
    return est, tensors, targets


def step_rate(est, tensors, targets, plan, device: torch.device) -> float:
    """Training steps/s of ``est``'s network on the batches ``plan``, already loaded."""
    torch.manual_seed(0)
    model = est._build_model(0).to(device)
    objective = SupervisedObjective(model).train()
    optimizer = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=1e-3)
    batches = [with_targets(tensors.batch(rows), targets, device) for rows in plan]

    def step(inputs):
        loss, _ = objective(inputs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step(batches[0])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for inputs in batches[1:]:
        step(inputs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (len(batches) - 1) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", type=Path, default=HERE / "_data" / "cohort_scaling_100000")
    parser.add_argument("--backbones", nargs="*", default=["default", "cehrbert"])
    parser.add_argument("--steps", type=int, default=60, help="batches timed per backbone step")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} ({threads} threads)")
    cohort = ep.load_cohort(args.cohort)
    rows = np.arange(len(cohort.X))
    est, tensors, targets = setup(cohort, "default")
    plan = tensors.plan_batches(rows, est.batch_size, np.random.default_rng(0))
    cpu = torch.device("cpu")
    started = time.perf_counter()
    for batch_rows in plan:
        with_targets(tensors.batch(batch_rows), targets, cpu)
    loader = len(plan) / (time.perf_counter() - started)
    print(
        f"{len(cohort.X):,} points in {len(tensors.store.names)} shards; one epoch = {len(plan):,} batches of "
        f"{est.batch_size} subjects\nloader alone (one thread, shard reads and encodings included): "
        f"{loader:,.1f} batches/s"
    )
    devices = [cpu] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    if len(devices) == 1:
        print("no CUDA device on this machine: the GPU step was not measured")
    for backbone in args.backbones:
        est, tensors, targets = setup(cohort, backbone)
        timed = tensors.plan_batches(rows, est.batch_size, np.random.default_rng(1))[: args.steps + 1]
        for device in devices:
            rate = step_rate(est, tensors, targets, timed, device)
            print(
                f"  {backbone:9s} training step on {device.type}: {rate:7.1f} steps/s; loader / step "
                f"{loader / rate:5.1f}x ({'at least 3x: met' if loader / rate >= 3 else 'below 3x'})"
            )
    # One epoch's worth of steps behind the loader, prefetched and inline (default backbone).
    est, tensors, targets = setup(cohort, "default")
    part = plan[: 4 * args.steps]
    model = est._build_model(0)
    objective = SupervisedObjective(model).train()
    optimizer = torch.optim.AdamW(objective.parameters(), lr=1e-3)
    for depth in (0, 2):
        tensors._cache.clear()
        started = time.perf_counter()
        for inputs in prefetched(part, lambda r: with_targets(tensors.batch(r), targets, cpu), depth):
            loss, _ = objective(inputs)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        how = "inline" if depth == 0 else f"{depth} batches ahead"
        rate = len(part) / (time.perf_counter() - started)
        print(f"  default, {len(part)} steps from disk with the loader {how}: {rate:.1f} steps/s")


if __name__ == "__main__":
    main()
