"""Does pre-training pay? Label-efficiency curves of pre-trained vs from-scratch backbones and the baselines.

Usage::

    python benchmarks/bench_pretraining.py [--population 20000] [--epochs 3] [--sizes 250 500 1000 4000]
        [--seeds 0 1 2] [--large-seeds 0] [--boot 1000] [--backbones default cehrbert]

1. A population of ``--population`` simulated people (seed 7: none of them labeled, none tested)
   is the site's unlabeled records. Each backbone is pre-trained on all of it with each objective
   it supports: ``mlm`` (its paper's masked LM and secondary objective) and ``tte`` (time to the
   next occurrence of every frequent code, piecewise-exponential, :mod:`ehrprog.networks.tte`).
   Checkpoints are cached under ``$EHRPROG_BENCH_CACHE`` (default /tmp/ehrprog_quality).
2. For each labeled size N (the CKD cohort of N simulated people, seeds ``--seeds``; sizes above
   1,000 use ``--large-seeds`` and ``--large-backbones``), every variant (backbone x {scratch,
   each pre-training}) and every baseline is fitted with the demo's settings and scored on ONE
   test cohort (2,000 people, seed 99), with the oracle (the C-index of the true risk) beside
   them. Every variant of a backbone has the same architecture: the heads read the backbone's
   output at the prediction visit (``backbone_probe=True``), so a pre-trained variant and its
   from-scratch twin differ only in where the backbone's weights start. The default model
   without the probe (the demo's) is the first row.
3. Per size: mean ± sd of C over seeds; for each pre-trained variant the paired bootstrap 95%
   interval (test subjects resampled, the same resamples for every method) of its C minus its
   from-scratch twin's, minus the demo's model's (default backbone, no probe) and minus the best
   baseline's. Each run's test risks are kept in ``$EHRPROG_BENCH_CACHE/pretraining_risks_N_SEED.npz``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import numpy as np

import ehrprog as ep
from ehrprog.datasets import oracle_risk, simulated_truth
from ehrprog.evaluation.heldout import DEMO_MODEL_PARAMS, ORACLE, evaluate_split
from ehrprog.metrics import harrell_c, interval, paired_bootstrap_c
from ehrprog.models.estimator import VisitProgressionEstimator
from ehrprog.models.pretrain import pretrain

try:
    from bench_quality import CACHE, simulated
except ImportError:  # run from the repository root
    from benchmarks.bench_quality import CACHE, simulated

POPULATION_SEED = 7
OBJECTIVES = {"default": ["tte"], "cehrbert": ["mlm", "tte"], "medbert": ["mlm", "tte"], "behrt": ["mlm", "tte"]}


def pretrained(backbone: str, objective: str, population: int, epochs: int) -> str:
    """The cached checkpoint folder of ``backbone`` pre-trained with ``objective`` (built when absent)."""
    dim = DEMO_MODEL_PARAMS["embedding_dim"]
    folder = CACHE / f"pretrained_{backbone}_{objective}_{population}_{epochs}_{dim}"
    if not (folder / "model.safetensors").exists():
        root = CACHE / f"sim_{population}_{POPULATION_SEED}"
        if not root.exists():
            ep.datasets.simulate_ckd(population, POPULATION_SEED, root)
        visits = ep.group_visits(ep.read_omop(root), "same_day")
        started = time.perf_counter()

        def report(record: dict) -> None:
            figures = ", ".join(f"{k}={v:.4f}" for k, v in record.items() if k.startswith("valid_") and "rate" not in k)
            print(f"    epoch {record['epoch']}: {figures}", flush=True)

        result = pretrain(
            backbone, visits, folder, epochs=epochs, dim=dim, objective=objective, random_state=0, progress=report
        )
        print(
            f"  pre-trained {backbone} ({objective}) on {result.n_subjects:,} people, {result.n_codes} codes, "
            f"{epochs} epochs: {time.perf_counter() - started:.0f} s, peak RSS so far "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB",
            flush=True,
        )
    return str(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--population", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000, 4000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--large-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--backbones", nargs="+", default=["default", "cehrbert"])
    parser.add_argument("--large-backbones", nargs="+", default=["default"])
    parser.add_argument("--test-subjects", type=int, default=2000)
    parser.add_argument("--boot", type=int, default=1000)
    args = parser.parse_args()
    print(
        f"bench_pretraining: ehrprog {ep.__version__}, {platform.machine()}, {os.cpu_count()} cores; "
        f"run {time.strftime('%Y-%m-%d %H:%M')}; population {args.population:,} people (seed {POPULATION_SEED}), "
        f"{args.epochs} pre-training epochs"
    )
    variants: list[tuple[str, str | None]] = []
    for backbone in args.backbones:
        variants.append((backbone, None))
        for objective in OBJECTIVES.get(backbone, ["tte"]):
            variants.append((backbone, objective))
    checkpoints = {(b, o): pretrained(b, o, args.population, args.epochs) for b, o in variants if o is not None}
    test = simulated(args.test_subjects, 99)
    truth = oracle_risk(test.X.points, simulated_truth(args.test_subjects, 99))
    event, time_ = test.y["event"].to_numpy(), test.y["time_to_event_days"].to_numpy()
    oracle_c = harrell_c(event, time_, truth)
    print(
        f"test cohort: {args.test_subjects:,} people (seed 99), {len(test.X):,} points, {int(event.sum()):,} "
        f"progressions; oracle C {oracle_c:.4f}"
    )

    def name(backbone: str, objective: str | None) -> str:
        return f"{backbone} + probe, " + (f"pre-trained ({objective})" if objective else "from scratch")

    demo = "default (the demo's model)"

    for n in args.sizes:
        seeds = args.seeds if n <= 1000 else args.large_seeds
        used = [(b, o) for b, o in variants if n <= 1000 or b in args.large_backbones]
        runs = []
        for seed in seeds:
            train = simulated(n, seed)
            started = time.perf_counter()
            rows, fitted = evaluate_split(train.X, train.y, test.X, test.y, random_state=seed, reference=False)
            risks = {
                r.name: fitted["risks"][r.name] for r in rows if r.name in fitted["risks"] and "c_index" in r.metrics
            }
            risks[demo] = risks.pop("VisitProgressionEstimator")
            for backbone, objective in used:
                params = {**DEMO_MODEL_PARAMS, "backbone": backbone, "random_state": seed, "backbone_probe": True}
                if objective is not None:
                    params["backbone__checkpoint"] = checkpoints[(backbone, objective)]
                model = VisitProgressionEstimator().set_params(**params).fit(train.X, train.y)
                risks[name(backbone, objective)] = model.predict_risk(test.X)
            runs.append(risks)
            np.savez(CACHE / f"pretraining_risks_{n}_{seed}.npz", **{k: np.asarray(v) for k, v in risks.items()})
            print(
                f"  [N={n:,} seed {seed}: {len(train.X):,} points; {time.perf_counter() - started:.0f} s]", flush=True
            )
        c = {m: [harrell_c(event, time_, run[m]) for run in runs] for m in runs[0]}
        print(f"\nN = {n:,} labeled people, seeds {seeds}: C-index (mean ± sd over seeds); oracle {oracle_c:.4f}")
        for method, values in c.items():
            print(f"  {method:40s}{np.mean(values):9.4f} ± {np.std(values):.4f}")
        models = {demo} | {name(b, o) for b, o in used}
        best = max((m for m in c if m not in models and m != ORACLE), key=lambda m: np.mean(c[m]))
        boots = [paired_bootstrap_c(event, time_, run, test.groups, args.boot, seed=0) for run in runs]
        for backbone, objective in used:
            if objective is None:
                continue
            method = name(backbone, objective)
            for other in (name(backbone, None), demo, best):
                diff = np.mean([b[method] - b[other] for b in boots], axis=0)
                low, high = interval(diff)
                verdict = "above zero" if low > 0 else ("below zero" if high < 0 else "inside noise")
                print(
                    f"  {method} - {other}: {np.mean(c[method]) - np.mean(c[other]):+.4f} "
                    f"[{low:+.4f}, {high:+.4f}] ({verdict})"
                )
        print(flush=True)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
