"""ehrprog: chronic disease progression across visits, from OMOP CDM or MEDS records."""

__version__ = "0.1.0"

from ehrprog import datasets, tasks  # noqa: E402
from ehrprog.errors import EmptyCohortError, InputError  # noqa: E402
from ehrprog.events import EventFrame  # noqa: E402
from ehrprog.io import read_meds, read_omop, write_meds  # noqa: E402
from ehrprog.visits import Gap, VisitFrame, group_visits  # noqa: E402

__all__ = [
    "EmptyCohortError", "EventFrame", "Gap", "InputError", "VisitFrame", "__version__", "group_visits",
    "datasets", "read_meds", "read_omop", "tasks", "write_meds",
]
