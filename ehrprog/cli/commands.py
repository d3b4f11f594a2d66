"""The ``ehrprog`` command line: ``evaluate``, ``fit``, ``report``, ``inspect``, ``convert
omop-to-meds``, ``simulate``, ``plugins``, ``pretrain``, ``build`` and ``verify-checkpoint``."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from ehrprog.errors import InputError
from ehrprog.redaction import redact


def _visit_strategy(text: str):
    from ehrprog.visits import Gap

    if text.startswith("gap:"):
        try:
            return Gap(hours=float(text.split(":", 1)[1]))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: gap:HOURS needs a finite non-negative number of hours (e.g. gap:24)"
            ) from None
    if text in ("same_day", "visit_id"):
        return text
    raise argparse.ArgumentTypeError("visits must be same_day, visit_id or gap:HOURS")


def _whole(low: int, high: int | None = None):
    """An argparse type: a whole number in ``[low, high]``, checked before any work starts
    (``--workers 0`` gave Ray no CPU and hung)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            rule = f"is out of range: must be {low} or more" if high is None else f"is outside {low}..{high}"
            raise argparse.ArgumentTypeError(f"{value} {rule}")
        return value

    return parse


def _real(low: float, high: float | None = None, *, closed_low: bool = False):
    """An argparse type: a finite number above ``low`` (or at it, with ``closed_low``) and below ``high``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        above = value >= low if closed_low else value > low
        if not np.isfinite(value) or not above or (high is not None and value >= high):
            bound = f"{'at least' if closed_low else 'above'} {low:g}" + (f" and below {high:g}" if high else "")
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {bound}")
        return value

    return parse


#: What --overwrite means for every writer (ehrprog.output.OutputFolder).
_OVERWRITE_HELP = (
    "write into a non-empty folder ehrprog did not write, keeping its files (never deleted or replaced); "
    "a folder of ehrprog's own kind is replaced whole without it"
)

#: Seeds numpy and torch take (``[0, 2**32 - 1]``).
_SEED = _whole(0, 2**32 - 1)


def _database_options(args: argparse.Namespace, source: str) -> dict:
    """``schema``/``vocabulary_schema`` for a database URI (an error for files, where they mean nothing)."""
    from ehrprog.io.database import is_database_uri

    pairs = [("schema", args.schema), ("vocabulary_schema", args.vocabulary_schema)]
    pairs += [(k, getattr(args, k, None)) for k in ("connect_timeout", "statement_timeout")]
    given = {k: v for k, v in pairs if v}
    if not is_database_uri(str(source)):
        if given:
            raise InputError(
                "--schema, --vocabulary-schema, --connect-timeout and --statement-timeout apply to database URIs only"
            )
        return {}
    return given


def _read_options(args: argparse.Namespace, source: str) -> dict:
    """What reading ``source`` takes from the command line: database schemas and OMOP ``--codes``."""
    options = _database_options(args, source)
    if args.codes:
        options["codes"] = args.codes
    return options


def _add_database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--schema", default=None, help="database URIs: schema of the CDM tables (default public)")
    parser.add_argument("--vocabulary-schema", default=None, help="database URIs: schema of CONCEPT (default --schema)")
    parser.add_argument(
        "--connect-timeout", type=_real(0), default=None, help="PostgreSQL: seconds to wait for the server (default 30)"
    )
    parser.add_argument(
        "--statement-timeout", type=_real(0), default=None, help="PostgreSQL: seconds a query may run (default: none)"
    )


def _inspect(args: argparse.Namespace) -> int:
    from ehrprog.sources import read_events
    from ehrprog.tasks import CKDProgression
    from ehrprog.visits import group_visits

    started = time.perf_counter()
    events = read_events(args.path, args.format, **_database_options(args, args.path))
    frame = events.collect()
    visits = group_visits(events, args.visits)
    print(f"dataset: {redact(str(args.path))}")
    print(f"subjects: {frame['subject_id'].n_unique():,}")
    print(f"events: {frame.height:,} ({frame['time'].null_count():,} static)")
    print(f"visits ({args.visits}): {visits.n_visits:,}")
    print(f"distinct codes: {frame['code'].n_unique():,}")
    timed = frame.filter(pl.col("time").is_not_null())["time"]
    if len(timed):
        print(f"time span: {timed.min()} .. {timed.max()}")
    top = frame.group_by("code").len().sort(["len", "code"], descending=[True, False]).head(args.top)
    print("most frequent codes: " + ", ".join(f"{c} ({n:,})" for c, n in top.iter_rows()))
    stages = CKDProgression(visits=args.visits).stage_events(events, include_unstaged=True)
    if stages.height:
        per_stage = stages.group_by("stage", "source").agg(pl.col("subject_id").n_unique().alias("subjects"))
        print(
            "CKD stage records (subjects): "
            + ", ".join(
                f"stage {r['stage'] if r['stage'] is not None else '?'} by {r['source']}: {r['subjects']:,}"
                for r in per_stage.sort("stage", "source", nulls_last=True).iter_rows(named=True)
            )
        )
    else:
        print("CKD stage records: none")
    print("ingest report:")
    print(events.report)
    print(f"done in {time.perf_counter() - started:.2f} s")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from ehrprog.io import read_omop, write_meds
    from ehrprog.io.database import is_database_uri
    from ehrprog.io.meds import MEDS_KIND, meds_files
    from ehrprog.output import OutputFolder

    started = time.perf_counter()
    inputs = [] if is_database_uri(args.source) else [args.source]
    OutputFolder(args.destination, MEDS_KIND, owned=meds_files, inputs=inputs, overwrite=args.overwrite).check()
    events = read_omop(args.source, codes=args.codes, materialize=False, **_database_options(args, args.source))
    out = write_meds(events, args.destination, overwrite=args.overwrite, inputs=inputs)
    print(events.report)
    print(f"wrote MEDS dataset {out} in {time.perf_counter() - started:.2f} s")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from ehrprog.datasets import simulate_ckd

    out = simulate_ckd(
        args.subjects, args.seed, args.out, format=args.format, world=args.world, overwrite=args.overwrite
    )
    print(f"wrote {args.format} dataset {out}")
    return 0


def _plugins(args: argparse.Namespace) -> int:
    from ehrprog.plugins import backbones, checkpoint_loaders, plugin_manager

    manager = plugin_manager()
    print("plugins:")
    for name, _plugin in sorted(manager.list_name_plugin(), key=lambda item: item[0]):
        dist = next((d for p, d in manager.list_plugin_distinfo() if p is _plugin), None)
        origin = f" ({dist.project_name} {dist.version})" if dist is not None else " (built in)"
        print(f"  {name}{origin}")
    print("backbones:")
    for name, spec in backbones(manager).items():
        print(f"  {name}: {spec.description} [from {spec.plugin}]")
    print("checkpoint loaders:")
    for name, loader in checkpoint_loaders(manager).items():
        print(f"  {name}: {loader.description} [from {loader.plugin}]")
    return 0


def _verify_checkpoint(args: argparse.Namespace) -> int:
    """Load DIR/checkpoint with the backbone's loader, run DIR/inputs.npz, compare with
    DIR/expected_outputs.npz; the last line gives the max abs difference per output."""
    import numpy as np
    import torch

    from ehrprog.plugins import get_checkpoint_loader

    root = args.folder
    for name in ("checkpoint", "inputs.npz", "expected_outputs.npz"):
        if not (root / name).exists():
            raise InputError(f"a checkpoint fixture folder needs {name}", file=str(root / name))
    try:
        loader = get_checkpoint_loader(args.backbone)
    except ValueError as error:
        raise InputError(str(error)) from error
    model = loader.load(root / "checkpoint")
    inputs = {k: torch.from_numpy(v) for k, v in np.load(root / "inputs.npz").items()}
    expected = dict(np.load(root / "expected_outputs.npz").items())
    with torch.no_grad():
        outputs = model(**inputs)
    differences = {}
    for name, want in expected.items():
        if name not in outputs:
            raise InputError(
                f"the model gives no output {name!r} (it gives {sorted(outputs)})",
                file=str(root / "expected_outputs.npz"),
            )
        got = outputs[name].detach().cpu().numpy()
        if got.shape != want.shape:
            raise InputError(
                f"output {name!r} has shape {got.shape}, expected {want.shape}", file=str(root / "expected_outputs.npz")
            )
        differences[name] = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
    worst = max(differences.values())
    verdict = "OK" if worst <= args.tolerance else f"FAILED (tolerance {args.tolerance:g})"
    print(f"{args.backbone} checkpoint {root / 'checkpoint'}: {verdict}")
    print("max abs difference: " + ", ".join(f"{k}={v:.3g}" for k, v in differences.items()))
    return 0 if worst <= args.tolerance else 1


def _pretrain(args: argparse.Namespace) -> int:
    """Pre-train a backbone on an OMOP or MEDS dataset; one line per epoch, the folder at the end."""
    from ehrprog.backbones.pretrain import check_objective, pretrain
    from ehrprog.sources import read_events
    from ehrprog.visits import group_visits

    options = {"codes": args.codes} if args.codes else {}
    if args.codes and args.format == "meds":
        raise InputError("--codes applies to OMOP data only", file=str(args.data))
    check_objective(args.backbone, args.objective)  # before reading the data: a wrong choice fails at once
    from ehrprog.backbones.checkpoint import checkpoint_output
    from ehrprog.io.database import is_database_uri

    inputs = [p for p in (args.data, args.init) if p is not None and not is_database_uri(str(p))]
    checkpoint_output(args.out, overwrite=args.overwrite, inputs=inputs)  # before reading the data
    started = time.perf_counter()
    if (Path(args.data) / "manifest.json").is_file():  # a population saved by `ehrprog build --population`
        from ehrprog.store import load_cohort

        visits = load_cohort(args.data).X
        print(f"{len(visits):,} subjects in {len(visits.store.names)} shards on disk (read shard by shard)")
    else:
        events = read_events(args.data, args.format, **options)
        visits = group_visits(events, args.visits)
        print(
            f"{visits.n_subjects:,} subjects, {visits.n_visits:,} visits read in {time.perf_counter() - started:.1f} s"
        )
    params = {}
    if args.layers is not None:
        params["num_hidden_layers"] = args.layers
    if args.heads is not None:
        params["num_attention_heads"] = args.heads
    if args.init:
        params = {"checkpoint": str(args.init)}

    def report(record: dict) -> None:
        parts = ", ".join(f"{k}={v:.4f}" for k, v in record.items() if k not in ("epoch", "seconds"))
        print(f"epoch {record['epoch']}: {parts} ({record.get('seconds', 0.0):.1f} s)", flush=True)

    try:
        result = pretrain(
            args.backbone,
            visits,
            args.out,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            max_visits=args.max_visits,
            dim=args.hidden,
            random_state=args.seed,
            device=args.device,
            progress=report,
            objective=args.objective,
            tte_codes=args.tte_codes,
            steps_per_epoch=args.steps_per_epoch,
            overwrite=args.overwrite,
            **params,
        )
    except ValueError as error:  # a setting, not the data file, is at fault: say so without blaming the file
        raise InputError(f"pretrain: {error}") from error
    print(
        f"pre-trained {args.backbone} ({', '.join(result.objectives)}) on {result.n_subjects - result.n_validation:,} "
        f"subjects ({result.n_validation:,} more held out for the validation loss), "
        f"{result.n_codes:,} codes; wrote {result.folder} "
        f"(use it with VisitProgressionEstimator(backbone={args.backbone!r}, backbone__checkpoint=...))"
    )
    return 0


def _build(args: argparse.Namespace) -> int:
    from ehrprog.build import build_cohort
    from ehrprog.store import CohortStore
    from ehrprog.tasks import CKDProgression, Population

    options = _read_options(args, args.data)
    result = build_cohort(
        args.data,
        args.out,
        task=Population(args.visits) if args.population else CKDProgression(visits=args.visits),
        format=args.format,
        subjects_per_shard=args.subjects_per_shard,
        workers=args.workers,
        ray_address=args.ray_address,
        retries=args.retries,
        progress=not args.quiet,
        **options,
    )
    manifest = CohortStore(result.path).manifest
    print(
        f"cohort of {manifest['points']:,} prediction points from {manifest['subjects']:,} subjects in "
        f"{len(manifest['shards'])} shards: {len(result.built)} built, {len(result.skipped)} already complete, "
        f"{len(result.empty)} with no point; {result.events:,} events read in {result.seconds:.1f} s; wrote "
        f"{result.path} (ehrprog.load_cohort reads it)"
    )
    return 0


def _load_cohort(args: argparse.Namespace):
    """The CKD cohort of ``--data``: a folder saved by ``ehrprog build``/``cohort.save``, or any
    dataset ``read_events`` reads (built in memory)."""
    from ehrprog.sources import read_events
    from ehrprog.store import load_cohort
    from ehrprog.tasks import CKDProgression
    from ehrprog.visits import group_visits

    started = time.perf_counter()
    if (Path(args.data) / "manifest.json").is_file():
        cohort = load_cohort(args.data)
    else:
        events = read_events(args.data, args.format, **_read_options(args, args.data))
        cohort = CKDProgression(visits=args.visits).build(events, group_visits(events, args.visits))
    if len(cohort.X) == 0:
        raise InputError("the data hold no CKD prediction point (no staged visit): nothing to fit or score")
    print(f"cohort of {redact(str(args.data))} in {time.perf_counter() - started:.1f} s:")
    print("  " + cohort.summary().replace("\n", "\n  "))
    return cohort


def _model_params(args: argparse.Namespace) -> dict:
    """The estimator settings of ``fit``/``evaluate``: the demo's (measured in benchmarks/) with the
    command's overrides."""
    params: dict = {}
    if args.max_epochs is not None:
        params["max_epochs"] = args.max_epochs
    if args.target is not None:
        params["target"] = args.target
    if args.backbone is not None:
        params["backbone"] = args.backbone
    if args.checkpoint is not None:
        params["backbone__checkpoint"] = str(args.checkpoint)
    params["device"] = args.device
    return params


def _report_output(args: argparse.Namespace, inputs: list | None = None):
    """The report folder ``--out`` of ``evaluate``/``report``, checked (:mod:`ehrprog.output`)."""
    from ehrprog.io.database import is_database_uri
    from ehrprog.output import OutputFolder
    from ehrprog.report import REPORT_KIND, report_folder_files

    sources = [*(inputs or []), *([] if is_database_uri(str(args.data)) else [args.data])]
    return OutputFolder(
        args.out, REPORT_KIND, owned=report_folder_files, inputs=sources, overwrite=args.overwrite
    ).check()


def _evaluate(args: argparse.Namespace) -> int:
    """Split by subject, fit the model and the baselines, print the table, write the report and the model."""
    from ehrprog import report
    from ehrprog.evaluation import evaluate, format_table, meds_predictions, subject_split, verdict

    out = _report_output(args)  # before reading the data: a user's files are never replaced
    cohort = _load_cohort(args)
    train, test = subject_split(cohort, test_size=args.test_size, seed=args.seed)
    print(f"split by subject: {len(train):,} training points, {len(test):,} held-out points")
    rows, fitted = evaluate(cohort, train, test, _model_params(args), random_state=args.seed)
    table = format_table(rows)
    lines = verdict(rows, fitted["risks"], cohort.y[test], cohort.groups[test], args.seed)
    print(table)
    print("\n".join(lines))
    X_te, y_te = cohort.X[test], cohort.y[test]
    charts, patient = report.sections(
        fitted["model"], X_te, y_te, cohort.stages, args.subject, cohort.y[train], fitted["risks"]
    )
    predictions, unlabelled = meds_predictions(fitted["model"], X_te, y_te, horizon_years=2.0)
    with out.writing() as folder:
        report.render_report(
            folder,
            f"ehrprog evaluate: {redact(str(args.data))}",
            rows=rows,
            lines=lines,
            summary=cohort.summary(),
            notes=[f"Held out {args.test_size:.0%} of subjects (seed {args.seed}); every method scored on them."],
            charts=charts,
            patient=patient,
        )
        fitted["model"].save(folder / "model")
        predictions.write_parquet(folder / "predictions.parquet")
    path, model_dir = Path(args.out) / "report.html", Path(args.out) / "model"
    print(
        f"wrote {path}, {Path(args.out) / 'report.txt'}, the model (with its card) {model_dir} and "
        f"{Path(args.out) / 'predictions.parquet'} (progression by 2 years, MEDS prediction schema for "
        f"meds-evaluation; {unlabelled:,} points censored before 2 years left out)"
    )
    return 0


def _fit(args: argparse.Namespace) -> int:
    """Fit on the data (less ``--test-size`` of subjects held out and scored), save the model and its card."""
    from ehrprog.estimator import VisitProgressionEstimator
    from ehrprog.evaluation import DEMO_MODEL_PARAMS, heldout_metrics, heldout_record, subject_split
    from ehrprog.io.database import is_database_uri
    from ehrprog.persistence import model_output

    model_output(args.out, [] if is_database_uri(str(args.data)) else [args.data])  # before reading the data
    cohort = _load_cohort(args)
    model = VisitProgressionEstimator().set_params(
        **{**DEMO_MODEL_PARAMS, **_model_params(args), "random_state": args.seed}
    )
    if args.test_size > 0:
        train, test = subject_split(cohort, test_size=args.test_size, seed=args.seed)
    else:
        train, test = np.arange(len(cohort.X)), np.array([], dtype=np.int64)
    started = time.perf_counter()
    model.fit(cohort.X[train], cohort.y[train])
    print(f"fitted on {len(train):,} points in {time.perf_counter() - started:.1f} s ({len(model.history_)} epochs)")
    if len(test):
        metrics = heldout_metrics(model, cohort.y[train], cohort.X[test], cohort.y[test])
        model.heldout_ = heldout_record(metrics, cohort.X[test])
        print(f"held out {model.heldout_['description']}:")
        print("  " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    path = model.save(args.out)
    print(f"wrote {path} (config.json, model.safetensors, MODEL_CARD.md)")
    return 0


def _report(args: argparse.Namespace) -> int:
    """A saved model's report on some data: the cohort charts and one patient."""
    from ehrprog import report
    from ehrprog.estimator import VisitProgressionEstimator
    from ehrprog.evaluation import MODEL, Scorer

    out = _report_output(args, inputs=[args.model])  # before reading the model or the data
    model = VisitProgressionEstimator.load(args.model)
    cohort = _load_cohort(args)
    if args.subject is not None and args.subject not in set(cohort.groups.tolist()):
        raise InputError(f"--subject {args.subject}: no prediction point of this subject in the data")
    row = Scorer(cohort.y, cohort.y).model(MODEL, model, cohort.X)
    charts, patient = report.sections(model, cohort.X, cohort.y, cohort.stages, args.subject)
    with out.writing() as folder:
        report.render_report(
            folder,
            f"ehrprog report: {redact(str(args.model))} on {redact(str(args.data))}",
            rows=[row],
            lines=[
                "Scores on every point of these data: optimistic if the model was trained on any of them "
                "(`ehrprog evaluate` holds subjects out)."
            ],
            summary=cohort.summary(),
            charts=charts,
            patient=patient,
        )
    path = Path(args.out) / "report.html"
    print("\n".join(patient.lines))
    print(f"wrote {path} and {Path(args.out) / 'report.txt'}")
    return 0


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default after its help, unless there is none (``None``: the help says
    what happens then)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def _command(sub, name: str, **options) -> argparse.ArgumentParser:
    """A sub-command whose ``--help`` shows each option's default."""
    return sub.add_parser(name, formatter_class=_Defaults, **options)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ehrprog",
        description="ehrprog: chronic disease progression from OMOP CDM or MEDS records. "
        "`ehrprog COMMAND --help` describes each command.",
    )
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    evaluate = _command(
        sub, "evaluate", help="your data: split by subject, fit the model and the baselines, report (HTML + text)"
    )
    fit = _command(sub, "fit", help="fit the model on your data and save it (with its model card)")
    report = _command(sub, "report", help="a saved model's report on some data, with one patient's timeline")
    for command in (evaluate, fit, report):
        command.add_argument(
            "--data", required=True, help="an OMOP folder, a MEDS dataset, a database URI or a cohort saved by build"
        )
        command.add_argument("--format", choices=["auto", "omop", "meds"], default="auto", help="auto: detected")
        command.add_argument(
            "--codes", choices=["standard", "source", "concept_id"], default=None, help="OMOP codes (standard)"
        )
        command.add_argument("--visits", type=_visit_strategy, default="same_day", help="same_day, visit_id or gap:H")
        _add_database_options(command)
    for command in (evaluate, fit):
        command.add_argument("--test-size", type=_real(0, 1), default=0.3 if command is evaluate else 0.2,
                             help="share of subjects held out and scored")  # fmt: skip
        command.add_argument("--seed", type=_SEED, default=0, help="seeds the split and the model")
        command.add_argument("--max-epochs", type=_whole(1), default=None, help="override the model's epochs (30)")
        command.add_argument(
            "--target", choices=["stage", "progression", "both"], default=None, help="the model's heads (both)"
        )
        command.add_argument("--backbone", default=None, help="a registered backbone (`ehrprog plugins`)")
        command.add_argument("--checkpoint", type=Path, default=None, help="the backbone's pre-trained folder")
        command.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    evaluate.add_argument("--out", type=Path, default=Path("ehrprog_report"), help="report and model folder")
    evaluate.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    evaluate.add_argument("--subject", type=int, default=None, help="the patient shown (default: one who progressed)")
    evaluate.set_defaults(func=_evaluate)
    fit.add_argument("--out", required=True, type=Path, help="the model folder")
    fit.set_defaults(func=_fit)
    report.add_argument("--model", required=True, type=Path, help="a folder written by `ehrprog fit` or est.save()")
    report.add_argument("--subject", type=int, default=None, help="the patient shown (default: one who progressed)")
    report.add_argument("--out", type=Path, default=Path("ehrprog_report"), help="the report folder")
    report.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    report.set_defaults(func=_report)
    inspect = _command(sub, "inspect", help="summarise an OMOP or MEDS dataset and its ingest report")
    inspect.add_argument("path", help="an OMOP folder, a MEDS dataset, or postgresql://... / duckdb:///... URI")
    inspect.add_argument("--format", choices=["auto", "omop", "meds"], default="auto")
    inspect.add_argument(
        "--visits", type=_visit_strategy, default="same_day", help="same_day (default), visit_id or gap:HOURS"
    )
    inspect.add_argument("--top", type=_whole(1), default=10, help="how many frequent codes to list")
    _add_database_options(inspect)
    inspect.set_defaults(func=_inspect)
    convert = _command(sub, "convert", help="convert between formats")
    kinds = convert.add_subparsers(dest="kind", required=True)
    o2m = _command(kinds, "omop-to-meds", help="stream an OMOP extract into a MEDS dataset")
    o2m.add_argument("source", help="an OMOP folder or a postgresql://... / duckdb:///... URI")
    o2m.add_argument("destination", type=Path)
    o2m.add_argument("--codes", choices=["standard", "source", "concept_id"], default="standard")
    o2m.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    _add_database_options(o2m)
    o2m.set_defaults(func=_convert)
    simulate = _command(sub, "simulate", help="write a simulated CKD cohort")
    simulate.add_argument("out", type=Path)
    simulate.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    simulate.add_argument("--subjects", type=_whole(1), default=1000)
    simulate.add_argument("--seed", type=_SEED, default=0)
    simulate.add_argument("--format", choices=["omop", "meds"], default="omop")
    simulate.add_argument(
        "--world",
        choices=["labs", "history"],
        default="labs",
        help="labs: a CKD cohort driven by the eGFR trajectory; history: a general population with "
        "albuminuria, kidney injury, dated drugs and comorbidity phenotypes (docs/simulator.md)",
    )
    simulate.set_defaults(func=_simulate)
    plugins = _command(sub, "plugins", help="list installed plugins and the backbones they register")
    plugins.set_defaults(func=_plugins)
    pre = _command(sub, "pretrain", help="pre-train a backbone on your own OMOP or MEDS data")
    pre.add_argument("--backbone", required=True, help="a registered backbone (`ehrprog plugins` lists them)")
    pre.add_argument(
        "--data",
        required=True,
        help="an OMOP folder, a MEDS dataset, a database URI, or a population saved by `ehrprog build --population` "
        "(read shard by shard)",
    )
    pre.add_argument("--out", required=True, type=Path, help="folder to write the checkpoint to")
    pre.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    pre.add_argument("--format", choices=["auto", "omop", "meds"], default="auto")
    pre.add_argument("--codes", choices=["standard", "source", "concept_id"], default=None, help="OMOP code spelling")
    pre.add_argument("--visits", type=_visit_strategy, default="same_day", help="same_day, visit_id or gap:HOURS")
    pre.add_argument("--epochs", type=_whole(1), default=5)
    pre.add_argument("--batch-size", type=_whole(1), default=32, help="subjects per batch")
    pre.add_argument("--lr", type=_real(0), default=1e-3)
    pre.add_argument("--hidden", type=_whole(1), default=64, help="hidden size")
    pre.add_argument("--layers", type=_whole(1), default=None, help="encoder layers (backbone default: 2)")
    pre.add_argument("--heads", type=_whole(1), default=None, help="attention heads (backbone default: 4)")
    pre.add_argument("--max-visits", type=_whole(1), default=64, help="last visits of each subject read")
    pre.add_argument("--init", type=Path, default=None, help="continue from a checkpoint folder")
    pre.add_argument("--device", default="auto")
    pre.add_argument("--seed", type=_SEED, default=0)
    pre.add_argument(
        "--objective",
        choices=["mlm", "tte", "mlm+tte"],
        default="mlm",
        help="mlm: the backbone's own (masked LM...); tte: time to the next occurrence of frequent codes "
        "(piecewise-exponential, any backbone); mlm+tte: both",
    )
    pre.add_argument("--tte-codes", type=_whole(1), default=256, help="codes the time-to-event objective predicts")
    pre.add_argument("--steps-per-epoch", type=_whole(1), default=None, help="batches an epoch at most (default: all)")
    pre.set_defaults(func=_pretrain)
    build = _command(
        sub,
        "build",
        help="build the CKD cohort of a dataset into a folder of subject shards (ehrprog.load_cohort reads it)",
    )
    build.add_argument("--data", required=True, help="a MEDS dataset, an OMOP folder or a database URI")
    build.add_argument("--out", required=True, type=Path, help="the cohort folder (re-runs skip complete shards)")
    build.add_argument("--format", choices=["auto", "omop", "meds"], default="auto")
    build.add_argument("--codes", choices=["standard", "source", "concept_id"], default=None, help="OMOP code spelling")
    build.add_argument("--visits", type=_visit_strategy, default="same_day", help="same_day, visit_id or gap:HOURS")
    build.add_argument(
        "--subjects-per-shard", type=_whole(1), default=5000, help="OMOP: persons per shard (MEDS keeps its own shards)"
    )
    build.add_argument(
        "--workers", type=_whole(1), default=None, help="run shards as Ray tasks on a local cluster of N CPUs"
    )
    build.add_argument("--ray-address", default=None, help="run shards on this Ray cluster ('auto' after ray start)")
    build.add_argument("--retries", type=_whole(0), default=2, help="further attempts of a failed shard")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    build.add_argument(
        "--population",
        action="store_true",
        help="save every subject's whole history instead of the CKD cohort (for `ehrprog pretrain --data OUT`)",
    )
    _add_database_options(build)
    build.set_defaults(func=_build)
    verify = _command(
        sub,
        "verify-checkpoint",
        help="check that a backbone's loader reproduces a checkpoint's reference outputs",
    )
    verify.add_argument("--backbone", required=True)
    verify.add_argument("--tolerance", type=_real(0, closed_low=True), default=1e-5)
    verify.add_argument("folder", type=Path, help="holds checkpoint/, inputs.npz, expected_outputs.npz")
    verify.set_defaults(func=_verify_checkpoint)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as error:  # one line, never a password; the traceback only with --debug
        if args.debug:
            raise
        message = str(error) if isinstance(error, InputError) else f"{type(error).__name__}: {error}"
        print(f"ehrprog: error: {redact(' '.join(message.split()))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
