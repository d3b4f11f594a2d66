"""Scoring with death competing (a cohort built with ``death="competing"``: its ``y`` has ``death``).

Every survival method in the comparison is trained with deaths censored, so what it estimates is
the cause-specific hazard of progression. :class:`CompetingScoring` turns each method's
progression curve into the cumulative incidence of progression with one shared model of death (a
ridge Cox of death on the history features, :class:`~ehrprog.models.baselines.CoxBaseline`), so the
methods differ only in their progression part; the Fine-Gray baseline models the incidence itself.
The observed side is Aalen-Johansen; concordance is Wolbers' C (:mod:`ehrprog.metrics.competing`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from ehrprog.cohorts.cohort import CohortX
from ehrprog.cohorts.targets import DEATH, competing_causes
from ehrprog.metrics import survival_at, wolbers_targets
from ehrprog.models.baselines import CoxBaseline
from ehrprog.models.competing import incidence_from_hazards, step_at

#: Survival functions read onto the grid at once (memory: this many rows by the grid's length).
_CHUNK = 2_000

#: The line under a comparison table scored with death competing.
COMPETING_LINE = (
    "death competes: C-index is Wolbers' (a progression ranks above the deaths before it), IBS and ICI are of the "
    "cumulative incidence of progression (Aalen-Johansen observed); each model's progression hazard is combined "
    "with one shared Cox model of death"
)


def concordance_targets(y: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(event, time)`` on which Harrell's C is the comparison's C-index: Wolbers' targets
    (:func:`~ehrprog.metrics.wolbers_targets`) where ``y`` has ``death``, else ``event`` and
    ``time_to_event_days`` as they are."""
    event = y["event"].to_numpy().astype(bool)
    time = y["time_to_event_days"].to_numpy().astype(float)
    causes = competing_causes(y, y.height)
    return (event, time) if causes is None else wolbers_targets(causes, time)


@dataclass
class CompetingScoring:
    """The shared model of death and the training targets that score incidences.

    Attributes:
        death: a ridge Cox of death (progressions censored) fitted on the training points.
        grid: days; every distinct training time of a progression or a death (every step of a
            Breslow curve fitted on these points lies on it).
        causes: the training points' causes (0/1/2) and ``times`` (days): the censoring
            distribution of the Brier score.
    """

    death: CoxBaseline
    grid: np.ndarray
    causes: np.ndarray
    times: np.ndarray

    @classmethod
    def fit(cls, X: CohortX, y: pl.DataFrame) -> CompetingScoring | None:
        """Fit the death model on the training points; ``None`` where ``y`` has no ``death``
        column (death censors) or no training point ended in death."""
        causes = competing_causes(y, len(X))
        if causes is None or not (causes == DEATH).any():
            return None
        times = y["time_to_event_days"].to_numpy().astype(float)
        death = CoxBaseline()._fit_arrays(X, causes == DEATH, times)
        return cls(death, np.unique(times[causes != 0]), causes, times)

    def incidence(self, survival_functions: Any, X: CohortX) -> np.ndarray:
        """The cumulative incidence of progression ``[n, len(grid)]`` of a method whose
        progression survival functions (``predict_survival_function``'s step functions, deaths
        censored) of the points ``X`` are ``survival_functions``."""
        functions = list(survival_functions)
        death = self.death.cumulative_hazard(X, self.grid)
        out = np.empty((len(functions), len(self.grid)))
        for start in range(0, len(functions), _CHUNK):
            # No hazard before a curve's first step (survival_at would hold its first value there).
            chunk = functions[start : start + _CHUNK]
            survival = np.array(
                [np.where(self.grid < fn.x[0], 1.0, fn(np.clip(self.grid, fn.x[0], fn.x[-1]))) for fn in chunk]
            )
            hazard = -np.log(np.clip(survival, 1e-300, 1.0))
            out[start : start + len(survival)] = incidence_from_hazards(hazard, death[start : start + len(survival)])
        return out

    def at(self, incidence: np.ndarray, days: np.ndarray | float) -> np.ndarray:
        """Incidences on the grid ``[n, len(grid)]`` at ``days``: ``[n, len(days)]`` (``[n]`` for one)."""
        values = step_at(self.grid, incidence, np.atleast_1d(np.asarray(days, dtype=np.float64)))
        return values[:, 0] if np.ndim(days) == 0 else values


def incidence_by_horizon(model: Any, X: CohortX, days: np.ndarray, competing: CompetingScoring | None) -> np.ndarray:
    """A fitted model's predicted risk of progression by each of ``days`` ``[n, len(days)]``: one
    minus its survival where death censors (``competing`` is ``None``), else its cumulative
    incidence with death competing."""
    functions = model.predict_survival_function(X)
    if competing is None:
        return (1.0 - survival_at(functions, np.asarray(days, dtype=np.float64))).reshape(len(X), -1)
    return competing.at(competing.incidence(functions, X), np.asarray(days, dtype=np.float64))


__all__ = ["COMPETING_LINE", "CompetingScoring", "concordance_targets", "incidence_by_horizon"]
