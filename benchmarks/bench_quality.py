"""Quality benchmark: does the model earn its place? Learning curves on two simulated worlds
against every baseline, the history ablation and the oracle.

Usage::

    python benchmarks/bench_quality.py [--worlds labs history] [--sizes 500 1000 4000] [--seeds 0 1 2]
        [--cohort test|dev] [--boot 1000] [--test-subjects 2000] [--backbones cehrbert medbert behrt clinicalbert]
        [--backbone-sizes 500 1000] [--skip-real] [--labels | --labels-only] [--variants piecewise no-booster]

Simulator (``ehrprog.datasets.simulate_ckd``, docs/simulator.md): world ``labs`` (progression in
the eGFR trajectory) and world ``history`` (albuminuria, acute kidney injury, dated medications,
latent phenotypes in many sparse codes; a general population of which CKD patients are a part).
A size N is N **labeled people**: N subjects of the world's CKD cohort (prospective eligibility),
drawn from a simulated population of the training seed. For each world, size and seed, the model
(and each backbone asked for) and every baseline are trained on that cohort and scored on ONE test
cohort per world (``--test-subjects`` labeled people of seed 99) shared by every method, seed and
size. Printed per world and size: each method's C-index, stage macro AUROC, IBS and calibration
(mean and sd over seeds); the model with its history zeroed (the same fitted model, sequence
state set to zero) beside it; the oracle (the C-index of the simulator's true risk on the same
test points); and, for the model against the best baseline (the best of every baseline by mean
C, the tuned boosting on point features and on windowed code counts included) and against its
own ablation, the difference in C with a 95% interval from a two-level bootstrap: test subjects
resampled (the same resamples for every method) and training seeds resampled, so the interval
carries both the test sample's noise and the spread over training seeds.

``--cohort dev`` runs everything on the development cohorts instead (training seeds + 100, test
seed 98): design choices (features, thresholds, label rules, learning rates) are made there, and
the test cohort's figures (the default) are only reported.

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
import polars as pl

import ehrprog as ep
from ehrprog.datasets import oracle_risk, simulated_truth
from ehrprog.evaluation.heldout import ABLATION, NOT_BASELINES, ORACLE, REFERENCE, ZEROED, Row, evaluate_split
from ehrprog.metrics import harrell_c, interval, paired_bootstrap_c

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MODEL = "VisitProgressionEstimator"
#: Rows of model variants start with this (never a baseline).
VARIANT = "model, "
VARIANTS = {
    "piecewise": {f"{VARIANT}piecewise survival head": {"survival_head": "piecewise"}},
    "no-booster": {f"{VARIANT}on a linear-Cox tabular part": {"tabular__risk_model": "cox"}},
    "no-windowed": {f"{VARIANT}tabular part without windowed counts": {"tabular__windowed_counts": False}},
}
CACHE = Path(os.environ.get("EHRPROG_BENCH_CACHE", "/tmp/ehrprog_quality"))
#: People simulated per labeled person wanted (CKD patients are ~75% of world "labs", ~18% of "history").
OVERSAMPLE = {"labs": 1.6, "history": 7.0}


def simulated(n: int, seed: int, world: str = "labs", eligibility: str = "prospective") -> ep.tasks.Cohort:
    """The CKD cohort of ``n`` simulated people of ``world`` (cached on disk)."""
    root = CACHE / (f"sim_{n}_{seed}" if world == "labs" else f"sim_{world}_{n}_{seed}")
    if not root.exists():
        ep.datasets.simulate_ckd(n, seed, root, world=world)
    return ep.tasks.CKDProgression(eligibility=eligibility).build(ep.read_omop(root))


def labeled(
    world: str, n_labeled: int, seed: int, eligibility: str = "prospective", build=None
) -> tuple[ep.tasks.Cohort, np.ndarray, int]:
    """``n_labeled`` subjects of the CKD cohort of a population of ``world`` (seed ``seed``), drawn
    with the seed; returns the cohort, the rows kept and the population's size. ``build(people,
    seed)`` makes the cohort (default: :func:`simulated`)."""
    people = int(np.ceil(n_labeled * OVERSAMPLE[world]))
    while True:
        cohort = build(people, seed) if build is not None else simulated(people, seed, world, eligibility)
        subjects = np.unique(cohort.groups)
        if len(subjects) >= n_labeled:
            break
        people = int(people * 1.3)
    chosen = np.random.default_rng(seed).choice(subjects, n_labeled, replace=False)
    return cohort, np.flatnonzero(np.isin(cohort.groups, chosen)), people


#: The headroom row: the windowed-counts booster given the simulator's true latent state.
HEADROOM = "headroom: booster + true latent state"
#: The latent state it reads, per world (phenotypes, current log UACR and eGFR slope; labs: the slope).
LATENT = {
    "history": ["slope", "log_uacr", "diabetic_microvascular", "cardiorenal", "glomerular", "obstructive"],
    "labs": ["slope"],
}


def latent_state(points: pl.DataFrame, truth: pl.DataFrame, world: str) -> np.ndarray:
    """``[n, k]`` the simulator's true latent state at each point's prediction time (the month in
    force for world history; the person's for labs): what a perfect reader of the history knows."""
    keys = points.select("subject_id", "prediction_time").with_row_index("_row")
    if "time" in truth.columns:
        table = keys.sort("prediction_time").join_asof(
            truth.select("subject_id", "time", *LATENT[world]).sort("time"),
            left_on="prediction_time",
            right_on="time",
            by="subject_id",
            strategy="backward",
            check_sortedness=False,  # both sorted by time, so within each subject too
        )
    else:
        table = keys.join(truth.select("subject_id", *LATENT[world]), on="subject_id", how="left")
    return table.sort("_row").select(LATENT[world]).cast(pl.Float64).to_numpy()


def headroom_risk(X_tr, y_tr, X_te, truth_tr, truth_te, world: str, seed: int) -> np.ndarray:
    """Test risks of the windowed-counts booster (tuned the same way) given the true latent state."""
    from scipy import sparse

    from ehrprog.models.baselines import WindowedCountsBoostedCox
    from ehrprog.models.boosted_cox import TunedBoostedCox

    reader = WindowedCountsBoostedCox(random_state=seed)
    train = sparse.hstack([reader._fit_features(X_tr), sparse.csr_matrix(latent_state(X_tr.points, truth_tr, world))])
    test = sparse.hstack([reader._features(X_te), sparse.csr_matrix(latent_state(X_te.points, truth_te, world))])
    event, time_ = y_tr["event"].to_numpy().astype(bool), y_tr["time_to_event_days"].to_numpy()
    booster = TunedBoostedCox(random_state=seed).fit(train.tocsr(), event, time_, X_tr.points["subject_id"].to_numpy())
    return booster.margin(test.tocsr())


def seed_bootstrap(draws: np.ndarray, seed: int = 0) -> np.ndarray:
    """Two-level bootstrap of a mean over training seeds: ``draws`` ``[S, B]`` (each seed's paired
    differences on B shared test-subject resamples) -> ``[B]``, the mean over S seeds drawn with
    replacement for each resample."""
    rng = np.random.default_rng(seed)
    n_seeds, n_boot = draws.shape
    picks = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    return draws[picks, np.arange(n_boot)[:, None]].mean(axis=1)


def _gain(model) -> str:
    """The model's ``history_gain_`` and its standard error, as printed."""
    if model.history_gain_ is None:
        return "not measured"
    se = f" (se {model.history_gain_se_:.4f})" if model.history_gain_se_ is not None else ""
    return f"{model.history_trial_gain_ or 0:+.4f}{se}"


def _mean_c(runs: list[dict], name: str) -> float:
    return float(np.mean([next(r for r in run["rows"] if r.name == name).metrics["c_index"] for run in runs]))


def compare(runs: list[dict], event, time_, groups, boot: int, oracle: np.ndarray | None) -> list[str]:
    """Lines comparing the model (and each variant) with the best baseline, its history ablation and
    the reference over ``runs`` (one per seed or fold: ``rows`` and ``risks``), with two-level
    bootstrap intervals of the mean difference (test subjects and training seeds resampled)."""
    names = [r.name for r in runs[0]["rows"] if "c_index" in r.metrics]
    baselines = [n for n in names if n not in NOT_BASELINES and not n.startswith(VARIANT) and n != HEADROOM]
    best = max(baselines, key=lambda n: _mean_c(runs, n))
    models = [n for n in names if (n == MODEL or n.startswith(VARIANT)) and not n.endswith(ZEROED)]
    lines = []
    for model in models:
        zeroed = ABLATION if model == MODEL else f"{model}, {ZEROED}"
        others = [(best, "best baseline")] + ([(zeroed, "history zeroed")] if zeroed in names else [])
        if model == MODEL and REFERENCE in names:
            others.append((REFERENCE, "reference"))
        for other, label in others:
            draws = []
            for run in runs:
                e, t, g = run.get("event", event), run.get("time", time_), run.get("groups", groups)
                boots = paired_bootstrap_c(e, t, {"a": run["risks"][model], "b": run["risks"][other]}, g, boot, seed=0)
                draws.append(boots["a"] - boots["b"])
            low, high = interval(seed_bootstrap(np.array(draws)) if len(draws) > 1 else draws[0])
            diff = _mean_c(runs, model) - _mean_c(runs, other)
            verdict = "above zero" if low > 0 else ("below zero" if high < 0 else "inside the noise")
            lines.append(f"  {model} - {label} ({other}): {diff:+.4f} C, 95% [{low:+.4f}, {high:+.4f}] ({verdict})")
    if HEADROOM in names:
        room = _mean_c(runs, HEADROOM) - _mean_c(runs, best)
        shares = ", ".join(
            f"{m} {(_mean_c(runs, m) - _mean_c(runs, best)) / room:+.0%}" for m in [*models, ABLATION] if m in names
        )
        lines.append(
            f"  headroom (booster + true latent state) {_mean_c(runs, HEADROOM):.4f}: {room:+.4f} over the best "
            f"baseline; each method's share of it: {shares}"
        )
    if oracle is not None:
        oracle_c = _mean_c(runs, ORACLE)
        gap = oracle_c - _mean_c(runs, best)
        closed = (_mean_c(runs, MODEL) - _mean_c(runs, best)) / gap if gap > 0 else float("nan")
        lines.append(
            f"  oracle {oracle_c:.4f}: the best baseline leaves {gap:.4f}; the model closes {closed:.0%} of it"
        )
    return lines


def table(runs: list[dict]) -> list[str]:
    names = [r.name for r in runs[0]["rows"]]
    lines = [f"  {'method':44s}{'C-index':>18s}{'stage AUROC':>18s}{'IBS':>18s}{'ICI 1y/2y/5y':>20s}{'fit s':>8s}"]
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
            f"  {name:44s}"
            + "".join(f"{c:>18s}" for c in cells)
            + f"{'/'.join(ici):>20s}"
            + (f"{fit:8.1f}" if np.isfinite(fit) else "")
        )
    return lines


def simulator(
    world: str,
    sizes: list[int],
    seeds: list[int],
    test_subjects: int,
    boot: int,
    variants: dict | None = None,
    backbones: list[str] | None = None,
    backbone_sizes: list[int] | None = None,
    test_seed: int = 99,
) -> None:
    full, rows, people = labeled(world, test_subjects, test_seed)
    test_X, test_y, test_groups = full.X[rows], full.y[rows], full.groups[rows]
    test_truth = simulated_truth(people, test_seed, world=world)
    truth = oracle_risk(test_X.points, test_truth)
    event = test_y["event"].to_numpy()
    time_ = test_y["time_to_event_days"].to_numpy()
    print(
        f"\nworld {world!r}: test cohort {test_subjects:,} labeled people of a population of {people:,} "
        f"(seed {test_seed}), {len(test_X):,} points, {int(event.sum()):,} progressions; the same for every run",
        flush=True,
    )
    for n in sizes:
        runs = []
        extra = dict(variants or {})
        if backbones and (backbone_sizes is None or n in backbone_sizes):
            extra.update({f"{VARIANT}backbone {b}": {"backbone": b} for b in backbones})
        for seed in seeds:
            train, train_rows, train_people = labeled(world, n, seed)
            X_tr, y_tr = train.X[train_rows], train.y[train_rows]
            started = time.perf_counter()
            rows_, fitted = evaluate_split(X_tr, y_tr, test_X, test_y, random_state=seed, oracle=truth, variants=extra)
            room = headroom_risk(
                X_tr, y_tr, test_X, simulated_truth(train_people, seed, world=world), test_truth, world, seed
            )
            fitted["risks"][HEADROOM] = room
            rows_.append(Row(HEADROOM, {"c_index": harrell_c(event, time_, room)}))
            runs.append({"rows": rows_, "risks": fitted["risks"]})
            model = fitted["model"]
            print(
                f"  [N={n:,} seed {seed}: {len(X_tr):,} training points of {n:,} subjects (population "
                f"{train_people:,}); model best epoch {model.best_epoch_} of {model.n_iter_}, history "
                f"{'kept' if model.history_kept_ else 'dropped'} (validation gain {_gain(model)}); "
                f"{time.perf_counter() - started:.0f} s]",
                flush=True,
            )
        print(f"\nworld {world!r}, N = {n:,} labeled people for training, seeds {seeds} (mean ± sd over seeds)")
        print("\n".join(table(runs)))
        print("\n".join(compare(runs, event, time_, test_groups, boot, truth)))
        stage = {
            r.name: np.mean([run["rows"][i].metrics.get("macro_auroc", np.nan) for run in runs])
            for i, r in enumerate(runs[0]["rows"])
        }
        logistic = stage.get("bag-of-codes logistic", np.nan)
        print(
            f"  stage macro AUROC: model {stage[MODEL]:.4f} vs bag-of-codes logistic {logistic:.4f} "
            f"({'at least the logistic' if stage[MODEL] >= logistic else 'below the logistic'})",
            flush=True,
        )


def eligibility(world: str, test_subjects: int, test_seed: int = 99) -> None:
    """The test population's CKD cohort under prospective (default) and retrospective eligibility:
    points, subjects, event rate, and the oracle's and the tuned point-feature booster's C (trained
    on 1,000 labeled people of seed 0 under the same rule)."""
    from ehrprog.models.baselines import PointFeaturesBoostedCox

    print(f"\nworld {world!r}: eligibility (test seed {test_seed}; booster trained on N=1,000, seed 0)")
    for rule in ("prospective", "retrospective"):
        full, rows, people = labeled(world, test_subjects, test_seed, rule)
        X, y = full.X[rows], full.y[rows]
        train, train_rows, _ = labeled(world, 1000, 0, rule)
        booster = PointFeaturesBoostedCox(random_state=0).fit(train.X[train_rows], train.y[train_rows])
        e, t = y["event"].to_numpy(), y["time_to_event_days"].to_numpy()
        truth = oracle_risk(X.points, simulated_truth(people, test_seed, world=world))
        print(
            f"  {rule:13s}: {len(X):,} points of {len(np.unique(full.groups[rows])):,} subjects, "
            f"event rate {e.mean():.3f}; oracle C {harrell_c(e, t, truth):.4f}; "
            f"boosted Cox on point features C {harrell_c(e, t, booster.predict(X)):.4f}",
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
    parser.add_argument("--worlds", nargs="+", default=["labs", "history"], choices=["labs", "history"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 4000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cohort", choices=["test", "dev"], default="test", help="dev: the development cohorts")
    parser.add_argument("--test-subjects", type=int, default=2000)
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument("--backbones", nargs="*", default=[], help="backbones to add as model rows")
    parser.add_argument("--backbone-sizes", type=int, nargs="*", default=None, help="sizes with backbone rows")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-eligibility", action="store_true")
    parser.add_argument("--labels", action="store_true", help="also compare the label options")
    parser.add_argument("--labels-only", action="store_true", help="only compare the label options")
    parser.add_argument(
        "--variants", nargs="*", default=[], choices=sorted(VARIANTS), help="model variants to add as rows"
    )
    args = parser.parse_args()
    print(
        f"bench_quality: ehrprog {ep.__version__}, {platform.machine()}, {os.cpu_count()} cores; "
        f"run {time.strftime('%Y-%m-%d %H:%M')}; {args.cohort} cohorts"
    )
    if args.labels_only:
        simulated(args.test_subjects, 99)
        simulated(1000, 0)
        labels(args.test_subjects)
        return
    variants = {name: params for key in args.variants for name, params in VARIANTS[key].items()}
    seeds = args.seeds if args.cohort == "test" else [s + 100 for s in args.seeds]
    test_seed = 99 if args.cohort == "test" else 98
    for world in args.worlds:
        simulator(
            world,
            args.sizes,
            seeds,
            args.test_subjects,
            args.boot,
            variants,
            args.backbones,
            args.backbone_sizes,
            test_seed,
        )
        if not args.skip_eligibility:
            eligibility(world, args.test_subjects, test_seed)
    if not args.skip_real:
        synpuf(args.seeds, args.boot)
    if args.labels:
        labels(args.test_subjects)


if __name__ == "__main__":
    main()
