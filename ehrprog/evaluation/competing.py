"""Scoring with death competing (a cohort built with ``death="competing"``: its ``y`` has ``death``).

Every survival method in the comparison is trained with deaths censored, so what it estimates is
the cause-specific hazard of progression. :class:`CompetingScoring` turns each method's
progression curve into the cumulative incidence of progression with one shared model of death (the
estimator's own, :class:`~ehrprog.models.death.DeathHazard`, else a ridge Cox of death on the
history features), so the methods differ only in their progression part; the Fine-Gray baseline
models the incidence itself.
The observed side is Aalen-Johansen; concordance is Wolbers' C (:mod:`ehrprog.metrics.competing`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from ehrprog.cohorts.cohort import CohortX
from ehrprog.cohorts.targets import DEATH, competing_causes
from ehrprog.metrics import survival_at, wolbers_targets
from ehrprog.models.baselines import CoxBaseline
from ehrprog.models.incidence import incidence_at

#: The line under a comparison table scored with death competing.
COMPETING_LINE = (
    "death competes: C-index is Wolbers' (a progression ranks above the deaths before it), IBS and ICI are of the "
    "cumulative incidence of progression (Aalen-Johansen observed); each model's progression hazard is combined "
    "with one shared model of death"
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
        death_risk: the points ``X`` -> their log relative hazard of death ``[len(X)]``.
        death_baseline: days -> the baseline cumulative hazard of death there.
        grid: days; every distinct training time of a progression or a death (every step of a
            Breslow curve fitted on these points lies on it).
        causes: the training points' causes (0/1/2) and ``times`` (days): the censoring
            distribution of the Brier score.
        source: what the death model is, in words (for the line under the table).
    """

    death_risk: Callable[[CohortX], np.ndarray]
    death_baseline: Callable[[np.ndarray], np.ndarray]
    grid: np.ndarray
    causes: np.ndarray
    times: np.ndarray
    source: str

    @classmethod
    def fit(cls, X: CohortX, y: pl.DataFrame, model: Any = None) -> CompetingScoring | None:
        """The death model of the fitted estimator ``model`` where it has one (``death_``), else a
        ridge Cox of death on the history features fitted on the training points ``X``; ``None``
        where ``y`` has no ``death`` column (death censors) or no training point ended in death."""
        causes = competing_causes(y, len(X))
        if causes is None or not (causes == DEATH).any():
            return None
        times = y["time_to_event_days"].to_numpy().astype(float)
        grid = np.unique(times[causes != 0])
        own = getattr(model, "death_", None)
        if own is not None:
            return cls(
                lambda points: own.risk(model.tabular_, points), own.baseline_at, grid, causes, times,
                "the model's own Cox model of death, on its clinical table",
            )  # fmt: skip
        death = CoxBaseline()._fit_arrays(X, causes == DEATH, times)
        return cls(
            death.predict, death.breslow_.baseline_at, grid, causes, times,
            "one Cox model of death on the history features",
        )  # fmt: skip

    def incidence(self, survival_functions: Any, X: CohortX, days: np.ndarray) -> np.ndarray:
        """The cumulative incidence of progression at ``days`` ``[n, len(days)]`` of a method whose
        progression survival functions (``predict_survival_function``'s step functions, deaths
        censored) of the points ``X`` are ``survival_functions``: combined with the death model."""
        functions = list(survival_functions)
        grid = self.grid

        def survival(rows: slice) -> np.ndarray:
            # No hazard before a curve's first step (survival_at would hold its first value there).
            return np.array(
                [np.where(grid < fn.x[0], 1.0, fn(np.clip(grid, fn.x[0], fn.x[-1]))) for fn in functions[rows]]
            )

        return incidence_at(survival, self.death_risk(X), self.death_baseline(grid), grid, days)

    def line(self) -> str:
        """The line under a table scored with death competing."""
        return f"{COMPETING_LINE} ({self.source})"


def incidence_by_horizon(model: Any, X: CohortX, days: np.ndarray, competing: CompetingScoring | None) -> np.ndarray:
    """A fitted model's predicted risk of progression by each of ``days`` ``[n, len(days)]``: one
    minus its survival where death censors (``competing`` is ``None``), else its cumulative
    incidence with death competing."""
    functions = model.predict_survival_function(X)
    if competing is None:
        return (1.0 - survival_at(functions, np.asarray(days, dtype=np.float64))).reshape(len(X), -1)
    return competing.incidence(functions, X, np.asarray(days, dtype=np.float64))


__all__ = ["COMPETING_LINE", "CompetingScoring", "concordance_targets", "incidence_by_horizon"]
