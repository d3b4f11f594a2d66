"""Open a dataset by path, telling OMOP folders from MEDS datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from ehrprog.core.errors import InputError
from ehrprog.io import read_meds, read_omop
from ehrprog.io.events import EventFrame

Format = Literal["auto", "omop", "meds"]


def detect_format(path: str | Path) -> Literal["omop", "meds"]:
    """``"meds"`` for a parquet file or a folder with ``data/`` (or ``metadata/``); ``"omop"`` for a
    folder holding a person table or a database URI; else an :class:`InputError`."""
    from ehrprog.io.database import is_database_uri

    if is_database_uri(path):
        return "omop"
    root = Path(path)
    if not root.exists():
        raise InputError("no such file or folder", file=str(root))
    if root.is_file() and root.suffix == ".parquet":
        return "meds"
    if (root / "data").is_dir() or (root / "metadata").is_dir():
        return "meds"
    if root.is_dir() and any(p.name.lower().split(".")[0] == "person" for p in root.iterdir()):
        return "omop"
    raise InputError("not a MEDS dataset (no data/ folder) nor an OMOP extract (no person table)", file=str(root))


def read_events(path: str | Path, fmt: Format = "auto", **options) -> EventFrame:
    """Read OMOP or MEDS, detecting which when ``fmt="auto"``."""
    kind = detect_format(path) if fmt == "auto" else fmt
    return read_omop(path, **options) if kind == "omop" else read_meds(path, **options)
