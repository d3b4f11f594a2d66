"""Progression with death competing: models of the cumulative incidence of progression.

With death competing, the probability of progressing by ``t`` is the cumulative incidence
``F1(t | x) = integral_0^t S(u- | x) dH1(u | x)``, where ``H1`` is the cause-specific cumulative
hazard of progression (what a model trained with deaths censored estimates) and
``S = exp(-(H1 + H2))`` the probability of neither event yet (``H2``: death's). One minus a
progression-only survival curve overstates it wherever deaths are common: it counts the dead as
still able to progress.

* :func:`~ehrprog.models.incidence.incidence_from_hazards`: ``F1`` from both cumulative hazards
  on one time grid (:mod:`ehrprog.models.incidence`).
* :class:`CauseSpecificCox`: a ridge Cox of each cause on the history features (progression's with
  deaths censored, death's with progressions censored), combined by :func:`incidence_from_hazards`.
* :class:`FineGrayCox`: the Fine-Gray subdistribution hazards model (Fine & Gray 1999, JASA
  94:496), fitted here by Newton-Raphson on its inverse-probability-of-censoring weighted partial
  likelihood with a ridge penalty (no well-kept Python library has it: scikit-survival and
  lifelines do not; R's ``cmprsk::crr`` is the reference). Its coefficients act on the incidence
  directly: ``F1(t | x) = 1 - exp(-H10(t) exp(x b))``.

Targets are a cohort's ``y`` with a ``death`` column (``CKDProgression(death="competing")``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from ehrprog.cohorts.cohort import CohortX
from ehrprog.cohorts.targets import DEATH, PROGRESSION, check_survival_targets, competing_causes, split_targets
from ehrprog.features.history import HistoryFeatures
from ehrprog.metrics import wolbers_c
from ehrprog.models.baselines import CoxBaseline
from ehrprog.models.incidence import incidence_from_hazards, step_at


def _competing_targets(X: CohortX, y: Any) -> tuple[np.ndarray, np.ndarray]:
    causes = competing_causes(y, len(X))
    if causes is None:
        raise ValueError(
            "y has no 'death' column: a competing-risk model needs to know whose follow-up ended in death "
            "(build the cohort with CKDProgression(death='competing'))"
        )
    _, event, time = split_targets(y, len(X))
    check_survival_targets(event, time)
    return causes, time


class CauseSpecificCox(BaseEstimator):
    """A ridge Cox model of each cause on the history features (:class:`CoxBaseline`):
    progression's with deaths censored, death's with progressions censored. ``predict`` is the
    progression model's risk score; :meth:`predict_cumulative_incidence` combines both hazards."""

    def __init__(self, max_codes: int = 50, alpha: float = 1.0) -> None:
        self.max_codes = max_codes
        self.alpha = alpha

    def fit(self, X: CohortX, y: Any) -> CauseSpecificCox:
        causes, time = _competing_targets(X, y)
        self.progression_ = CoxBaseline(self.max_codes, self.alpha)._fit_arrays(X, causes == PROGRESSION, time)
        self.death_ = CoxBaseline(self.max_codes, self.alpha)._fit_arrays(X, causes == DEATH, time)
        self.grid_ = np.union1d(self.progression_.event_times_, self.death_.event_times_)
        return self

    @property
    def inputs_(self) -> str:
        return self.progression_.inputs_

    def predict(self, X: CohortX) -> np.ndarray:
        """The progression model's risk score ``[n]`` (higher = sooner)."""
        return self.progression_.predict(X)

    def cumulative_hazards(self, X: CohortX, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Both causes' cumulative hazards ``[n, len(grid)]`` at ``grid`` (days)."""
        return self.progression_.cumulative_hazard(X, grid), self.death_.cumulative_hazard(X, grid)

    def predict_cumulative_incidence(self, X: CohortX, times: np.ndarray) -> np.ndarray:
        """``F1(t | x)`` ``[n, len(times)]`` at ``times`` (days)."""
        check_is_fitted(self, "grid_")
        incidence = incidence_from_hazards(*self.cumulative_hazards(X, self.grid_))
        return step_at(self.grid_, incidence, times)

    def score(self, X: CohortX, y: Any) -> float:
        """Wolbers' C of :meth:`predict` (:func:`~ehrprog.metrics.wolbers_c`)."""
        return wolbers_c(*_competing_targets(X, y), self.predict(X))


def fine_gray(
    table: np.ndarray, cause: np.ndarray, time: np.ndarray, alpha: float = 1.0, max_iter: int = 50, tol: float = 1e-9
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fine-Gray coefficients and baseline on a standardised ``table`` ``[n, p]``: ``(coef [p],
    event_times [k], cumulative baseline subdistribution hazard [k])``.

    The risk set of a progression at ``t`` holds every point still followed at ``t`` (weight 1)
    and every point whose follow-up ended in death before ``t``, weighted ``G(t-)/G(T_j-)`` (``G``:
    the Kaplan-Meier probability of not being censored); Breslow ties. Maximises the weighted
    partial log-likelihood less ``alpha/2 |b|^2`` (scikit-survival's ridge Cox penalty) by
    Newton-Raphson with step halving, from zero. Cost ``O(n p^2)`` a step: the Hessian's first term
    is ``X' diag(e c) X`` with one weight ``c_j`` per point, summed over the event times by
    cumulative sums.
    """
    from sksurv.nonparametric import kaplan_meier_estimator

    table = np.asarray(table, dtype=np.float64)
    cause, time = np.asarray(cause), np.asarray(time, dtype=np.float64)
    p = table.shape[1]
    censor_times, censor_survival = kaplan_meier_estimator(cause == 0, time)

    def G_before(t: np.ndarray) -> np.ndarray:
        index = np.searchsorted(censor_times, t, side="left") - 1
        return np.maximum(np.where(index >= 0, censor_survival[np.maximum(index, 0)], 1.0), 1e-12)

    event_times, d = np.unique(time[cause == PROGRESSION], return_counts=True)
    x_event_sum = np.array([table[(cause == PROGRESSION) & (time == t)].sum(axis=0) for t in event_times])
    order = np.argsort(time, kind="stable")
    sorted_time = time[order]
    # Points followed at t_k: those with T_j >= t_k, a suffix of the sorted times.
    followed_from = np.searchsorted(sorted_time, event_times, side="left")
    dead = np.flatnonzero(cause == DEATH)
    dead = dead[np.argsort(time[dead], kind="stable")]
    dead_time, g_dead = time[dead], G_before(time[dead])
    # Deaths before t_k: a prefix of the deaths sorted by time.
    dead_before = np.searchsorted(dead_time, event_times, side="left")
    g_event = G_before(event_times)

    def sums(beta: np.ndarray):
        e = np.exp(np.clip(table @ beta, -50, 50))
        ex = table * e[:, None]
        tail0 = np.concatenate([np.cumsum(e[order][::-1])[::-1], [0.0]])
        tail1 = np.concatenate([np.cumsum(ex[order][::-1], axis=0)[::-1], np.zeros((1, p))])
        head0 = np.concatenate([[0.0], np.cumsum(e[dead] / g_dead)])
        head1 = np.concatenate([np.zeros((1, p)), np.cumsum(ex[dead] / g_dead[:, None], axis=0)])
        s0 = tail0[followed_from] + g_event * head0[dead_before]
        s1 = tail1[followed_from] + g_event[:, None] * head1[dead_before]
        return e, s0, s1

    def objective(beta: np.ndarray) -> float:
        _, s0, _ = sums(beta)
        return float(x_event_sum.sum(axis=0) @ beta - d @ np.log(s0) - 0.5 * alpha * beta @ beta)

    beta = np.zeros(p)
    current = objective(beta)
    for _ in range(max_iter):
        e, s0, s1 = sums(beta)
        mean = s1 / s0[:, None]
        gradient = x_event_sum.sum(axis=0) - d @ mean - alpha * beta
        # c_j = sum_k d_k w_jk / s0_k: the followed part (t_k <= T_j) and the dead part (t_k > T_j).
        ratio = d / s0
        c = np.concatenate([[0.0], np.cumsum(ratio)])[np.searchsorted(event_times, time, side="right")]
        later = np.concatenate([np.cumsum((ratio * g_event)[::-1])[::-1], [0.0]])
        c[dead] += later[np.searchsorted(event_times, time[dead], side="right")] / g_dead
        hessian = (table * (e * c)[:, None]).T @ table - (mean * d[:, None]).T @ mean + alpha * np.eye(p)
        step = np.linalg.solve(hessian, gradient)
        size = 1.0
        while size > 1e-4:
            candidate = beta + size * step
            value = objective(candidate)
            if value >= current - 1e-12:
                break
            size /= 2
        beta, improvement, current = candidate, value - current, value
        if abs(improvement) < tol * max(1.0, abs(current)):
            break
    _, s0, _ = sums(beta)
    return beta, event_times.astype(np.float64), np.cumsum(d / s0)


class FineGrayCox(BaseEstimator):
    """The Fine-Gray subdistribution hazards model (:func:`fine_gray`) on the history features
    (:class:`~ehrprog.features.history.HistoryFeatures`, standardised; small ridge): the
    cumulative incidence of progression with death competing, ``1 - exp(-H10(t) exp(x b))``."""

    def __init__(self, max_codes: int = 50, alpha: float = 1.0) -> None:
        self.max_codes = max_codes
        self.alpha = alpha

    def fit(self, X: CohortX, y: Any) -> FineGrayCox:
        causes, time = _competing_targets(X, y)
        self.features_ = HistoryFeatures(self.max_codes)
        self.scaler_ = StandardScaler()
        table = self.scaler_.fit_transform(self.features_.fit_transform(X))
        self.coef_, self.event_times_, self.cumulative_baseline_hazard_ = fine_gray(table, causes, time, self.alpha)
        return self

    @property
    def inputs_(self) -> str:
        return self.features_.inputs_

    def predict(self, X: CohortX) -> np.ndarray:
        """The linear predictor ``x b`` ``[n]`` (higher = progression sooner)."""
        check_is_fitted(self, "coef_")
        return self.scaler_.transform(self.features_.transform(X)) @ self.coef_

    def predict_cumulative_incidence(self, X: CohortX, times: np.ndarray) -> np.ndarray:
        """``F1(t | x)`` ``[n, len(times)]`` at ``times`` (days)."""
        hazard = step_at(self.event_times_, self.cumulative_baseline_hazard_, times)
        return 1.0 - np.exp(-np.outer(np.exp(self.predict(X)), hazard))

    def score(self, X: CohortX, y: Any) -> float:
        """Wolbers' C of :meth:`predict` (:func:`~ehrprog.metrics.wolbers_c`)."""
        return wolbers_c(*_competing_targets(X, y), self.predict(X))


__all__ = ["CauseSpecificCox", "FineGrayCox", "fine_gray"]
