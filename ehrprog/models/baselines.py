"""Baselines a careful analyst tries first, as scikit-learn estimators on the same ``X``/``y``.

* :class:`~ehrprog.features.history.HistoryFeatures`: each point's history as a feature row: counts of the most frequent
  codes, the last value of every coded lab, eGFR (last recorded, else CKD-EPI 2021 from the last
  creatinine), current stage, age, sex, number of visits and years of history.
* :class:`StageBaseline`: bag-of-codes logistic regression or gradient boosting for the next stage.
* :class:`CoxBaseline`: Cox proportional hazards (scikit-survival) on those features.
* :class:`BoostedCoxBaseline`: gradient-boosted trees under the Cox partial likelihood
  (XGBoost's ``survival:cox``) on the same features, with a Breslow baseline hazard:
  count-feature boosting, the baseline the EHR literature finds hardest to beat.
* :class:`ClinicalCoxBaseline`: Cox on exactly the clinical inputs the model's heads read
  (:class:`~ehrprog.features.point.PointFeatures`, current stage and lab value): a reference that
  shows what the model's sequence encoder adds beyond them.
* :class:`PointFeaturesBoostedCox`: gradient-boosted Cox on the model's own clinical inputs
  (:class:`~ehrprog.features.point.PointFeatures`, current stage and lab value), tuned by a small grid
  over subject folds of the training points: what the model's clinical booster fits, as a
  baseline of its own, and the one a user of ehrprog can fit in two lines.
* :class:`WindowedCountsBoostedCox`: the same on those inputs plus code counts over look-back
  windows and the latest coded values (:class:`~ehrprog.features.windowed.WindowedCounts`, in the
  manner of MEDS-Tab), tuned the same way.
* :class:`KFREBaseline`: a Kidney Failure Risk Equation-style score from age, sex and eGFR
  (the 4-variable KFRE of Tangri et al. 2011 without its albuminuria term, which these data lack).

All take a cohort's ``X`` (:class:`~ehrprog.tasks.CohortX`) and ``y`` like the main estimator.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from ehrprog.cohorts.cohort import CohortX
from ehrprog.cohorts.targets import check_survival_targets, split_targets
from ehrprog.core.errors import one_warning
from ehrprog.features.history import HistoryFeatures, clinical_features
from ehrprog.metrics import harrell_c, macro_auroc
from ehrprog.models.breslow import BreslowSurvival


class StageBaseline(ClassifierMixin, BaseEstimator):
    """Next-stage classifier on history features: ``model="logistic"`` or ``"gbm"``."""

    def __init__(self, model: str = "logistic", max_codes: int = 200, random_state: int | None = 0) -> None:
        self.model = model
        self.max_codes = max_codes
        self.random_state = random_state

    def fit(self, X: CohortX, y: Any) -> StageBaseline:
        stage = split_targets(y, len(X))[0]
        known = ~np.isnan(stage)
        self.features_ = HistoryFeatures(self.max_codes)
        features = self.features_.fit_transform(X)[known]
        if self.model == "logistic":
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5))
        elif self.model == "gbm":
            clf = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, random_state=self.random_state)
        else:
            raise ValueError(f"model must be 'logistic' or 'gbm', got {self.model!r}")
        self.classifier_ = clf.fit(features, stage[known].astype(int))
        self.classes_ = np.asarray(self.classifier_.classes_)
        return self

    def predict_proba(self, X: CohortX) -> np.ndarray:
        check_is_fitted(self, "classifier_")
        return self.classifier_.predict_proba(self.features_.transform(X))

    def predict(self, X: CohortX) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def score(self, X: CohortX, y: Any) -> float:
        stage = split_targets(y, len(X))[0]
        known = ~np.isnan(stage)
        return macro_auroc(stage[known], self.predict_proba(X)[known], self.classes_)


class _SurvivalBaseline(BaseEstimator):
    """``score``: Harrell's C of ``predict`` (the risk score, higher = sooner)."""

    def predict(self, X: CohortX) -> np.ndarray:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def score(self, X: CohortX, y: Any) -> float:
        _, event, time = split_targets(y, len(X))
        return harrell_c(event, time, self.predict(X))


class _RidgeCox(_SurvivalBaseline):
    """Ridge Cox (scikit-survival, Breslow ties) on a standardised feature table that a subclass
    builds: ``_fit_table(X)`` (fitting its features) and ``_table(X)``."""

    def _fit_table(self, X: CohortX) -> np.ndarray:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def _table(self, X: CohortX) -> np.ndarray:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def fit(self, X: CohortX, y: Any):
        _, event, time = split_targets(y, len(X))
        check_survival_targets(event, time)
        return self._fit_arrays(X, event, time)

    def _fit_arrays(self, X: CohortX, event: np.ndarray, time: np.ndarray):
        """Fit on ``event`` ``[n]`` (bool) and ``time`` ``[n]`` (days), checked by the caller (a
        competing-risk model fits one of these per cause)."""
        from sksurv.linear_model import CoxPHSurvivalAnalysis
        from sksurv.util import Surv

        self.scaler_ = StandardScaler()
        table = self.scaler_.fit_transform(self._fit_table(X))
        with one_warning(
            f"{type(self).__name__} (scikit-survival's Cox)", lambda e: "it failed" if e else "its fit was kept"
        ):
            self.model_ = CoxPHSurvivalAnalysis(alpha=self.alpha, ties="breslow").fit(
                table, Surv.from_arrays(event.astype(bool), time)
            )
        # The package's one survival-function component (scikit-survival's own gives the same H0).
        self.breslow_ = BreslowSurvival().fit(self.model_.predict(table), time, event)
        return self

    def _features(self, X: CohortX) -> np.ndarray:
        check_is_fitted(self, "model_")
        return self.scaler_.transform(self._table(X))

    def predict(self, X: CohortX) -> np.ndarray:
        """Risk score (higher = sooner)."""
        return self.model_.predict(self._features(X))

    def predict_survival_function(self, X: CohortX, return_array: bool = False):
        """``S(t | x) = exp(-H0(t) exp(r(x)))`` over ``event_times_`` (days), Breslow ``H0``."""
        return self.breslow_.survival_function(self.predict(X), return_array)

    def cumulative_hazard(self, X: CohortX, times: np.ndarray) -> np.ndarray:
        """``H(t | x) = H0(t) exp(r(x))`` ``[n, len(times)]`` at ``times`` (days)."""
        return self.breslow_.cumulative_hazard(self.predict(X), times)

    @property
    def event_times_(self) -> np.ndarray:
        return self.breslow_.event_times_


class CoxBaseline(_RidgeCox):
    """Cox proportional hazards (scikit-survival, Breslow ties, small ridge) on history features."""

    def __init__(self, max_codes: int = 50, alpha: float = 1.0) -> None:
        self.max_codes = max_codes
        self.alpha = alpha

    def _fit_table(self, X: CohortX) -> np.ndarray:
        self.features_ = HistoryFeatures(self.max_codes)
        return self.features_.fit_transform(X)

    def _table(self, X: CohortX) -> np.ndarray:
        return self.features_.transform(X)

    @property
    def inputs_(self) -> str:
        """What it read on this data (:attr:`HistoryFeatures.inputs_`), e.g. ``"counts, last labs, eGFR"``."""
        return self.features_.inputs_


class ClinicalCoxBaseline(_RidgeCox):
    """Ridge Cox (scikit-survival, Breslow ties) on the model's clinical inputs: point features,
    current stage one-hot, and the current staging-lab value with its flag (standardised)."""

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def _fit_table(self, X: CohortX) -> np.ndarray:
        from ehrprog.features.clinical import ClinicalTable

        self.features_ = ClinicalTable().fit(X)
        return self._table(X)

    def _table(self, X: CohortX) -> np.ndarray:
        return self.features_.transform(X)


class KFREBaseline(_SurvivalBaseline):
    """KFRE-style risk from age, sex and eGFR, with the 4-variable KFRE coefficients (no fitting).

    Linear predictor ``-0.2201 (age/10 - 7.036) + 0.2467 (male - 0.5642) - 0.5567 (eGFR/5 - 7.222)``;
    points without an eGFR get the training median. Higher = sooner. ``egfr_points_`` counts the
    training points with an eGFR (recorded, or from creatinine): with none, the score reads age
    and sex only, and the comparison leaves it out (``ehrprog.evaluation.heldout``).
    """

    def fit(self, X: CohortX, y: Any = None) -> KFREBaseline:
        egfr = clinical_features(X)[:, 0]
        self.egfr_points_ = int(np.isfinite(egfr).sum())
        self.median_egfr_ = float(np.nanmedian(egfr)) if self.egfr_points_ else 60.0
        return self

    def predict(self, X: CohortX) -> np.ndarray:
        check_is_fitted(self, "median_egfr_")
        clinical = clinical_features(X)
        egfr = np.where(np.isnan(clinical[:, 0]), self.median_egfr_, clinical[:, 0])
        age, female = clinical[:, 6], clinical[:, 7]
        age = np.where(np.isnan(age), 65.0, age)
        return -0.2201 * (age / 10 - 7.036) + 0.2467 * ((1 - female) - 0.5642) - 0.5567 * (egfr / 5 - 7.222)


class _TunedBoosting(_SurvivalBaseline):
    """A :class:`~ehrprog.models.boosted_cox.TunedBoostedCox` on a feature table a subclass builds
    (``_fit_features(X)`` fitting its transformers, ``_features(X)``); the grid's folds are the
    training points' subjects."""

    def _fit_features(self, X: CohortX):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def _features(self, X: CohortX):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def fit(self, X: CohortX, y: Any):
        from ehrprog.models.boosted_cox import TunedBoostedCox

        _, event, time = split_targets(y, len(X))
        check_survival_targets(event, time)
        features = self._fit_features(X)
        groups = X.points["subject_id"].to_numpy()
        self.booster_ = TunedBoostedCox(self.param_grid, self.params, self.cv, self.random_state).fit(
            features, event.astype(bool), time.astype(np.float64), groups
        )
        self.best_params_ = self.booster_.best_params_
        return self

    @property
    def event_times_(self) -> np.ndarray:
        return self.booster_.event_times_

    @property
    def cumulative_baseline_hazard_(self) -> np.ndarray:
        return self.booster_.cumulative_baseline_hazard_

    def predict(self, X: CohortX) -> np.ndarray:
        """Log relative risk (higher = sooner)."""
        check_is_fitted(self, "booster_")
        return self.booster_.margin(self._features(X))

    def predict_survival_function(self, X: CohortX, return_array: bool = False):
        """``S(t | x) = exp(-H0(t) exp(r(x)))`` over ``event_times_`` (days), Breslow ``H0``."""
        check_is_fitted(self, "booster_")
        return self.booster_.breslow_.survival_function(self.predict(X), return_array)


class BoostedCoxBaseline(_TunedBoosting):
    """Gradient-boosted Cox model on history features (XGBoost ``survival:cox``, histogram trees).

    XGBoost rather than scikit-survival's ``GradientBoostingSurvivalAnalysis``: on the 1,000-subject
    simulator cohort (9.6k points, 47 features) scikit-survival took 211 s for 200 trees, XGBoost
    1.4 s for 500. Survival curves use Breslow's baseline hazard of the training margins. The settings
    are fixed (no search): :class:`~ehrprog.models.boosted_cox.TunedBoostedCox` with one setting.

    Args:
        max_codes: code count columns (as :class:`HistoryFeatures`).
        n_estimators: XGBoost's (the defaults here were chosen on simulator seed 0).
        max_depth: XGBoost's.
        learning_rate: XGBoost's.
        subsample: XGBoost's.
        colsample_bytree: XGBoost's.
        min_child_weight: XGBoost's.
        reg_lambda: XGBoost's.
        random_state: XGBoost's seed.
    """

    def __init__(
        self,
        max_codes: int = 200,
        n_estimators: int = 500,
        max_depth: int = 2,
        learning_rate: float = 0.05,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        min_child_weight: float = 5.0,
        reg_lambda: float = 1.0,
        random_state: int = 0,
    ) -> None:
        self.max_codes = max_codes
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.min_child_weight = min_child_weight
        self.reg_lambda = reg_lambda
        self.random_state = random_state

    #: No search: the one setting the parameters give, fitted on every training point.
    cv = 1

    @property
    def param_grid(self) -> dict[str, list[Any]]:
        return {"max_depth": [self.max_depth], "n_estimators": [self.n_estimators]}

    @property
    def params(self) -> dict[str, Any]:
        names = ("learning_rate", "subsample", "colsample_bytree", "min_child_weight", "reg_lambda")
        return {name: getattr(self, name) for name in names}

    def _fit_features(self, X: CohortX) -> np.ndarray:
        self.features_ = HistoryFeatures(self.max_codes)
        return self.features_.fit_transform(X)

    def _features(self, X: CohortX) -> np.ndarray:
        return self.features_.transform(X)


class PointFeaturesBoostedCox(_TunedBoosting):
    """Gradient-boosted Cox (XGBoost ``survival:cox``) on the model's clinical inputs: point
    features, the current stage one-hot and the current staging-lab value with its flag; tuned by
    ``param_grid`` (default :data:`~ehrprog.models.boosted_cox.DEFAULT_GRID`: depth 2 or 4, 200 or 500
    trees) over ``cv`` subject folds of the training points; ``best_params_`` after fit.

    Args:
        param_grid: the grid searched (``None`` = the default).
        params: fixed XGBoost settings (over :data:`~ehrprog.models.boosted_cox.DEFAULT_PARAMS`).
        cv: subject folds of the search.
        max_history_codes: :class:`~ehrprog.features.point.PointFeatures`' problem list (0 = off).
        random_state: XGBoost's seed.
    """

    def __init__(
        self,
        param_grid: dict[str, list[Any]] | None = None,
        params: dict[str, Any] | None = None,
        cv: int = 3,
        max_history_codes: int = 0,
        random_state: int = 0,
    ) -> None:
        self.param_grid = param_grid
        self.params = params
        self.cv = cv
        self.max_history_codes = max_history_codes
        self.random_state = random_state

    def _fit_features(self, X: CohortX) -> np.ndarray:
        from ehrprog.features.clinical import ClinicalTable

        self.table_ = ClinicalTable(max_history_codes=self.max_history_codes).fit(X)
        return self._features(X)

    def _features(self, X: CohortX) -> np.ndarray:
        return self.table_.transform(X)


class WindowedCountsBoostedCox(_TunedBoosting):
    """Gradient-boosted Cox on the clinical inputs of :class:`PointFeaturesBoostedCox` plus code
    counts over look-back windows (30 days, 365 days, all history) and the latest value of every
    coded measurement (:class:`~ehrprog.features.windowed.WindowedCounts`: MEDS-Tab's recipe), as
    one sparse matrix; tuned the same way.

    Args:
        param_grid: as :class:`PointFeaturesBoostedCox`.
        params: as there.
        cv: as there.
        windows_days: the look-back windows.
        min_subjects: a code needs this many training subjects to get columns.
        max_codes: at most this many codes.
        random_state: XGBoost's seed.
    """

    def __init__(
        self,
        param_grid: dict[str, list[Any]] | None = None,
        params: dict[str, Any] | None = None,
        cv: int = 3,
        windows_days: tuple[float | None, ...] = (30.0, 365.0, None),
        min_subjects: int = 5,
        max_codes: int = 2000,
        random_state: int = 0,
    ) -> None:
        self.param_grid = param_grid
        self.params = params
        self.cv = cv
        self.windows_days = windows_days
        self.min_subjects = min_subjects
        self.max_codes = max_codes
        self.random_state = random_state

    def _fit_features(self, X: CohortX):
        from ehrprog.features.clinical import ClinicalTable
        from ehrprog.features.windowed import WindowedCounts

        self.table_ = ClinicalTable().fit(X)
        self.windowed_ = WindowedCounts(self.windows_days, self.min_subjects, self.max_codes)
        return self._stack(X, self.windowed_.fit_transform(X))

    def _features(self, X: CohortX):
        return self._stack(X, self.windowed_.transform(X))

    def _stack(self, X: CohortX, counts):
        """The clinical inputs beside the windowed counts, one CSR matrix."""
        from scipy import sparse

        dense = sparse.csr_matrix(self.table_.transform(X).astype(np.float32))
        return sparse.hstack([dense, counts], format="csr")
