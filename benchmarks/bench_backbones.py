"""Backbone benchmark: the five backbones, from scratch and pre-trained, on the same subject splits.

Usage: ``python benchmarks/bench_backbones.py [--subjects 1000] [--pretrain-subjects 3000] [--seeds 0 1]``

For each split every backbone is fitted with the demo's estimator settings (``DEMO_MODEL_PARAMS``,
``embedding_dim`` = hidden size 32, 2 layers for the BERT backbones) and scored on held-out
subjects: stage macro AUROC, progression Harrell's C and integrated Brier score, fit time,
training throughput and batched inference time. The Cox PH baseline and the tuned boosting baselines
(point features, windowed code counts) are fitted on the same split
for reference.

Pre-trained variants: CEHR-BERT, Med-BERT and BEHRT are pre-trained with ``ehrprog.models.pretrain``
(their papers' objectives) on data that holds none of the test subjects: on the simulator a
separate population (another seed, ``--pretrain-subjects`` subjects); on SynPUF the training
subjects' visits only. Then fine-tuned from that checkpoint. The pre-training's held-out masked-LM
loss is printed beside the unigram entropy of the codes (the loss of predicting code frequencies
alone): below it means the model learned context.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

import ehrprog as ep
from ehrprog.evaluation.heldout import DEMO_MODEL_PARAMS, subject_split
from ehrprog.metrics import evaluation_times, harrell_c, integrated_brier, macro_auroc, survival_at
from ehrprog.models.baselines import CoxBaseline, PointFeaturesBoostedCox, WindowedCountsBoostedCox
from ehrprog.models.pretrain import pretrain

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BACKBONES = ["default", "cehrbert", "medbert", "behrt", "clinicalbert"]
PRETRAINABLE = ["cehrbert", "medbert", "behrt"]
HIDDEN = 32


def unigram_entropy(visits: ep.VisitFrame) -> float:
    counts = visits.visits().select(pl.col("codes").explode())["codes"].value_counts()["count"].to_numpy()
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def pretrain_all(visits: ep.VisitFrame, folder: Path, epochs: int, seed: int) -> dict[str, Path]:
    out = {}
    print(f"  pre-training on {visits.n_subjects:,} subjects; unigram entropy of codes {unigram_entropy(visits):.3f}")
    for name in PRETRAINABLE:
        started = time.perf_counter()
        result = pretrain(
            name, visits, folder / name, epochs=epochs, lr=1e-3, dim=HIDDEN, batch_size=32, random_state=seed
        )
        first, last = result.history[0], result.history[-1]
        extra = ", ".join(
            f"{k[6:]} {first[k]:.3f}->{last[k]:.3f}"
            for k in last
            if k.startswith("valid_") and k not in ("valid_loss", "valid_mlm", "valid_mlm_accuracy") and k in first
        )
        print(
            f"    {name:9s} held-out MLM loss {first['valid_mlm']:.3f} -> {last['valid_mlm']:.3f} "
            f"(accuracy {last['valid_mlm_accuracy']:.3f}){'; ' + extra if extra else ''}; "
            f"{time.perf_counter() - started:.0f} s"
        )
        out[name] = folder / name
    return out


def run_split(cohort, train, test, checkpoints: dict[str, Path], seed: int, epochs: int) -> list[dict]:
    X_tr, X_te, y_tr, y_te = cohort.X[train], cohort.X[test], cohort.y[train], cohort.y[test]
    stage_te = y_te["stage"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    known = ~np.isnan(stage_te)
    ev_tr, t_tr = y_tr["event"].to_numpy(), y_tr["time_to_event_days"].to_numpy()
    ev_te, t_te = y_te["event"].to_numpy(), y_te["time_to_event_days"].to_numpy()
    times = evaluation_times(t_tr, t_te)
    n_visits = int(X_tr.points.group_by("subject_id").agg(pl.col("n_visits").max())["n_visits"].sum())
    n_test_subjects = X_te.points["subject_id"].n_unique()
    variants = [(name, None) for name in BACKBONES] + [(name, checkpoints[name]) for name in checkpoints]
    rows = []
    for name, checkpoint in variants:
        params = {**DEMO_MODEL_PARAMS, "max_epochs": epochs, "backbone": name, "random_state": seed}
        params["embedding_dim"] = HIDDEN
        if checkpoint is not None:
            params["backbone__checkpoint"] = str(checkpoint)
        started = time.perf_counter()
        model = ep.VisitProgressionEstimator().set_params(**params).fit(X_tr, y_tr)
        fit_s = time.perf_counter() - started
        started = time.perf_counter()
        proba, risk = model.predict_proba(X_te), model.predict_risk(X_te)
        predict_s = time.perf_counter() - started
        survival = model.predict_survival_function(X_te, return_array=True)
        grid = np.searchsorted(model.event_times_, times, side="right") - 1
        surv_at = np.where(grid[None, :] >= 0, survival[:, np.clip(grid, 0, None)], 1.0)
        epoch_s = np.median([h["seconds"] for h in model.history_])
        rows.append(
            {
                "backbone": name + (" (pre-trained)" if checkpoint is not None else ""),
                "stage AUROC": macro_auroc(stage_te[known], proba[known], model.classes_),
                "C-index": harrell_c(ev_te, t_te, risk),
                "IBS": integrated_brier((ev_tr, t_tr), (ev_te, t_te), surv_at, times),
                "fit s": fit_s,
                "epochs": len(model.history_),
                "train visits/s": n_visits * (1 - DEMO_MODEL_PARAMS.get("validation_fraction", 0.15)) / epoch_s,
                "predict ms/subject": 1e3 * predict_s / n_test_subjects,
            }
        )
        print(
            f"    {rows[-1]['backbone']:28s} C {rows[-1]['C-index']:.3f}  AUROC {rows[-1]['stage AUROC']:.3f}  "
            f"fit {fit_s:.0f} s",
            flush=True,
        )
    # The baselines beside them: Cox PH, and the strongest a user can fit (tuned boosting).
    for name, baseline in [
        ("Cox PH baseline", CoxBaseline()),
        ("boosted Cox, point features (tuned)", PointFeaturesBoostedCox()),
        ("boosted Cox, windowed counts (tuned)", WindowedCountsBoostedCox()),
    ]:
        baseline.fit(X_tr, y_tr)
        surv = survival_at(baseline.predict_survival_function(X_te), times)
        rows.append(
            {
                "backbone": name,
                "C-index": harrell_c(ev_te, t_te, baseline.predict(X_te)),
                "IBS": integrated_brier((ev_tr, t_tr), (ev_te, t_te), surv, times),
            }
        )
    return rows


def summarise(title: str, runs: list[list[dict]]) -> None:
    columns = ["stage AUROC", "C-index", "IBS", "fit s", "epochs", "train visits/s", "predict ms/subject"]
    print(f"\n{title}")
    print(f"  {'backbone':28s}" + "".join(f"{c:>20s}" for c in columns))
    for i, row in enumerate(runs[0]):
        cells = []
        for column in columns:
            values = [run[i][column] for run in runs if column in run[i]]
            if not values:
                cells.append(f"{'-':>20s}")
            elif column in ("stage AUROC", "C-index", "IBS"):
                cells.append(f"{np.mean(values):11.3f} ± {np.std(values):5.3f}")
            else:
                cells.append(f"{np.mean(values):20,.1f}")
        print(f"  {row['backbone']:28s}" + "".join(f"{c:>20s}" for c in cells))


def speed(subjects: int, epochs: int = 2) -> None:
    """Training throughput and batched inference per backbone (no validation split, fixed epochs)."""
    import torch

    work = Path(tempfile.mkdtemp(prefix="ehrprog_bench_speed_"))
    cohort = ep.tasks.CKDProgression().build(ep.read_omop(ep.datasets.simulate_ckd(subjects, 0, work / "omop")))
    train, test = subject_split(cohort, seed=0)
    X_tr, y_tr, X_te = cohort.X[train], cohort.y[train], cohort.X[test]
    n_visits = int(X_tr.points.group_by("subject_id").agg(pl.col("n_visits").max())["n_visits"].sum())
    n_test = X_te.points["subject_id"].n_unique()
    print(
        f"\nspeed: {subjects:,} simulated subjects ({n_visits:,} training visits), {epochs} epochs, hidden {HIDDEN}, "
        f"{torch.get_num_threads()} torch threads, {'CUDA' if torch.cuda.is_available() else 'CPU'}"
    )
    print(f"  {'backbone':14s}{'train visits/s':>16s}{'epoch s':>10s}{'predict ms/subject':>20s}{'parameters':>12s}")
    for name in BACKBONES:
        params = {**DEMO_MODEL_PARAMS, "backbone": name, "embedding_dim": HIDDEN, "max_epochs": epochs}
        params.update(validation_fraction=0.0, random_state=0, target="both")
        model = ep.VisitProgressionEstimator().set_params(**params).fit(X_tr, y_tr)
        epoch_s = float(np.median([h["seconds"] for h in model.history_]))
        started = time.perf_counter()
        model.predict_risk(X_te)
        predict = (time.perf_counter() - started) / n_test
        n_params = sum(p.numel() for p in model.model_.backbone.parameters())
        print(f"  {name:14s}{n_visits / epoch_s:16,.0f}{epoch_s:10.2f}{predict * 1e3:20.2f}{n_params:12,}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=1000)
    parser.add_argument("--pretrain-subjects", type=int, default=3000)
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=15, help="fine-tuning epochs (early stopping may end sooner)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--speed-only", action="store_true", help="only the speed table (run on an idle machine)")
    args = parser.parse_args()
    import torch

    if args.speed_only:
        speed(args.subjects)
        return

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{'CUDA' if torch.cuda.is_available() else 'CPU'}; run {time.strftime('%Y-%m-%d %H:%M')}"
    )
    work = Path(tempfile.mkdtemp(prefix="ehrprog_bench_backbones_"))
    print(f"\nsimulator: pre-training population of {args.pretrain_subjects:,} subjects (seed 100), visit_id visits")
    population = ep.group_visits(
        ep.read_omop(ep.datasets.simulate_ckd(args.pretrain_subjects, 100, work / "population")), "visit_id"
    )
    checkpoints = pretrain_all(population, work / "sim", args.pretrain_epochs, 0)
    runs = []
    for seed in args.seeds:
        print(f"  split seed {seed}:")
        cohort = ep.tasks.CKDProgression().build(
            ep.read_omop(ep.datasets.simulate_ckd(args.subjects, seed, work / f"cohort_{seed}"))
        )
        train, test = subject_split(cohort, seed=seed)
        runs.append(run_split(cohort, train, test, checkpoints, seed, args.epochs))
    summarise(f"simulator, {args.subjects:,} subjects, seeds {args.seeds} (mean ± sd over seeds)", runs)
    synpuf = SHARED / "synpuf_1k_omop"
    if args.skip_real or not synpuf.exists():
        print(f"\nSynPUF: skipped ({'--skip-real' if args.skip_real else f'{synpuf} absent'})")
        return
    events = ep.read_omop(synpuf)
    cohort = ep.tasks.CKDProgression().build(events)
    visits = ep.group_visits(events, "visit_id")
    runs = []
    for seed in args.seeds:
        train, test = subject_split(cohort, seed=seed)
        train_subjects = cohort.X[train].points["subject_id"].unique().implode()
        print(f"  SynPUF split seed {seed}: pre-training on the training subjects' visits")
        own = ep.VisitFrame(
            visits.frame.filter(pl.col("subject_id").is_in(train_subjects)), visits.strategy, visits.codes
        )
        checkpoints = pretrain_all(own, work / f"synpuf_{seed}", args.pretrain_epochs, seed)
        runs.append(run_split(cohort, train, test, checkpoints, seed, args.epochs))
    summarise(
        f"SynPUF 1k (condition eras): {len(cohort.X):,} points, {len(np.unique(cohort.groups))} subjects, "
        f"{int(cohort.y['event'].sum())} progressions (mean ± sd over seeds {args.seeds})",
        runs,
    )


if __name__ == "__main__":
    main()
