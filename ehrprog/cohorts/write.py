"""Writing cohorts to disk (the layout: :mod:`ehrprog.cohorts.read`): one shard at a time into a hidden
folder renamed into place, the manifest over the shards, and a cohort in memory saved whole.

This module reads a cohort's attributes only (it does not import ``ehrprog.cohorts.cohort``,
whose ``Cohort.save`` calls it), so the cohort, the batching and the store import no circle.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from ehrprog.cohorts.arrays import visit_arrays
from ehrprog.cohorts.format import FORMAT, MANIFEST, SHARD_META, cohort_files, same_folder
from ehrprog.core.errors import EmptyCohortError, InputError
from ehrprog.core.files import file_problem, sha256
from ehrprog.core.output import OutputFolder
from ehrprog.visits.grouping import Gap

if TYPE_CHECKING:
    from ehrprog.cohorts.cohort import Cohort

POINT_COLUMNS = ["subject_id", "prediction_time", "n_visits", "current_stage", "current_value"]
TARGET_COLUMNS = ["stage", "event", "time_to_event_days"]
#: Target columns a cohort has only where its task made them (``death``: death competes).
OPTIONAL_TARGET_COLUMNS = ["death"]
#: Subjects per shard when a cohort in memory is saved.
SUBJECTS_PER_SHARD = 5_000


def _strategy_json(strategy: Any) -> Any:
    return {"gap_hours": strategy.hours} if isinstance(strategy, Gap) else strategy


def write_shard(cohort: Cohort, root: str | Path, name: str, *, source: str = "", fingerprint: str = "") -> dict:
    """Write ``cohort`` (the subjects of one shard) as ``root/shards/<name>`` and return its
    ``shard.json`` record. ``source`` names what it was built from; ``fingerprint`` identifies
    that input (a re-run compares it, see :func:`shard_is_complete`)."""
    shards = Path(root) / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    final = shards / name
    temporary = shards / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    X = cohort.X
    targets = TARGET_COLUMNS + [c for c in OPTIONAL_TARGET_COLUMNS if c in cohort.y.columns]
    points = pl.concat([X.points.select(POINT_COLUMNS), cohort.y.select(targets)], how="horizontal")
    points.write_parquet(temporary / "points.parquet")
    cohort.labels.lazy().collect().write_parquet(temporary / "labels.parquet")
    X.visits.frame.write_parquet(temporary / "visits.parquet")
    labs = X.labs if X.labs is not None else pl.DataFrame(schema={"subject_id": pl.Int64, "time": pl.Datetime("us")})
    labs.write_parquet(temporary / "labs.parquet")
    stages = cohort.stages.collect() if isinstance(cohort.stages, pl.LazyFrame) else cohort.stages
    stages.write_parquet(temporary / "stages.parquet")
    visit_arrays(X).save(temporary / "arrays")
    if X.visits.codes is not None and X.visits.codes.height:
        X.visits.codes.write_parquet(temporary / "codes.parquet")
    files = sorted(p for p in temporary.rglob("*") if p.is_file())
    meta = {
        "name": name,
        "source": source,
        "fingerprint": fingerprint,
        "subjects": int(points["subject_id"].n_unique()),
        "points": points.height,
        "visits": int(X.visits.frame["visits"].list.len().sum() or 0),
        "strategy": _strategy_json(X.visits.strategy),
        "lab_bands": {lab: [list(band) for band in bands] for lab, bands in X.lab_bands.items()},
        "report": dict(cohort.report),
        "warnings": list(cohort.warnings),
        "files": {str(p.relative_to(temporary)): {"bytes": p.stat().st_size, "sha256": sha256(p)} for p in files},
    }
    (temporary / SHARD_META).write_text(json.dumps(meta, indent=1))
    if final.exists():
        shutil.rmtree(final)
    os.replace(temporary, final)
    return meta


def write_empty_shard(root: str | Path, name: str, reason: str, *, source: str = "", fingerprint: str = "") -> dict:
    """Record that the input of shard ``name`` yields no prediction point (``reason``), so a
    re-run skips it too; :func:`finalize` lists it under ``empty_shards``."""
    folder = Path(root) / "shards" / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    meta = {
        "name": name,
        "source": source,
        "fingerprint": fingerprint,
        "subjects": 0,
        "points": 0,
        "visits": 0,
        "report": {f"shards with no prediction point ({reason})": 1},
        "warnings": [],
        "files": {},
    }
    (folder / SHARD_META).write_text(json.dumps(meta, indent=1))
    return meta


def shard_is_complete(root: str | Path, name: str, fingerprint: str = "", verify: bool = True) -> bool:
    """Whether ``root/shards/<name>`` is a whole shard built from the input ``fingerprint``: its
    ``shard.json`` exists and names that fingerprint, and every file it lists is there with the
    same size (and, with ``verify``, the same SHA-256)."""
    folder = Path(root) / "shards" / name
    try:
        meta = json.loads((folder / SHARD_META).read_text())
    except (OSError, ValueError):
        return False
    if meta.get("fingerprint", "") != fingerprint:
        return False
    for relative, expected in meta.get("files", {}).items():
        path = folder / relative
        if file_problem(path, expected["bytes"]) is not None:
            return False
        if verify and sha256(path) != expected["sha256"]:
            return False
    return True


def finalize(root: str | Path, names: list[str], *, codes: pl.DataFrame | None = None, dataset: str = "") -> dict:
    """Write ``manifest.json`` over the shards ``names`` (in that order): totals, the summed
    report, the shards' warnings (each once) and the code metadata."""
    root = Path(root)
    records = [json.loads((root / "shards" / name / SHARD_META).read_text()) for name in names]
    shards = [record for record in records if record["points"] > 0]
    empty = [record for record in records if record["points"] == 0]
    if not shards:
        raise EmptyCohortError("no shard holds a prediction point: the cohort is empty", file=str(root))
    if codes is None and (root / "shards" / shards[0]["name"] / "codes.parquet").is_file():
        codes = pl.read_parquet(root / "shards" / shards[0]["name"] / "codes.parquet")
    report: dict[str, int] = {}
    warnings: list[str] = []
    for shard in records:
        for reason, count in shard["report"].items():
            report[reason] = report.get(reason, 0) + int(count)
        warnings += [w for w in shard["warnings"] if w not in warnings]
    if codes is not None and codes.height:
        codes.write_parquet(root / "codes.parquet")
    manifest = {
        "format": FORMAT,
        "dataset": dataset,
        "shards": [
            {key: shard[key] for key in ("name", "source", "fingerprint", "subjects", "points", "visits")}
            for shard in shards
        ],
        "empty_shards": [{key: shard[key] for key in ("name", "source", "fingerprint")} for shard in empty],
        "subjects": sum(s["subjects"] for s in shards),
        "points": sum(s["points"] for s in shards),
        "visits": sum(s["visits"] for s in shards),
        "strategy": shards[0]["strategy"],
        "lab_bands": shards[0]["lab_bands"],
        "report": report,
        "warnings": warnings,
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def save_cohort(cohort: Cohort, path: str | Path, *, subjects_per_shard: int = SUBJECTS_PER_SHARD) -> Path:
    """Write a cohort to ``path`` as shards of ``subjects_per_shard`` subjects (contiguous ranges
    of the ids of subjects with points or stage records), then its manifest.

    The cohort is written whole into a hidden sibling folder and renamed into place, so ``path``
    holds the old cohort or the new one, never a mixture. ``path`` must be new, empty, or a saved
    cohort (replaced; every entry of it must be ehrprog's: a folder holding other files is
    refused, nothing is deleted), and never the folder the cohort was loaded from.

    Raises:
        InputError: ``path`` holds files ehrprog did not write, or is the cohort's own folder.
    """
    if subjects_per_shard < 1:
        raise ValueError(f"subjects_per_shard must be at least 1, got {subjects_per_shard}")
    final = Path(path)
    source = getattr(cohort.X, "store", None)
    if source is not None and final.exists() and same_folder(source.root, final):
        raise InputError(
            "cannot save a cohort over the folder it was loaded from (its shards are still being read): "
            "save it to another folder",
            file=str(final),
        )
    inputs = [source.root] if source is not None else []  # nor one holding it, nor inside it
    out = OutputFolder(final, "cohort", owned=cohort_files, inputs=inputs, marker=False, can_overwrite=False).check()
    with out.writing() as root:
        _write_cohort(cohort, root, subjects_per_shard)
    return final


def _write_cohort(cohort: Cohort, root: Path, subjects_per_shard: int) -> None:
    """The shards and the manifest of ``cohort``, written into the (new, empty) folder ``root``."""
    # Subjects with points, and those with stage records only (kept in `stages`, as in memory).
    staged = cohort.stages.lazy().select("subject_id").collect()["subject_id"].to_numpy()
    subjects = np.union1d(cohort.groups, staged)
    if isinstance(cohort.labels, pl.LazyFrame):  # a loaded cohort saved again: its labels read once
        cohort = dataclasses.replace(cohort, labels=cohort.labels.collect())
    names = []
    for number, start in enumerate(range(0, len(subjects), subjects_per_shard)):
        name = f"{number:05d}"
        write_shard(cohort.subset(subjects[start : start + subjects_per_shard]), root, name)
        names.append(name)
    manifest = finalize(root, names, codes=cohort.X.visits.codes)
    # The cohort-level report and warnings (of the whole build), not a sum of empty shard reports.
    manifest.update(report=dict(cohort.report), warnings=list(cohort.warnings))
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1))
