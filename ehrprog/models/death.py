"""The estimator's model of death, where death competes with progression (a cohort built with
``death="competing"``): a ridge Cox of death (progressions censored) on the tabular part's clinical
table, with its Breslow baseline. With it,
:meth:`~ehrprog.models.estimator.VisitProgressionEstimator.predict_cumulative_incidence` combines the
model's progression hazard and this one into the cumulative incidence of progression
(:func:`~ehrprog.models.incidence.incidence_from_hazards`); it is saved in ``config.json``
(numbers only) and loaded with the model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ehrprog.cohorts.cohort import CohortX
from ehrprog.cohorts.targets import breslow_baseline
from ehrprog.core.memory import release_free_memory
from ehrprog.models.incidence import step_at
from ehrprog.models.tabular import TabularModel, _Linear, fit_ridge_cox

#: Training follow-ups ended by death below which no model of death is fitted (the incidence
#: would rest on a handful of deaths).
MIN_DEATHS = 5


class DeathHazard:
    """``H2(t | x) = H20(t) exp(x b)`` on the clinical table (``ClinicalTable``, standardised).

    Attributes: ``linear`` (the ridge Cox, one output), ``event_times`` (days, the distinct
    training death times) and ``cumulative_hazard`` (``H20`` at each of them).
    """

    def __init__(self, linear: _Linear, event_times: np.ndarray, cumulative_hazard: np.ndarray) -> None:
        self.linear = linear
        self.event_times = np.asarray(event_times, dtype=np.float64)
        self.cumulative_hazard = np.asarray(cumulative_hazard, dtype=np.float64)

    @classmethod
    def fit(cls, tabular: TabularModel, X: CohortX, died: np.ndarray, time: np.ndarray) -> DeathHazard | None:
        """Fit on the points ``X`` (the tabular part's fitting rows) whose follow-up ended in
        death (``died`` ``[n]``) after ``time`` ``[n]`` days; ``None`` with fewer than
        :data:`MIN_DEATHS` deaths or where the Cox fit fails."""
        died, time = np.asarray(died, dtype=bool), np.asarray(time, dtype=np.float64)
        if died.sum() < MIN_DEATHS:
            return None
        table = tabular.table_.transform(X)
        linear = fit_ridge_cox(table, died, time, tabular.cox_alpha)
        if linear is None:
            return None
        risk = linear.outputs(table)[:, 0]
        del table
        release_free_memory()
        return cls(linear, *breslow_baseline(risk, time, died))

    def risk(self, tabular: TabularModel, X: CohortX) -> np.ndarray:
        """The log relative hazard of death ``x b`` ``[len(X)]``, read chunk by chunk."""
        risk = np.empty(len(X))
        for chunk, rows in X.chunks():
            risk[rows] = self.linear.outputs(tabular.table_.transform(chunk))[:, 0]
        return risk

    def baseline_at(self, times: np.ndarray) -> np.ndarray:
        """``H20`` at ``times`` (days) ``[len(times)]``: a right-continuous step, 0 before the first death."""
        return step_at(self.event_times, self.cumulative_hazard, times)

    def state(self) -> dict[str, Any]:
        return {
            "linear": self.linear.state(),
            "event_times": self.event_times.tolist(),
            "cumulative_hazard": self.cumulative_hazard.tolist(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> DeathHazard:
        return cls(_Linear(**state["linear"]), state["event_times"], state["cumulative_hazard"])


__all__ = ["MIN_DEATHS", "DeathHazard"]
