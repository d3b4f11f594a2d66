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
