"""Folders ehrprog writes are safe to read back: nothing is lost by a save, nothing in a folder is
trusted unchecked, and ehrprog never deletes a file it did not write."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import ehrprog as ep
from ehrprog.core.errors import InputError


@pytest.fixture(scope="module")
def cohort(sim_omop):
    return ep.tasks.CKDProgression().build(ep.read_omop(sim_omop))


@pytest.fixture(scope="module")
def saved(cohort, tmp_path_factory) -> Path:
    return cohort.save(tmp_path_factory.mktemp("cohort") / "c", subjects_per_shard=100)


def _copy(saved: Path, tmp_path: Path, name: str = "copy") -> Path:
    return Path(shutil.copytree(saved, tmp_path / name, symlinks=True))


def _manifest(folder: Path, change) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _equal(a: ep.tasks.Cohort, b: ep.tasks.Cohort) -> None:
    assert a.X.points.equals(b.X.points) and a.y.equals(b.y)
    np.testing.assert_array_equal(a.groups, b.groups)


def test_saving_a_cohort_over_the_folder_it_was_loaded_from_is_refused_and_loses_nothing(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    loaded = ep.load_cohort(folder)
    with pytest.raises(InputError, match="loaded from"):
        loaded.save(folder)
    _equal(ep.load_cohort(folder, verify="all"), loaded)
    # Saved elsewhere it is the same cohort, and can replace another saved cohort whole.
    other = loaded.save(tmp_path / "other")
    _equal(ep.load_cohort(other), loaded)
    third = loaded.save(tmp_path / "third")
    ep.load_cohort(third).save(other)  # a saved cohort is replaced whole, by renames
    _equal(ep.load_cohort(other, verify="all"), loaded)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_saving_into_a_folder_with_files_ehrprog_did_not_write_is_refused(cohort, tmp_path):
    target = tmp_path / "mine"
    (target / "shards" / "00000").mkdir(parents=True)
    (target / "shards" / "00000" / "precious.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="did not write"):
        cohort.save(target)
    assert (target / "shards" / "00000" / "precious.csv").read_text() == "a,b\n1,2\n"
    # A saved cohort with a stranger inside it is refused too (its own files would be replaced).
    good = cohort.save(tmp_path / "good", subjects_per_shard=100)
    (good / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"notes\.txt"):
        cohort.save(good)
    assert (good / "notes.txt").exists()
    from ehrprog.tasks.build import build_cohort

    source = ep.datasets.simulate_ckd(30, 1, tmp_path / "sim", format="meds")
    with pytest.raises(InputError, match="did not write"):
        build_cohort(source, target, progress=False)
    assert (target / "shards" / "00000" / "precious.csv").exists()


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        (lambda m: m["shards"][0].update(name="../other/shards/00000"), "plain shard name"),
        (lambda m: m["shards"][0].update(name="/etc"), "plain shard name"),
        (lambda m: m["shards"].append(dict(m["shards"][0])), "more than once"),
        (lambda m: m.update(points=m["points"] + 1), "the shards list"),
        (lambda m: m["shards"][0].update(points=-1), "greater than or equal to 0"),
        (lambda m: m.update(shards=[]), "at least 1 item"),
        (lambda m: m.pop("strategy"), "strategy"),
    ],
)
def test_a_manifest_that_breaks_a_rule_is_refused_naming_it(saved, tmp_path, change, rule):
    folder = _copy(saved, tmp_path)
    _manifest(folder, change)
    with pytest.raises(InputError, match=rule) as caught:
        ep.load_cohort(folder)
    assert caught.value.file.endswith("manifest.json")


def test_a_manifest_pointing_at_another_cohort_loads_nothing_of_it(saved, tmp_path):
    """The attack the rules stop: a shard name reaching into a sibling cohort."""
    folder = _copy(saved, tmp_path, "a")
    _copy(saved, tmp_path, "other")
    _manifest(folder, lambda m: m["shards"][0].update(name="../../other/shards/00000"))
    with pytest.raises(InputError, match="plain shard name"):
        ep.load_cohort(folder)


def test_a_manifest_that_is_not_an_object_is_an_input_error(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    (folder / "manifest.json").write_text("[1, 2, 3]")
    with pytest.raises(InputError, match="JSON object"):
        ep.load_cohort(folder)


def test_an_edited_points_file_is_refused_at_load_naming_shard_and_file(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    points = folder / "shards" / "00001" / "points.parquet"
    frame = pl.read_parquet(points).with_columns(pl.col("event").not_())  # every label changed
    frame.write_parquet(points)
    with pytest.raises(InputError, match="00001") as caught:
        ep.load_cohort(folder)
    assert caught.value.file.endswith("points.parquet")


def test_an_edited_visits_file_is_refused_when_first_read(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    visits = folder / "shards" / "00000" / "visits.parquet"
    data = bytearray(visits.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other content
    visits.write_bytes(bytes(data))
    cohort = ep.load_cohort(folder)  # sizes match: loads
    with pytest.raises(InputError, match="SHA-256") as caught:
        list(part.visits for part, _ in cohort.X.parts())
    assert caught.value.file.endswith("visits.parquet")
    with pytest.raises(InputError, match="SHA-256"):
        ep.load_cohort(folder, verify="all")


def test_a_missing_file_is_an_error_at_load_not_at_predict(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    arrays = sorted((folder / "shards" / "00000" / "arrays").iterdir())
    arrays[0].unlink()
    with pytest.raises(InputError, match="is missing") as caught:
        ep.load_cohort(folder)
    assert "00000" in str(caught.value) and caught.value.file.endswith(arrays[0].name)


def test_a_shard_file_that_is_a_link_is_refused(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    other = _copy(saved, tmp_path, "other")
    target = folder / "shards" / "00000" / "labs.parquet"
    target.unlink()
    os.symlink(other / "shards" / "00000" / "labs.parquet", target)
    with pytest.raises(InputError, match="is a link"):
        ep.load_cohort(folder)


def test_write_meds_replaces_its_own_dataset_whole_and_keeps_what_it_did_not_write(tmp_path):
    big = ep.read_omop(ep.datasets.simulate_ckd(60, 1, tmp_path / "big"))
    small = ep.read_omop(ep.datasets.simulate_ckd(10, 2, tmp_path / "small"))
    out = ep.write_meds(big, tmp_path / "meds")
    ep.write_meds(small, out)  # a MEDS dataset ehrprog wrote: replaced whole, never merged
    assert ep.read_meds(out).subjects().height == 10
    (out / "notebook.ipynb").write_text("{}")
    with pytest.raises(InputError, match=r"did not write \(notebook\.ipynb\)"):
        ep.write_meds(big, out)
    assert ep.read_meds(out).subjects().height == 10  # untouched
    ep.write_meds(big, out, overwrite=True)  # replaced, the user's file kept where it was
    assert ep.read_meds(out).subjects().height == 60 and (out / "notebook.ipynb").read_text() == "{}"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_convert_refuses_a_foreign_destination_and_with_overwrite_keeps_its_files(tmp_path, capsys):
    from ehrprog.cli import main

    source = ep.datasets.simulate_ckd(10, 2, tmp_path / "omop")
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "old.parquet").write_bytes(b"x")
    assert main(["convert", "omop-to-meds", str(source), str(tmp_path / "dest")]) != 0
    assert "not an ehrprog MEDS dataset folder" in capsys.readouterr().err
    assert main(["convert", "omop-to-meds", str(source), str(tmp_path / "dest"), "--overwrite"]) == 0
    assert (tmp_path / "dest" / "old.parquet").read_bytes() == b"x"
    assert ep.read_meds(tmp_path / "dest").subjects().height == 10


def _meds(tmp_path: Path, n: int = 12) -> Path:
    return ep.datasets.simulate_ckd(n, 3, tmp_path / "meds", format="meds")


def test_a_split_folder_that_is_a_link_is_read_like_a_linked_file(tmp_path):
    root = _meds(tmp_path)
    elsewhere = tmp_path / "held_out_elsewhere"
    elsewhere.mkdir()
    files = sorted((root / "data").rglob("*.parquet"))
    frame = pl.read_parquet(files[0])
    ids = frame["subject_id"].unique().sort()
    frame.filter(pl.col("subject_id").is_in(ids[:4].implode())).write_parquet(elsewhere / "0.parquet")
    frame.filter(~pl.col("subject_id").is_in(ids[:4].implode())).write_parquet(files[0])
    os.symlink(elsewhere, root / "data" / "held_out")
    assert ep.read_meds(root).subjects().height == 12


def test_subject_splits_that_put_a_subject_in_two_splits_are_refused(tmp_path):
    root = _meds(tmp_path)
    ids = pl.read_parquet(sorted((root / "data").rglob("*.parquet"))[0])["subject_id"].unique().sort()
    splits = pl.DataFrame({"subject_id": [ids[0], ids[0], ids[1]], "split": ["train", "held_out", "train"]})
    splits.write_parquet(root / "metadata" / "subject_splits.parquet")
    with pytest.raises(InputError, match="more than one split") as caught:
        ep.read_meds(root)
    assert caught.value.file.endswith("subject_splits.parquet")


def test_subject_splits_with_unknown_subjects_and_splits_are_noted(tmp_path):
    root = _meds(tmp_path)
    ids = pl.read_parquet(sorted((root / "data").rglob("*.parquet"))[0])["subject_id"].unique().sort()
    pl.DataFrame({"subject_id": [ids[0], 999_999], "split": ["train", "validation_b"]}).write_parquet(
        root / "metadata" / "subject_splits.parquet"
    )
    notes = ep.read_meds(root).report.notes
    assert any("no data in the shards" in n for n in notes)
    assert any("validation_b" in n for n in notes)


def test_a_non_integer_split_subject_or_a_malformed_dataset_json_is_an_input_error(tmp_path):
    root = _meds(tmp_path)
    pl.DataFrame({"subject_id": ["7", "x7"], "split": ["train", "train"]}).write_parquet(
        root / "metadata" / "subject_splits.parquet"
    )
    with pytest.raises(InputError, match="not integers") as caught:
        ep.read_meds(root)
    assert caught.value.column == "subject_id"
    (root / "metadata" / "subject_splits.parquet").unlink()
    (root / "metadata" / "dataset.json").write_text('["not", "an", "object"]')
    with pytest.raises(InputError, match="JSON object"):
        ep.read_meds(root)
    (root / "metadata" / "dataset.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(InputError, match="not valid JSON"):
        ep.read_meds(root)
