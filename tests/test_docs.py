"""The docs build in strict mode (broken links and references fail) and the tutorial notebook runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_docs_build_in_strict_mode(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is in the dev extra: `make test` installs it")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    api = (tmp_path / "site" / "api" / "models" / "index.html").read_text()
    assert "predict_survival_function" in api and "explain_clinical" in api  # docstrings, inherited ones too
    assert (tmp_path / "site" / "tutorial" / "index.html").is_file()


@pytest.mark.slow
def test_the_tutorial_notebook_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="nbformat is in the dev extra")
    from nbclient import NotebookClient

    notebook = nbformat.read(ROOT / "notebooks" / "tutorial.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = "".join(
        out.get("text", "") + str(out.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    assert "C-index per fold" in outputs and "chosen:" in outputs and "VisitProgressionEstimator" in outputs
    assert "open " in outputs and "# Model card" in outputs
