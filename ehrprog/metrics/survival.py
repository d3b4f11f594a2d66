"""Survival metrics, delegated to scikit-survival's reference implementations (figures match what
a reviewer computes with it): Harrell's C (counted as scikit-survival counts it, in ``O(n log² n)``:
:mod:`ehrprog.metrics.concordance`), Uno's C, cumulative/dynamic time-dependent AUC, the
integrated Brier score and survival calibration; times in days, event indicators."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from sksurv.metrics import (
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.util import Surv

from ehrprog.metrics.concordance import concordance_counts


def harrell_c(event: np.ndarray, time: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's concordance index (ties in risk count one half), equal to scikit-survival's
    ``concordance_index_censored`` (:func:`~ehrprog.metrics.concordance.concordance_counts`:
    0.8 s for 830,000 points, where scikit-survival's pairwise masks take minutes)."""
    return concordance_counts(event, time, risk).c_index


def uno_c(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    risk: np.ndarray,
    tau: float | None = None,
) -> float:
    """Uno's IPCW concordance; ``train``/``test`` are ``(event, time)`` pairs (the censoring
    distribution is estimated on ``train``)."""
    return float(concordance_index_ipcw(_surv(*train), _surv(*test), np.asarray(risk), tau=tau)[0])


def _within_training_follow_up(
    train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], times: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Test ``(event, time)`` with times past the training follow-up held just below its end.

    scikit-survival estimates the censoring distribution G on the training times and evaluates it
    at every test time, refusing test times past the training maximum. A test point observed past
    every evaluation time only ever enters through G at the evaluation times (it is still at risk
    at each of them), so holding its time anywhere between the last evaluation time and the
    training maximum changes no score: this lets held-out subjects followed longer than every
    training subject be scored."""
    event, time = np.asarray(test[0]), np.asarray(test[1], float)
    end = float(np.max(train[1]))
    if time.max() < end:
        return event, time
    if np.max(times) >= end - 0.5:
        raise ValueError(f"evaluation times must end before the training follow-up ({end:g})")
    return event, np.minimum(time, end - 0.5)


def time_dependent_auc(
    train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], risk: np.ndarray, times: np.ndarray
) -> tuple[np.ndarray, float]:
    """Cumulative/dynamic AUC at ``times`` (days) and its mean, as scikit-survival computes it
    (test times past the training follow-up held inside it: see :func:`integrated_brier`)."""
    test = _within_training_follow_up(train, test, np.asarray(times))
    auc, mean = cumulative_dynamic_auc(_surv(*train), _surv(*test), np.asarray(risk), np.asarray(times))
    return auc, float(mean)


def integrated_brier(
    train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], survival: np.ndarray, times: np.ndarray
) -> float:
    """Integrated Brier score of survival probabilities ``[n, len(times)]`` over ``times`` (days),
    as scikit-survival computes it (IPCW, censoring from ``train``). Test points observed past the
    training follow-up are scored too: they are at risk at every evaluation time, so their time is
    held just inside it, which changes no term of the score."""
    test = _within_training_follow_up(train, test, np.asarray(times))
    return float(integrated_brier_score(_surv(*train), _surv(*test), survival, np.asarray(times)))


def evaluation_times(train_time: np.ndarray, test_time: np.ndarray, n: int = 20) -> np.ndarray:
    """A grid of ``n`` times (days) inside the follow-up of both sets, where IPCW metrics are
    defined: from the 10th to the 80th percentile of the test times, below both sets' maxima."""
    low, high = np.percentile(np.asarray(test_time, float), [10, 80])
    high = min(high, np.max(train_time) - 1, np.max(test_time) - 1)
    return np.unique(np.linspace(low, high, n).round())


def survival_at(functions: Iterable, times: float | np.ndarray) -> np.ndarray:
    """Each survival step function (scikit-survival's ``StepFunction``) at ``times`` (days), held
    flat outside its support (before the first and after the last event time it knows): ``[n]``
    for one time, ``[n, len(times)]`` for an array."""
    return np.array([fn(np.clip(times, fn.x[0], fn.x[-1])) for fn in functions])


def survival_calibration(
    event: np.ndarray, time: np.ndarray, predicted: np.ndarray, horizon: float, n_bins: int = 10
) -> dict[str, np.ndarray | float]:
    """Calibration of predicted risks of an event by ``horizon`` (the time unit of ``time``).

    Points are grouped into ``n_bins`` quantile bins (by rank, ties together) of ``predicted``
    (the predicted probability of the event by ``horizon``, ``1 - S(horizon)``); in each bin the
    observed risk is the
    Kaplan-Meier estimate ``1 - KM(horizon)`` of that bin (censoring handled as the field does,
    e.g. in Austin et al. 2020's calibration curves, by grouping). Returns ``predicted`` and
    ``observed`` per bin, ``count`` per bin, and ``ici``: the bin-size-weighted mean absolute
    difference (the integrated calibration index over the bins).
    """
    from sksurv.nonparametric import kaplan_meier_estimator

    event, time = np.asarray(event, bool), np.asarray(time, float)

    def observed(members: np.ndarray) -> float:
        times, survival = kaplan_meier_estimator(event[members], time[members])
        at = np.searchsorted(times, horizon, side="right") - 1
        return 1.0 - (survival[at] if at >= 0 else 1.0)

    return calibration_bins(predicted, observed, n_bins)


def calibration_bins(
    predicted: np.ndarray, observed: Callable[[np.ndarray], float], n_bins: int = 10
) -> dict[str, np.ndarray | float]:
    """Predicted risks against ``observed(members)`` (the observed risk of the points of a boolean
    mask) in ``n_bins`` quantile bins of ``predicted`` (by rank; tied predictions share their
    average rank and so one bin): ``predicted``, ``observed`` and ``count`` per bin, and ``ici``
    (the bin-size-weighted mean absolute difference)."""
    from scipy.stats import rankdata

    predicted = np.asarray(predicted, float)
    group = np.minimum(((rankdata(predicted) - 0.5) * n_bins / len(predicted)).astype(int), n_bins - 1)
    mean_predicted, seen, count = [], [], []
    for g in np.unique(group):
        members = group == g
        seen.append(observed(members))
        mean_predicted.append(predicted[members].mean())
        count.append(int(members.sum()))
    mean_predicted, seen, count = np.array(mean_predicted), np.array(seen), np.array(count)
    ici = float(np.sum(count * np.abs(mean_predicted - seen)) / count.sum())
    return {"predicted": mean_predicted, "observed": seen, "count": count, "ici": ici}


def _surv(event: np.ndarray, time: np.ndarray) -> np.ndarray:
    return Surv.from_arrays(np.asarray(event, bool), np.asarray(time, float))
