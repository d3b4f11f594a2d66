"""Visits: events grouped into visits per subject (:func:`group_visits`, in
:mod:`~ehrprog.visits.grouping`) and visits as flat, vocabulary-free arrays
(:class:`~ehrprog.visits.arrays.VisitArrays`).

May import :mod:`ehrprog.io` and :mod:`ehrprog.core` (see ``docs/architecture.md``)."""

from ehrprog.visits.arrays import VisitArrays
from ehrprog.visits.grouping import Gap, VisitFrame, group_visits, run_number, run_starts, with_units

__all__ = ["Gap", "VisitArrays", "VisitFrame", "group_visits", "run_number", "run_starts", "with_units"]
