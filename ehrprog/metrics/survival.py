"""Metrics as the field reports them, on plain arrays.

Discrimination for stage: macro one-vs-rest AUROC, quadratic weighted kappa; calibration:
expected calibration error. Survival: Harrell's C, Uno's C, cumulative/dynamic time-dependent
AUC and the integrated Brier score. Survival metrics delegate to scikit-survival's reference
implementations, so figures match what a reviewer computes with it; inputs are times in days and
event indicators. :func:`paired_bootstrap_c` gives subject-level bootstrap intervals of Harrell's
C and of the differences between methods scored on the same points.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from sklearn.metrics import cohen_kappa_score, roc_auc_score
from sksurv.metrics import (
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.util import Surv


def macro_auroc(y_true: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float:
    """Macro one-vs-rest AUROC over the classes present in ``y_true`` (and in ``classes``).

    Args:
        y_true: true labels ``[n]``.
        proba: predicted probabilities ``[n, len(classes)]``.
        classes: the label of each column of ``proba``.
    """
    y_true = np.asarray(y_true)
    classes = np.asarray(classes)
    aucs = []
    for column, label in enumerate(classes):
        positive = y_true == label
        if positive.all() or not positive.any():
            continue  # undefined for a class that is absent (or alone) in y_true
        aucs.append(roc_auc_score(positive, proba[:, column]))
    if not aucs:
        raise ValueError("macro AUROC needs at least two classes in y_true")
    return float(np.mean(aucs))


def quadratic_weighted_kappa(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Cohen's kappa with quadratic weights, for ordinal stages."""
    return float(cohen_kappa_score(y_true, y_pred, weights="quadratic"))


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, classes: np.ndarray, n_bins: int = 10) -> float:
    """Top-label expected calibration error: ``sum_b |B_b|/n * |accuracy(B_b) - confidence(B_b)|``
    over ``n_bins`` equal-width confidence bins."""
    confidence = proba.max(axis=1)
    correct = np.asarray(classes)[proba.argmax(axis=1)] == np.asarray(y_true)
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        in_bin = bins == b
        total += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(total)


def harrell_c(event: np.ndarray, time: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's concordance index (ties in risk count one half), as scikit-survival computes it."""
    return float(concordance_index_censored(np.asarray(event, bool), np.asarray(time, float), np.asarray(risk))[0])


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

    event, time, predicted = np.asarray(event, bool), np.asarray(time, float), np.asarray(predicted, float)
    from scipy.stats import rankdata

    # Quantile bins by rank; tied predictions share their average rank and so one bin.
    group = np.minimum(((rankdata(predicted) - 0.5) * n_bins / len(predicted)).astype(int), n_bins - 1)
    mean_predicted, observed, count = [], [], []
    for g in np.unique(group):
        members = group == g
        times, survival = kaplan_meier_estimator(event[members], time[members])
        at = np.searchsorted(times, horizon, side="right") - 1
        observed.append(1.0 - (survival[at] if at >= 0 else 1.0))
        mean_predicted.append(predicted[members].mean())
        count.append(int(members.sum()))
    mean_predicted, observed, count = np.array(mean_predicted), np.array(observed), np.array(count)
    ici = float(np.sum(count * np.abs(mean_predicted - observed)) / count.sum())
    return {"predicted": mean_predicted, "observed": observed, "count": count, "ici": ici}


def _surv(event: np.ndarray, time: np.ndarray) -> np.ndarray:
    return Surv.from_arrays(np.asarray(event, bool), np.asarray(time, float))


def _subject_pair_sums(
    event: np.ndarray, time: np.ndarray, risks: list[np.ndarray], subject: np.ndarray, n_subjects: int, tol: float
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Harrell's comparable pairs and concordance summed per pair of subjects.

    A pair (i, j) is comparable when i had the event and ``t_j > t_i`` (or ``t_j == t_i`` and j
    is censored), as scikit-survival counts them; it scores 1 when ``r_i > r_j`` and 0.5 when the
    risks tie (within ``tol``). Returns ``D [S, S]`` (comparable pairs, row = the subject of i)
    and one ``N [S, S]`` per risk (concordance).
    """
    order = np.argsort(subject, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(subject[order]) != 0])
    owners = subject[order][starts]
    t, e = time[order], event[order]
    ranked = [np.asarray(r, np.float64)[order] for r in risks]
    comparable_sum = np.zeros((n_subjects, n_subjects))
    concordant_sums = [np.zeros((n_subjects, n_subjects)) for _ in risks]
    events = np.flatnonzero(e)
    for chunk in np.array_split(events, max(1, len(events) // 256)):
        ti = t[chunk][:, None]
        comparable = (t[None, :] > ti) | ((t[None, :] == ti) & ~e[None, :])
        rows = subject[order][chunk]
        reduced = np.zeros((len(chunk), n_subjects))
        reduced[:, owners] = np.add.reduceat(comparable.astype(np.float64), starts, axis=1)
        np.add.at(comparable_sum, rows, reduced)
        for r, target in zip(ranked, concordant_sums, strict=True):
            diff = r[chunk][:, None] - r[None, :]
            score = np.where(np.abs(diff) <= tol, 0.5, (diff > 0).astype(np.float64)) * comparable
            reduced[:, owners] = np.add.reduceat(score, starts, axis=1)
            np.add.at(target, rows, reduced)
    return comparable_sum, concordant_sums


def paired_bootstrap_c(
    event: np.ndarray,
    time: np.ndarray,
    risks: dict[str, np.ndarray],
    groups: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    tol: float = 1e-8,
) -> dict[str, np.ndarray]:
    """Harrell's C of each risk on bootstrap resamples of subjects, all methods on the same resamples.

    Subjects (``groups``: one id per point) are drawn with replacement, ``n_boot`` times; a subject
    drawn k times weighs k in every pair it is part of. The pairs are counted once per pair of
    subjects (``[S, S]`` matrices), so each resample costs two matrix products, not a pass over
    the points. With every subject once this is exactly :func:`harrell_c`.

    Args:
        event: ``[n]`` event indicators.
        time: ``[n]`` times to event or censoring (days).
        risks: ``[n]`` risk scores per method (higher = sooner), on the same points.
        groups: ``[n]`` subject ids.
        n_boot: resamples.
        seed: seeds the resampling.

    Returns:
        Per method, ``[n_boot]`` C-indices; differences of two methods' arrays are paired
        bootstrap differences (take their 2.5 and 97.5 percentiles for a 95% interval).
    """
    event = np.asarray(event, bool)
    _, subject = np.unique(np.asarray(groups), return_inverse=True)
    n_subjects = int(subject.max()) + 1
    names = list(risks)
    comparable, concordant = _subject_pair_sums(
        event, np.asarray(time, np.float64), [risks[n] for n in names], subject, n_subjects, tol
    )
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_subjects, np.full(n_subjects, 1.0 / n_subjects), size=n_boot).astype(np.float64)
    denominator = ((weights @ comparable) * weights).sum(axis=1)
    return {
        name: ((weights @ numerator) * weights).sum(axis=1) / denominator
        for name, numerator in zip(names, concordant, strict=True)
    }


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap ``values``."""
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)
