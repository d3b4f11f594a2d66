"""The documented third-party plugin (docs/example-plugin) installs with pip, is found through the
``ehrprog`` entry point group like the built-ins, passes its own tests and serves the estimator."""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ehrprog as ep
from ehrprog.plugins import backbones, make_plugin_manager, use_plugin_manager
from ehrprog.testing import check_backbone

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "example-plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """pip-install the example into a private folder and put it on sys.path (removed afterwards)."""
    work = tmp_path_factory.mktemp("plugin")
    source = shutil.copytree(EXAMPLE, work / "src")  # build artefacts stay out of the repository
    target = work / "site"
    # Build with the environment's setuptools when it has one (offline); else let pip fetch it.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            *isolation,
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
    )
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    yield target
    sys.path.remove(str(target))
    for name in [m for m in sys.modules if m.startswith("ehrprog_recency")]:
        del sys.modules[name]


def test_the_installed_example_is_discovered_through_the_entry_point_group(installed):
    found = backbones(make_plugin_manager())
    assert found["recency"].plugin == "recency"
    assert "recency" not in backbones(make_plugin_manager(load_entry_points=False))
    assert (installed / "ehrprog_recency-0.1.0.dist-info" / "entry_points.txt").is_file()


def test_the_example_passes_the_conformance_suite_and_trains(installed, sim_omop):
    manager = make_plugin_manager()
    check_backbone(backbones(manager)["recency"])
    cohort = ep.tasks.CKDProgression().build(ep.read_omop(sim_omop))
    with use_plugin_manager(manager):
        est = ep.VisitProgressionEstimator(
            backbone="recency", backbone__half_life_years=0.5, embedding_dim=16, hidden_dim=16, max_epochs=1
        ).fit(cohort.X, cohort.y)
    assert type(est.model_.backbone).__name__ == "RecencyBackbone"


def test_the_examples_own_tests_pass(installed):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        env=env,
        capture_output=True,
        text=True,
        cwd=installed,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed" in run.stdout
