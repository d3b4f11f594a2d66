"""``make demo``: simulate a CKD cohort, split subjects, fit the model and the baselines, report.

Run as ``python -m ehrprog.demo [--subjects N] [--seed S] [--out DIR]``. Prints one table (model
vs baselines on stage and progression, with fit and predict times) and writes ``report.html``
with its PNG plots, the labels and the text report under ``--out``. Offline; a few minutes on
2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import polars as pl

import ehrprog as ep
from ehrprog import report
from ehrprog.evaluation import ORACLE, REFERENCE, evaluate, format_table, subject_split
from ehrprog.metrics import interval, paired_bootstrap_c


def verdict(rows: list, risks: dict[str, np.ndarray], y_test: pl.DataFrame, groups: np.ndarray, seed: int) -> str:
    """The model against the best baseline on progression C-index, with a paired bootstrap 95%
    interval of the difference (test subjects resampled, 200 times), and against the oracle."""
    model = rows[0]
    competitors = [r for r in rows[1:] if "c_index" in r.metrics and r.name not in (ORACLE, REFERENCE)]
    best = max(competitors, key=lambda r: r.metrics["c_index"])
    event, time_ = y_test["event"].to_numpy(), y_test["time_to_event_days"].to_numpy()
    boots = paired_bootstrap_c(event, time_, {"a": risks[model.name], "b": risks[best.name]}, groups, 200, seed)
    low, high = interval(boots["a"] - boots["b"])
    difference = model.metrics["c_index"] - best.metrics["c_index"]
    if low > 0:
        outcome = "beats"
    elif high < 0:
        outcome = "trails"
    else:
        outcome = "is level with (the difference is inside the noise)"
    lines = [
        f"progression: the model {outcome} the best baseline, {best.name}: C-index "
        f"{model.metrics['c_index']:.3f} vs {best.metrics['c_index']:.3f} ({difference:+.3f}, paired bootstrap 95% "
        f"[{low:+.3f}, {high:+.3f}])"
    ]
    oracle = next((r for r in rows if r.name == ORACLE and "c_index" in r.metrics), None)
    if oracle is not None:
        gap = oracle.metrics["c_index"] - best.metrics["c_index"]
        lines.append(
            f"oracle (the simulator's true risk) {oracle.metrics['c_index']:.3f}: the model closes "
            f"{difference / gap:.0%} of the gap the best baseline leaves to it"
            if gap > 0
            else f"oracle (the simulator's true risk) {oracle.metrics['c_index']:.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument("--max-epochs", type=int, default=None, help="override the model's epochs (quick runs)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    t0 = time.perf_counter()
    omop = ep.datasets.simulate_ckd(args.subjects, args.seed, args.out / "omop")
    events = ep.read_omop(omop)
    visits = ep.group_visits(events, "same_day")
    cohort = ep.tasks.CKDProgression(visits="same_day").build(events, visits)
    t1 = time.perf_counter()
    say(
        f"ehrprog {ep.__version__} demo: simulated CKD cohort, {args.subjects:,} subjects, seed {args.seed}, "
        f"{os.cpu_count()} CPU cores"
    )
    say(
        f"data: {events.report.rows_kept:,} events, {visits.n_visits:,} visits -> {len(cohort.X):,} prediction "
        f"points from {len(np.unique(cohort.groups)):,} subjects in {t1 - t0:.1f} s"
    )
    for warning in cohort.warnings:
        say(f"warning: {warning}")
    train, test = subject_split(cohort, seed=args.seed)
    say(f"split by subject: {len(train):,} training points, {len(test):,} test points")
    overrides = {"max_epochs": args.max_epochs} if args.max_epochs else None
    truth = ep.datasets.oracle_risk(cohort.X[test].points, ep.datasets.simulated_truth(args.subjects, args.seed))
    rows, fitted = evaluate(cohort, train, test, overrides, random_state=args.seed, oracle=truth)
    say()
    table = format_table(rows)
    say(table)
    say()
    model = fitted["model"]
    stopped = getattr(model, "n_iter_", len(model.history_)) < model.max_epochs
    how = "stopped early" if stopped else f"the cap of {model.max_epochs}"
    say(
        f"model: {len(model.history_)} epochs ({how}; weights of epoch {model.best_epoch_}, the best on a "
        f"subject-level validation split), {len(model.vocabulary_.codes):,} codes"
    )
    say(verdict(rows, fitted["risks"], cohort.y[test], cohort.groups[test], args.seed))

    X_te, y_te = cohort.X[test], cohort.y[test]
    images = [
        report.kaplan_meier_by_risk(
            args.out / "km_by_risk.png",
            y_te["event"].to_numpy(),
            y_te["time_to_event_days"].to_numpy(),
            model.predict_risk(X_te),
        ),
    ]
    known = y_te["stage"].is_not_null().to_numpy()
    proba = model.predict_proba(X_te)
    images.append(
        report.calibration(args.out / "calibration.png", y_te["stage"].to_numpy()[known], proba[known], model.classes_)
    )
    points = X_te.points.with_row_index("row")
    counts = points.group_by("subject_id").len().sort(["len", "subject_id"], descending=[True, False])
    subject = int(counts["subject_id"][min(len(counts) - 1, len(counts) // 4)])
    rows_of = points.filter(pl.col("subject_id") == subject)["row"].to_numpy()
    patient = X_te[rows_of]
    survival = model.predict_survival_function(patient[len(rows_of) - 1 :], return_array=True)[0]
    images.append(
        report.patient_timeline(
            args.out / "patient.png",
            patient.points,
            proba[rows_of],
            model.classes_,
            model.event_times_,
            survival,
            subject,
        )
    )
    attributions = model.explain(patient[len(rows_of) - 1 :], steps=32)
    top_visits = (
        attributions.group_by("visit_index", "visit_start")
        .agg(pl.col("attribution").sum())
        .sort("attribution", descending=True)
        .head(3)
    )
    top_codes = attributions.sort("attribution", descending=True).head(8)
    why = [f"subject {subject}, last prediction point: the visits that raised the predicted risk most:"]
    why += [
        f"  visit {r['visit_index']} ({r['visit_start']:%Y-%m-%d}): {r['attribution']:+.3f}"
        for r in top_visits.iter_rows(named=True)
    ]
    why.append("codes that raised it most:")
    why += [
        f"  {r['code']} at visit {r['visit_index']}: {r['attribution']:+.3f}" for r in top_codes.iter_rows(named=True)
    ]
    if not attributions["attribution"].abs().max() > 0:
        # Honest, not silent: attributions cover the coded history only.
        why = [
            f"subject {subject}: every code attribution is 0: no epoch of history training bettered the model of "
            f"the clinical inputs alone on validation (best epoch {model.best_epoch_}), so this model predicts "
            "from the clinical inputs (stage, eGFR level, trend and distance to the next stage, age, sex), "
            "which explain() does not attribute yet"
        ]
    say("\n".join(why))
    notes = [
        f"{len(cohort.X):,} prediction points; split by subject; metrics on the test subjects.",
        "IBS: integrated Brier score over the 10th-80th percentile of test follow-up (lower is better).",
        "ECE: top-label expected calibration error (lower is better).",
        f"{ORACLE}: the C-index of the simulator's true risk on the same test points, a ceiling, not a method.",
        f"{REFERENCE}: linear Cox on exactly the clinical inputs the model reads; the model's margin over it "
        "is what its clinical MLP and sequence encoder add.",
    ]
    html = report.write_html(
        args.out / "report.html", "ehrprog demo: CKD progression", table, notes, images, "\n".join(why)
    )
    cohort.labels.write_parquet(args.out / "labels.parquet")
    (args.out / "report.txt").write_text("\n".join(lines) + "\n")
    say(
        f"\nwrote {html} (+ {len(images)} PNG plots), {args.out / 'report.txt'} and {args.out / 'labels.parquet'} "
        f"in {time.perf_counter() - t0:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
