"""The command line: inspect, convert omop-to-meds, simulate, and clean errors."""

from __future__ import annotations

import subprocess
import sys

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
