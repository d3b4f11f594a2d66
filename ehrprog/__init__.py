"""ehrprog: chronic disease progression across visits, from OMOP CDM or MEDS records."""

__version__ = "0.1.0"

from ehrprog import datasets, tasks
from ehrprog.errors import EmptyCohortError, InputError
from ehrprog.events import EventFrame
from ehrprog.io import read_meds, read_omop, write_meds
from ehrprog.visits import Gap, VisitFrame, group_visits

__all__ = [
    "EmptyCohortError",
    "EventFrame",
    "Gap",
    "InputError",
    "VisitFrame",
    "__version__",
    "datasets",
    "group_visits",
    "read_meds",
    "read_omop",
    "tasks",
    "write_meds",
]
