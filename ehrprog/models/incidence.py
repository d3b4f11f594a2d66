"""The cumulative incidence of progression with death competing, from the two causes' cumulative
hazards: ``F1(t | x) = integral_0^t S(u- | x) dH1(u | x)`` with ``S = exp(-(H1 + H2))``. Numpy only:
the estimator, the competing-risk baselines (:mod:`ehrprog.models.competing`) and evaluation share it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Rows whose incidences are computed at once in :func:`incidence_from_hazards` (its memory:
#: ~5 arrays of this many rows by the grid's length).
INCIDENCE_CHUNK = 2_000


def incidence_from_hazards(progression: np.ndarray, death: np.ndarray) -> np.ndarray:
    """The cumulative incidence of progression ``[n, g]`` on a time grid, from the cumulative
    hazards of progression and of death ``[n, g]`` on that grid (non-decreasing along it).

    Each step of the grid adds ``S(t_{l-1}) (dH1 / dH) (1 - exp(-dH))`` (``dH = dH1 + dH2``, the
    step's increments; ``S = exp(-(H1 + H2))``, 1 before the grid): the chance of leaving in the
    step times the share of progression in it, exact for hazards constant within each step. With no
    death it telescopes to ``1 - exp(-H1)``, the model's own one minus survival; with death it is
    never above that.
    """
    progression, death = np.asarray(progression, dtype=np.float64), np.asarray(death, dtype=np.float64)
    out = np.empty_like(progression)
    for start in range(0, len(progression), INCIDENCE_CHUNK):
        h1, h2 = progression[start : start + INCIDENCE_CHUNK], death[start : start + INCIDENCE_CHUNK]
        before = np.concatenate([np.ones((len(h1), 1)), np.exp(-(h1 + h2))[:, :-1]], axis=1)
        d1 = np.maximum(np.diff(h1, axis=1, prepend=0.0), 0.0)
        d = d1 + np.maximum(np.diff(h2, axis=1, prepend=0.0), 0.0)
        share = np.divide(d1, d, out=np.zeros_like(d1), where=d > 0)
        out[start : start + len(h1)] = np.cumsum(before * share * -np.expm1(-d), axis=1)
    return out


def incidence_at(
    progression_survival: Callable[[slice], np.ndarray],
    death_risk: np.ndarray,
    death_baseline: np.ndarray,
    grid: np.ndarray,
    days: np.ndarray,
) -> np.ndarray:
    """The cumulative incidence of progression ``[n, len(days)]`` at ``days``, rows a chunk at a
    time (memory: ``INCIDENCE_CHUNK`` rows by the grid, never every point by the grid).

    Args:
        progression_survival: ``rows`` (a slice) -> the progression-free survival of those points
            on ``grid`` ``[rows, len(grid)]`` (deaths censored: the cause-specific curve).
        death_risk: ``[n]`` log relative hazard of death; ``death_baseline``: ``H20`` on ``grid``.
        grid: days, holding every step of both cumulative hazards.
    """
    n = len(death_risk)
    days = np.atleast_1d(np.asarray(days, dtype=np.float64))
    out = np.empty((n, len(days)))
    for start in range(0, n, INCIDENCE_CHUNK):
        rows = slice(start, min(n, start + INCIDENCE_CHUNK))
        progression = -np.log(np.clip(progression_survival(rows), 1e-300, 1.0))
        death = np.outer(np.exp(death_risk[rows]), death_baseline)
        out[rows] = step_at(grid, incidence_from_hazards(progression, death), days)
    return out


def step_at(times: np.ndarray, values: np.ndarray, at: np.ndarray, before: float = 0.0) -> np.ndarray:
    """Right-continuous step functions ``values`` ``[..., k]`` over ``times`` ``[k]`` at ``at``
    ``[m]``: ``[..., m]``, ``before`` where ``at`` precedes the first time."""
    index = np.searchsorted(np.asarray(times), np.asarray(at, dtype=np.float64), side="right") - 1
    padded = np.concatenate([np.full((*values.shape[:-1], 1), before), values], axis=-1)
    return padded[..., index + 1]


__all__ = ["INCIDENCE_CHUNK", "incidence_at", "incidence_from_hazards", "step_at"]
