"""CEHR-BERT checkpoints written by the cehrbert package load and reproduce cehrbert's outputs."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from conftest import shared_path

from ehrprog.cli import main
from ehrprog.plugins import checkpoint_loaders

pytest.importorskip("ehrprog_cehrbert", reason="the ehrprog-cehrbert plugin is not installed (make test installs it)")


def test_the_plugin_registers_its_loader_through_the_entry_point_group():
    loaders = checkpoint_loaders()
    assert "cehrbert" in loaders and loaders["cehrbert"].plugin == "cehrbert"


def test_loading_reproduces_cehrberts_own_outputs():
    root = shared_path("cehrbert_tiny_checkpoint")
    model = checkpoint_loaders()["cehrbert"].load(root / "checkpoint")
    inputs = {k: torch.from_numpy(v) for k, v in np.load(root / "inputs.npz").items()}
    with torch.no_grad():
        outputs = model(**inputs)
    expected = np.load(root / "expected_outputs.npz")
    assert set(expected) == {"last_hidden_state", "pooler_output", "prediction_logits"}
    for name in expected:
        assert np.abs(outputs[name].numpy() - expected[name]).max() < 1e-5, name


def test_verify_checkpoint_command_passes_and_prints_differences_last(capsys):
    assert main(["verify-checkpoint", "--backbone", "cehrbert", str(shared_path("cehrbert_tiny_checkpoint"))]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("max abs difference: last_hidden_state=")
    assert "pooler_output=" in last and "prediction_logits=" in last


def test_verify_checkpoint_fails_above_the_tolerance(tmp_path, capsys):
    source = shared_path("cehrbert_tiny_checkpoint")
    fixture = tmp_path / "fixture"
    shutil.copytree(source, fixture)  # a temporary copy to perturb, never committed
    expected = dict(np.load(fixture / "expected_outputs.npz").items())
    expected["pooler_output"] = expected["pooler_output"] + 1e-3
    (fixture / "expected_outputs.npz").chmod(0o644)
    np.savez(fixture / "expected_outputs.npz", **expected)
    assert main(["verify-checkpoint", "--backbone", "cehrbert", str(fixture)]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_a_corrupted_checkpoint_is_reported(tmp_path):
    from safetensors.numpy import load_file, save_file

    source = shared_path("cehrbert_tiny_checkpoint")
    fixture = tmp_path / "fixture"
    shutil.copytree(source, fixture)
    weights = load_file(str(fixture / "checkpoint" / "model.safetensors"))
    weights.pop("bert.pooler.dense.weight")
    (fixture / "checkpoint" / "model.safetensors").chmod(0o644)
    save_file(weights, str(fixture / "checkpoint" / "model.safetensors"))
    with pytest.raises(ValueError, match="lacks"):
        checkpoint_loaders()["cehrbert"].load(fixture / "checkpoint")


def test_unknown_loader_is_a_clean_error(capsys):
    assert main(["verify-checkpoint", "--backbone", "medbert", str(shared_path("cehrbert_tiny_checkpoint"))]) == 2
    assert "available" in capsys.readouterr().err
