"""``VisitProgressionEstimator``: the tabular model plus what the visit history adds, as one
scikit-learn estimator.

It composes parts that live, and are tested, on their own:

* :class:`~ehrprog.models.tabular.TabularModel` (parameter ``tabular``, routed as ``tabular__...``):
  the clinical table and a booster or linear Cox and a logistic model on it, stacked out-of-fold
  on the training subjects;
* :class:`~ehrprog.networks.visit_model.VisitSequenceModel` (``backbone__...``, ``module__...``): the visit
  network, whose heads are offsets on the tabular outputs, started at zero;
* :func:`~ehrprog.networks.training.train`: the one training engine (epoch 0 is the tabular model alone,
  so ``history_gain_`` is what training gained over it on validation, kept only beyond its noise);
* :class:`~ehrprog.models.breslow.BreslowSurvival` for survival functions,
  :func:`~ehrprog.networks.inference.outputs_score` the one scorer, :mod:`ehrprog.networks.explain` and
  :meth:`TabularModel.contributions` the attributions, :mod:`ehrprog.models.persistence` saving.

scikit-learn's rules hold: ``__init__`` only stores parameters; ``fit`` validates, seeds from
``random_state`` and returns ``self``; fitted state ends in ``_``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from ehrprog.cohorts.cohort import CohortX
from ehrprog.cohorts.targets import DEATH, check_survival_targets, competing_causes, split_targets
from ehrprog.core.errors import UnitWarning
from ehrprog.features.sharded import visit_tensors
from ehrprog.features.tensors import VisitTensors, Vocabulary
from ehrprog.metrics import harrell_c, macro_auroc
from ehrprog.models.breslow import BreslowSurvival, step_functions
from ehrprog.models.death import DeathHazard
from ehrprog.models.explanations import ExplanationMixin
from ehrprog.models.history_fit import (
    build_model,
    fit_history,
    point_targets,
    validation_split,
    value_scale,
)
from ehrprog.models.incidence import incidence_at
from ehrprog.models.model_card import training_summary
from ehrprog.models.params import PARAMETER_CONSTRAINTS, PREFIXES, RoutedParams
from ehrprog.models.persistence import PersistenceMixin
from ehrprog.models.tabular import TabularModel
from ehrprog.networks.inference import batched_outputs, ranking_score
from ehrprog.networks.piecewise import DAYS_PER_YEAR, SURVIVAL_PIECES_YEARS, cumulative_hazard
from ehrprog.networks.training import broadcast_seed, fit_seed, resolve_device

#: Share of unseen input codes above which prediction warns (the history then adds little).
UNKNOWN_CODES_WARNING = 0.5


class VisitProgressionEstimator(RoutedParams, ExplanationMixin, PersistenceMixin, BaseEstimator):
    """Predict the next CKD stage and/or the time to progression from a subject's visits.

    Args:
        target: ``"stage"`` (classification of the next recorded stage), ``"progression"``
            (survival model of time to a higher stage) or ``"both"`` (trained jointly).
        tabular: the :class:`~ehrprog.models.tabular.TabularModel` the history is added to (cloned at
            ``fit``; ``None``: ``TabularModel()`` seeded from ``random_state``). Its parameters
            are reachable as ``tabular__<name>`` (e.g. ``tabular__risk_model="cox"``).
        backbone: the name of a registered backbone plugin (``ehrprog plugins`` lists them);
            ``"default"`` learns code embeddings and a within-visit encoder from scratch.
        embedding_dim: code embedding size D.
        hidden_dim: sequence state size H.
        visit_encoder: ``"attention"`` (masked attention pooling) or ``"transformer"``.
        sequence_encoder: ``"gru"``, ``"lstm"`` or ``"transformer"`` (causal).
        dropout: dropout on the sequence state (and inside transformers).
        max_epochs: most passes over the training points (AdamW).
        batch_size: subjects per batch.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        n_iter_no_change: stop when the monitored value (see ``selection``) has not improved by
            more than ``tol`` for this many epochs; the best epoch's weights are kept (epoch 0,
            the tabular model alone, is a candidate).
        tol: the improvement that counts (see ``n_iter_no_change``).
        selection: ``"score"`` monitors the validation score (what ``score`` reports: C-index,
            macro AUROC or their mean); ``"loss"`` the validation loss (the training loss when
            there is no validation split, and whenever the score is undefined).
        validation_fraction: share of groups (subjects by default) held out for early stopping;
            0 disables it.
        max_codes_per_visit: the first codes of a visit kept.
        max_visits: the last visits of a history kept.
        min_code_count: codes seen fewer times in training share the unknown embedding.
        survival_head: ``"cox"`` (log relative risk, partial likelihood, Breslow baseline) or
            ``"piecewise"`` (log hazards per piece of :data:`~ehrprog.networks.piecewise.SURVIVAL_PIECES_YEARS`,
            exact piecewise-exponential likelihood; ``predict_risk`` is the log cumulative hazard
            at 5 years). Either way the tabular log relative risk is the proportional start.
        backbone_probe: the offsets also read the backbone's own output at the prediction visit
            (for a pre-trained backbone, its patient representation). ``"auto"``: on when
            ``backbone__checkpoint`` is given.
        device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``...
        random_state: an int seeds everything (the same data and seed give the same model on
            CPU); ``None`` draws a fresh seed at each ``fit``, as scikit-learn does.
        verbose: 0 silent, 1 a progress bar per epoch.
        **kwargs: ``backbone__<name>`` extra parameters for the backbone plugin's factory.

    Attributes:
        classes_: stage labels (``target`` stage/both).
        vocabulary_: the code vocabulary.
        tabular_: the fitted :class:`~ehrprog.models.tabular.TabularModel`.
        model_: the trained :class:`~ehrprog.networks.visit_model.VisitSequenceModel` (on ``device``).
        history_: one dict per epoch (``epoch``, ``train_loss``, ``valid_loss``, ``seconds``...).
        loss_curve_, validation_loss_curve_: the training and validation loss per epoch.
        n_iter_: epochs run; best_epoch_: the epoch whose weights the model holds (0: the
            tabular model alone, which no epoch bettered on validation).
        initial_validation_: the validation figures of epoch 0 (the tabular model alone), or
            ``None`` without a validation split.
        history_gain_: validation score of the kept model minus the tabular model's (epoch 0):
            what the history adds; 0.0 where it did not beat the tabular model by more than one
            standard error of a paired bootstrap over the validation subjects, or where there are
            fewer than 30 of them (then dropped: ``history_kept_`` False, ``best_epoch_`` 0);
            ``None`` without a validation split.
        history_gain_se_: that standard error.
        history_trial_gain_: the best history epoch's validation gain over the tabular model,
            whether it was kept or not (0.0 when no epoch beat epoch 0).
        event_times_, cumulative_baseline_hazard_: Breslow baseline (``target`` progression/both).
        death_: where ``y`` had a ``death`` column (death competing), the model of death
            (:class:`~ehrprog.models.death.DeathHazard`) behind :meth:`predict_cumulative_incidence`;
            ``None`` otherwise (or with fewer than 5 training deaths).
        n_features_in_: 1 (inputs are visit histories, not a feature matrix).
    """

    _parameter_constraints: dict = PARAMETER_CONSTRAINTS

    def __init__(
        self,
        target: str = "stage",
        tabular: TabularModel | None = None,
        backbone: str = "default",
        embedding_dim: int = 64,
        hidden_dim: int = 64,
        visit_encoder: str = "attention",
        sequence_encoder: str = "gru",
        dropout: float = 0.1,
        max_epochs: int = 20,
        batch_size: int = 64,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        n_iter_no_change: int = 3,
        tol: float = 1e-4,
        validation_fraction: float = 0.15,
        max_codes_per_visit: int = 64,
        max_visits: int = 256,
        min_code_count: int = 1,
        selection: str = "score",
        backbone_probe: bool | str = "auto",
        survival_head: str = "cox",
        device: str = "auto",
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 0,
        **kwargs: Any,
    ) -> None:
        self.target = target
        self.tabular = tabular
        self.backbone = backbone
        self.embedding_dim = embedding_dim
        self.hidden_dim = hidden_dim
        self.visit_encoder = visit_encoder
        self.sequence_encoder = sequence_encoder
        self.dropout = dropout
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.validation_fraction = validation_fraction
        self.max_codes_per_visit = max_codes_per_visit
        self.max_visits = max_visits
        self.min_code_count = min_code_count
        self.selection = selection
        self.backbone_probe = backbone_probe
        self.survival_head = survival_head
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        for key, value in kwargs.items():
            if not key.startswith(PREFIXES):
                raise TypeError(f"unexpected parameter {key!r}; extra parameters must start with {PREFIXES}")
            setattr(self, key, value)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        tags.input_tags.two_d_array = False
        tags.target_tags.required = True
        if self.target == "stage":
            tags.estimator_type = "classifier"
        return tags

    # ----------------------------------------------------------- set-up
    def _device(self) -> torch.device:
        """The device training and prediction run on (checked to exist)."""
        return resolve_device(self.device)

    def _probe(self) -> bool:
        """Whether the offsets read the backbone's output (``backbone_probe``, ``"auto"`` resolved)."""
        if self.backbone_probe == "auto":
            return getattr(self, "backbone__checkpoint", None) is not None
        return bool(self.backbone_probe)

    def _build_model(self, n_classes: int, architecture: dict | None = None, *, saved: bool = False):
        """The visit network for ``vocabulary_`` (:func:`~ehrprog.models.history_fit.build_model`)."""
        return build_model(self, n_classes, architecture, saved=saved)

    def _visit_tensors(self, X: CohortX, tabular: np.ndarray | None = None) -> VisitTensors:
        """The model's input arrays for ``X`` (in memory, or read shard by shard for a cohort on
        disk), the tabular model's outputs as the points' features (``tabular``: already computed)."""
        outputs = self.tabular_.transform(X) if tabular is None else tabular
        return visit_tensors(X, self.vocabulary_, self.max_codes_per_visit, self.max_visits, self.value_scale_, outputs)

    def _warn_unit_changes(self, X: CohortX) -> None:
        """Warns (:class:`~ehrprog.core.errors.UnitWarning`) where a code's values are in another
        unit than at training, with no conversion between them."""
        changed = self.vocabulary_.unit_changes(X.code_metadata)
        if changed and getattr(self, "model_", None) is not None:
            warnings.warn(
                f"{len(changed)} code(s) hold values in another unit than the model was trained on, which no "
                f"conversion relates (ehrprog.io.units): {', '.join(changed[:5])}; their values are read as they are. "
                "Convert them to the training unit, or refit on this data",
                UnitWarning,
                stacklevel=4,
            )

    # ----------------------------------------------------------- training
    def fit(self, X: CohortX, y: Any, groups: Any = None) -> VisitProgressionEstimator:
        """Train on prediction points ``X`` (a :class:`~ehrprog.tasks.CohortX`) with targets ``y``.

        ``y`` is a cohort's ``y`` frame (the estimator takes what ``target`` needs), a
        scikit-survival structured array (progression) or an array of stages (stage). Points
        without a next stage are ignored by the stage loss. Survival targets must be finite, not
        negative and hold at least one event. ``groups`` (``[len(X)]``, optional) are the units the
        internal validation split holds out whole (by default the subjects; e.g. sites, so that
        early stopping is judged on unseen sites); fewer than 5 groups means no validation split.
        The tabular model's stacking folds are always by subject. A loss that turns NaN or
        infinite stops training with :class:`~ehrprog.networks.training.NonFiniteLossError`.
        """
        self._validate_params()
        if not isinstance(X, CohortX):
            raise TypeError(f"X must be a CohortX (cohort.X from a task's build), got {type(X).__name__}")
        stage, event, tte = split_targets(y, len(X))
        if self.target in ("stage", "both") and stage is None:
            raise ValueError(f"target={self.target!r} needs stages in y (a 'stage' column or a stage array)")
        if self.target in ("progression", "both"):
            if event is None or tte is None:
                raise ValueError(
                    f"target={self.target!r} needs 'event' and 'time_to_event_days' in y "
                    "(or a scikit-survival structured array)"
                )
            check_survival_targets(event, tte)
        if len(X) == 0:
            raise ValueError("cannot fit on an empty cohort")
        device = self._device()
        seed = broadcast_seed(fit_seed(self.random_state), device)
        self.n_features_in_ = 1
        targets, classes = point_targets(self.target, stage, event, tte, len(X))
        if classes is not None:
            self.classes_ = classes
        causes = competing_causes(y, len(X))
        self.training_data_ = training_summary(X, event, tte, stage, causes)
        del stage  # the stage target is in targets now (int8)
        subjects = X.column("subject_id").to_numpy()
        train_rows, valid_rows = validation_split(subjects, groups, self.validation_fraction, seed)
        self.vocabulary_ = Vocabulary.fit(X[train_rows], min_count=self.min_code_count)
        self.value_scale_ = value_scale(X[train_rows])
        self.tabular_ = clone(self.tabular) if self.tabular is not None else TabularModel(random_state=seed)
        fit_history(self, X, targets, classes, event, tte, subjects, train_rows, valid_rows, seed, device)
        self.death_ = None  # where death competes: a model of it, for the incidence of progression
        if causes is not None and self.target in ("progression", "both"):
            rows = self.tabular_._fitting_sample(train_rows, subjects)  # the tabular part's own rows
            self.death_ = DeathHazard.fit(self.tabular_, X[rows], causes[rows] == DEATH, tte[rows])
        return self

    # ----------------------------------------------------------- prediction
    def _check(self, X: Any) -> None:
        check_is_fitted(self, "model_")
        if not isinstance(X, CohortX):
            raise TypeError(f"X must be a CohortX, got {type(X).__name__}")

    def _predict_outputs(
        self, X: CohortX, tabular: np.ndarray | None = None
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Stage logits ``[n, K]`` and risk outputs in the order of ``X``'s points, on ``device``
        (``tabular``: the tabular model's outputs for ``X``, already computed).

        Piece by piece (:meth:`~ehrprog.cohorts.cohort.CohortX.parts`): a cohort on disk is read shard by
        shard, so memory holds one shard's visits, features and tensors at a time, and the outputs."""
        check_is_fitted(self, "model_")
        self._warn_unit_changes(X)
        device = self._device()
        self.model_.to(device)
        model = self.model_
        logits = np.zeros((len(X), model.n_classes), np.float32) if model.stage_head is not None else None
        risk = None
        if model.risk_head is not None:
            risk = np.zeros((len(X), model.survival_pieces) if model.survival_pieces else len(X), np.float32)
        unknown = 0.0
        for part, rows in X.parts():
            tensors = self._visit_tensors(part, None if tabular is None else tabular[rows])
            unknown += getattr(tensors, "unknown_share", 0.0) * len(rows)
            part_logits, part_risk = batched_outputs(model, tensors, np.arange(len(part)), device, self.batch_size)
            if logits is not None:
                logits[rows] = part_logits
            if risk is not None:
                risk[rows] = part_risk
        if len(X) and unknown / len(X) > UNKNOWN_CODES_WARNING:
            warnings.warn(
                f"{unknown / len(X):.0%} of the input codes were never seen in training (e.g. another code system, "
                "'OMOP/<id>' vs 'SNOMED/...'): the history adds almost nothing to these predictions",
                UserWarning,
                stacklevel=3,
            )
        return logits, risk

    def predict_proba(self, X: CohortX) -> np.ndarray:
        """Stage probabilities ``[n, len(classes_)]``."""
        self._check(X)
        self._require("stage", "predict_proba")
        logits = self._predict_outputs(X)[0]
        return torch.softmax(torch.from_numpy(logits), dim=1).numpy()

    def predict_risk(self, X: CohortX) -> np.ndarray:
        """Risk score of progression ``[n]`` (higher = sooner): the log relative risk (Cox head) or
        the log cumulative hazard at 5 years (piecewise head)."""
        self._check(X)
        self._require("progression", "predict_risk")
        return ranking_score(self._predict_outputs(X)[1])

    def predict(self, X: CohortX) -> np.ndarray:
        """The most probable next stage (``target`` stage/both) or the progression risk score."""
        if self.target == "progression":
            return self.predict_risk(X)
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]

    def predict_survival_function(self, X: CohortX, return_array: bool = False):
        """Progression-free survival: ``S(t | x) = exp(-H0(t) exp(r(x)))`` (Cox head, Breslow
        ``H0``) or ``exp(-H(t | x))`` from the piecewise hazards (piecewise head).

        Returns scikit-survival ``StepFunction`` objects over ``event_times_`` (days), or with
        ``return_array=True`` an array ``[n, len(event_times_)]``.
        """
        if self.survival_head == "piecewise":
            self._check(X)
            self._require("progression", "predict_survival_function")
            log_hazard = torch.from_numpy(self._predict_outputs(X)[1]).double()
            years = torch.from_numpy(self.event_times_ / DAYS_PER_YEAR)
            survival = torch.exp(-cumulative_hazard(log_hazard, years, SURVIVAL_PIECES_YEARS)).numpy()
            return step_functions(self.event_times_, survival, return_array)
        breslow = BreslowSurvival(self.event_times_, self.cumulative_baseline_hazard_)
        return breslow.survival_function(self.predict_risk(X), return_array)

    def predict_survival_at(self, X: CohortX, days: float | np.ndarray) -> np.ndarray:
        """Progression-free survival at ``days`` after each point: ``[n]`` for one time, ``[n, M]``
        for ``M`` times; the values :meth:`predict_survival_function`'s step functions give there
        (held flat before the first and after the last training event time), without building them."""
        self._check(X)
        self._require("progression", "predict_survival_at")
        return self._survival_at(self._predict_outputs(X)[1], days)

    def _survival_at(self, risk: np.ndarray, days: float | np.ndarray) -> np.ndarray:
        """:meth:`predict_survival_at` from the risk outputs of :meth:`_predict_outputs`."""
        times = self.event_times_
        wanted = np.atleast_1d(np.asarray(days, dtype=np.float64))
        at = np.searchsorted(times, np.clip(wanted, times[0], times[-1]), side="right") - 1
        if self.survival_head == "piecewise":
            years = torch.from_numpy(times[at] / DAYS_PER_YEAR)
            log_hazard = torch.from_numpy(np.asarray(risk)).double()
            survival = torch.exp(-cumulative_hazard(log_hazard, years, SURVIVAL_PIECES_YEARS)).numpy()
        else:
            relative = np.exp(np.asarray(risk, dtype=np.float64))
            survival = np.exp(-np.outer(relative, self.cumulative_baseline_hazard_[at]))
        return survival[:, 0] if np.ndim(days) == 0 else survival

    def predict_cumulative_incidence(self, X: CohortX, days: float | np.ndarray) -> np.ndarray:
        """The cumulative incidence of progression with death competing, by ``days`` after each
        point: ``[n]`` for one time, ``[n, M]`` for ``M``. The model's progression hazard (deaths
        censored, as it was trained) combined with its model of death (``death_``,
        :class:`~ehrprog.models.death.DeathHazard`), fitted where ``y`` had a ``death`` column
        (``CKDProgression(death="competing")``); never above one minus :meth:`predict_survival_at`.

        Raises:
            AttributeError: the model was fitted with death censoring (no ``death`` in ``y``) or
                with fewer training deaths than a model of death needs.
        """
        self._check(X)
        self._require("progression", "predict_cumulative_incidence")
        incidence = self._incidence(self._predict_outputs(X)[1], X, days)
        return incidence[:, 0] if np.ndim(days) == 0 else incidence

    def _incidence(self, risk: np.ndarray, X: CohortX, days: float | np.ndarray) -> np.ndarray:
        """:meth:`predict_cumulative_incidence` ``[n, M]`` from the risk outputs of :meth:`_predict_outputs`."""
        if getattr(self, "death_", None) is None:
            raise AttributeError(
                "predict_cumulative_incidence needs a model fitted with death competing (y with a 'death' column: "
                "CKDProgression(death='competing')) and at least 5 training deaths"
            )
        grid = np.union1d(self.event_times_, self.death_.event_times)
        before = grid < self.event_times_[0]

        def survival(rows: slice) -> np.ndarray:
            curves = self._survival_at(risk[rows], grid)
            curves[:, before] = 1.0  # no progression hazard before the first training progression
            return curves

        death = self.death_.risk(self.tabular_, X)
        return incidence_at(survival, death, self.death_.baseline_at(grid), grid, np.atleast_1d(days))

    def score(self, X: CohortX, y: Any) -> float:
        """Macro one-vs-rest AUROC (stage), Harrell's C (progression), or their mean (both)."""
        stage, event, tte = split_targets(y, len(X))
        scores = []
        if self.target in ("stage", "both"):
            known = ~np.isnan(stage)
            scores.append(macro_auroc(stage[known], self.predict_proba(X)[known], self.classes_))
        if self.target in ("progression", "both"):
            check_survival_targets(event, tte)
            scores.append(harrell_c(event, tte, self.predict_risk(X)))
        return float(np.mean(scores))

    def _require(self, kind: str, method: str) -> None:
        if kind == "stage" and self.target == "progression":
            raise AttributeError(f"{method} needs target='stage' or 'both'; this estimator has target='progression'")
        if kind == "progression" and self.target == "stage":
            raise AttributeError(f"{method} needs target='progression' or 'both'; this estimator has target='stage'")


__all__ = ["NotFittedError", "VisitProgressionEstimator"]
