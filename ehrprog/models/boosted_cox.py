"""Gradient-boosted Cox (XGBoost ``survival:cox``) tuned by a small grid over subject folds of the
training points, with a Breslow baseline hazard for survival functions.

The grid is searched the way a careful analyst would on the training subjects only: for each
setting of the other parameters, one booster of the largest ``n_estimators`` is fitted per fold
and scored (Harrell's C on the fold's held-out subjects) at every ``n_estimators`` of the grid
(XGBoost's ``iteration_range``), so a grid of tree counts costs one fit. The best setting (mean C
over folds) is refitted on every training point.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from sklearn.model_selection import GroupKFold

from ehrprog.metrics import harrell_c
from ehrprog.models.breslow import BreslowSurvival

DEFAULT_GRID: dict[str, list[Any]] = {"max_depth": [2, 4], "n_estimators": [200, 500]}
"""The default grid: shallow and deeper trees, fewer and more of them."""
DEFAULT_PARAMS: dict[str, Any] = {
    "learning_rate": 0.05,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "min_child_weight": 5.0,
    "reg_lambda": 1.0,
}
"""XGBoost settings the grid does not name."""


def cox_label(event: np.ndarray, time: np.ndarray) -> np.ndarray:
    """XGBoost's Cox label: the time, negative when censored."""
    return np.where(np.asarray(event, dtype=bool), time, -time).astype(np.float64)


def cox_booster(params: dict[str, Any], seed: int):
    """An XGBoost regressor under the Cox partial likelihood (``survival:cox``, histogram trees,
    every core) with ``params``."""
    from xgboost import XGBRegressor

    return XGBRegressor(objective="survival:cox", tree_method="hist", random_state=seed, n_jobs=0, **params)


class TunedBoostedCox:
    """XGBoost Cox on a feature matrix (dense or SciPy sparse) ``[n, F]``, tuned over subject folds.

    Args:
        param_grid: lists of values per XGBoost parameter (``n_estimators`` is searched at no
            extra cost); ``None`` = :data:`DEFAULT_GRID`.
        params: fixed XGBoost parameters (over :data:`DEFAULT_PARAMS`).
        cv: subject folds of the search (fewer when there are fewer subjects; no search below 2).
        random_state: XGBoost's seed.

    Attributes (after :meth:`fit`): ``best_params_``, ``cv_results_`` (a list of
    ``{"params", "mean_c"}``), ``model_``, ``event_times_`` and ``cumulative_baseline_hazard_``.
    """

    def __init__(
        self,
        param_grid: dict[str, list[Any]] | None = None,
        params: dict[str, Any] | None = None,
        cv: int = 3,
        random_state: int = 0,
    ) -> None:
        self.param_grid = param_grid
        self.params = params
        self.cv = cv
        self.random_state = random_state

    def fit(self, features: Any, event: np.ndarray, time: np.ndarray, groups: np.ndarray) -> TunedBoostedCox:
        """Search the grid over subject folds, then refit the best setting on every row.

        Args:
            features: ``[n, F]`` dense or SciPy sparse.
            event: ``[n]`` bool, the event was observed.
            time: ``[n]`` days to the event or censoring.
            groups: ``[n]`` subject ids (the folds never split a subject).
        """
        grid = dict(DEFAULT_GRID if self.param_grid is None else self.param_grid)
        fixed = {**DEFAULT_PARAMS, **(self.params or {})}
        trees = sorted(grid.pop("n_estimators", [fixed.pop("n_estimators", 500)]))
        fixed.pop("n_estimators", None)
        label = cox_label(event, time)
        settings = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())] or [{}]
        folds = min(self.cv, len(np.unique(groups)))
        self.cv_results_: list[dict[str, Any]] = []
        if folds >= 2 and (len(settings) > 1 or len(trees) > 1):
            splits = list(GroupKFold(folds).split(np.zeros(len(label)), groups=groups))
            for setting in settings:
                scores = np.zeros((len(splits), len(trees)))
                for k, (fit_rows, out_rows) in enumerate(splits):
                    if not event[out_rows].any() or not event[fit_rows].any():
                        scores[k] = np.nan
                        continue
                    model = cox_booster({**fixed, **setting, "n_estimators": trees[-1]}, self.random_state)
                    model.fit(features[fit_rows], label[fit_rows])
                    for j, n_trees in enumerate(trees):
                        margin = model.predict(features[out_rows], output_margin=True, iteration_range=(0, n_trees))
                        scores[k, j] = harrell_c(event[out_rows], time[out_rows], margin)
                for j, n_trees in enumerate(trees):
                    self.cv_results_.append(
                        {"params": {**setting, "n_estimators": n_trees}, "mean_c": float(np.nanmean(scores[:, j]))}
                    )
            best = max(self.cv_results_, key=lambda r: (r["mean_c"], -r["params"]["n_estimators"]))
            self.best_params_ = dict(best["params"])
        else:
            self.best_params_ = {**settings[0], "n_estimators": trees[-1]}
        self.model_ = cox_booster({**fixed, **self.best_params_}, self.random_state).fit(features, label)
        self.breslow_ = BreslowSurvival().fit(self.margin(features), time, event)
        return self

    @property
    def event_times_(self) -> np.ndarray:
        """The distinct training event times (days), where ``H0`` steps."""
        return self.breslow_.event_times_

    @property
    def cumulative_baseline_hazard_(self) -> np.ndarray:
        """Breslow's ``H0`` at each of ``event_times_``."""
        return self.breslow_.cumulative_baseline_hazard_

    def margin(self, features: Any) -> np.ndarray:
        """Log relative risk ``[n]`` float64 (higher = sooner)."""
        return self.model_.predict(features, output_margin=True).astype(np.float64)

    def survival(self, features: Any) -> np.ndarray:
        """``S(t | x) = exp(-H0(t) exp(r(x)))`` ``[n, len(event_times_)]`` (days)."""
        return self.breslow_.survival(self.margin(features))


__all__ = ["DEFAULT_GRID", "DEFAULT_PARAMS", "TunedBoostedCox", "cox_booster", "cox_label"]
