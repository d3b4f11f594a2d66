"""The command line: inspect, convert omop-to-meds, simulate, and clean errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import shared_path

from ehrprog.cli import main


def test_inspect_prints_a_summary_and_the_report(capsys):
    assert main(["inspect", str(shared_path("synthea_nj_tutorial_etl_2025_omop"))]) == 0
    out = capsys.readouterr().out
    assert "subjects: 109" in out
    assert "visits (same_day)" in out
    assert "stage 5 by diagnosis: 3" in out
    assert "ingest report:" in out and "rows read" in out


def test_inspect_reads_meds_too(capsys):
    assert main(["inspect", str(shared_path("meds_transforms_example_meds")), "--visits", "gap:1"]) == 0
    assert "subjects: 6" in capsys.readouterr().out


def test_convert_omop_to_meds_then_inspect(tmp_path, capsys):
    out = tmp_path / "meds"
    assert main(["convert", "omop-to-meds", str(shared_path("synpuf_1k_omop")), str(out)]) == 0
    assert (out / "data" / "0.parquet").exists()
    assert main(["inspect", str(out)]) == 0
    assert "subjects: 1,000" in capsys.readouterr().out


def test_bad_path_exits_with_code_2_and_a_message(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "nowhere")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_console_script_runs_simulate(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ehrprog.cli",
            "simulate",
            str(tmp_path / "sim"),
            "--subjects",
            "20",
            "--format",
            "meds",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "wrote meds dataset" in result.stdout
    assert (tmp_path / "sim" / "data" / "0.parquet").exists()


@pytest.mark.parametrize(
    "argv, rule",
    [
        (["build", "--data", "d", "--out", "o", "--workers", "0"], "argument --workers: 0 is out of range"),
        (["build", "--data", "d", "--out", "o", "--subjects-per-shard", "-5"], "--subjects-per-shard: -5 is out"),
        (["build", "--data", "d", "--out", "o", "--retries", "-1"], "--retries: -1 is out of range"),
        (
            ["evaluate", "--data", "d", "--test-size", "1.5"],
            "--test-size: 1.5 is out of range: must be above 0 and below 1",
        ),
        (["evaluate", "--data", "d", "--test-size", "0"], "--test-size: 0 is out of range"),
        (["evaluate", "--data", "d", "--seed", "-1"], "--seed: -1 is outside 0..4294967295"),
        (["fit", "--data", "d", "--out", "o", "--max-epochs", "0"], "--max-epochs: 0 is out of range"),
        (["pretrain", "--data", "d", "--backbone", "b", "--out", "o", "--epochs", "0"], "--epochs: 0 is out of range"),
        (["pretrain", "--data", "d", "--backbone", "b", "--out", "o", "--batch-size", "0"], "--batch-size: 0 is out"),
        (
            ["pretrain", "--data", "d", "--backbone", "b", "--out", "o", "--hidden", "x"],
            "--hidden: 'x' is not a whole number",
        ),
        (["pretrain", "--data", "d", "--backbone", "b", "--out", "o", "--lr", "nan"], "--lr: nan is out of range"),
        (["simulate", "o", "--subjects", "0"], "--subjects: 0 is out of range"),
    ],
)
def test_numeric_options_are_checked_before_any_work(argv, rule, capsys, tmp_path, monkeypatch):
    """Each out-of-range number is an argparse error naming the option (exit 2), before any data
    is read or any folder written (the paths here do not exist)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert rule in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_version_prints_the_package_version(capsys):
    import ehrprog

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"ehrprog {ehrprog.__version__}"


def test_verbose_and_quiet_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        main(["--verbose", "--quiet", "plugins"])
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--backbone", "nosuch"], "--backbone nosuch: no installed plugin registers it; available: "),
        (["--device", "cuda:7"], "--device cuda:7: device='cuda:7': this machine has"),
        (["--device", "tpu"], "--device tpu:"),
    ],
)
@pytest.mark.parametrize("command", ["fit", "evaluate"])
def test_model_options_are_checked_before_the_data_is_read(command, options, message, tmp_path, capsys):
    """The data path does not exist: an error about the option proves nothing was read first."""
    out = ["--out", str(tmp_path / "out")]
    assert main([command, "--data", str(tmp_path / "no_data"), *out, *options]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "no_data" not in err
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_of_another_backbone_names_the_backbone_that_reads_it(tmp_path, capsys):
    import json

    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "ehrprog-cehrbert", "format": 1}))
    data = ["--data", str(tmp_path / "no_data"), "--out", str(tmp_path / "out")]
    assert main(["fit", *data, "--checkpoint", str(folder)]) == 2
    assert "holds a 'ehrprog-cehrbert' model, which backbone 'default' cannot read: use --backbone cehrbert" in (
        capsys.readouterr().err
    )
    assert main(["fit", *data, "--checkpoint", str(tmp_path / "nowhere")]) == 2
    assert "--checkpoint: no such folder" in capsys.readouterr().err
    (folder / "config.json").unlink()
    assert main(["fit", *data, "--checkpoint", str(folder)]) == 2
    assert "a checkpoint folder holds config.json" in capsys.readouterr().err


def test_data_too_small_to_split_names_the_counts(sim_omop):
    import numpy as np

    import ehrprog as ep
    from ehrprog.core.errors import InputError
    from ehrprog.evaluation.heldout import subject_split

    cohort = ep.tasks.CKDProgression().build(ep.read_omop(sim_omop))
    one = cohort.subset(np.unique(cohort.groups)[:1])
    with pytest.raises(InputError, match=r"1 subject\(s\) with [\d,]+ prediction point\(s\) cannot be split"):
        subject_split(one, test_size=0.3)
    two = cohort.subset(np.unique(cohort.groups)[:2])
    train, test = subject_split(two, test_size=0.3)  # one subject a side
    assert len(np.intersect1d(two.groups[train], two.groups[test])) == 0


def test_fit_shows_a_progress_bar_with_the_loss_and_quiet_hides_it(sim_omop, tmp_path, capsys):
    data = ["--data", str(sim_omop), "--max-epochs", "1", "--test-size", "0.2"]
    assert main(["fit", *data, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "epoch 1" in err and "loss=" in err
    assert main(["-q", "fit", *data, "--out", str(tmp_path / "b")]) == 0
    captured = capsys.readouterr()
    assert "loss=" not in captured.err and "wrote" in captured.out
