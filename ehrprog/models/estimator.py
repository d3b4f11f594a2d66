"""``VisitProgressionEstimator``: the tabular model plus what the visit history adds, as one
scikit-learn estimator.

It composes parts that live, and are tested, on their own:

* :class:`~ehrprog.tabular.TabularModel` (parameter ``tabular``, routed as ``tabular__...``):
  the clinical table and a booster or linear Cox and a logistic model on it, stacked out-of-fold
  on the training subjects;
* :class:`~ehrprog.model.VisitSequenceModel` (``backbone__...``, ``module__...``): the visit
  network, whose heads are offsets on the tabular outputs, started at zero;
* :func:`~ehrprog.training.train`: the one training engine (epoch 0 is the tabular model alone,
  so ``history_gain_`` is what training gained over it on validation, kept only beyond its noise);
* :class:`~ehrprog.breslow.BreslowSurvival` for survival functions,
  :func:`~ehrprog.inference.outputs_score` the one scorer, :mod:`ehrprog.explain` and
  :meth:`TabularModel.contributions` the attributions, :mod:`ehrprog.persistence` saving.

scikit-learn's rules hold: ``__init__`` only stores parameters; ``fit`` validates, seeds from
``random_state`` and returns ``self``; fitted state ends in ``_``.
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ehrprog.batching import VisitTensors, Vocabulary
from ehrprog.breslow import BreslowSurvival, step_functions
from ehrprog.errors import UnitWarning
from ehrprog.history_fit import (
    baseline_hazard,
    build_model,
    engine_settings,
    judge_history,
    point_targets,
    training_record,
    validation_split,
    validator,
    value_scale,
)
from ehrprog.inference import batched_outputs, ranking_score, with_targets
from ehrprog.metrics import harrell_c, macro_auroc
from ehrprog.model import SupervisedObjective
from ehrprog.model_card import training_summary
from ehrprog.store import visit_tensors
from ehrprog.survival import DAYS_PER_YEAR, SURVIVAL_PIECES_YEARS, base_log_hazards, cumulative_hazard
from ehrprog.tabular import TabularModel
from ehrprog.targets import check_survival_targets, split_targets
from ehrprog.tasks.cohort import CohortX
from ehrprog.training import broadcast_seed, fit_seed, resolve_device, train

_PREFIXES = ("backbone__",)

#: Share of unseen input codes above which prediction warns (the history then adds little).
UNKNOWN_CODES_WARNING = 0.5


class VisitProgressionEstimator(BaseEstimator):
    """Predict the next CKD stage and/or the time to progression from a subject's visits.

    Args:
        target: ``"stage"`` (classification of the next recorded stage), ``"progression"``
            (survival model of time to a higher stage) or ``"both"`` (trained jointly).
        tabular: the :class:`~ehrprog.tabular.TabularModel` the history is added to (cloned at
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
            ``"piecewise"`` (log hazards per piece of :data:`~ehrprog.survival.SURVIVAL_PIECES_YEARS`,
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
        tabular_: the fitted :class:`~ehrprog.tabular.TabularModel`.
        model_: the trained :class:`~ehrprog.model.VisitSequenceModel` (on ``device``).
        history_: one dict per epoch (``epoch``, ``train_loss``, ``valid_loss``, ``seconds``...).
        loss_curve_, validation_loss_curve_: the training and validation loss per epoch.
        n_iter_: epochs run; best_epoch_: the epoch whose weights the model holds (0: the
            tabular model alone, which no epoch bettered on validation).
        initial_validation_: the validation figures of epoch 0 (the tabular model alone), or
            ``None`` without a validation split.
        history_gain_: validation score of the kept model minus the tabular model's (epoch 0):
            what the history adds; 0.0 where it did not beat the tabular model by more than one
            standard error of a paired bootstrap over the validation subjects (then dropped:
            ``history_kept_`` False, ``best_epoch_`` 0); ``None`` without a validation split.
        history_gain_se_: that standard error.
        history_trial_gain_: the best history epoch's validation gain over the tabular model,
            whether it was kept or not (0.0 when no epoch beat epoch 0).
        event_times_, cumulative_baseline_hazard_: Breslow baseline (``target`` progression/both).
        n_features_in_: 1 (inputs are visit histories, not a feature matrix).
    """

    _parameter_constraints: dict = {  # noqa: RUF012 (scikit-learn's convention)
        "target": [StrOptions({"stage", "progression", "both"})],
        "tabular": [None, HasMethods(["fit_stacked", "transform"])],
        "backbone": [str],
        "embedding_dim": [Interval(Integral, 4, None, closed="left")],
        "hidden_dim": [Interval(Integral, 4, None, closed="left")],
        "visit_encoder": [StrOptions({"attention", "transformer"})],
        "sequence_encoder": [StrOptions({"gru", "lstm", "transformer"})],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "max_codes_per_visit": [Interval(Integral, 1, None, closed="left")],
        "max_visits": [Interval(Integral, 1, None, closed="left")],
        "min_code_count": [Interval(Integral, 1, None, closed="left")],
        "selection": [StrOptions({"loss", "score"})],
        "backbone_probe": ["boolean", StrOptions({"auto"})],
        "survival_head": [StrOptions({"cox", "piecewise"})],
        "device": [str],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

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
            if not key.startswith(_PREFIXES):
                raise TypeError(f"unexpected parameter {key!r}; extra parameters must start with {_PREFIXES}")
            setattr(self, key, value)

    # ----------------------------------------------------------- parameters
    def _routed(self, prefix: str) -> dict[str, Any]:
        return {k[len(prefix) :]: v for k, v in vars(self).items() if k.startswith(prefix)}

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        params = super().get_params(deep=deep)
        params.update({k: v for k, v in vars(self).items() if k.startswith(_PREFIXES)})
        return params

    def set_params(self, **params: Any) -> VisitProgressionEstimator:
        routed = {k: v for k, v in params.items() if k.startswith(_PREFIXES)}
        for key, value in routed.items():
            setattr(self, key, value)
        rest = {k: v for k, v in params.items() if k not in routed}
        if self.tabular is None and "tabular" not in rest and any(k.startswith("tabular__") for k in rest):
            self.tabular = TabularModel()  # the default, made explicit so its parameters can be set
        return super().set_params(**rest) if rest else self

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
        """The visit network for ``vocabulary_`` (:func:`~ehrprog.history_fit.build_model`)."""
        return build_model(self, n_classes, architecture, saved=saved)

    def _visit_tensors(self, X: CohortX, tabular: np.ndarray | None = None) -> VisitTensors:
        """The model's input arrays for ``X`` (in memory, or read shard by shard for a cohort on
        disk), the tabular model's outputs as the points' features (``tabular``: already computed).
        Warns (:class:`~ehrprog.errors.UnitWarning`) where a code's values are in another unit
        than at training, with no conversion between them."""
        changed = self.vocabulary_.unit_changes(X.code_metadata)
        if changed and getattr(self, "model_", None) is not None:
            warnings.warn(
                f"{len(changed)} code(s) hold values in another unit than the model was trained on, which no "
                f"conversion relates (ehrprog.units): {', '.join(changed[:5])}; their values are read as they are. "
                "Convert them to the training unit, or refit on this data",
                UnitWarning,
                stacklevel=3,
            )
        outputs = self.tabular_.transform(X) if tabular is None else tabular
        return visit_tensors(X, self.vocabulary_, self.max_codes_per_visit, self.max_visits, self.value_scale_, outputs)

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
        infinite stops training with :class:`~ehrprog.training.NonFiniteLossError`.
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
        subjects = X.points["subject_id"].to_numpy()
        train_rows, valid_rows = validation_split(subjects, groups, self.validation_fraction, seed)
        self.vocabulary_ = Vocabulary.fit(X[train_rows], min_count=self.min_code_count)
        self.value_scale_ = value_scale(X[train_rows])
        self.tabular_ = clone(self.tabular) if self.tabular is not None else TabularModel(random_state=seed)
        risk = self.target in ("progression", "both")
        n_classes = len(classes) if classes is not None else 0
        stacked = self.tabular_.fit_stacked(
            X,
            stage=targets["stage_label"] if classes is not None else None,
            n_classes=n_classes,
            event=event.astype(bool) if risk else None,
            time=tte if risk else None,
            groups=subjects,
            train_rows=np.arange(len(X)),  # every point: the validation points' outputs are out-of-fold too
        )
        tensors = self._visit_tensors(X, stacked)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self._build_model(n_classes)
        if model.survival_pieces:  # each piece's log hazard given the tabular log relative risks
            time_years = torch.from_numpy(tte[train_rows] / DAYS_PER_YEAR)
            offsets = torch.from_numpy(stacked[train_rows, 0].astype(np.float64))
            base = base_log_hazards(time_years, torch.from_numpy(event[train_rows] > 0), SURVIVAL_PIECES_YEARS, offsets)
            with torch.no_grad():
                model.risk_head.bias.copy_(base.float())
        epoch0 = batched_outputs(model, tensors, valid_rows, device, self.batch_size) if len(valid_rows) else None
        start = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        result = train(
            SupervisedObjective(model),
            lambda epoch: tensors.plan_batches(train_rows, self.batch_size, np.random.default_rng([seed, epoch])),
            lambda rows, where: with_targets(tensors.batch(rows), targets, where),
            engine_settings(self, device, seed),
            validate=validator(tensors, targets, valid_rows, device, self.batch_size) if len(valid_rows) else None,
            validate_first=True,
        )
        record = training_record(result)
        record.update(
            judge_history(
                model, start, epoch0, tensors, targets, valid_rows, subjects, device, seed, self.batch_size,
                record["best_epoch_"],
            )
        )  # fmt: skip
        for name, value in record.items():
            setattr(self, name, value)
        self.model_ = model.eval()
        self.training_data_ = training_summary(X, event, tte, stage)
        self.heldout_ = None  # held-out scores of this fit: set by whoever measures them (model card)
        if risk:
            # The baseline is fitted to the risks predictions will have: the tabular model fitted
            # on every training point (not the stacked outputs the offsets were trained against).
            tensors.point_features = self.tabular_.transform(X).astype(np.float32)
            self.event_times_, self.cumulative_baseline_hazard_ = baseline_hazard(
                model, tensors, train_rows, event, tte, device, self.batch_size
            )
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
        (``tabular``: the tabular model's outputs for ``X``, already computed)."""
        device = self._device()
        self.model_.to(device)
        tensors = self._visit_tensors(X, tabular)
        unknown = getattr(tensors, "unknown_share", 0.0)
        if unknown > UNKNOWN_CODES_WARNING:
            warnings.warn(
                f"{unknown:.0%} of the input codes were never seen in training (e.g. another code system, "
                "'OMOP/<id>' vs 'SNOMED/...'): the history adds almost nothing to these predictions",
                UserWarning,
                stacklevel=3,
            )
        return batched_outputs(self.model_, tensors, np.arange(len(X)), device, self.batch_size)

    def decision_components(self, X: CohortX) -> dict[str, np.ndarray]:
        """The estimator's outputs as the tabular model's part plus the visit history's.

        Returns, for the heads the estimator has: ``"tabular_risk"`` and ``"history_risk"``
        ``[n]``, whose sum is :meth:`predict_risk`; ``"tabular_logits"`` and ``"history_logits"``
        ``[n, K]``, whose sum is the stage logits (softmax: :meth:`predict_proba`). The tabular
        part is the tabular model's output as the network scales it, plus the head's constant
        (for the piecewise head: the ranking score of those log hazards); the history part is
        the rest, what the visits add (zero where the history was dropped, ``history_kept_``).
        """
        self._check(X)
        tabular = self.tabular_.transform(X)
        logits, risk = self._predict_outputs(X, tabular)
        tab_logits, tab_risk = self._tabular_outputs(tabular)
        parts = {}
        if risk is not None:
            parts["tabular_risk"] = ranking_score(tab_risk)
            parts["history_risk"] = ranking_score(risk) - parts["tabular_risk"]
        if logits is not None:
            parts["tabular_logits"] = tab_logits
            parts["history_logits"] = logits - tab_logits
        return parts

    def tabular_outputs(self, X: CohortX) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Stage logits ``[n, K]`` and risk outputs of the tabular part alone (the offsets' weights
        at zero; no visit is read): :meth:`~ehrprog.model.VisitSequenceModel.tabular_outputs`."""
        self._check(X)
        return self._tabular_outputs(self.tabular_.transform(X))

    def _tabular_outputs(self, tabular: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        device = next(self.model_.parameters()).device
        with torch.no_grad():
            outputs = self.model_.tabular_outputs(torch.from_numpy(tabular).to(device))
        return tuple(None if o is None else o.float().cpu().numpy() for o in outputs)

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

    def explain(self, X: CohortX, output: str = "auto", steps: int = 32) -> pl.DataFrame:
        """What the history adds, attributed per code and per visit by integrated gradients
        (see :mod:`ehrprog.explain`; the tabular part is :meth:`explain_clinical`'s).

        Args:
            X: prediction points to explain (each is explained in its own history).
            output: ``"risk"`` (log relative risk), ``"stage"`` (logit of the predicted stage) or
                ``"auto"`` (risk when the model has a survival head, else stage).
            steps: integration steps.

        Returns:
            One row per (point, input visit, code): ``point`` (row of ``X``), ``subject_id``,
            ``visit_index``, ``visit_start``, ``code``, ``attribution`` and ``visit_attribution``
            (the visit's total).
        """
        from ehrprog.explain import integrated_gradients

        output = self._explained(X, output, "explain")
        device = self._device()
        self.model_.to(device)
        return integrated_gradients(self.model_, self._visit_tensors(X), X, self.vocabulary_, output, steps, device)

    def explain_clinical(self, X: CohortX, output: str = "auto") -> pl.DataFrame:
        """Attributions of the tabular part to each clinical input (exact TreeSHAP for a booster,
        ``coef * (x - mean) / scale`` for a linear model; :meth:`TabularModel.contributions`),
        scaled as the model scales the tabular output.

        Args:
            X: prediction points to explain.
            output: ``"risk"``, ``"stage"`` (the logit of the predicted stage) or ``"auto"``.

        Returns:
            One row per (point, input): ``point`` (row of ``X``), ``subject_id``, ``feature``,
            ``value`` (the input) and ``attribution``; every clinical-table column, and the
            windowed-count columns that are recorded or attributed for that point.
        """
        from ehrprog.explain import tabular_attributions

        output = self._explained(X, output, "explain_clinical")
        scale = self.model_.risk_scale if output == "risk" else self.model_.stage_scale
        predicted = self.predict_proba(X).argmax(axis=1) if output == "stage" else None
        return tabular_attributions(self.tabular_, X, output, predicted, float(scale.detach()))

    def _explained(self, X: CohortX, output: str, method: str) -> str:
        """The output ``method`` explains (``"auto"`` resolved), checked against the target."""
        self._check(X)
        if output == "auto":
            output = "stage" if self.target == "stage" else "risk"
        if output not in ("risk", "stage"):
            raise ValueError(f"output must be 'risk', 'stage' or 'auto', got {output!r}")
        self._require("progression" if output == "risk" else "stage", method)
        return output

    def save(self, path: str | Path) -> Path:
        """Write ``config.json`` (parameters, vocabulary, classes, baseline hazard, history,
        versions), ``model.safetensors`` (weights) and ``MODEL_CARD.md`` (training data, held-out
        metrics where measured, intended use, known limits; :mod:`ehrprog.model_card`) to the folder
        ``path``; see :mod:`ehrprog.persistence`."""
        from ehrprog.persistence import save_estimator

        check_is_fitted(self, "model_")
        return save_estimator(self, path)

    def save_backbone(self, path: str | Path) -> Path:
        """Write the fitted (fine-tuned) backbone as a pre-trained folder (``config.json``,
        ``model.safetensors``, ``vocab.json``) that ``backbone__checkpoint=path`` loads into
        another estimator, aligned to that estimator's codes. Backbones with a pre-trained layout
        only (a ``model_type``: default, CEHR-BERT, Med-BERT, BEHRT, ClinicalBERT)."""
        check_is_fitted(self, "model_")
        from ehrprog.backbones.checkpoint import save_pretrained

        backbone = self.model_.backbone
        if not getattr(backbone, "model_type", ""):
            raise ValueError(f"backbone {self.backbone!r} has no pre-trained folder layout to save")
        extra = backbone.pretrained_config() if hasattr(backbone, "pretrained_config") else {}
        self.model_.cpu()
        return save_pretrained(backbone, self.vocabulary_.codes, path, backbone=self.backbone, fine_tuned=True, **extra)

    @classmethod
    def load(cls, path: str | Path) -> VisitProgressionEstimator:
        """Load a saved estimator. Reads and validates JSON and safetensors only: no code is
        executed and nothing outside the folder is opened."""
        from ehrprog.persistence import load_estimator

        return load_estimator(cls, path)


__all__ = ["NotFittedError", "VisitProgressionEstimator"]
