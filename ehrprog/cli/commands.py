"""What each ``ehrprog`` sub-command does, one ``run_<command>(args) -> exit status`` each."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl

from ehrprog.cli.options import check_model_options, database_options, read_options
from ehrprog.core.errors import InputError
from ehrprog.core.redaction import redact


def run_inspect(args: argparse.Namespace) -> int:
    from ehrprog.io.sources import read_events
    from ehrprog.tasks import CKDProgression
    from ehrprog.visits.grouping import group_visits

    started = time.perf_counter()
    events = read_events(args.path, args.format, **database_options(args, args.path))
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


def run_convert(args: argparse.Namespace) -> int:
    from ehrprog.core.output import OutputFolder
    from ehrprog.io import read_omop, write_meds
    from ehrprog.io.database import is_database_uri
    from ehrprog.io.meds import MEDS_KIND, meds_files

    started = time.perf_counter()
    inputs = [] if is_database_uri(args.source) else [args.source]
    OutputFolder(args.destination, MEDS_KIND, owned=meds_files, inputs=inputs, overwrite=args.overwrite).check()
    events = read_omop(args.source, codes=args.codes, materialize=False, **database_options(args, args.source))
    out = write_meds(events, args.destination, overwrite=args.overwrite, inputs=inputs)
    print(events.report)
    print(f"wrote MEDS dataset {out} in {time.perf_counter() - started:.2f} s")
    return 0


def run_simulate(args: argparse.Namespace) -> int:
    from ehrprog.datasets import simulate_ckd

    if args.site is not None and args.world != "history":
        raise InputError("--site needs --world history (sites are health systems of that world)")
    out = simulate_ckd(
        args.subjects,
        args.seed,
        args.out,
        format=args.format,
        world=args.world,
        site=args.site,
        overwrite=args.overwrite,
    )
    print(f"wrote {args.format} dataset {out}")
    return 0


def run_plugins(args: argparse.Namespace) -> int:
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


def run_verify_checkpoint(args: argparse.Namespace) -> int:
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


def run_pretrain(args: argparse.Namespace) -> int:
    """Pre-train a backbone on an OMOP or MEDS dataset; one line per epoch, the folder at the end."""
    from ehrprog.io.sources import read_events
    from ehrprog.models.pretrain import check_objective, pretrain
    from ehrprog.visits.grouping import group_visits

    options = {"codes": args.codes} if args.codes else {}
    if args.codes and args.format == "meds":
        raise InputError("--codes applies to OMOP data only", file=str(args.data))
    check_objective(args.backbone, args.objective)  # before reading the data: a wrong choice fails at once
    from ehrprog.io.database import is_database_uri
    from ehrprog.networks.backbones.checkpoint import checkpoint_output

    inputs = [p for p in (args.data, args.init) if p is not None and not is_database_uri(str(p))]
    checkpoint_output(args.out, overwrite=args.overwrite, inputs=inputs)  # before reading the data
    excluded = read_subject_ids(args.exclude_subjects) if args.exclude_subjects is not None else None
    started = time.perf_counter()
    if (Path(args.data) / "manifest.json").is_file():  # a population saved by `ehrprog build --population`
        from ehrprog.cohorts.read import load_cohort

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
            value_codes=args.value_codes,
            steps_per_epoch=args.steps_per_epoch,
            overwrite=args.overwrite,
            exclude_subjects=excluded,
            verbose=not args.quiet,
            **params,
        )
    except ValueError as error:  # a setting, not the data file, is at fault: say so without blaming the file
        raise InputError(f"pretrain: {error}") from error
    print(
        f"pre-trained {args.backbone} ({', '.join(result.objectives)}) on {result.n_subjects - result.n_validation:,} "
        f"subjects ({result.n_validation:,} more held out for the validation loss), "
        f"{result.n_codes:,} codes"
        + (f", {result.n_excluded:,} left out as asked" if excluded is not None else "")
        + f"; wrote {result.folder} "
        f"(use it with VisitProgressionEstimator(backbone={args.backbone!r}, backbone__checkpoint=...))"
    )
    return 0


def run_build(args: argparse.Namespace) -> int:
    from ehrprog.cohorts.read import CohortStore
    from ehrprog.tasks import CKDProgression, Population
    from ehrprog.tasks.build import build_cohort

    options = read_options(args, args.data)
    result = build_cohort(
        args.data,
        args.out,
        task=Population(args.visits) if args.population else CKDProgression(visits=args.visits, death=args.death),
        format=args.format,
        subjects_per_shard=args.subjects_per_shard,
        workers=args.workers,
        ray_address=args.ray_address,
        retries=args.retries,
        progress=not (args.quiet or args.quiet_build),
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
    from ehrprog.cohorts.read import load_cohort
    from ehrprog.io.sources import read_events
    from ehrprog.tasks import CKDProgression
    from ehrprog.visits.grouping import group_visits

    started = time.perf_counter()
    if (Path(args.data) / "manifest.json").is_file():
        cohort = load_cohort(args.data)
    else:
        events = read_events(args.data, args.format, **read_options(args, args.data))
        cohort = CKDProgression(visits=args.visits, death=args.death).build(events, group_visits(events, args.visits))
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
    params["verbose"] = 0 if args.quiet else 1  # a bar per epoch with the loss
    return params


def _apart_from_pretraining(args: argparse.Namespace, cohort, test: np.ndarray) -> np.ndarray:
    """The held-out rows the checkpoint (``--checkpoint``) was not pre-trained on; refused unless
    ``--exclude-overlap`` (:mod:`ehrprog.evaluation.pretraining`)."""
    from ehrprog.evaluation.pretraining import apart_from_pretraining

    if args.checkpoint is None:
        return test
    overlap = apart_from_pretraining(
        cohort.groups[test], args.checkpoint, "exclude" if args.exclude_overlap else "refuse"
    )
    print(overlap.line(args.checkpoint))
    return test[overlap.keep]


def read_subject_ids(path: Path) -> np.ndarray:
    """Subject ids from a text file (one a line, ``#`` comments) or a Parquet/CSV file's ``subject_id``."""
    if not path.is_file():
        raise InputError("no such file", file=str(path))
    if path.suffix.lower() in (".parquet", ".csv"):
        frame = pl.read_parquet(path) if path.suffix.lower() == ".parquet" else pl.read_csv(path)
        if "subject_id" not in frame.columns:
            raise InputError("needs a subject_id column", file=str(path), column="subject_id")
        values = frame["subject_id"]
    else:
        lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
        values = pl.Series("subject_id", [line for line in lines if line])
    ids = values.cast(pl.Int64, strict=False)
    if ids.null_count() > values.null_count() or values.null_count():
        raise InputError("subject ids must be whole numbers", file=str(path), column="subject_id")
    return ids.to_numpy()


def _report_output(args: argparse.Namespace, inputs: list | None = None):
    """The report folder ``--out`` of ``evaluate``/``report``, checked (:mod:`ehrprog.core.output`)."""
    from ehrprog.core.output import OutputFolder
    from ehrprog.evaluation.report import REPORT_KIND, report_folder_files
    from ehrprog.io.database import is_database_uri

    sources = [*(inputs or []), *([] if is_database_uri(str(args.data)) else [args.data])]
    return OutputFolder(
        args.out, REPORT_KIND, owned=report_folder_files, inputs=sources, overwrite=args.overwrite
    ).check()


def run_evaluate(args: argparse.Namespace) -> int:
    """Split by subject, fit the model and the baselines, print the table, write the report and the model."""
    from ehrprog.evaluation import report
    from ehrprog.evaluation.comparison import format_table, verdict
    from ehrprog.evaluation.competing import concordance_targets
    from ehrprog.evaluation.heldout import evaluate, subject_split
    from ehrprog.evaluation.predictions import meds_predictions
    from ehrprog.evaluation.pretraining import paid_lines
    from ehrprog.evaluation.subgroups import format_subgroups

    check_model_options(args)
    out = _report_output(args)  # before reading the data: a user's files are never replaced
    cohort = _load_cohort(args)
    train, test = subject_split(cohort, test_size=args.test_size, seed=args.seed)
    print(f"split by subject: {len(train):,} training points, {len(test):,} held-out points")
    applied = {}
    if args.transfer_model is not None:  # another site's saved model, applied as it is
        from ehrprog.models.estimator import VisitProgressionEstimator

        applied[str(args.transfer_model)] = VisitProgressionEstimator.load(args.transfer_model)
    on_overlap = "exclude" if args.exclude_overlap else "refuse"  # checked before any fitting
    rows, fitted = evaluate(
        cohort, train, test, _model_params(args), args.seed, on_pretraining_overlap=on_overlap, applied=applied,
        subgroups=args.subgroup,
    )  # fmt: skip
    test = fitted["test"]  # less held-out subjects the checkpoint read, with --exclude-overlap
    if args.checkpoint is not None:
        print(fitted["overlap"].line(args.checkpoint))
    table = format_table(rows)
    lines = [
        *fitted["notes"],
        *fitted["left_out"],
        *verdict(rows, fitted["risks"], cohort.y[test], cohort.groups[test], args.seed),
    ]
    event, time_ = concordance_targets(cohort.y[test])  # Wolbers' with death competing
    lines += paid_lines(rows, fitted["risks"], event, time_, cohort.groups[test], args.seed)
    print(table)
    print("\n".join(lines))
    if fitted["subgroups"]:
        print(format_subgroups(fitted["subgroups"]))
    X_te, y_te = cohort.X[test], cohort.y[test]
    charts, patient = report.sections(
        fitted["model"], X_te, y_te, cohort.stages, args.subject, cohort.y[train], fitted["risks"], fitted["competing"]
    )
    predictions, unlabelled = meds_predictions(fitted["model"], X_te, y_te, 2.0, fitted["competing"])
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
            subgroups=fitted["subgroups"],
        )
        fitted["model"].save(folder / "model")
        predictions.write_parquet(folder / "predictions.parquet")
        held_out = np.unique(cohort.groups[test])
        (folder / "test_subjects.txt").write_text("".join(f"{s}\n" for s in held_out.tolist()))
    path, model_dir = Path(args.out) / "report.html", Path(args.out) / "model"
    print(
        f"wrote {path}, {Path(args.out) / 'report.txt'}, the model (with its card) {model_dir} and "
        f"{Path(args.out) / 'predictions.parquet'} (progression by 2 years, MEDS prediction schema for "
        f"meds-evaluation; {unlabelled:,} points censored before 2 years left out); the held-out subjects are "
        f"in {Path(args.out) / 'test_subjects.txt'} (leave them out of pre-training: --exclude-subjects)"
    )
    return 0


def run_fit(args: argparse.Namespace) -> int:
    """Fit on the data (less ``--test-size`` of subjects held out and scored), save the model and its card."""
    from ehrprog.evaluation.heldout import DEMO_MODEL_PARAMS, heldout_metrics, heldout_record, subject_split
    from ehrprog.io.database import is_database_uri
    from ehrprog.models.estimator import VisitProgressionEstimator
    from ehrprog.models.persistence import model_output

    check_model_options(args)
    model_output(args.out, [] if is_database_uri(str(args.data)) else [args.data])  # before reading the data
    cohort = _load_cohort(args)
    model = VisitProgressionEstimator().set_params(
        **{**DEMO_MODEL_PARAMS, **_model_params(args), "random_state": args.seed}
    )
    if args.test_size > 0:
        train, test = subject_split(cohort, test_size=args.test_size, seed=args.seed)
        test = _apart_from_pretraining(args, cohort, test)
    else:
        train, test = np.arange(len(cohort.X)), np.array([], dtype=np.int64)
    started = time.perf_counter()
    model.fit(cohort.X[train], cohort.y[train])
    print(f"fitted on {len(train):,} points in {time.perf_counter() - started:.1f} s ({len(model.history_)} epochs)")
    if len(test):
        metrics = heldout_metrics(model, cohort.y[train], cohort.X[test], cohort.y[test])
        model.heldout_ = heldout_record(metrics, cohort.X[test], cohort.y[test])
        print(f"held out {model.heldout_['description']}:")
        print("  " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    path = model.save(args.out)
    print(f"wrote {path} (config.json, model.safetensors, MODEL_CARD.md)")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """A saved model's predictions on the data, one Parquet file per shard (flat memory on a
    cohort saved by ``ehrprog build``)."""
    from ehrprog.core.output import OutputFolder
    from ehrprog.evaluation.predictions import PREDICTIONS_KIND, write_predictions
    from ehrprog.io.database import is_database_uri
    from ehrprog.models.estimator import VisitProgressionEstimator

    sources = [args.model, *([] if is_database_uri(str(args.data)) else [args.data])]
    out = OutputFolder(args.out, PREDICTIONS_KIND, inputs=sources, overwrite=args.overwrite).check()
    model = VisitProgressionEstimator.load(args.model)  # before reading the data
    cohort = _load_cohort(args)
    started = time.perf_counter()
    with out.writing() as folder:
        record = write_predictions(model, cohort.X, cohort.y, folder, args.horizon_years)
    print(
        f"wrote {record['points']:,} predictions in {len(record['files'])} file(s) to "
        f"{redact(str(args.out))}/predictions in {time.perf_counter() - started:.1f} s ({record['labelled']:,} "
        f"with an observed outcome at {args.horizon_years:g} years; columns {', '.join(record['columns'])})"
    )
    return 0


def run_report(args: argparse.Namespace) -> int:
    """A saved model's report on some data: the cohort charts and one patient."""
    from ehrprog.evaluation import report
    from ehrprog.evaluation.competing import CompetingScoring
    from ehrprog.evaluation.heldout import MODEL, Scorer
    from ehrprog.models.estimator import VisitProgressionEstimator

    out = _report_output(args, inputs=[args.model])  # before reading the model or the data
    model = VisitProgressionEstimator.load(args.model)
    cohort = _load_cohort(args)
    if args.subject is not None and args.subject not in set(cohort.groups.tolist()):
        raise InputError(f"--subject {args.subject}: no prediction point of this subject in the data")
    # With death competing: the model's own model of death (else one fitted on these data).
    competing = CompetingScoring.fit(cohort.X, cohort.y, model) if "death" in cohort.y.columns else None
    scorer = Scorer(cohort.y, cohort.y, cohort.groups, competing=(competing, cohort.X) if competing else None)
    row = scorer.model(MODEL, model, cohort.X)
    charts, patient = report.sections(model, cohort.X, cohort.y, cohort.stages, args.subject, competing=competing)
    with out.writing() as folder:
        report.render_report(
            folder,
            f"ehrprog report: {redact(str(args.model))} on {redact(str(args.data))}",
            rows=[row],
            lines=[
                "Scores on every point of these data: optimistic if the model was trained on any of them "
                "(`ehrprog evaluate` holds subjects out).",
                *([competing.line()] if competing else []),
            ],
            summary=cohort.summary(),
            charts=charts,
            patient=patient,
        )
    path = Path(args.out) / "report.html"
    print("\n".join(patient.lines))
    print(f"wrote {path} and {Path(args.out) / 'report.txt'}")
    return 0
