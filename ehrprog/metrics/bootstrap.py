"""Subject-level bootstrap intervals of Harrell's C and of the differences between methods scored
on the same points (:func:`paired_bootstrap_c`)."""

from __future__ import annotations

import numpy as np


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
