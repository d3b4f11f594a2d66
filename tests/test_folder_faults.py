"""Fault injection on the folders ehrprog writes: a saved cohort, a saved model and a MEDS dataset,
each damaged at random (a file deleted, truncated, edited, duplicated, renamed, replaced by a link,
swapped with another folder's, a manifest pointed outside).

The invariant, for every generated case: the fault ends in an error that names a file of the
damaged folder, or everything read back equals what was written. (A MEDS dataset carries no
checksums, so its faults are the structural ones a reader can see: see docs/data.md.)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ehrprog as ep
from ehrprog.core.errors import InputError, SavedModelError
from ehrprog.models.persistence import read_config

COHORT_FAULTS = ["delete", "truncate", "edit", "duplicate shard", "rename shard", "link", "swap", "outside", "count"]
MODEL_FAULTS = ["delete", "truncate", "edit", "edit a digit", "link", "swap"]
MEDS_FAULTS = ["truncate", "link file", "link split folder", "duplicate", "rename", "dataset.json", "split conflict"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    cohorts = [
        ep.tasks.CKDProgression().build(ep.read_omop(ep.datasets.simulate_ckd(150, seed, root / f"omop{seed}")))
        for seed in (1, 2)
    ]
    saved = [c.save(root / f"cohort{i}", subjects_per_shard=50) for i, c in enumerate(cohorts)]
    tiny = {"embedding_dim": 8, "hidden_dim": 8, "max_epochs": 1, "tabular": ep.TabularModel(risk_model="booster")}
    models = [
        ep.VisitProgressionEstimator(target="progression", random_state=i, **tiny).fit(c.X, c.y)
        for i, c in enumerate(cohorts)
    ]
    model_folders = [m.save(root / f"model{i}") for i, m in enumerate(models)]
    meds = ep.write_meds(ep.read_omop(root / "omop1"), root / "meds", n_shards=3)
    return {"cohorts": saved, "models": model_folders, "fitted": models, "X": cohorts[0].X, "meds": meds}


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _names_damaged_file(error: Exception, folder: Path) -> bool:
    """Whether the error names a file (or shard folder) inside ``folder``."""
    file = getattr(error, "file", None)
    return file is not None and Path(file) != folder and Path(file).is_relative_to(folder)


def _read_cohort_whole(folder: Path) -> tuple:
    cohort = ep.load_cohort(folder, verify="all")
    tables = []
    for part, _ in cohort.X.parts():
        tables.append((part.visits.frame, part.labs, part.arrays.code_index.copy()))
    return cohort.X.points, cohort.y, cohort.labels.collect(), cohort.stages.collect(), tables


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, pl.DataFrame):
        return a.equals(b)
    return np.array_equal(a, b)


FILE_FAULTS = ("delete", "truncate", "edit")


def _damage_file(target: Path, fault: str, at: float) -> None:
    """Delete ``target``, cut it at the fraction ``at`` of its length, or flip the byte there."""
    if fault == "delete":
        target.unlink()
        return
    data = bytearray(target.read_bytes())
    if fault == "truncate":
        data = data[: int(len(data) * at)]
    elif data:
        data[int((len(data) - 1) * at)] ^= 0x5A
    target.write_bytes(bytes(data))


def _apply_cohort_fault(folder: Path, other: Path, fault: str, pick: int, at: float) -> None:
    files = [p for p in _files(folder) if "shards" in p.parts]
    target = files[pick % len(files)]
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if fault in FILE_FAULTS:
        _damage_file(target, fault, at)
    elif fault == "duplicate shard":
        manifest["shards"].append(dict(manifest["shards"][pick % len(manifest["shards"])]))
        manifest_path.write_text(json.dumps(manifest))
    elif fault == "rename shard":
        shard = folder / "shards" / manifest["shards"][pick % len(manifest["shards"])]["name"]
        shard.rename(shard.with_name(shard.name + "x"))
    elif fault == "link":
        twin = other / target.relative_to(folder)
        target.unlink()
        os.symlink(twin if twin.exists() else other / "manifest.json", target)
    elif fault == "swap":
        twin = other / target.relative_to(folder)
        if twin.exists():
            shutil.copyfile(twin, target)
        else:
            target.unlink()
    elif fault == "outside":
        manifest["shards"][pick % len(manifest["shards"])]["name"] = f"../../{other.name}/shards/00000"
        manifest_path.write_text(json.dumps(manifest))
    elif fault == "count":
        entry = manifest["shards"][pick % len(manifest["shards"])]
        entry["points"] += 1
        manifest["points"] += 1
        manifest_path.write_text(json.dumps(manifest))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(fault=st.sampled_from(COHORT_FAULTS), pick=st.integers(0, 10_000), at=st.floats(0.0, 1.0))
def test_every_fault_in_a_cohort_folder_is_an_error_naming_it_or_changes_nothing(folders, fault, pick, at):
    original = _read_cohort_whole(folders["cohorts"][0])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(shutil.copytree(folders["cohorts"][0], Path(tmp) / "cohort"))
        other = Path(shutil.copytree(folders["cohorts"][1], Path(tmp) / "other"))
        _apply_cohort_fault(folder, other, fault, pick, at)
        try:
            read = _read_cohort_whole(folder)
        except InputError as error:
            assert _names_damaged_file(error, folder), (fault, str(error))
            return
        assert _same(read, original), f"{fault}: read back differs without an error"


def _apply_model_fault(folder: Path, other: Path, fault: str, pick: int, at: float) -> None:
    files = [p for p in _files(folder) if p.name != "MODEL_CARD.md"]
    target = files[pick % len(files)]
    if fault in FILE_FAULTS:
        _damage_file(target, fault, at)
    elif fault == "edit a digit":  # most often still valid JSON and a valid config
        data = bytearray(target.read_bytes())
        digits = [i for i, b in enumerate(data) if 48 <= b <= 57]  # ASCII 0-9 only
        if digits:
            i = digits[int((len(digits) - 1) * at)]
            data[i] = ord(str((int(chr(data[i])) + 1) % 10))
        target.write_bytes(bytes(data))
    elif fault == "link":
        target.unlink()
        os.symlink(other / target.name, target)
    elif fault == "swap":
        shutil.copyfile(other / target.name, target)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(fault=st.sampled_from(MODEL_FAULTS), pick=st.integers(0, 10_000), at=st.floats(0.0, 1.0))
def test_every_fault_in_a_model_folder_is_an_error_naming_it_or_changes_nothing(folders, fault, pick, at):
    X = folders["X"][:200]
    expected = folders["fitted"][0].predict_risk(X)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(shutil.copytree(folders["models"][0], Path(tmp) / "model"))
        other = Path(shutil.copytree(folders["models"][1], Path(tmp) / "other"))
        _apply_model_fault(folder, other, fault, pick, at)
        try:
            loaded = ep.VisitProgressionEstimator.load(folder)
        except SavedModelError as error:
            assert _names_damaged_file(error, folder), (fault, str(error))
            return
        np.testing.assert_array_equal(loaded.predict_risk(X), expected, err_msg=f"{fault}: predictions moved")
        # Everything else the folder holds reads back as written too (history, survival, vocabulary...).
        names = ep.VisitProgressionEstimator._get_param_names()
        assert read_config(folder, names) == read_config(folders["models"][0], names), (
            f"{fault}: the config read back differs"
        )


def _events(root: Path) -> tuple[pl.DataFrame | None, pl.DataFrame]:
    """The subject splits and the events as read (sorted)."""
    events = ep.read_meds(root)
    table = (
        events.collect()
        .select("subject_id", "time", pl.col("code").cast(pl.String), "numeric_value")
        .sort("subject_id", "time", "code", "numeric_value", nulls_last=True)
    )
    return events.splits, table


def _apply_meds_fault(root: Path, fault: str, pick: int, at: float) -> None:
    shards = sorted((root / "data").rglob("*.parquet"))
    target = shards[pick % len(shards)]
    if fault == "truncate":
        data = target.read_bytes()
        target.write_bytes(data[: int((len(data) - 9) * at)])  # the footer is gone
    elif fault == "link file":
        moved = root.parent / f"moved_{target.name}"
        shutil.move(target, moved)
        os.symlink(moved, target)
    elif fault == "link split folder":
        folder = root / "data" / "train"
        folder.mkdir(exist_ok=True)
        shutil.move(target, folder / target.name)
        shutil.move(folder, root.parent / "train_elsewhere")
        os.symlink(root.parent / "train_elsewhere", folder)
    elif fault == "duplicate":
        shutil.copyfile(target, target.with_name(f"copy_{target.name}"))
    elif fault == "rename":
        target.rename(target.with_name(f"renamed_{target.name}"))
    elif fault == "dataset.json":
        (root / "metadata" / "dataset.json").write_text(["[1]", "{", '"text"'][pick % 3])
    elif fault == "split conflict":
        ids = pl.read_parquet(target)["subject_id"].unique().sort()
        pl.DataFrame({"subject_id": [ids[0], ids[0]], "split": ["train", "held_out"]}).write_parquet(
            root / "metadata" / "subject_splits.parquet"
        )


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(fault=st.sampled_from(MEDS_FAULTS), pick=st.integers(0, 10_000), at=st.floats(0.0, 1.0))
def test_every_structural_fault_in_a_meds_folder_is_an_error_naming_it_or_changes_nothing(folders, fault, pick, at):
    original = _events(folders["meds"])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(shutil.copytree(folders["meds"], Path(tmp) / "meds"))
        _apply_meds_fault(root, fault, pick, at)
        try:
            read = _events(root)
        except InputError as error:
            assert _names_damaged_file(error, root), (fault, str(error))
            return
        assert _same(read, original), f"{fault}: events read back differ without an error"
