"""ehrprog: chronic disease progression across visits, from OMOP CDM or MEDS records."""

from __future__ import annotations

from typing import Any

from ehrprog import datasets, tasks
from ehrprog.errors import EmptyCohortError, InputError
from ehrprog.events import EventFrame
from ehrprog.io import read_meds, read_omop, write_meds
from ehrprog.version import __version__
from ehrprog.visits import Gap, VisitFrame, group_visits

#: Submodules reachable as attributes (``ep.metrics``) without importing them up front (torch is heavy).
_SUBMODULES = ("metrics", "baselines", "evaluation", "testing", "store", "build", "ray_train", "features", "tabular")


def __getattr__(name: str) -> Any:
    # The estimator pulls in torch: import it only when asked for, so the data layer stays light.
    if name == "load_cohort":
        from ehrprog.store import load_cohort

        return load_cohort
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"ehrprog.{name}")
    if name == "VisitProgressionEstimator":
        from ehrprog.estimator import VisitProgressionEstimator

        return VisitProgressionEstimator
    if name in ("TabularModel", "ClinicalTable"):
        from ehrprog import tabular

        return getattr(tabular, name)
    raise AttributeError(f"module 'ehrprog' has no attribute {name!r}")


__all__ = [
    "ClinicalTable",
    "EmptyCohortError",
    "EventFrame",
    "Gap",
    "InputError",
    "TabularModel",
    "VisitFrame",
    "VisitProgressionEstimator",
    "__version__",
    "datasets",
    "group_visits",
    "load_cohort",
    "read_meds",
    "read_omop",
    "tasks",
    "write_meds",
]
