"""Cohorts: a task's inputs ``X`` (prediction points and their visits) and targets ``y``, in
memory (:class:`Cohort`, :class:`CohortX`) and on disk as subject shards (the folder format in
:mod:`~ehrprog.cohorts.format`, written by :mod:`~ehrprog.cohorts.write`, read lazily by
:func:`load_cohort`); the targets as models take them (:mod:`~ehrprog.cohorts.targets`).

May import :mod:`ehrprog.visits`, :mod:`ehrprog.io` and :mod:`ehrprog.core` (see
``docs/architecture.md``)."""

from ehrprog.cohorts.cohort import Cohort, CohortX
from ehrprog.cohorts.read import StoredCohortX, load_cohort
from ehrprog.cohorts.write import save_cohort

__all__ = ["Cohort", "CohortX", "StoredCohortX", "load_cohort", "save_cohort"]
