"""The tabular part of the estimator: what a clinician's numbers alone predict.

It reads the one table of clinical inputs per prediction point,
:class:`~ehrprog.features.clinical.ClinicalTable` (``[n, F + n_stages + 3]``).

:class:`TabularModel` fits on that table, per target:

* **progression**: a gradient-boosted Cox model (XGBoost ``survival:cox``, its grid searched over
  subject folds by :class:`~ehrprog.models.boosted_cox.TunedBoostedCox`) when the training points hold
  at least ``min_booster_events`` events (``risk_model="auto"``; trees fitted on fewer overfit:
  on SynPUF folds, ~85 events, a booster cost 0.045 C), else a ridge-penalised linear Cox
  (scikit-survival, Breslow ties) on the standardised table;
* **stage**: a multinomial logistic regression on the standardised table.

Its outputs are the log relative risk ``[n]`` and the stage logits ``[n, K]``. The visit-sequence
network learns an **offset** on top of them (see :mod:`ehrprog.networks.visit_model`), so the estimator's output
is ``tabular + history`` and the history's share is a named, measurable part.

:meth:`TabularModel.fit_stacked` returns the outputs **stacked**: a training point's come from
models that did not see its subject (``stack_folds`` subject folds; the booster's setting is
searched once on all training points), so the offset is trained against the tabular model's
out-of-sample errors, not its overfitted in-sample fit; every other point gets the outputs of the
models fitted on all training points. :meth:`TabularModel.contributions` attributes an output to
the table's columns (exact TreeSHAP for the booster, ``coef * (x - mean)`` for the linear models).
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.model_selection import GroupKFold
from sklearn.utils._param_validation import Interval, StrOptions

from ehrprog.cohorts.cohort import CohortX
from ehrprog.core.errors import one_warning
from ehrprog.core.memory import release_free_memory
from ehrprog.features.clinical import ClinicalTable
from ehrprog.features.point import PointFeatures
from ehrprog.features.windowed import WindowedCounts

#: Training events ``risk_model="auto"`` needs before it fits a booster rather than a linear Cox.
MIN_BOOSTER_EVENTS = 200
#: Training points above which the tabular models are fitted on a seeded sample of subjects
#: (``TabularModel(max_fit_points=...)``; every point's outputs are still computed): about 50,000
#: simulated people. The linear Cox holds ~2.5 KB a fitted point (the table and scikit-survival's
#: copies of it: 2.1 GB at 696,000 points, benchmarks/README.md "Scaling"), so 400,000 points
#: keep a fit of any size near 1 GB for its tabular part.
MAX_FIT_POINTS = 400_000


class _Linear:
    """A linear model on the standardised table: ``z @ coef.T + intercept`` with
    ``z = (x - mean) / scale``; ``coef`` ``[K, C]``, ``intercept`` ``[K]`` (K = 1 for Cox)."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> None:
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = np.asarray(intercept, dtype=np.float64)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)

    def outputs(self, table: np.ndarray) -> np.ndarray:
        """``[n, K]``."""
        return ((table - self.mean) / self.scale) @ self.coef.T + self.intercept

    def contributions(self, table: np.ndarray, row: int) -> np.ndarray:
        """Output ``row``'s attribution to each column ``[n, C]``: ``coef * (x - mean) / scale``."""
        return (table - self.mean) / self.scale * self.coef[row]

    def state(self) -> dict[str, list]:
        return {k: getattr(self, k).tolist() for k in ("coef", "intercept", "mean", "scale")}


def _standardisation(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, scale = table.mean(axis=0), table.std(axis=0)
    return mean, np.where(scale > 1e-8, scale, 1.0)


def fit_ridge_cox(table: np.ndarray, event: np.ndarray, time: np.ndarray, alpha: float = 1.0, n_iter: int = 100):
    """scikit-survival's ridge-penalised Cox (Breslow ties) on the standardised ``table`` ``[n, C]``
    with ``event``/``time`` (days); a linear model (K = 1), or ``None`` where it fails or its
    coefficients are not finite (its numerical warnings said once)."""
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.util import Surv

    mean, scale = _standardisation(table)
    try:
        with one_warning(
            "the tabular linear Cox",
            lambda error: f"it failed ({error})" if error is not None else "it finished (its coefficients were used)",
        ):
            cox = CoxPHSurvivalAnalysis(alpha=alpha, ties="breslow", n_iter=n_iter).fit(
                (table - mean) / scale, Surv.from_arrays(np.asarray(event, bool), np.asarray(time, float))
            )
    except (ValueError, ArithmeticError, np.linalg.LinAlgError):
        return None
    if not np.isfinite(cox.coef_).all():
        return None
    return _Linear(cox.coef_[None, :], np.zeros(1), mean, scale)


def fit_logistic(table: np.ndarray, labels: np.ndarray, n_classes: int, C: float = 1.0) -> _Linear:
    """Multinomial logistic regression of ``labels`` (``0..n_classes-1``) on the standardised
    ``table``; classes absent from ``labels`` get logit -10 (a single class: a constant model)."""
    from sklearn.linear_model import LogisticRegression

    mean, scale = _standardisation(table)
    coef = np.zeros((n_classes, table.shape[1]))
    intercept = np.full(n_classes, -10.0)
    present = np.unique(labels)
    if len(present) == 1:
        intercept[present[0]] = 0.0
    elif len(present) > 1:
        with one_warning("the tabular logistic model of the next stage", lambda _: "its fit was used"):
            model = LogisticRegression(C=C, max_iter=1000).fit((table - mean) / scale, labels)
        if len(present) == 2:  # scikit-learn's binary model: one row, for the second class
            coef[present[1]], intercept[present[1]] = model.coef_[0], model.intercept_[0]
            intercept[present[0]] = 0.0
        else:
            coef[present], intercept[present] = model.coef_, model.intercept_
    return _Linear(coef, intercept, mean, scale)


class TabularModel(BaseEstimator):
    """Survival and stage models on the :class:`ClinicalTable` (see the module docstring).

    Args:
        risk_model: ``"auto"`` (booster with at least ``min_booster_events`` training events,
            else linear Cox), ``"booster"`` or ``"cox"``.
        point_features: :class:`ClinicalTable`'s ``point_features``.
        windowed_counts: the booster also reads code counts over look-back windows (30 days,
            365 days, all history) and the latest value of each coded measurement
            (:class:`~ehrprog.features.windowed.WindowedCounts`, MEDS-Tab's recipe; the package's
            best baseline), beside the clinical table, as one sparse matrix. The linear models
            read the clinical table only (with a linear Cox the counts are not computed).
        booster_grid: the booster's grid (``None``: :data:`~ehrprog.models.boosted_cox.DEFAULT_GRID`).
        booster_params: fixed XGBoost settings (over :data:`~ehrprog.models.boosted_cox.DEFAULT_PARAMS`).
        cv: subject folds of the booster's grid search.
        stack_folds: subject folds of the stacked outputs (:meth:`fit_stacked`).
        min_booster_events: see ``risk_model``.
        cox_alpha: the linear Cox's ridge penalty.
        stage_C: the logistic model's inverse regularisation.
        random_state: XGBoost's seed, and the seed of the fitting sample.
        max_fit_points: with more training points than this, the models are fitted on a seeded
            sample of whole training subjects holding at most this many points (``fit_sample_``
            says how many of how many); every point's outputs are still computed, piece by piece
            (:meth:`~ehrprog.cohorts.cohort.CohortX.parts`: a cohort on disk one shard at a
            time), those of the points outside the sample from the models fitted on the sample
            (points they never saw). ``None``: always every training point.

    Attributes (after fitting): ``table_`` (the fitted :class:`ClinicalTable`), ``windowed_`` (the
    fitted :class:`~ehrprog.features.windowed.WindowedCounts` or ``None``), ``risk_model_``
    (``"booster"``, ``"cox"`` or ``None`` without a survival target or events), ``booster_``
    (:class:`~ehrprog.models.boosted_cox.TunedBoostedCox` or ``None``), ``cox_`` and ``stage_``
    (linear models or ``None``), ``n_outputs_`` (columns of :meth:`transform`), ``fit_sample_``
    (``None``, or ``{"points", "subjects", "of_points", "of_subjects", "seed"}`` of the fitting sample).
    """

    _parameter_constraints: dict = {  # noqa: RUF012 (scikit-learn's convention)
        "risk_model": [StrOptions({"auto", "booster", "cox"})],
        "point_features": ["boolean"],
        "windowed_counts": ["boolean"],
        "booster_grid": [dict, None],
        "booster_params": [dict, None],
        "cv": [Interval(Integral, 2, None, closed="left")],
        "stack_folds": [Interval(Integral, 2, None, closed="left")],
        "min_booster_events": [Interval(Integral, 0, None, closed="left")],
        "cox_alpha": [Interval(Real, 0, None, closed="left")],
        "stage_C": [Interval(Real, 0, None, closed="neither")],
        "random_state": [Interval(Integral, 0, None, closed="left")],
        "max_fit_points": [Interval(Integral, 1000, None, closed="left"), None],
    }

    def __init__(
        self,
        risk_model: str = "auto",
        point_features: bool = True,
        windowed_counts: bool = True,
        booster_grid: dict[str, list[Any]] | None = None,
        booster_params: dict[str, Any] | None = None,
        cv: int = 3,
        stack_folds: int = 5,
        min_booster_events: int = MIN_BOOSTER_EVENTS,
        cox_alpha: float = 1.0,
        stage_C: float = 1.0,
        random_state: int = 0,
        max_fit_points: int | None = MAX_FIT_POINTS,
    ) -> None:
        self.risk_model = risk_model
        self.point_features = point_features
        self.windowed_counts = windowed_counts
        self.booster_grid = booster_grid
        self.booster_params = booster_params
        self.cv = cv
        self.stack_folds = stack_folds
        self.min_booster_events = min_booster_events
        self.cox_alpha = cox_alpha
        self.stage_C = stage_C
        self.random_state = random_state
        self.max_fit_points = max_fit_points

    # ------------------------------------------------------------------ fitting
    def _fit_parts(
        self,
        table: np.ndarray,
        labels: np.ndarray | None,
        event: np.ndarray | None,
        time: np.ndarray | None,
        groups: np.ndarray,
        tuned: dict[str, Any] | None,
    ) -> tuple[Any, _Linear | None, _Linear | None]:
        """(booster, linear Cox, logistic) fitted on these rows; ``tuned``: the booster setting
        to use without a search (``None``: search the grid)."""
        booster = cox = stage = None
        table, wide = table
        if self.risk_model_ == "booster" and event.any():
            from ehrprog.models.boosted_cox import TunedBoostedCox

            grid = {k: [v] for k, v in tuned.items()} if tuned is not None else self.booster_grid
            booster = TunedBoostedCox(grid, self.booster_params, self.cv, self.random_state).fit(
                wide, event, time, groups
            )
        elif self.risk_model_ == "cox" and event.sum() >= 2:
            cox = fit_ridge_cox(table, event, time, self.cox_alpha)
        if labels is not None:
            known = labels >= 0
            stage = fit_logistic(table[known], labels[known], self.n_classes_, self.stage_C)
        return booster, cox, stage

    def _outputs_of(self, parts: tuple, table: np.ndarray) -> np.ndarray:
        """``[n, n_outputs_]``: the log relative risk (where there is a survival target), then the
        stage logits (where there is a stage target)."""
        booster, cox, stage = parts
        table, wide = table
        columns = []
        if self.has_risk_:
            if booster is not None:
                columns.append(booster.margin(wide)[:, None])
            elif cox is not None:
                columns.append(cox.outputs(table))
            else:
                columns.append(np.zeros((len(table), 1)))
        if stage is not None:
            columns.append(stage.outputs(table))
        return np.concatenate(columns, axis=1) if columns else np.zeros((len(table), 0))

    def fit_stacked(
        self,
        X: CohortX,
        *,
        n_stages: int | None = None,
        stage: np.ndarray | None = None,
        n_classes: int = 0,
        event: np.ndarray | None = None,
        time: np.ndarray | None = None,
        groups: np.ndarray,
        train_rows: np.ndarray,
    ) -> np.ndarray:
        """Fit on the points ``train_rows`` of ``X``; return the outputs of every point ``[len(X),
        n_outputs_]`` float32, out-of-fold (subject folds) for the training points.

        Args:
            X: every point (training, validation...).
            n_stages: the task's highest stage (``None``: the highest of ``X.lab_bands`` and of
                the training points' current stages).
            stage: ``[len(X)]`` class index of the next stage, -1 where unknown (``None``: no
                stage target).
            n_classes: the number of stage classes.
            event: ``[len(X)]`` progression event (bool) (``None``: no survival target).
            time: ``[len(X)]`` time to the event or censoring (days) (``None``: no
                survival target).
            groups: ``[len(X)]`` subject ids (folds never split a subject).
            train_rows: the rows fitted on.
        """
        self._validate_params()
        fit_rows = self._fitting_sample(train_rows, groups)
        sampled = len(fit_rows) < len(train_rows)
        self.n_classes_ = n_classes if stage is not None else 0
        self.has_risk_ = event is not None
        if not self.has_risk_:
            self.risk_model_ = None
        elif self.risk_model == "auto":
            enough = np.asarray(event)[fit_rows].sum() >= self.min_booster_events
            self.risk_model_ = "booster" if enough else "cox"
        else:
            self.risk_model_ = self.risk_model
        fitted_on = X[fit_rows]
        self.table_ = ClinicalTable(n_stages, self.point_features).fit(fitted_on)
        # Only the booster reads the counts: a linear model's fit neither counts nor keeps them.
        counts = self.windowed_counts and self.risk_model_ == "booster"
        self.windowed_ = WindowedCounts().fit(fitted_on) if counts else None
        full, sample_rows = X, fit_rows
        if sampled:  # only the sample's inputs in memory; rows below are positions in it
            X, stage, event, time, groups = (
                fitted_on,
                *(None if a is None else np.asarray(a)[fit_rows] for a in (stage, event, time, groups)),
            )
            train_rows = np.arange(len(fit_rows))
        del fitted_on
        dense, wide = self._inputs(X)
        labels = stage if stage is not None else None
        rows = lambda part: (  # noqa: E731
            None if labels is None else labels[part],
            None if event is None else np.asarray(event[part], bool),
            None if time is None else time[part],
        )
        table = lambda part: (dense[part], wide[part])  # noqa: E731
        parts = self._fit_parts(table(train_rows), *rows(train_rows), groups[train_rows], None)
        self.booster_, self.cox_, self.stage_ = parts
        tuned = self.booster_.best_params_ if self.booster_ is not None else None
        outputs = self._outputs_of(parts, (dense, wide))
        if self.has_risk_:  # for fitted_outputs (a survival baseline): no second pass over the cohort
            self._fitted_rows = (sample_rows, outputs[train_rows].astype(np.float32))
        folds = min(self.stack_folds, len(np.unique(groups[train_rows])))
        if folds >= 2:
            for fit_part, out_part in GroupKFold(folds).split(train_rows, groups=groups[train_rows]):
                fit_rows, out_rows = train_rows[fit_part], train_rows[out_part]
                fold = self._fit_parts(table(fit_rows), *rows(fit_rows), groups[fit_rows], tuned)
                outputs[out_rows] = self._outputs_of(fold, table(out_rows))
        self.n_outputs_ = outputs.shape[1]
        if not sampled:
            return outputs.astype(np.float32)
        stacked = self.transform(full)  # every point, piece by piece: outside the sample, unseen points
        stacked[sample_rows] = outputs.astype(np.float32)  # the sample's own: out-of-fold
        return stacked

    def fitted_outputs(self, stacked: np.ndarray) -> np.ndarray:
        """The fitted models' outputs on every point of the last :meth:`fit_stacked` ``[n,
        n_outputs_]`` float32 (what :meth:`transform` gives), from its ``stacked`` return: the
        rows it fitted on (the sample's, or every training point's) get the fitted models' own
        in-sample outputs, kept from the fit; every other row is already theirs. ``stacked`` is
        not changed. Kept for a survival target only, and given once (a loaded model, a second
        call or a fit without a survival target: ``ValueError``)."""
        kept = self.__dict__.pop("_fitted_rows", None)
        if kept is None:
            raise ValueError("fitted_outputs needs the stacked outputs of the fit_stacked just run")
        rows, outputs = kept
        fitted = stacked.astype(np.float32, copy=True)
        fitted[rows] = outputs
        return fitted

    def _fitting_sample(self, train_rows: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """``train_rows``, or (more than ``max_fit_points``) the rows of a seeded sample of whole
        subjects holding at most that many points, in ascending order; sets ``fit_sample_``."""
        train_rows = np.asarray(train_rows)
        self.fit_sample_ = None
        if self.max_fit_points is None or len(train_rows) <= self.max_fit_points:
            return train_rows
        subjects, inverse, counts = np.unique(groups[train_rows], return_inverse=True, return_counts=True)
        order = np.random.default_rng(self.random_state).permutation(len(subjects))
        taken = order[: max(1, int(np.searchsorted(np.cumsum(counts[order]), self.max_fit_points, side="right")))]
        keep = np.zeros(len(subjects), dtype=bool)
        keep[taken] = True
        rows = np.sort(train_rows[keep[inverse]])
        self.fit_sample_ = {
            "points": len(rows),
            "subjects": len(taken),
            "of_points": len(train_rows),
            "of_subjects": len(subjects),
            "seed": int(self.random_state),
        }
        return rows

    # ------------------------------------------------------------------ outputs
    def _inputs(self, X: CohortX) -> tuple[np.ndarray, Any]:
        """``(the clinical table [n, C], the booster's input)``: the booster reads the table and,
        with ``windowed_counts``, the windowed counts beside it (one CSR matrix)."""
        dense = self.table_.transform(X)
        if self.windowed_ is None:
            return dense, dense
        from scipy import sparse

        return dense, sparse.hstack([sparse.csr_matrix(dense), self.windowed_.transform(X)], format="csr")

    @property
    def names_(self) -> list[str]:
        """The name of each input column: the clinical table's, then the windowed counts'."""
        return [*self.table_.names_, *(self.windowed_.names if self.windowed_ is not None else [])]

    def transform(self, X: CohortX) -> np.ndarray:
        """The fitted models' outputs ``[len(X), n_outputs_]`` float32, piece by piece
        (:meth:`~ehrprog.cohorts.cohort.CohortX.chunks`: at most one chunk of one shard's inputs in
        memory at a time)."""
        parts = (self.booster_, self.cox_, self.stage_)
        outputs = np.zeros((len(X), self.n_outputs_), dtype=np.float32)
        for chunk, rows in X.chunks():
            outputs[rows] = self._outputs_of(parts, self._inputs(chunk))
        release_free_memory()  # the chunks' freed tables
        return outputs

    def contributions(
        self, X: CohortX, output: str = "risk", stage_class: np.ndarray | None = None, inputs: tuple | None = None
    ) -> np.ndarray:
        """Each table column's attribution to an output ``[len(X), len(table_.names_)]``: the log
        relative risk (``output="risk"``; exact TreeSHAP for the booster) or the logit of class
        ``stage_class`` ``[len(X)]`` (``output="stage"``). Relative to the training mean (linear)
        or the trees' expected value (booster); the constant is left out. ``inputs``: the
        ``(table, booster input)`` of ``X`` where the caller has read them already."""
        table, wide = inputs if inputs is not None else self._inputs(X)  # (table, booster input), given or read
        pad = np.zeros((len(table), len(self.names_) - table.shape[1]))  # the linear models read no counts
        if output == "risk":
            if self.booster_ is not None:
                from xgboost import DMatrix

                contribs = self.booster_.model_.get_booster().predict(DMatrix(wide), pred_contribs=True)
                return np.asarray(contribs)[:, :-1].astype(np.float64)
            if self.cox_ is not None:
                return np.hstack([self.cox_.contributions(table, 0), pad])
            return np.zeros((len(table), len(self.names_)))
        if self.stage_ is None:
            raise ValueError("this tabular model has no stage model")
        rows = np.zeros(len(table), dtype=np.int64) if stage_class is None else np.asarray(stage_class)
        per_class = (table - self.stage_.mean) / self.stage_.scale
        return np.hstack([per_class * self.stage_.coef[rows], pad])

    # ------------------------------------------------------------------ saving
    def state(self) -> dict[str, Any]:
        """The fitted state as plain JSON values (the booster's trees are saved apart, as XGBoost JSON)."""
        return {
            "params": self.get_params(),
            "n_stages": self.table_.n_stages_,
            "point_features": self.table_.point_features_.state() if self.table_.point_features_ else None,
            "windowed": (
                {
                    "windows_days": list(self.windowed_.windows_days),
                    "codes": self.windowed_.codes_,
                    "lab_codes": self.windowed_.lab_codes_,
                }
                if self.windowed_ is not None
                else None
            ),
            "n_classes": self.n_classes_,
            "has_risk": self.has_risk_,
            "risk_model": self.risk_model_,
            "booster_params": self.booster_.best_params_ if self.booster_ is not None else None,
            "cox": self.cox_.state() if self.cox_ is not None else None,
            "stage": self.stage_.state() if self.stage_ is not None else None,
            "fit_sample": getattr(self, "fit_sample_", None),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], booster_model: Any = None) -> TabularModel:
        """Rebuild a fitted model from :meth:`state` (and the booster's loaded XGBoost model)."""
        model = cls(**state["params"])
        model.table_ = ClinicalTable(state["n_stages"], state["point_features"] is not None)
        model.table_.n_stages_ = state["n_stages"]
        model.table_.point_features_ = (
            PointFeatures(**state["point_features"]) if state["point_features"] is not None else None
        )
        model.windowed_ = None
        if state.get("windowed") is not None:
            model.windowed_ = WindowedCounts(tuple(state["windowed"]["windows_days"]))
            model.windowed_.codes_ = list(state["windowed"]["codes"])
            model.windowed_.lab_codes_ = list(state["windowed"]["lab_codes"])
        model.n_classes_, model.has_risk_ = state["n_classes"], state["has_risk"]
        model.risk_model_ = state["risk_model"]
        model.booster_ = None
        if booster_model is not None:
            from ehrprog.models.boosted_cox import TunedBoostedCox

            model.booster_ = TunedBoostedCox()
            model.booster_.model_, model.booster_.best_params_ = booster_model, state["booster_params"]
        model.cox_ = _Linear(**state["cox"]) if state["cox"] is not None else None
        model.stage_ = _Linear(**state["stage"]) if state["stage"] is not None else None
        model.n_outputs_ = int(model.has_risk_) + model.n_classes_
        model.fit_sample_ = state.get("fit_sample")
        return model


__all__ = ["MAX_FIT_POINTS", "MIN_BOOSTER_EVENTS", "TabularModel", "fit_logistic", "fit_ridge_cox"]
