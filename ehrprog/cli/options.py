"""Option types and shared options of the command line: numbers checked by argparse before any
work, the visit strategy, and the database options."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ehrprog.core.errors import InputError


def visit_strategy(text: str):
    from ehrprog.visits.grouping import Gap

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


def whole(low: int, high: int | None = None):
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


def real(low: float, high: float | None = None, *, closed_low: bool = False):
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


#: What --overwrite means for every writer (ehrprog.core.output.OutputFolder).
OVERWRITE_HELP = (
    "write into a non-empty folder ehrprog did not write, keeping its files (never deleted or replaced); "
    "a folder of ehrprog's own kind is replaced whole without it"
)

#: Seeds numpy and torch take (``[0, 2**32 - 1]``).
SEED = whole(0, 2**32 - 1)


def database_options(args: argparse.Namespace, source: str) -> dict:
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


def read_options(args: argparse.Namespace, source: str) -> dict:
    """What reading ``source`` takes from the command line: database schemas and OMOP ``--codes``."""
    options = database_options(args, source)
    if args.codes:
        options["codes"] = args.codes
    return options


def add_database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--schema", default=None, help="database URIs: schema of the CDM tables (default public)")
    parser.add_argument("--vocabulary-schema", default=None, help="database URIs: schema of CONCEPT (default --schema)")
    parser.add_argument(
        "--connect-timeout", type=real(0), default=None, help="PostgreSQL: seconds to wait for the server (default 30)"
    )
    parser.add_argument(
        "--statement-timeout", type=real(0), default=None, help="PostgreSQL: seconds a query may run (default: none)"
    )


def check_model_options(args: argparse.Namespace) -> None:
    """``--device``, ``--backbone`` and ``--checkpoint`` of ``fit``/``evaluate``, checked before any
    data is read: a device this machine lacks, a backbone no plugin registers, or a checkpoint
    folder that is missing, holds no ``config.json`` or holds another backbone's model (naming
    the ``--backbone`` that reads it) is an error at once, not after the data is read."""
    from ehrprog.evaluation.heldout import DEMO_MODEL_PARAMS
    from ehrprog.networks.training import resolve_device
    from ehrprog.plugins import backbones

    try:
        resolve_device(args.device)
    except ValueError as error:
        raise InputError(f"--device {args.device}: {error}") from None
    backbone = args.backbone or DEMO_MODEL_PARAMS.get("backbone", "default")
    available = backbones()
    if backbone not in available:
        raise InputError(
            f"--backbone {backbone}: no installed plugin registers it; available: {', '.join(sorted(available))} "
            "(`ehrprog plugins` lists them)"
        )
    if args.checkpoint is None:
        return
    config = Path(args.checkpoint) / "config.json"
    if not Path(args.checkpoint).is_dir():
        raise InputError("--checkpoint: no such folder", file=str(args.checkpoint))
    if not config.is_file():
        raise InputError(
            "--checkpoint: a checkpoint folder holds config.json (as `ehrprog pretrain` writes it)", file=str(config)
        )
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (ValueError, AttributeError):
        raise InputError("--checkpoint: config.json is not a JSON object", file=str(config)) from None
    reader = model_type.removeprefix("ehrprog-") if isinstance(model_type, str) else None
    if reader in available and reader != backbone:
        raise InputError(
            f"--checkpoint holds a {model_type!r} model, which backbone {backbone!r} cannot read: "
            f"use --backbone {reader}",
            file=str(config),
        )
