"""Quality benchmark: does the model earn its place? Learning curves against every baseline and the oracle.

Usage::

    python benchmarks/bench_quality.py [--sizes 1000 4000 10000] [--seeds 0 1 2] [--boot 1000]
        [--test-subjects 2000] [--skip-real] [--labels | --labels-only] [--variants piecewise no-booster]

Simulator: for each size N and seed s, the model and every baseline are trained on the CKD cohort
of N simulated people (seed s) and scored on ONE test cohort (``--test-subjects`` people, seed 99)
shared by every method, seed and size. Printed per size: each method's C-index and stage macro
AUROC (mean and sd over seeds), the oracle (the C-index of the simulator's true risk on the same
test points, :func:`ehrprog.datasets.oracle_risk`), and for the model against the best baseline and
against the reference (Cox on the model's own clinical inputs) the difference in C with a paired
bootstrap 95% interval (subjects of the test cohort resampled; the same resamples for every method
and seed; the interval is of the difference averaged over seeds), and the share of the gap
between the best baseline and the oracle that the model closes. Survival rows also show their
calibration at 1, 2 and 5 years (ICI: risk deciles, Kaplan-Meier observed). ``--variants
piecewise`` adds the model with the piecewise-exponential survival head as a row, ``no-booster``
the model without the clinical booster.

SynPUF 1k (../shared/data): 5-fold cross-validation by subject, the same folds for every method;
per-fold C, and the paired bootstrap interval of the fold-averaged difference.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

import ehrprog as ep
from ehrprog.datasets import oracle_risk, simulated_truth
from ehrprog.evaluation import ORACLE, REFERENCE, evaluate_split
from ehrprog.metrics import interval, paired_bootstrap_c

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MODEL = "VisitProgressionEstimator"
#: Rows of model variants start with this (never a baseline).
VARIANT = "model, "
VARIANTS = {
    "piecewise": {f"{VARIANT}piecewise survival head": {"survival_head": "piecewise"}},
    "no-booster": {f"{VARIANT}without the clinical booster": {"clinical_booster": False}},
}
CACHE = Path(os.environ.get("EHRPROG_BENCH_CACHE", "/tmp/ehrprog_quality"))


def simulated(n: int, seed: int) -> ep.tasks.Cohort:
    root = CACHE / f"sim_{n}_{seed}"
    if not root.exists():
        ep.datasets.simulate_ckd(n, seed, root)
    return ep.tasks.CKDProgression().build(ep.read_omop(root))


def compare(runs: list[dict], event, time_, groups, boot: int, oracle: np.ndarray | None) -> list[str]:
    """Lines comparing the model with the best baseline and the reference over ``runs`` (one per
    seed or fold: ``rows`` and ``risks``), with paired bootstrap intervals of the mean difference."""
    names = [r.name for r in runs[0]["rows"] if "c_index" in r.metrics and r.name not in (MODEL, ORACLE)]
    mean_c = {
        n: np.mean([next(r for r in run["rows"] if r.name == n).metrics["c_index"] for run in runs]) for n in names
    }
    baselines = [n for n in names if n != REFERENCE and not n.startswith(VARIANT)]
    best = max(baselines, key=mean_c.get)
    lines = []
    for other in [best] + ([REFERENCE] if REFERENCE in names else []):
        draws = []
        for run in runs:
            e, t, g = run.get("event", event), run.get("time", time_), run.get("groups", groups)
            boots = paired_bootstrap_c(e, t, {"a": run["risks"][MODEL], "b": run["risks"][other]}, g, boot, seed=0)
            draws.append(boots["a"] - boots["b"])
        diff = np.mean(draws, axis=0)
        model_c = np.mean([next(r for r in run["rows"] if r.name == MODEL).metrics["c_index"] for run in runs])
        low, high = interval(diff)
        verdict = "above zero: the model wins" if low > 0 else ("below zero: it loses" if high < 0 else "inside noise")
        label = "best baseline" if other == best else "reference"
        lines.append(
            f"  model - {label} ({other}): {model_c - mean_c[other]:+.4f} C, paired bootstrap 95% "
            f"[{low:+.4f}, {high:+.4f}] ({verdict})"
        )
    if oracle is not None:
        model_c = np.mean([next(r for r in run["rows"] if r.name == MODEL).metrics["c_index"] for run in runs])
        oracle_c = np.mean([next(r for r in run["rows"] if r.name == ORACLE).metrics["c_index"] for run in runs])
        gap = oracle_c - mean_c[best]
        closed = (model_c - mean_c[best]) / gap if gap > 0 else float("nan")
        lines.append(
            f"  oracle {oracle_c:.4f}: the best baseline leaves {gap:.4f}; the model closes {closed:.0%} of it "
            f"(target >= 50%: {'met' if closed >= 0.5 else 'NOT met'})"
        )
    return lines


def table(runs: list[dict]) -> list[str]:
    names = [r.name for r in runs[0]["rows"]]
    lines = [f"  {'method':36s}{'C-index':>18s}{'stage AUROC':>18s}{'IBS':>18s}{'ICI 1y/2y/5y':>22s}{'fit s':>8s}"]
    for i, name in enumerate(names):
        cells = []
        for metric in ("c_index", "macro_auroc", "ibs"):
            values = [run["rows"][i].metrics[metric] for run in runs if metric in run["rows"][i].metrics]
            cells.append(f"{np.mean(values):9.4f} ± {np.std(values):.4f}" if values else f"{'-':>16s}")
        ici = []
        for years in (1, 2, 5):
            values = [run["rows"][i].metrics.get(f"ici_{years}y") for run in runs]
            ici.append(f"{np.mean(values):.3f}" if all(v is not None for v in values) else "-")
        fit = np.mean([run["rows"][i].fit_s for run in runs])
        lines.append(
            f"  {name:36s}"
            + "".join(f"{c:>18s}" for c in cells)
            + f"{'/'.join(ici):>22s}"
            + (f"{fit:8.1f}" if np.isfinite(fit) else "")
        )
    return lines


def simulator(sizes: list[int], seeds: list[int], test_subjects: int, boot: int, variants: dict | None = None) -> None:
    test = simulated(test_subjects, 99)
    truth = oracle_risk(test.X.points, simulated_truth(test_subjects, 99))
    event = test.y["event"].to_numpy()
    time_ = test.y["time_to_event_days"].to_numpy()
    print(
        f"\nsimulator test cohort: {test_subjects:,} people (seed 99), {len(test.X):,} points from "
        f"{len(np.unique(test.groups)):,} subjects, {int(event.sum()):,} progressions; the same for every run"
    )
    for n in sizes:
        runs = []
        for seed in seeds:
            train = simulated(n, seed)
            started = time.perf_counter()
            rows, fitted = evaluate_split(
                train.X, train.y, test.X, test.y, random_state=seed, oracle=truth, variants=variants
            )
            runs.append({"rows": rows, "risks": fitted["risks"]})
            model = fitted["model"]
            print(
                f"  [N={n:,} seed {seed}: {len(train.X):,} training points, {len(np.unique(train.groups)):,} "
                f"subjects; model best epoch {model.best_epoch_} of {model.n_iter_}; "
                f"{time.perf_counter() - started:.0f} s]",
                flush=True,
            )
        print(f"\nsimulator, N = {n:,} people for training, seeds {seeds} (mean ± sd over seeds)")
        print("\n".join(table(runs)))
        print("\n".join(compare(runs, event, time_, test.groups, boot, truth)))
        stage = {
            r.name: np.mean([run["rows"][i].metrics.get("macro_auroc", np.nan) for run in runs])
            for i, r in enumerate(runs[0]["rows"])
        }
        logistic = stage.get("bag-of-codes logistic", np.nan)
        print(
            f"  stage macro AUROC: model {stage[MODEL]:.4f} vs bag-of-codes logistic {logistic:.4f} "
            f"(target: at least the logistic's: {'met' if stage[MODEL] >= logistic else 'NOT met'})",
            flush=True,
        )


def synpuf(seeds: list[int], boot: int, folds: int = 5) -> None:
    from sklearn.model_selection import GroupKFold

    folder = SHARED / "synpuf_1k_omop"
    if not folder.exists():
        print(f"\nSynPUF 1k: skipped ({folder} absent)")
        return
    cohort = ep.tasks.CKDProgression().build(ep.read_omop(folder))
    runs = []
    splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seeds[0])
    for k, (train, test) in enumerate(splitter.split(np.arange(len(cohort.X)), groups=cohort.groups)):
        y_te = cohort.y[test]
        if not y_te["event"].any():
            print(f"  fold {k}: no progression among the test points; skipped")
            continue
        rows, fitted = evaluate_split(
            cohort.X[train], cohort.y[train], cohort.X[test], y_te, {"max_epochs": 30}, random_state=seeds[0]
        )
        runs.append(
            {
                "rows": rows,
                "risks": fitted["risks"],
                "event": y_te["event"].to_numpy(),
                "time": y_te["time_to_event_days"].to_numpy(),
                "groups": cohort.groups[test],
            }
        )
    print(
        f"\nSynPUF 1k: {len(cohort.X):,} points from {len(np.unique(cohort.groups))} subjects, "
        f"{int(cohort.y['event'].sum())} progressions; {folds}-fold CV by subject (mean ± sd over {len(runs)} folds)"
    )
    print("\n".join(table(runs)))
    print("\n".join(compare(runs, None, None, None, boot, None)))


LABEL_OPTIONS = {
    "single readings, above current": {"progression": "above_current", "confirm_days": None},
    "single readings, above highest": {"progression": "above_highest", "confirm_days": None},
    "sustained 90 d, above current": {"progression": "above_current", "confirm_days": 90},
    "sustained 90 d, above highest (default)": {"progression": "above_highest", "confirm_days": 90},
}


def labels(test_subjects: int) -> None:
    """Each label option's cohorts and every method's C-index under it (simulator N=1,000 seed 0 on
    the shared test cohort, and the oracle; SynPUF 5-fold CV; Synthea 27 NJ cohort counts)."""
    from sklearn.model_selection import GroupKFold

    print("\nlabel options: cohorts and C-index under each")
    sources = {
        "simulator N=1,000 (seed 0)": CACHE / "sim_1000_0",
        "test cohort (seed 99)": CACHE / f"sim_{test_subjects}_99",
    }
    for name in ("synpuf_1k_omop", "synthea27nj_omop/parquet"):
        if (SHARED / name).exists():
            sources[name] = SHARED / name
    events = {name: ep.read_omop(path) for name, path in sources.items()}
    truth = simulated_truth(test_subjects, 99)
    for title, options in LABEL_OPTIONS.items():
        task = ep.tasks.CKDProgression(**options)
        cohorts = {name: task.build(frame) for name, frame in events.items()}
        counts = "; ".join(
            f"{name}: {len(c.X):,} points, {int(c.y['event'].sum()):,} events, {len(np.unique(c.groups))} subjects"
            for name, c in cohorts.items()
        )
        print(f"\n  {title}: {counts}")
        train, test = cohorts["simulator N=1,000 (seed 0)"], cohorts["test cohort (seed 99)"]
        rows, _ = evaluate_split(
            train.X, train.y, test.X, test.y, random_state=0, oracle=oracle_risk(test.X.points, truth)
        )
        print(
            "    simulator C: "
            + ", ".join(f"{r.name} {r.metrics['c_index']:.4f}" for r in rows if "c_index" in r.metrics)
        )
        if "synpuf_1k_omop" in cohorts:
            cohort = cohorts["synpuf_1k_omop"]
            per_method: dict[str, list[float]] = {}
            for fold_train, fold_test in GroupKFold(5, shuffle=True, random_state=0).split(
                cohort.X.points, groups=cohort.groups
            ):
                if not cohort.y[fold_test]["event"].any():
                    continue
                rows, _ = evaluate_split(
                    cohort.X[fold_train],
                    cohort.y[fold_train],
                    cohort.X[fold_test],
                    cohort.y[fold_test],
                    {"max_epochs": 30},
                    random_state=0,
                )
                for r in rows:
                    if "c_index" in r.metrics:
                        per_method.setdefault(r.name, []).append(r.metrics["c_index"])
            print("    SynPUF C (5-fold mean): " + ", ".join(f"{n} {np.mean(v):.4f}" for n, v in per_method.items()))
        for name, cohort in cohorts.items():
            for warning in cohort.warnings:
                print(f"    warning ({name}): {warning}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 10000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--test-subjects", type=int, default=2000)
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--labels", action="store_true", help="also compare the label options (item 7)")
    parser.add_argument("--labels-only", action="store_true", help="only compare the label options")
    parser.add_argument(
        "--variants", nargs="*", default=[], choices=sorted(VARIANTS), help="model variants to add as rows"
    )
    args = parser.parse_args()
    print(
        f"bench_quality: ehrprog {ep.__version__}, {platform.machine()}, {os.cpu_count()} cores; "
        f"run {time.strftime('%Y-%m-%d %H:%M')}"
    )
    if args.labels_only:
        simulated(args.test_subjects, 99)
        simulated(1000, 0)
        labels(args.test_subjects)
        return
    variants = {name: params for key in args.variants for name, params in VARIANTS[key].items()}
    simulator(args.sizes, args.seeds, args.test_subjects, args.boot, variants)
    if not args.skip_real:
        synpuf(args.seeds, args.boot)
    if args.labels:
        labels(args.test_subjects)


if __name__ == "__main__":
    main()
