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

import ehrprog as ep
from ehrprog.core.output import OutputFolder, marked
from ehrprog.evaluation import report
from ehrprog.evaluation.comparison import format_table, verdict
from ehrprog.evaluation.heldout import (
    ABLATION,
    BOOSTED_POINT_FEATURES,
    BOOSTED_WINDOWED,
    ORACLE,
    REFERENCE,
    evaluate,
    subject_split,
)
from ehrprog.evaluation.subgroups import format_subgroups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument("--max-epochs", type=int, default=None, help="override the model's epochs (quick runs)")
    args = parser.parse_args(argv)
    out = OutputFolder(args.out, DEMO_KIND, owned=demo_files).check()  # before any work
    with out.writing() as folder:
        return _run(args, folder)


#: What the demo writes, as its output marker names it.
DEMO_KIND = "demo"
#: The tables the simulator writes (a demo folder written before the output marker holds them under omop/).
_SIMULATED_TABLES = (
    "concept",
    "person",
    "death",
    "visit_occurrence",
    "condition_occurrence",
    "procedure_occurrence",
    "drug_exposure",
    "measurement",
)


def demo_files(root: Path) -> set[str] | None:
    """The files the demo wrote in ``root``: those its output marker lists, or, in a folder an
    earlier demo wrote (``report.html`` titled "ehrprog demo", no marker), its report, labels and
    simulated tables; ``None`` for any other folder."""
    owned = marked(DEMO_KIND)(root)
    if owned is not None:
        return owned
    try:
        with open(root / "report.html", encoding="utf-8") as handle:
            if "<title>ehrprog demo" not in handle.read(400):
                return None
    except (OSError, UnicodeDecodeError):
        return None
    tables = {f"omop/{name}.parquet" for name in _SIMULATED_TABLES} | {"omop/.ehrprog-output.json"}
    return {"report.html", "report.txt", "labels.parquet"} | tables


def _run(args: argparse.Namespace, folder: Path) -> int:
    """The demo, writing into ``folder`` (renamed to ``--out`` when it ends)."""
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    t0 = time.perf_counter()
    omop = ep.datasets.simulate_ckd(args.subjects, args.seed, folder / "omop")
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
        f"model: the tabular part ({model.tabular_.risk_model_} on {len(model.tabular_.table_.names_):,} clinical "
        f"inputs and {len(model.tabular_.names_) - len(model.tabular_.table_.names_):,} windowed code counts) plus "
        f"the visit history's offset; {len(model.history_)} epochs ({how}), "
        f"{len(model.vocabulary_.codes):,} codes"
    )
    if model.history_gain_ is not None:
        what = (
            f"kept (epoch {model.best_epoch_})"
            if model.history_kept_
            else "dropped: the estimator is its tabular part (epoch 0)"
        )
        say(
            f"history on the validation subjects: {model.history_trial_gain_ or 0:+.4f} over the tabular part "
            f"(one standard error of a paired bootstrap {model.history_gain_se_ or 0:.4f}): {what}"
        )
    verdict_lines = [
        *fitted["left_out"],
        *verdict(rows, fitted["risks"], cohort.y[test], cohort.groups[test], args.seed),
    ]
    say("\n".join(verdict_lines))
    if fitted["subgroups"]:
        say(format_subgroups(fitted["subgroups"]))

    X_te, y_te = cohort.X[test], cohort.y[test]
    charts, patient = report.sections(model, X_te, y_te, cohort.stages, None, cohort.y[train], fitted["risks"])
    say("\n".join(patient.lines))
    notes = [
        f"{len(cohort.X):,} prediction points; split by subject; metrics on the test subjects.",
        f"{ORACLE}: the C-index of the simulator's true risk on the same test points, a ceiling, not a method.",
        f"{REFERENCE}: linear Cox on exactly the clinical inputs the model reads; the model's margin over it "
        "is what its clinical MLP and sequence encoder add.",
        f"{ABLATION}: the fitted model with its sequence state zeroed (clinical inputs kept): the difference "
        "to the model is what the visit history contributes.",
        f"{BOOSTED_POINT_FEATURES}: XGBoost Cox on the model's clinical inputs, depth and trees chosen by "
        f"subject folds of the training points; {BOOSTED_WINDOWED}: the same plus code counts in the last "
        "30/365 days and all history and the latest coded values (MEDS-Tab's recipe).",
    ]
    report.render_report(
        folder,
        "ehrprog demo: CKD progression",
        rows=rows,
        lines=verdict_lines,
        summary=cohort.summary(),
        notes=notes,
        charts=charts,
        patient=patient,
        text="\n".join(lines),
        subgroups=fitted["subgroups"],
    )
    cohort.labels.write_parquet(folder / "labels.parquet")
    say(
        f"\nwrote {args.out / 'report.html'} ({len(charts) + 1} interactive charts, viewable offline), "
        f"{args.out / 'report.txt'} and "
        f"{args.out / 'labels.parquet'} "
        f"in {time.perf_counter() - t0:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
