"""The ``ehrprog`` command line's parser and :func:`main`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ehrprog.cli.commands import (
    run_build,
    run_convert,
    run_evaluate,
    run_fit,
    run_inspect,
    run_plugins,
    run_predict,
    run_pretrain,
    run_report,
    run_simulate,
    run_verify_checkpoint,
)
from ehrprog.cli.options import OVERWRITE_HELP, SEED, add_database_options, real, visit_strategy, whole
from ehrprog.core.errors import InputError
from ehrprog.core.redaction import redact
from ehrprog.core.version import __version__


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default after its help, unless there is none (``None``: the help says
    what happens then)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


#: ``--death`` of build, fit, evaluate, report and predict.
DEATH_OPTION = {
    "choices": ["censor", "competing"],
    "default": "censor",
    "help": "death censors the time to progression (censor), or competes with it: scored as the cumulative "
    "incidence (Aalen-Johansen, Wolbers' C; a cohort saved by build keeps its own)",
}


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
    parser.add_argument("--version", action="version", version=f"ehrprog {__version__}")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument(
        "-v", "--verbose", action="store_true", help="progress bars and what each step does (INFO messages)"
    )
    loudness.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars: warnings, errors and each command's results"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    evaluate = _command(
        sub, "evaluate", help="your data: split by subject, fit the model and the baselines, report (HTML + text)"
    )
    fit = _command(sub, "fit", help="fit the model on your data and save it (with its model card)")
    report = _command(sub, "report", help="a saved model's report on some data, with one patient's timeline")
    predict = _command(
        sub, "predict", help="a saved model's predictions on some data, written shard by shard (MEDS prediction schema)"
    )
    for command in (evaluate, fit, report, predict):
        command.add_argument(
            "--data", required=True, help="an OMOP folder, a MEDS dataset, a database URI or a cohort saved by build"
        )
        command.add_argument("--format", choices=["auto", "omop", "meds"], default="auto", help="auto: detected")
        command.add_argument(
            "--codes", choices=["standard", "source", "concept_id"], default=None, help="OMOP codes (standard)"
        )
        command.add_argument("--visits", type=visit_strategy, default="same_day", help="same_day, visit_id or gap:H")
        command.add_argument("--death", **DEATH_OPTION)
        add_database_options(command)
    for command in (evaluate, fit):
        command.add_argument("--test-size", type=real(0, 1), default=0.3 if command is evaluate else 0.2,
                             help="share of subjects held out and scored")  # fmt: skip
        command.add_argument("--seed", type=SEED, default=0, help="seeds the split and the model")
        command.add_argument("--max-epochs", type=whole(1), default=None, help="override the model's epochs (30)")
        command.add_argument(
            "--target", choices=["stage", "progression", "both"], default=None, help="the model's heads (both)"
        )
        command.add_argument("--backbone", default=None, help="a registered backbone (`ehrprog plugins`)")
        command.add_argument("--checkpoint", type=Path, default=None, help="the backbone's pre-trained folder")
        command.add_argument(
            "--exclude-overlap",
            action="store_true",
            help="leave held-out subjects the checkpoint was pre-trained on out of the held-out set "
            "(default: refuse to score them)",
        )
        command.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    evaluate.add_argument("--out", type=Path, default=Path("ehrprog_report"), help="report and model folder")
    evaluate.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    evaluate.add_argument("--subject", type=int, default=None, help="the patient shown (default: one who progressed)")
    evaluate.add_argument(
        "--subgroup",
        action="append",
        default=[],
        metavar="PREFIX",
        help="also score the model in groups of a static code starting with PREFIX (e.g. RACE/); "
        "sex and age band always",
    )
    evaluate.add_argument(
        "--transfer-model",
        type=Path,
        default=None,
        help="a model saved elsewhere (another site's `ehrprog fit --out`), scored as it is beside yours",
    )
    evaluate.set_defaults(func=run_evaluate)
    fit.add_argument("--out", required=True, type=Path, help="the model folder")
    fit.set_defaults(func=run_fit)
    report.add_argument("--model", required=True, type=Path, help="a folder written by `ehrprog fit` or est.save()")
    report.add_argument("--subject", type=int, default=None, help="the patient shown (default: one who progressed)")
    report.add_argument("--out", type=Path, default=Path("ehrprog_report"), help="the report folder")
    report.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    report.set_defaults(func=run_report)
    predict.add_argument("--model", required=True, type=Path, help="a folder written by `ehrprog fit` or est.save()")
    predict.add_argument("--out", required=True, type=Path, help="the predictions folder")
    predict.add_argument(
        "--horizon-years", type=real(0, None), default=2.0, help="the horizon of the predicted probability"
    )
    predict.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    predict.set_defaults(func=run_predict)
    inspect = _command(sub, "inspect", help="summarise an OMOP or MEDS dataset and its ingest report")
    inspect.add_argument("path", help="an OMOP folder, a MEDS dataset, or postgresql://... / duckdb:///... URI")
    inspect.add_argument("--format", choices=["auto", "omop", "meds"], default="auto")
    inspect.add_argument(
        "--visits", type=visit_strategy, default="same_day", help="same_day (default), visit_id or gap:HOURS"
    )
    inspect.add_argument("--top", type=whole(1), default=10, help="how many frequent codes to list")
    add_database_options(inspect)
    inspect.set_defaults(func=run_inspect)
    convert = _command(sub, "convert", help="convert between formats")
    kinds = convert.add_subparsers(dest="kind", required=True)
    o2m = _command(kinds, "omop-to-meds", help="stream an OMOP extract into a MEDS dataset")
    o2m.add_argument("source", help="an OMOP folder or a postgresql://... / duckdb:///... URI")
    o2m.add_argument("destination", type=Path)
    o2m.add_argument("--codes", choices=["standard", "source", "concept_id"], default="standard")
    o2m.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    add_database_options(o2m)
    o2m.set_defaults(func=run_convert)
    simulate = _command(sub, "simulate", help="write a simulated CKD cohort")
    simulate.add_argument("out", type=Path)
    simulate.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    simulate.add_argument("--subjects", type=whole(1), default=1000)
    simulate.add_argument("--seed", type=SEED, default=0)
    simulate.add_argument("--format", choices=["omop", "meds"], default="omop")
    simulate.add_argument(
        "--world",
        choices=["labs", "history"],
        default="labs",
        help="labs: a CKD cohort driven by the eGFR trajectory; history: a general population with "
        "albuminuria, kidney injury, dated drugs and comorbidity phenotypes (docs/simulator.md)",
    )
    simulate.add_argument(
        "--site",
        choices=["A", "B", "C"],
        default=None,
        help="world 'history' as one health system records it: A large US academic, B European, "
        "C US community (case mix, lab testing, units, stage coding, local codes; docs/simulator.md)",
    )
    simulate.set_defaults(func=run_simulate)
    plugins = _command(sub, "plugins", help="list installed plugins and the backbones they register")
    plugins.set_defaults(func=run_plugins)
    pre = _command(sub, "pretrain", help="pre-train a backbone on your own OMOP or MEDS data")
    pre.add_argument("--backbone", required=True, help="a registered backbone (`ehrprog plugins` lists them)")
    pre.add_argument(
        "--data",
        required=True,
        help="an OMOP folder, a MEDS dataset, a database URI, or a population saved by `ehrprog build --population` "
        "(read shard by shard)",
    )
    pre.add_argument("--out", required=True, type=Path, help="folder to write the checkpoint to")
    pre.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    pre.add_argument("--format", choices=["auto", "omop", "meds"], default="auto")
    pre.add_argument("--codes", choices=["standard", "source", "concept_id"], default=None, help="OMOP code spelling")
    pre.add_argument("--visits", type=visit_strategy, default="same_day", help="same_day, visit_id or gap:HOURS")
    pre.add_argument("--epochs", type=whole(1), default=5)
    pre.add_argument("--batch-size", type=whole(1), default=32, help="subjects per batch")
    pre.add_argument("--lr", type=real(0), default=1e-3)
    pre.add_argument("--hidden", type=whole(1), default=64, help="hidden size")
    pre.add_argument("--layers", type=whole(1), default=None, help="encoder layers (backbone default: 2)")
    pre.add_argument("--heads", type=whole(1), default=None, help="attention heads (backbone default: 4)")
    pre.add_argument("--max-visits", type=whole(1), default=64, help="last visits of each subject read")
    pre.add_argument("--init", type=Path, default=None, help="continue from a checkpoint folder")
    pre.add_argument("--device", default="auto")
    pre.add_argument("--seed", type=SEED, default=0)
    pre.add_argument(
        "--objective",
        choices=["mlm", "tte", "mlm+tte", "tte+value", "mlm+tte+value"],
        default="mlm",
        help="mlm: the backbone's own (masked LM...); tte: time to the next occurrence of frequent codes "
        "(piecewise-exponential, any backbone); tte+value: and each frequent lab's next value; "
        "mlm+...: summed with the backbone's own",
    )
    pre.add_argument("--tte-codes", type=whole(1), default=256, help="codes the time-to-event objective predicts")
    pre.add_argument("--value-codes", type=whole(1), default=32, help="labs the next-value objective predicts")
    pre.add_argument("--steps-per-epoch", type=whole(1), default=None, help="batches an epoch at most (default: all)")
    pre.add_argument(
        "--exclude-subjects",
        type=Path,
        default=None,
        help="leave these subjects out: a text file of subject ids, one a line (the test_subjects.txt "
        "`ehrprog evaluate` writes), or a Parquet/CSV file with a subject_id column",
    )
    pre.set_defaults(func=run_pretrain)
    build = _command(
        sub,
        "build",
        help="build the CKD cohort of a dataset into a folder of subject shards (ehrprog.load_cohort reads it)",
    )
    build.add_argument("--data", required=True, help="a MEDS dataset, an OMOP folder or a database URI")
    build.add_argument("--out", required=True, type=Path, help="the cohort folder (re-runs skip complete shards)")
    build.add_argument("--format", choices=["auto", "omop", "meds"], default="auto")
    build.add_argument("--codes", choices=["standard", "source", "concept_id"], default=None, help="OMOP code spelling")
    build.add_argument("--visits", type=visit_strategy, default="same_day", help="same_day, visit_id or gap:HOURS")
    build.add_argument("--death", **DEATH_OPTION)
    build.add_argument(
        "--subjects-per-shard", type=whole(1), default=5000, help="OMOP: persons per shard (MEDS keeps its own shards)"
    )
    build.add_argument(
        "--workers", type=whole(1), default=None, help="run shards as Ray tasks on a local cluster of N CPUs"
    )
    build.add_argument("--ray-address", default=None, help="run shards on this Ray cluster ('auto' after ray start)")
    build.add_argument("--retries", type=whole(0), default=2, help="further attempts of a failed shard")
    build.add_argument("--quiet", dest="quiet_build", action="store_true", help="no progress bar (as ehrprog -q)")
    build.add_argument(
        "--population",
        action="store_true",
        help="save every subject's whole history instead of the CKD cohort (for `ehrprog pretrain --data OUT`)",
    )
    add_database_options(build)
    build.set_defaults(func=run_build)
    verify = _command(
        sub,
        "verify-checkpoint",
        help="check that a backbone's loader reproduces a checkpoint's reference outputs",
    )
    verify.add_argument("--backbone", required=True)
    verify.add_argument("--tolerance", type=real(0, closed_low=True), default=1e-5)
    verify.add_argument("folder", type=Path, help="holds checkpoint/, inputs.npz, expected_outputs.npz")
    verify.set_defaults(func=run_verify_checkpoint)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except Exception as error:  # one line, never a password; the traceback only with --debug
        if args.debug:
            raise
        message = str(error) if isinstance(error, InputError) else f"{type(error).__name__}: {error}"
        print(f"ehrprog: error: {redact(' '.join(message.split()))}", file=sys.stderr)
        return 2
