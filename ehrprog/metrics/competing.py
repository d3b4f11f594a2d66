"""Metrics of progression with death competing: the cumulative incidence of progression, not one
minus a survival curve in which the dead could still progress.

Causes are coded as :func:`~ehrprog.cohorts.targets.competing_causes` codes them: 0 censored,
1 progression, 2 death; times in days.

* :func:`aalen_johansen`: the Aalen-Johansen cumulative incidence of progression (scikit-survival's
  ``cumulative_incidence_competing_risks``), the observed curve of evaluation and the report.
* :func:`wolbers_c`: Wolbers' concordance for a competing risk (Wolbers et al. 2009, Epidemiology
  20:555): a progression at ``T_i`` is comparable with every point still followed after ``T_i``
  and with every point whose follow-up ended in death before it (the dead never progress, so the
  one who progressed should rank higher). That is Harrell's C with deaths followed for ever.
* :func:`integrated_brier_competing`: the Brier score of predicted cumulative incidences,
  inverse-probability-of-censoring weighted (Graf et al. 1999's weights with the competing event
  as an observed outcome, as in Schoop et al. 2011), integrated over the evaluation times.
* :func:`incidence_calibration`: predicted against Aalen-Johansen observed incidence by a
  horizon, in risk deciles, and its integrated calibration index.
"""

from __future__ import annotations

import numpy as np

from ehrprog.metrics.concordance import concordance_counts
from ehrprog.metrics.survival import calibration_bins


def aalen_johansen(cause: np.ndarray, time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Aalen-Johansen cumulative incidence of progression (cause 1) with death (cause 2)
    competing: ``(times, incidence)``, both ``[k]`` over the distinct times (days), a step function.

    Where nothing died the estimate is one minus Kaplan-Meier (scikit-survival's estimator needs
    an event of every cause, so a cause with none is handled here).
    """
    from sksurv.nonparametric import cumulative_incidence_competing_risks, kaplan_meier_estimator

    cause, time = np.asarray(cause, dtype=np.int64), np.asarray(time, dtype=np.float64)
    if not (cause == 1).any():
        times = np.unique(time)
        return times, np.zeros(len(times))
    if not (cause == 2).any():
        times, survival = kaplan_meier_estimator(cause == 1, time)
        return times, 1.0 - survival
    times, incidence = cumulative_incidence_competing_risks(cause, time)
    return times, incidence[1]


def incidence_at(times: np.ndarray, incidence: np.ndarray, horizon: float) -> float:
    """A step function ``(times, incidence)`` (as :func:`aalen_johansen` returns it) at ``horizon``."""
    at = np.searchsorted(times, horizon, side="right") - 1
    return float(incidence[at]) if at >= 0 else 0.0


def wolbers_targets(cause: np.ndarray, time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(event, time)`` on which Harrell's C is Wolbers' C: progression the event, every death's
    time moved past every other time (the dead stay comparable, never progressing). Any
    Harrell's-C machinery (paired bootstrap intervals, subgroups) scores a competing risk on them."""
    cause, time = np.asarray(cause), np.asarray(time, dtype=np.float64)
    return cause == 1, np.where(cause == 2, np.max(time, initial=0.0) + 1.0, time)


def wolbers_c(cause: np.ndarray, time: np.ndarray, risk: np.ndarray) -> float:
    """Wolbers' concordance of ``risk`` ``[n]`` (higher = progression sooner) for progression with
    death competing: Harrell's C (ties in risk count one half) on :func:`wolbers_targets`, so a
    progression is compared with the deaths before it. Equal to Harrell's C where nobody died."""
    return concordance_counts(*wolbers_targets(cause, time), np.asarray(risk, dtype=np.float64)).c_index


def _censoring_survival(cause: np.ndarray, time: np.ndarray):
    """``G(t)``, the Kaplan-Meier probability of not yet being censored, as a callable of days
    (``left=True``: just before ``t``)."""
    from sksurv.nonparametric import kaplan_meier_estimator

    times, survival = kaplan_meier_estimator(np.asarray(cause) == 0, np.asarray(time, dtype=np.float64))

    def at(t: np.ndarray, left: bool = False) -> np.ndarray:
        index = np.searchsorted(times, t, side="left" if left else "right") - 1
        return np.where(index >= 0, survival[np.maximum(index, 0)], 1.0)

    return at


def brier_competing(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    incidence: np.ndarray,
    times: np.ndarray,
) -> np.ndarray:
    """The Brier score of predicted cumulative incidences of progression ``[n, len(times)]`` at
    each of ``times`` (days): ``mean_i w_i(t) (1{T_i <= t, progression} - F_i(t))^2`` with
    ``w_i(t) = 1/G(T_i-)`` for a follow-up ended by either cause by ``t``, ``1/G(t)`` for one still
    followed at ``t`` and 0 for one censored before ``t``; ``G`` is the censoring distribution of
    ``train`` (``(cause, time)``)."""
    cause, time = np.asarray(test[0]), np.asarray(test[1], dtype=np.float64)
    G = _censoring_survival(*train)
    times = np.asarray(times, dtype=np.float64)
    ended = (time[:, None] <= times[None, :]) & (cause[:, None] != 0)
    followed = time[:, None] > times[None, :]
    g_end = np.maximum(G(time, left=True), 1e-12)[:, None]
    g_now = np.maximum(G(times), 1e-12)[None, :]
    weight = np.where(ended, 1.0 / g_end, np.where(followed, 1.0 / g_now, 0.0))
    observed = (time[:, None] <= times[None, :]) & (cause[:, None] == 1)
    return np.mean(weight * (observed - np.asarray(incidence, dtype=np.float64)) ** 2, axis=0)


def integrated_brier_competing(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    incidence: np.ndarray,
    times: np.ndarray,
) -> float:
    """:func:`brier_competing` integrated over ``times`` (trapezoid rule, divided by the span),
    as scikit-survival integrates its Brier score."""
    times = np.asarray(times, dtype=np.float64)
    scores = brier_competing(train, test, incidence, times)
    if len(times) < 2:
        return float(scores[0])
    return float(np.trapezoid(scores, times) / (times[-1] - times[0]))


def incidence_calibration(
    cause: np.ndarray, time: np.ndarray, predicted: np.ndarray, horizon: float, n_bins: int = 10
) -> dict[str, np.ndarray | float]:
    """Calibration of predicted cumulative incidences of progression by ``horizon`` (days):
    quantile bins of ``predicted`` (:func:`~ehrprog.metrics.survival.calibration_bins`), the
    observed incidence of each bin its Aalen-Johansen estimate. Returns ``predicted``,
    ``observed`` and ``count`` per bin and ``ici`` (the bin-size-weighted mean absolute
    difference)."""
    cause, time = np.asarray(cause), np.asarray(time, dtype=np.float64)
    return calibration_bins(
        predicted, lambda members: incidence_at(*aalen_johansen(cause[members], time[members]), horizon), n_bins
    )


__all__ = [
    "aalen_johansen",
    "brier_competing",
    "incidence_at",
    "incidence_calibration",
    "integrated_brier_competing",
    "wolbers_c",
    "wolbers_targets",
]
