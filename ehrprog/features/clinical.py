"""The one table of clinical inputs per prediction point, ``[n, F + n_stages + 3]`` float64:
the :class:`~ehrprog.features.point.PointFeatures` (F columns), the current stage one-hot over
``0..n_stages`` and the current staging-lab value with its presence flag. Every consumer reads it
from here: the estimator's tabular part (:class:`~ehrprog.models.tabular.TabularModel`) and the
boosted and ridge Cox baselines."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from sklearn.base import BaseEstimator

from ehrprog.cohorts.cohort import CohortX
from ehrprog.features.point import PointFeatures


def clinical_table(
    features: np.ndarray, stage: np.ndarray, value: np.ndarray, has_value: np.ndarray, n_stages: int = 5
) -> np.ndarray:
    """The clinical inputs as one float64 table ``[n, F + n_stages + 3]``: point features
    ``[n, F]``, the current stage one-hot (``0..n_stages``), the current staging-lab value (0
    where none) and its flag."""
    has = np.asarray(has_value, dtype=bool)
    return np.column_stack(
        [
            features,
            np.eye(n_stages + 1)[np.clip(stage, 0, n_stages)],
            np.where(has, value, 0.0),
            has.astype(np.float64),
        ]
    ).astype(np.float64)


class ClinicalTable(BaseEstimator):
    """Clinical inputs per prediction point, ``[n, F + n_stages + 3]`` float64 (module docstring).

    Args:
        n_stages: the highest stage of the task (the one-hot spans ``0..n_stages``); ``None``:
            the highest of the cohort's lab bands (``X.lab_bands``) and of the fitted points'
            current stages.
        point_features: include :class:`~ehrprog.features.point.PointFeatures` (F columns), fitted on
            the training points; without them the table holds the current stage and value only.
        max_history_codes: PointFeatures' problem list (0 = off).

    Attributes (after :meth:`fit`): ``n_stages_``, ``point_features_`` (or ``None``), ``names_``.
    """

    def __init__(self, n_stages: int | None = None, point_features: bool = True, max_history_codes: int = 0) -> None:
        self.n_stages = n_stages
        self.point_features = point_features
        self.max_history_codes = max_history_codes

    def fit(self, X: CohortX, y: Any = None) -> ClinicalTable:
        """Fit the point features on ``X`` (one pass over its parts)."""
        self.n_stages_ = self.n_stages
        if self.n_stages_ is None:
            banded = [stage for bands in X.lab_bands.values() for _, stage in bands]
            current = X.column("current_stage").max() if len(X) else None
            self.n_stages_ = int(max([*banded, current or 0, 1]))
        self.point_features_ = (
            PointFeatures(max_history_codes=self.max_history_codes).fit(X) if self.point_features else None
        )
        return self

    @property
    def names_(self) -> list[str]:
        """The name of each column, in order."""
        features = self.point_features_.names if self.point_features_ is not None else []
        return [*features, *(f"stage={s}" for s in range(self.n_stages_ + 1)), "current_value", "has_current_value"]

    def transform(self, X: CohortX) -> np.ndarray:
        """The table ``[len(X), len(names_)]`` in the order of ``X.points``."""
        points = X.points
        stage = points["current_stage"].fill_null(0).clip(0, self.n_stages_).to_numpy().astype(np.int64)
        value = points["current_value"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        has = np.isfinite(value)
        features = self.point_features_.transform(X) if self.point_features_ is not None else np.zeros((len(X), 0))
        return clinical_table(features, stage, np.where(has, value, 0.0), has, self.n_stages_)

    def fit_transform(self, X: CohortX, y: Any = None) -> np.ndarray:
        return self.fit(X).transform(X)


__all__ = ["ClinicalTable", "clinical_table"]
