"""ehrprog: chronic disease progression across visits, from OMOP CDM or MEDS records."""

from __future__ import annotations

from typing import Any

from ehrprog import _moved

_moved.install()  # old module paths (before the layout by stage) keep working, with a warning

from ehrprog import datasets, tasks  # noqa: E402
from ehrprog.core.errors import EmptyCohortError, InputError  # noqa: E402
from ehrprog.core.version import __version__  # noqa: E402
from ehrprog.io import read_meds, read_omop, write_meds  # noqa: E402
from ehrprog.io.events import EventFrame  # noqa: E402
from ehrprog.visits.grouping import Gap, VisitFrame, group_visits  # noqa: E402

#: Stages reachable as attributes (``ep.metrics``) without importing them up front (torch is heavy).
_SUBMODULES = ("cohorts", "evaluation", "features", "metrics", "models", "networks", "plugins", "testing")


def __getattr__(name: str) -> Any:
    # The estimator pulls in torch: import it only when asked for, so the data layer stays light.
    if name == "load_cohort":
        from ehrprog.cohorts.read import load_cohort

        return load_cohort
    if name in _SUBMODULES or f"ehrprog.{name}" in _moved.MOVED:  # the old paths warn
        import importlib

        return importlib.import_module(f"ehrprog.{name}")
    if name == "VisitProgressionEstimator":
        from ehrprog.models.estimator import VisitProgressionEstimator

        return VisitProgressionEstimator
    if name == "TabularModel":
        from ehrprog.models.tabular import TabularModel

        return TabularModel
    if name == "ClinicalTable":
        from ehrprog.features.clinical import ClinicalTable

        return ClinicalTable
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
