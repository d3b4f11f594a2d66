"""Loading a saved estimator trusts nothing in its folder: every broken rule names the file and the field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import ehrprog as ep
from ehrprog import VisitProgressionEstimator
from ehrprog.core.errors import SavedModelError

TINY = {"embedding_dim": 8, "hidden_dim": 8, "max_epochs": 1, "batch_size": 32, "lr": 1e-2, "random_state": 0}


@pytest.fixture(scope="module")
def cohort(sim_omop):
    return ep.tasks.CKDProgression().build(ep.read_omop(sim_omop))


@pytest.fixture(scope="module")
def saved(cohort, tmp_path_factory) -> Path:
    est = VisitProgressionEstimator(target="both", **TINY).fit(cohort.X[:400], cohort.y[:400])
    return est.save(tmp_path_factory.mktemp("saved") / "model")


def _copy(saved: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved, tmp_path / "copy"))


def _edit(folder: Path, change) -> None:
    """A deliberate edit of config.json, its checksum stamped again (the checks behind it run)."""
    from ehrprog.models.persistence import config_digest

    config = json.loads((folder / "config.json").read_text())
    change(config)
    config["config_sha256"] = config_digest(config)
    (folder / "config.json").write_text(json.dumps(config))


def _rehash(folder: Path, name: str = "model.safetensors") -> None:
    """Record a replaced file's size and hash in config.json: an attacker who edits both files
    meets the checks behind the hash (shapes, finiteness)."""
    from ehrprog.core.files import sha256

    path = folder / name
    _edit(folder, lambda c: c["files"].update({name: {"bytes": path.stat().st_size, "sha256": sha256(path)}}))


def test_a_saved_model_records_the_versions_it_was_saved_with(saved):
    versions = json.loads((saved / "config.json").read_text())["versions"]
    assert versions["torch"] == torch.__version__ and set(versions) == {"ehrprog", "torch", "polars"}


@pytest.mark.parametrize(
    ("change", "field", "rule"),
    [
        (lambda c: c["params"].update(embedding_dim="8"), "params.embedding_dim", "must be an int"),
        (lambda c: c.update(surprise=1), "surprise", "Extra inputs are not permitted"),
        (lambda c: c["params"].update(hidden_dim=-3), "params.hidden_dim", "range"),
        (lambda c: c["params"].update(backbonez=1), "params", "unknown parameters"),
        (lambda c: c.update(classes=c["classes"][:-1]), "classes", "n_classes"),
        (lambda c: c.update(event_times=c["event_times"][:-1]), "cumulative_baseline_hazard", "one value per entry"),
        (lambda c: c["vocabulary"].update(value_mean=c["vocabulary"]["value_mean"][:-1]), "vocabulary", "entries"),
        (lambda c: c.update(value_scale=[0.0, -1.0]), "value_scale.1", "greater than 0"),
        (lambda c: c.update(format="ehrprog.VisitProgressionEstimator/1"), "format", "fit and save it again"),
        (lambda c: c.update(backbone_architecture={"checkpoint": "/etc"}), "backbone_architecture", "strings"),
    ],
)
def test_a_tampered_config_is_a_clear_error_naming_the_file_and_field(saved, tmp_path, change, field, rule):
    folder = _copy(saved, tmp_path)
    _edit(folder, change)
    with pytest.raises(SavedModelError, match=rule) as caught:
        VisitProgressionEstimator.load(folder)
    assert caught.value.file.endswith("config.json")
    if field is not None:
        assert caught.value.field is not None and caught.value.field.startswith(field)


def test_a_config_that_describes_huge_weights_fails_before_allocating_them(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    _edit(folder, lambda c: c["params"].update(embedding_dim=2_000_000, hidden_dim=2_000_000))
    with pytest.raises(SavedModelError, match="do not match the model") as caught:
        VisitProgressionEstimator.load(folder)
    assert caught.value.file.endswith("model.safetensors")


def test_nan_weights_are_refused(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    weights = load_file(str(folder / "model.safetensors"))
    name = next(k for k in weights if weights[k].is_floating_point())
    weights[name][...] = float("nan")
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(SavedModelError, match="SHA-256"):
        VisitProgressionEstimator.load(folder)
    _rehash(folder)
    with pytest.raises(SavedModelError, match="NaN") as caught:
        VisitProgressionEstimator.load(folder)
    assert caught.value.field == name


def test_a_corrupt_weight_file_is_a_clear_error(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    (folder / "model.safetensors").write_bytes(b"\x00garbage")
    _rehash(folder)
    with pytest.raises(SavedModelError, match="safetensors"):
        VisitProgressionEstimator.load(folder)


def test_loading_opens_no_path_taken_from_the_config(cohort, tmp_path):
    """A tampered ClinicalBERT config that drops its architecture's ``text_encoder`` and points the
    parameter at a folder must not make the loader open it (here: a folder that is not a model)."""
    est = VisitProgressionEstimator(target="progression", backbone="clinicalbert", **TINY)
    est.fit(cohort.X[:300], cohort.y[:300])
    folder = est.save(tmp_path / "m")
    trap = tmp_path / "elsewhere"
    trap.mkdir()

    def tamper(config):
        config["params"]["backbone__text_encoder"] = str(trap)
        config["backbone_architecture"].pop("text_encoder")

    _edit(folder, tamper)
    loaded = VisitProgressionEstimator.load(folder)
    np.testing.assert_allclose(loaded.predict_risk(cohort.X[:20]), est.predict_risk(cohort.X[:20]), rtol=1e-5)


def test_weights_swapped_for_another_models_are_refused(cohort, saved, tmp_path):
    """Two fitted models with the same shapes: the second's weights in the first's folder load
    without a word unless config.json ties the weights to it (size and SHA-256)."""
    other = VisitProgressionEstimator(target="both", **{**TINY, "random_state": 1}).fit(cohort.X[:400], cohort.y[:400])
    other_folder = other.save(tmp_path / "other")
    folder = _copy(saved, tmp_path)
    shutil.copyfile(other_folder / "model.safetensors", folder / "model.safetensors")
    with pytest.raises(SavedModelError, match="SHA-256") as caught:
        VisitProgressionEstimator.load(folder)
    assert caught.value.file.endswith("model.safetensors")


def test_a_weights_file_that_is_a_link_or_unreadable_is_refused(saved, tmp_path):
    import os

    folder = _copy(saved, tmp_path)
    outside = tmp_path / "outside.safetensors"
    shutil.move(folder / "model.safetensors", outside)
    os.symlink(outside, folder / "model.safetensors")
    with pytest.raises(SavedModelError, match="is a link"):
        VisitProgressionEstimator.load(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(SavedModelError, match="missing"):
        VisitProgressionEstimator.load(folder)
    shutil.copyfile(outside, folder / "model.safetensors")
    os.chmod(folder / "model.safetensors", 0)
    try:
        if os.access(folder / "model.safetensors", os.R_OK):
            pytest.skip("running as a user who reads files whatever their mode (root)")
        with pytest.raises(SavedModelError, match="cannot read"):
            VisitProgressionEstimator.load(folder)
    finally:
        os.chmod(folder / "model.safetensors", 0o644)


def test_a_config_that_is_a_link_is_refused(saved, tmp_path):
    """The docs say links are refused; config.json was read through one."""
    import os

    folder = _copy(saved, tmp_path)
    outside = tmp_path / "outside.json"
    shutil.move(folder / "config.json", outside)
    os.symlink(outside, folder / "config.json")
    with pytest.raises(SavedModelError, match="is a link") as caught:
        VisitProgressionEstimator.load(folder)
    assert caught.value.file.endswith("config.json")


def test_a_saved_device_must_be_one_ehrprog_runs_on(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    _edit(folder, lambda c: c["params"].update(device="meta"))
    with pytest.raises(SavedModelError, match="not a device ehrprog runs on") as caught:
        VisitProgressionEstimator.load(folder)
    assert caught.value.field.startswith("params")
    with pytest.raises(ValueError, match="trains and predicts on"):
        VisitProgressionEstimator(device="meta")._device()


def test_saving_never_deletes_files_ehrprog_did_not_write(saved, cohort, tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("my notes")
    model = VisitProgressionEstimator.load(saved)
    with pytest.raises(SavedModelError, match="did not write"):
        model.save(target)
    assert (target / "notes.txt").read_text() == "my notes"
    # Over a saved model: replaced whole (written beside it, renamed into place).
    again = model.save(tmp_path / "again")
    before = (again / "config.json").read_text()
    model.save(again)
    assert (again / "config.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_changed_byte_of_the_config_is_seen(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    text = (folder / "config.json").read_text()
    config = json.loads(text)
    config["value_scale"][0] += 0.5  # valid, and every prediction would move
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(SavedModelError, match="config_sha256") as caught:
        VisitProgressionEstimator.load(folder)
    assert caught.value.file.endswith("config.json")


def test_a_saved_booster_with_non_finite_leaves_is_refused(cohort, tmp_path):
    """Leaves edited to NaN (and the config's hash of the file stamped again) loaded and predicted NaN."""
    from ehrprog.models.tabular import TabularModel

    est = VisitProgressionEstimator(target="progression", tabular=TabularModel(risk_model="booster"), **TINY)
    folder = est.fit(cohort.X[:400], cohort.y[:400]).save(tmp_path / "m")
    model = json.loads((folder / "booster.json").read_text())
    tree = model["learner"]["gradient_booster"]["model"]["trees"][0]
    tree["split_conditions"][tree["left_children"].index(-1)] = float("nan")
    (folder / "booster.json").write_text(json.dumps(model))  # json writes the token NaN
    _rehash(folder, "booster.json")
    with pytest.raises(SavedModelError, match="non-finite") as caught:
        VisitProgressionEstimator.load(folder)
    assert caught.value.file.endswith("booster.json")
