"""Shared fixtures: the public datasets in ../shared/data and small simulated cohorts."""

from __future__ import annotations

import os
from pathlib import Path

# OpenMP (XGBoost, torch) threads that wait by spinning stall when another process holds the
# cores: with a benchmark running beside it, one booster fit here took over 25 minutes instead of
# 11 s. Sleeping waits cost nothing measurable alone. Set before anything loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

OMOP_SETS = [
    "synthea27nj_omop/csv",
    "synthea27nj_omop/parquet",
    "synthea_nj_tutorial_etl_2025_omop",
    "synthea_tutorial_etl_2019_omop",
    "synpuf_1k_omop",
]
MEDS_SETS = ["meds_transforms_example_meds", "femr_synthetic_meds"]


def shared_path(name: str) -> Path:
    """The path of a shared dataset, skipping the test when it is absent."""
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"shared dataset {name} not found at {path} (../shared/data is absent on this machine)")
    return path


@pytest.fixture(scope="session")
def sim_omop(tmp_path_factory) -> Path:
    from ehrprog.datasets import simulate_ckd

    return simulate_ckd(300, 7, tmp_path_factory.mktemp("sim") / "omop")


@pytest.fixture(scope="session")
def sim_meds(tmp_path_factory) -> Path:
    from ehrprog.datasets import simulate_ckd

    return simulate_ckd(300, 7, tmp_path_factory.mktemp("sim") / "meds", format="meds")


@pytest.fixture(scope="session")
def sim_cohort(sim_omop):
    """The CKD cohort of the small simulated OMOP set (shared by the model tests)."""
    import ehrprog as ep

    return ep.tasks.CKDProgression().build(ep.read_omop(sim_omop))
