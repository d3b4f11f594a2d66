"""Absolute survival from any risk score: Breslow's baseline hazard, the one survival-function
component of the package (the estimator's Cox head, the boosted baselines and the ridge Cox
baselines all use it), tested against scikit-survival's ``BreslowEstimator``.

For log relative risks ``r`` of training points with times ``t`` (days) and events ``d``:
``H0(t_k) = sum_{l <= k} d_l / sum_{j: t_j >= t_l} exp(r_j)`` at each distinct event time, and
``S(t | x) = exp(-H0(t) exp(r(x)))``.
"""

from __future__ import annotations

import numpy as np

from ehrprog.cohorts.targets import breslow_baseline
from ehrprog.models.incidence import step_at


class BreslowSurvival:
    """Survival functions ``[n, len(event_times_)]`` from risk scores.

    Attributes (after :meth:`fit`, or given): ``event_times_`` (days, the distinct training event
    times, ascending) and ``cumulative_baseline_hazard_`` (``H0`` at each of them).
    """

    def __init__(self, event_times: np.ndarray | None = None, cumulative_hazard: np.ndarray | None = None) -> None:
        if event_times is not None:
            self.event_times_ = np.asarray(event_times, dtype=np.float64)
            self.cumulative_baseline_hazard_ = np.asarray(cumulative_hazard, dtype=np.float64)

    def fit(self, risk: np.ndarray, time: np.ndarray, event: np.ndarray) -> BreslowSurvival:
        """``H0`` from the training points' ``risk`` ``[n]`` (log relative risk), ``time`` ``[n]``
        (days) and ``event`` ``[n]`` (bool)."""
        self.event_times_, self.cumulative_baseline_hazard_ = breslow_baseline(
            np.asarray(risk), np.asarray(time, dtype=np.float64), np.asarray(event, dtype=bool)
        )  # risk read as float64 a chunk at a time
        return self

    def survival(self, risk: np.ndarray) -> np.ndarray:
        """``S(t | x)`` ``[n, len(event_times_)]`` for log relative risks ``risk`` ``[n]``."""
        return np.exp(-np.outer(np.exp(np.asarray(risk, dtype=np.float64)), self.cumulative_baseline_hazard_))

    def cumulative_hazard(self, risk: np.ndarray, times: np.ndarray) -> np.ndarray:
        """``H(t | x) = H0(t) exp(r)`` ``[n, len(times)]`` at ``times`` (days; ``H0`` a right-continuous
        step, 0 before the first event time) for log relative risks ``risk`` ``[n]``."""
        return np.outer(np.exp(np.asarray(risk, dtype=np.float64)), self.baseline_at(times))

    def baseline_at(self, times: np.ndarray) -> np.ndarray:
        """``H0`` at ``times`` (days) ``[len(times)]``: a right-continuous step, 0 before the first event time."""
        return step_at(self.event_times_, self.cumulative_baseline_hazard_, times)

    def survival_function(self, risk: np.ndarray, return_array: bool = False):
        """scikit-survival ``StepFunction`` objects over ``event_times_`` (or, with
        ``return_array``, the array of :meth:`survival`), as ``predict_survival_function`` returns."""
        return step_functions(self.event_times_, self.survival(risk), return_array)


def step_functions(times: np.ndarray, survival: np.ndarray, return_array: bool = False):
    """Rows of ``survival`` ``[n, len(times)]`` as scikit-survival ``StepFunction`` objects over
    ``times`` (days), or the array itself with ``return_array``."""
    if return_array:
        return survival
    from sksurv.functions import StepFunction

    return np.array([StepFunction(times, row) for row in survival])


__all__ = ["BreslowSurvival", "step_functions"]
