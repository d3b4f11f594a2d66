"""``VisitProgressionEstimator``: the hierarchical visit model as a scikit-learn estimator.

A thin facade. Follows scikit-learn to the letter: ``__init__`` only stores parameters; ``fit``
validates, seeds from ``random_state`` and returns ``self``; fitted state ends in ``_``;
prediction methods check fitted-ness. Nested parameters are routed with ``backbone__...`` /
``module__...`` so a grid search can reach them. The work is done elsewhere, once:
targets in :mod:`ehrprog.targets`, tensors in :mod:`ehrprog.batching`, the network in
:mod:`ehrprog.model`, training in :mod:`ehrprog.training` (shared with pre-training),
attributions in :mod:`ehrprog.explain`, saving and loading in :mod:`ehrprog.persistence`.
"""

from __future__ import annotations

import os
import warnings
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GroupShuffleSplit
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ehrprog.batching import Batch, VisitTensors, Vocabulary
from ehrprog.breslow import BreslowSurvival, step_functions
from ehrprog.errors import UnitWarning, one_warning
from ehrprog.features import PointFeatures, clinical_table
from ehrprog.metrics import harrell_c, macro_auroc
from ehrprog.model import SupervisedObjective, VisitSequenceModel, supervised_loss
from ehrprog.model_card import training_summary
from ehrprog.store import visit_tensors
from ehrprog.survival import DAYS_PER_YEAR, SURVIVAL_PIECES_YEARS, base_log_hazards, cumulative_hazard, risk_score
from ehrprog.targets import check_survival_targets, split_targets
from ehrprog.tasks.cohort import CohortX
from ehrprog.training import TrainSettings, broadcast_seed, train

_PREFIXES = ("backbone__", "module__")
#: Training events ``clinical_booster="auto"`` needs before it stacks a booster (trees fitted on
#: fewer overfit: on SynPUF folds, ~85 events, the booster cost 0.045 C).
MIN_BOOSTER_EVENTS = 200

#: Share of unseen input codes above which prediction warns (the history then adds little).
UNKNOWN_CODES_WARNING = 0.5

#: Subjects per batch at prediction time (more than in training: no gradients are kept).
PREDICT_BATCH_SUBJECTS = 256


def _value_scale(X: CohortX) -> tuple[float, float]:
    """Mean and standard deviation of the training points' finite current staging-lab values."""
    if "current_value" not in X.points.columns:
        return (0.0, 1.0)
    values = X.points["current_value"].cast(pl.Float64)
    values = values.filter(values.is_finite())
    if values.len() < 2:
        return (0.0, 1.0)
    std = float(values.std())
    return (float(values.mean()), std if std > 1e-6 else 1.0)


class VisitProgressionEstimator(BaseEstimator):
    """Predict the next CKD stage and/or the time to progression from a subject's visits.

    Args:
        target: ``"stage"`` (classification of the next recorded stage), ``"progression"``
            (Cox survival model of time to a higher stage) or ``"both"`` (trained jointly).
        backbone: the name of a registered backbone plugin (``ehrprog plugins`` lists them);
            ``"default"`` learns code embeddings and a within-visit encoder from scratch.
        embedding_dim: code embedding size D.
        hidden_dim: sequence state size H.
        visit_encoder: ``"attention"`` (masked attention pooling) or ``"transformer"``.
        sequence_encoder: ``"gru"``, ``"lstm"`` or ``"transformer"`` (causal).
        dropout: dropout before the heads (and inside transformers).
        max_epochs: most passes over the training points (AdamW).
        batch_size: subjects per batch.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        n_iter_no_change: stop when the monitored value (see ``selection``) has not improved by
            more than ``tol`` for this many epochs; the best epoch's weights are kept (as
            scikit-learn's MLP).
        tol: the improvement that counts (see ``n_iter_no_change``).
        selection: ``"score"`` monitors the validation score (what ``score`` reports: C-index,
            macro AUROC or their mean); ``"loss"`` the validation loss (the training loss when
            ``validation_fraction`` is 0, and whenever the score is undefined).
        validation_fraction: share of subjects held out (by subject) for early stopping; 0 disables it.
        max_codes_per_visit: the first codes of a visit kept.
        max_visits: the last visits of a history kept.
        min_code_count: codes seen fewer times in training share the unknown embedding.
        refit_risk_head: after training, refit the linear risk head to the exact (ridge-penalised)
            Cox optimum on the frozen features of the held-out **validation** subjects (the
            network never trained on them, so their features are not overfitted) when they hold
            at least 20 events, else on the training points; ``risk_head_refit_`` says which.
            Off by default: with point features it cost 0.06 C-index on the simulator.
        point_features: give the heads :class:`~ehrprog.features.PointFeatures` (per lab last
            value, trend, trend value, distance to the next stage's boundary; age, sex...).
        clinical_init: start the heads from the clinical inputs alone (exact linear models, then
            the clinical MLP fitted full-batch with validation selection); sequence training is
            then kept only where it improves the validation score (``best_epoch_`` 0 otherwise).
        survival_head: ``"cox"`` (log relative risk, partial likelihood, Breslow baseline) or
            ``"piecewise"`` (log hazards per piece of :data:`~ehrprog.survival.SURVIVAL_PIECES_YEARS`,
            exact piecewise-exponential likelihood: absolute risks at any horizon without a
            proportional-hazards assumption; ``predict_risk`` is the log cumulative hazard at 5 years).
        clinical_booster: give the heads one more clinical input, the log-risk margin of a
            gradient-boosted Cox model (XGBoost) on the clinical inputs, stacked (out-of-fold on
            training subjects; see :mod:`ehrprog.booster`). ``"auto"``: on for ``target``
            progression or both when the training points hold at least ``MIN_BOOSTER_EVENTS``
            (200) events (+0.006 C at 1,000 simulated people; with ~85 events, SynPUF folds, it
            cost 0.045), off for stage; ``True`` with ``target="stage"`` is an error.
        backbone_probe: the heads also read the backbone's own output at the prediction visit
            (for a pre-trained backbone, its patient representation), and the initial head fit
            includes it, as a linear probe of frozen pre-trained features would. ``"auto"``: on
            when ``backbone__checkpoint`` is given.
        device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``...; training
            and prediction both run there.
        random_state: an int seeds everything (the same data and seed give the same model on
            CPU); ``None`` draws a fresh seed at each ``fit``, as scikit-learn does.
        verbose: 0 silent, 1 a progress bar per epoch.
        **kwargs: ``backbone__<name>`` / ``module__<name>`` extra parameters for the backbone and
            the sequence model (e.g. ``module__n_stages``).

    Attributes:
        classes_: stage labels (``target`` stage/both).
        vocabulary_: the code vocabulary.
        model_: the trained torch module (:class:`~ehrprog.model.VisitSequenceModel`, on
            ``device``), with only the heads ``target`` needs.
        history_: one dict per epoch (``epoch``, ``train_loss``, ``valid_loss``, ``seconds``).
        loss_curve_, validation_loss_curve_: the training and validation loss per epoch.
        n_iter_: epochs run; best_epoch_: the epoch whose weights the model holds (0: the
            initialised heads, which no epoch bettered on validation).
        initial_validation_: the validation figures of the initialised model (``clinical_init``
            with a validation split), else ``None``.
        event_times_, cumulative_baseline_hazard_: Breslow baseline (``target`` progression/both).
        risk_head_refit_: where the risk head was refitted (``"validation"``, ``"training"``), or
            why not.
        n_features_in_: 1 (inputs are visit histories, not a feature matrix).
    """

    _parameter_constraints: dict = {  # noqa: RUF012 (scikit-learn's convention)
        "target": [StrOptions({"stage", "progression", "both"})],
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
        "refit_risk_head": ["boolean"],
        "point_features": ["boolean"],
        "clinical_init": ["boolean"],
        "selection": [StrOptions({"loss", "score"})],
        "backbone_probe": ["boolean", StrOptions({"auto"})],
        "survival_head": [StrOptions({"cox", "piecewise"})],
        "clinical_booster": ["boolean", StrOptions({"auto"})],
        "device": [str],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        target: str = "stage",
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
        refit_risk_head: bool = False,
        point_features: bool = True,
        clinical_init: bool = True,
        selection: str = "score",
        backbone_probe: bool | str = "auto",
        survival_head: str = "cox",
        clinical_booster: bool | str = "auto",
        device: str = "auto",
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 0,
        **kwargs: Any,
    ) -> None:
        self.target = target
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
        self.refit_risk_head = refit_risk_head
        self.point_features = point_features
        self.clinical_init = clinical_init
        self.selection = selection
        self.backbone_probe = backbone_probe
        self.survival_head = survival_head
        self.clinical_booster = clinical_booster
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
        params = super().get_params(deep=False)
        params.update({k: v for k, v in vars(self).items() if k.startswith(_PREFIXES)})
        return params

    def set_params(self, **params: Any) -> VisitProgressionEstimator:
        routed = {k: v for k, v in params.items() if k.startswith(_PREFIXES)}
        for key, value in routed.items():
            setattr(self, key, value)
        rest = {k: v for k, v in params.items() if k not in routed}
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
        if self.device == "auto":
            if torch.cuda.is_available():
                return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
            return torch.device("cpu")
        try:
            device = torch.device(self.device)
        except RuntimeError as error:
            raise ValueError(f"device={self.device!r} is not a torch device: {error}") from None
        if device.type not in ("cpu", "cuda", "mps"):
            raise ValueError(
                f"device={self.device!r}: ehrprog trains and predicts on 'auto', 'cpu', 'cuda[:N]' or 'mps'"
            )
        if device.type == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if count == 0 or (device.index or 0) >= count:
                raise ValueError(f"device={self.device!r}: this machine has {count} CUDA device(s)")
        return device

    def _probe(self) -> bool:
        """Whether the heads read the backbone's output (``backbone_probe``, ``"auto"`` resolved)."""
        if self.backbone_probe == "auto":
            return getattr(self, "backbone__checkpoint", None) is not None
        return bool(self.backbone_probe)

    def _booster(self) -> bool:
        """Whether a clinical booster is stacked (``clinical_booster``, ``"auto"`` resolved)."""
        if self.clinical_booster == "auto":
            return self.target in ("progression", "both")
        return bool(self.clinical_booster)

    def _seed(self) -> int:
        """The seed of this fit: ``random_state``'s, or a fresh one when it is ``None``."""
        if isinstance(self.random_state, np.random.RandomState):
            return int(self.random_state.randint(0, 2**31 - 1))
        if self.random_state is None:
            return int(np.random.SeedSequence().generate_state(1)[0] & 0x7FFFFFFF)
        return int(self.random_state)

    def _build_model(
        self, n_classes: int, architecture: dict[str, Any] | None = None, *, saved: bool = False
    ) -> VisitSequenceModel:
        """The model for ``vocabulary_`` with the heads ``target`` needs (``n_classes`` stages).

        ``architecture`` (from a saved estimator) replaces the backbone parameters that point at
        a pre-trained source. With ``saved``, no string-valued backbone parameter (a path: a
        checkpoint or a text encoder) reaches the factory: a saved estimator opens nothing
        outside its own folder.
        """
        from ehrprog.plugins import get_backbone

        spec = get_backbone(self.backbone)
        features = getattr(self, "point_features_", None) if self.point_features else None
        n_point_features = (features.n_features if features is not None else 0) + int(
            getattr(self, "booster_", None) is not None
        )
        routed = self._routed("backbone__")
        if saved:
            routed = {k: v for k, v in routed.items() if not isinstance(v, str)}
        try:
            backbone = spec.factory(
                **{
                    "vocab_size": self.vocabulary_.size,
                    "dim": self.embedding_dim,
                    "visit_encoder": self.visit_encoder,
                    "dropout": self.dropout,
                    "vocabulary": self.vocabulary_,
                    **routed,
                    **(architecture or {}),
                }
            )
        except TypeError as error:
            given = ", ".join(f"backbone__{name}" for name in sorted(routed)) or "none"
            raise ValueError(
                f"backbone {self.backbone!r} does not take the parameters given to it ({given}): {error}. "
                "In a grid over several backbones, give each its own parameters with a list of grids: "
                '[{"backbone": ["default"]}, {"backbone": ["cehrbert"], "backbone__checkpoint": [DIR]}]'
            ) from error
        return VisitSequenceModel(
            backbone,
            n_point_features=n_point_features,
            n_classes=n_classes if self.target in ("stage", "both") else 0,
            risk=self.target in ("progression", "both"),
            hidden=self.hidden_dim,
            sequence_encoder=self.sequence_encoder,
            dropout=self.dropout,
            probe=self._probe(),
            survival_pieces=len(SURVIVAL_PIECES_YEARS) + 1 if self.survival_head == "piecewise" else 0,
            **self._routed("module__"),
        )

    def _visit_tensors(self, X: CohortX) -> VisitTensors:
        """The model's input arrays for ``X``, in memory or read shard by shard for a cohort on
        disk (with the booster's margin as the last point feature
        once a booster is fitted)."""
        changed = self.vocabulary_.unit_changes(X.code_metadata)
        if changed and getattr(self, "model_", None) is not None:
            warnings.warn(
                f"{len(changed)} code(s) hold values in another unit than the model was trained on, which no "
                f"conversion relates (ehrprog.units): {', '.join(changed[:5])}; their values are read as they are. "
                "Convert them to the training unit, or refit on this data",
                UnitWarning,
                stacklevel=3,
            )
        features = self.point_features_.transform(X) if self.point_features else None
        tensors = visit_tensors(
            X, self.vocabulary_, self.max_codes_per_visit, self.max_visits, self.value_scale_, features
        )
        if getattr(self, "booster_", None) is not None:
            margin = self.booster_.predict(_clinical_table(tensors))
            tensors.point_features = np.column_stack([tensors.point_features, margin]).astype(np.float32)
        return tensors

    # ----------------------------------------------------------- training
    def fit(self, X: CohortX, y: Any, groups: Any = None) -> VisitProgressionEstimator:
        """Train on prediction points ``X`` (a :class:`~ehrprog.tasks.CohortX`) with targets ``y``.

        ``y`` is a cohort's ``y`` frame (the estimator takes what ``target`` needs), a
        scikit-survival structured array (progression) or an array of stages (stage). Points
        without a next stage are ignored by the stage loss. Survival targets must be finite, not
        negative and hold at least one event. ``groups`` (``[len(X)]``, optional) are the units the
        internal validation split holds out whole (by default the subjects; e.g. sites, so that
        early stopping is judged on unseen sites); fewer than 5 groups means no validation split.
        A loss that turns
        NaN or infinite stops training with :class:`~ehrprog.training.NonFiniteLossError`.
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
        if self.clinical_booster is True and self.target == "stage":
            raise ValueError("clinical_booster stacks a survival model: it needs target='progression' or 'both'")
        if self.refit_risk_head and self.survival_head == "piecewise":
            raise ValueError("refit_risk_head refits a Cox head; it does not apply to survival_head='piecewise'")
        if len(X) == 0:
            raise ValueError("cannot fit on an empty cohort")
        device = self._device()
        seed = broadcast_seed(self._seed(), device)
        self.n_features_in_ = 1
        stage_idx = np.full(len(X), -1, dtype=np.int64)
        n_classes = 0
        if self.target in ("stage", "both"):
            known = ~np.isnan(stage)
            self.classes_ = np.unique(stage[known]).astype(np.int64)
            if len(self.classes_) < 2:
                raise ValueError(f"need at least two stages in y to classify, got {self.classes_.tolist()}")
            stage_idx[known] = np.searchsorted(self.classes_, stage[known].astype(np.int64))
            n_classes = len(self.classes_)
        targets = {
            "stage_label": stage_idx,
            "event": (event if event is not None else np.zeros(len(X))).astype(np.float32),
            "time": (tte if tte is not None else np.zeros(len(X))).astype(np.float32),
        }
        subjects = X.points["subject_id"].to_numpy()
        held_out_units = subjects if groups is None else np.asarray(groups)
        if held_out_units.shape != (len(X),):
            raise ValueError(f"groups must hold one value per point ({len(X):,}), got shape {held_out_units.shape}")
        if groups is not None:  # a subject split between training and validation would leak
            pairs = pl.DataFrame({"subject": subjects, "group": held_out_units.astype(str)}).unique()
            if pairs.height != len(np.unique(subjects)):
                raise ValueError("groups must keep each subject's points in one group (a subject spans several)")
        rows = np.arange(len(X))
        train_rows, valid_rows = rows, np.array([], dtype=np.int64)
        if self.validation_fraction > 0 and len(np.unique(held_out_units)) >= 5:
            split = GroupShuffleSplit(n_splits=1, test_size=self.validation_fraction, random_state=seed)
            train_rows, valid_rows = next(split.split(rows, groups=held_out_units))
        self.vocabulary_ = Vocabulary.fit(X[train_rows], min_count=self.min_code_count)
        self.value_scale_ = _value_scale(X[train_rows])
        if self.point_features:
            self.point_features_ = PointFeatures().fit(X[train_rows])
        self.booster_ = None
        tensors = self._visit_tensors(X)
        # Stacked: out-of-fold margins on the training subjects. "auto" needs events enough for trees.
        if self._booster() and (self.clinical_booster is True or event[train_rows].sum() >= MIN_BOOSTER_EVENTS):
            from ehrprog.booster import ClinicalBooster

            booster = ClinicalBooster(seed=seed)
            margin = booster.fit_stacked(_clinical_table(tensors), event, tte, subjects, train_rows)
            tensors.point_features = np.column_stack([tensors.point_features, margin]).astype(np.float32)
            self.booster_ = booster
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self._build_model(n_classes)

        def plan(epoch: int) -> list[np.ndarray]:
            return tensors.plan_batches(train_rows, self.batch_size, np.random.default_rng([seed, epoch]))

        def load(rows: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
            return _with_targets(tensors.batch(rows), targets, device)

        def validate(objective: SupervisedObjective) -> dict[str, float]:
            logits, risk = self._outputs(objective.model, tensors, valid_rows, device)
            index = torch.from_numpy(valid_rows)
            with torch.no_grad():
                loss = supervised_loss(
                    None if logits is None else torch.from_numpy(logits),
                    None if risk is None else torch.from_numpy(risk),
                    {name: torch.from_numpy(values)[index] for name, values in targets.items()},
                )
            figures = {"valid_loss": float(loss)}
            score = _validation_score(logits, risk, {name: values[valid_rows] for name, values in targets.items()})
            if score is not None:
                figures["valid_score"] = score
            return figures

        settings = TrainSettings(
            max_epochs=self.max_epochs,
            lr=self.lr,
            weight_decay=self.weight_decay,
            n_iter_no_change=self.n_iter_no_change,
            tol=self.tol,
            device=device,
            seed=seed,
            verbose=bool(self.verbose),
            monitor="valid_score" if self.selection == "score" else "valid_loss",
            greater_is_better=self.selection == "score",
        )
        if self.clinical_init:
            _initialise_heads(model, tensors, train_rows, valid_rows, targets, seed)
        result = train(
            SupervisedObjective(model),
            plan,
            load,
            settings,
            validate=validate if len(valid_rows) else None,
            validate_first=self.clinical_init,
        )
        initial = [record for record in result.history if record["epoch"] == 0]  # the initialised heads
        self.initial_validation_ = {k: v for k, v in initial[0].items() if k != "epoch"} if initial else None
        self.history_ = [record for record in result.history if record["epoch"] > 0]
        self.n_iter_ = result.n_iter
        self.best_epoch_ = result.best_epoch
        self.loss_curve_ = [record["train_loss"] for record in self.history_]
        self.validation_loss_curve_ = [record["valid_loss"] for record in self.history_ if "valid_loss" in record]
        self.model_ = model.eval()
        self.training_data_ = training_summary(X, event, tte, stage)
        self.heldout_ = None  # held-out scores of this fit: set by whoever measures them (model card)
        if self.target in ("progression", "both"):
            self.risk_head_refit_ = "off"
            if self.refit_risk_head:
                self.risk_head_refit_ = "skipped: fewer than 20 events"
                for name, part in (("validation", valid_rows), ("training", train_rows)):
                    if event[part].sum() >= 20:
                        try:
                            self._refit_risk_head(X[part], event[part], tte[part])
                            self.risk_head_refit_ = name
                        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as error:
                            self.risk_head_refit_ = f"skipped: {error}"
                        break
            if self.survival_head == "piecewise":  # absolute hazards come from the head itself
                self.event_times_ = np.unique(tte[train_rows][event[train_rows].astype(bool)]).astype(np.float64)
                self.cumulative_baseline_hazard_ = None
            else:
                risk = self._outputs(self.model_, tensors, train_rows, device)[1]  # the tensors already built
                breslow = BreslowSurvival().fit(risk, tte[train_rows], event[train_rows])
                self.event_times_ = breslow.event_times_
                self.cumulative_baseline_hazard_ = breslow.cumulative_baseline_hazard_
        return self

    def _refit_risk_head(self, X: CohortX, event: np.ndarray, tte: np.ndarray) -> None:
        """Refit the (linear) risk head to the exact optimum of the ridge-penalised Cox partial
        likelihood on the frozen head features of ``X`` (Newton's method, as scikit-survival's
        CoxPHSurvivalAnalysis with Breslow ties); mini-batch AdamW leaves it short."""

        device = self._device()
        tensors = self._visit_tensors(X)
        features = np.zeros((len(X), self.model_.risk_head.in_features), dtype=np.float64)
        self.model_.to(device).eval()
        with torch.no_grad():
            for rows in tensors.plan_batches(np.arange(len(X)), max(self.batch_size, PREDICT_BATCH_SUBJECTS)):
                batch = tensors.batch(rows)
                features[batch.point_index] = self.model_.head_features(batch.tensors(device)).float().cpu().numpy()
        scale = features.std(axis=0)
        scale = np.where(scale > 1e-8, scale, 1.0)
        cox = _ridge_cox(
            "the risk-head refit (Cox on the frozen head features)",
            "the trained risk head is kept (risk_head_refit_ says so)",
            features / scale,
            event,
            tte,
            n_iter=200,
        )
        if not np.isfinite(cox.coef_).all():
            raise ArithmeticError("the Cox refit did not converge to finite coefficients")
        with torch.no_grad():
            weight = torch.from_numpy(cox.coef_ / scale).float()[None, :]
            self.model_.risk_head.weight.copy_(weight.to(self.model_.risk_head.weight.device))
            self.model_.risk_head.bias.zero_()

    # ----------------------------------------------------------- prediction
    def _check(self, X: Any) -> None:
        check_is_fitted(self, "model_")
        if not isinstance(X, CohortX):
            raise TypeError(f"X must be a CohortX, got {type(X).__name__}")

    def _outputs(
        self, model: VisitSequenceModel, tensors: VisitTensors, rows: np.ndarray, device: torch.device
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Stage logits ``[len(rows), K]`` and log relative risks ``[len(rows)]`` of the points
        ``rows``, in that order, computed on ``device`` in batches (``None`` for a missing head)."""
        position = np.empty(tensors.n_points, dtype=np.int64)
        position[rows] = np.arange(len(rows))
        stage_head = model.stage_head
        logits = np.zeros((len(rows), stage_head.out_features), np.float32) if stage_head is not None else None
        risk = None
        if model.risk_head is not None:  # [n] log relative risks, or [n, T] log hazards (piecewise)
            risk = np.zeros((len(rows), model.survival_pieces) if model.survival_pieces else len(rows), np.float32)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for part in tensors.plan_batches(rows, max(self.batch_size, PREDICT_BATCH_SUBJECTS)):
                batch = tensors.batch(part)
                out_logits, out_risk = model(batch.tensors(device))
                where = position[batch.point_index]
                if logits is not None:
                    logits[where] = out_logits.float().cpu().numpy()
                if risk is not None:
                    risk[where] = out_risk.float().cpu().numpy()
        model.train(was_training)
        return logits, risk

    def _predict_outputs(self, X: CohortX) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Stage logits ``[n, K]`` and log relative risks ``[n]`` in the order of ``X``'s points,
        computed on the estimator's ``device``."""
        device = self._device()
        self.model_.to(device)
        tensors = self._visit_tensors(X)
        unknown = getattr(tensors, "unknown_share", 0.0)
        if unknown > UNKNOWN_CODES_WARNING:
            warnings.warn(
                f"{unknown:.0%} of the input codes were never seen in training (e.g. another code system, "
                "'OMOP/<id>' vs 'SNOMED/...'): the history adds almost nothing to these predictions",
                UserWarning,
                stacklevel=3,
            )
        return self._outputs(self.model_, tensors, np.arange(len(X)), device)

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
        return _risk_score(self._predict_outputs(X)[1])

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
            proba = self.predict_proba(X)
            scores.append(macro_auroc(stage[known], proba[known], self.classes_))
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
        """Per-code and per-visit attributions by integrated gradients (see :mod:`ehrprog.explain`).

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

        self._check(X)
        if output == "auto":
            output = "stage" if self.target == "stage" else "risk"
        if output not in ("risk", "stage"):
            raise ValueError(f"output must be 'risk', 'stage' or 'auto', got {output!r}")
        self._require("progression" if output == "risk" else "stage", "explain")
        device = self._device()
        self.model_.to(device)
        return integrated_gradients(self.model_, self._visit_tensors(X), X, self.vocabulary_, output, steps, device)

    # ----------------------------------------------------------- persistence
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


def _clinical_inputs(model: VisitSequenceModel, tensors: VisitTensors, rows: np.ndarray) -> torch.Tensor:
    """The clinical inputs (:meth:`VisitSequenceModel.clinical_inputs`) of the points ``rows``, on the CPU."""
    batch = {
        "current_stage": torch.from_numpy(tensors.point_stage[rows]),
        "current_value": torch.from_numpy(tensors.point_value[rows]),
        "has_current_value": torch.from_numpy(tensors.point_has_value[rows]),
        "point_features": torch.from_numpy(tensors.point_features[rows]),
    }
    return model.clinical_inputs(batch)


def _clinical_table(tensors: VisitTensors) -> np.ndarray:
    """What the booster reads: :func:`~ehrprog.features.clinical_table` of the tensors' points."""
    return clinical_table(tensors.point_features, tensors.point_stage, tensors.point_value, tensors.point_has_value)


def _probe_inputs(model: VisitSequenceModel, tensors: VisitTensors, rows: np.ndarray, batch_size: int = 256):
    """The backbone's output at the last input visit of each point ``rows`` ``[len(rows), D]``, on
    the CPU, in evaluation mode and without gradients (the probe's fixed inputs)."""
    device = next(model.parameters()).device
    out = torch.zeros((len(rows), model.probe))
    position = np.empty(tensors.n_points, dtype=np.int64)
    position[rows] = np.arange(len(rows))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for part in tensors.plan_batches(rows, batch_size):
            batch = tensors.batch(part)
            inputs = batch.tensors(device)
            visits = model.visit_embeddings(inputs)
            out[position[batch.point_index]] = visits[inputs["point_subject"], inputs["point_visit"]].float().cpu()
    model.train(was_training)
    return out


def _ridge_cox(what: str, fallback: str, z: np.ndarray, event: np.ndarray, time: np.ndarray, n_iter: int):
    """scikit-survival's ridge-penalised Cox (alpha 1, Breslow ties) of ``z`` ``[n, k]`` on
    ``event``/``time`` (days), its numerical warnings said once (:func:`~ehrprog.errors.one_warning`):
    ``what`` names the fit, ``fallback`` what happens when it fails or its coefficients are not
    finite (the caller sees to it). Exceptions propagate."""
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.util import Surv

    with one_warning(
        what,
        lambda error: (
            f"it failed ({error}), so {fallback}"
            if error is not None
            else f"it finished (if its coefficients are not finite, {fallback})"
        ),
    ):
        return CoxPHSurvivalAnalysis(alpha=1.0, ties="breslow", n_iter=n_iter).fit(
            z, Surv.from_arrays(event.astype(bool), time.astype(float))
        )


def _initialise_heads(
    model: VisitSequenceModel,
    tensors: VisitTensors,
    train_rows: np.ndarray,
    valid_rows: np.ndarray,
    targets: dict[str, np.ndarray],
    seed: int,
) -> None:
    """Start the heads from the best model of the clinical inputs alone, before any sequence training.

    First each head is set to the exact linear model on the clinical inputs of the training
    points: ridge-penalised Cox (Breslow ties) for the risk head, multinomial logistic regression
    for the stage head (the state's weights start at zero). Then, where the model has a clinical
    MLP, it and the heads' clinical weights are trained full-batch on those inputs (AdamW, up to
    1,000 steps), keeping the step with the best validation score (checked every 5 steps; the
    linear start is a candidate), or 100 steps without validation points. Sequence training then
    starts here and keeps its changes only where they improve the validation score.
    """
    from sklearn.linear_model import LogisticRegression

    # The fixed inputs of the training points, built once for the linear fit and the MLP stage.
    train_inputs = (
        _clinical_inputs(model, tensors, train_rows),
        _probe_inputs(model, tensors, train_rows) if model.probe else None,
    )
    clinical = train_inputs[0].double().numpy()
    mean, scale = clinical.mean(axis=0), clinical.std(axis=0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    with torch.no_grad():
        model.clinical_mean.copy_(torch.from_numpy(mean).float())
        model.clinical_scale.copy_(torch.from_numpy(scale).float())
    head_in = model.risk_head.in_features if model.risk_head is not None else model.stage_head.in_features
    columns = np.arange(model.hidden, model.hidden + clinical.shape[1])  # the head columns of the linear fit
    if model.probe:  # the backbone's output at each point's visit: the last head columns
        probe = train_inputs[1].double().numpy()
        clinical = np.concatenate([clinical, probe], axis=1)
        columns = np.concatenate([columns, np.arange(head_in - model.probe, head_in)])
        mean = np.concatenate([mean, probe.mean(axis=0)])
        scale = np.concatenate([scale, np.where(probe.std(axis=0) > 1e-8, probe.std(axis=0), 1.0)])
    z = (clinical - mean) / scale
    with torch.no_grad():
        for head in (model.stage_head, model.risk_head):
            if head is not None:
                head.weight.zero_()
                head.bias.zero_()
        event, time = targets["event"][train_rows].astype(bool), targets["time"][train_rows].astype(float)
        if model.risk_head is not None and event.sum() >= 2:
            try:
                cox = _ridge_cox(
                    "the clinical start (a linear Cox on the clinical inputs)",
                    "the risk head starts at zero",
                    z,
                    event,
                    time,
                    n_iter=100,
                )
            except (ValueError, ArithmeticError, np.linalg.LinAlgError):
                cox = None
            if cox is not None and np.isfinite(cox.coef_).all():
                # Every row the same coefficients: a piecewise head starts proportional, its
                # baseline log hazard per piece the maximum-likelihood one given the Cox offsets.
                model.risk_head.weight[:, columns] = torch.from_numpy(cox.coef_ / scale).float()
                shift = float(-(cox.coef_ * mean / scale).sum())
                if model.survival_pieces:
                    base = base_log_hazards(
                        torch.from_numpy(time / DAYS_PER_YEAR),
                        torch.from_numpy(event),
                        SURVIVAL_PIECES_YEARS,
                        torch.from_numpy(z @ cox.coef_),
                    )
                    model.risk_head.bias.copy_((base + shift).float())
                else:
                    model.risk_head.bias.fill_(shift)
            elif model.survival_pieces:
                model.risk_head.bias.copy_(
                    base_log_hazards(
                        torch.from_numpy(time / DAYS_PER_YEAR), torch.from_numpy(event), SURVIVAL_PIECES_YEARS
                    ).float()
                )
        labels = targets["stage_label"][train_rows]
        known = labels >= 0
        if model.stage_head is not None and len(np.unique(labels[known])) >= 2:
            with one_warning("the clinical start (a logistic model of the next stage)", lambda _: "its fit was used"):
                logistic = LogisticRegression(C=1.0, max_iter=1000).fit(z[known], labels[known])
            coef = np.zeros((model.stage_head.out_features, len(columns)))
            intercept = np.zeros(model.stage_head.out_features)
            present = logistic.classes_
            if len(present) == 2:  # sklearn's binary model: one row for the second class
                coef[present[1]], intercept[present[1]] = logistic.coef_[0], logistic.intercept_[0]
            else:
                coef[present], intercept[present] = logistic.coef_, logistic.intercept_
                intercept[np.setdiff1d(np.arange(len(intercept)), present)] = -10.0
            model.stage_head.weight[:, columns] = torch.from_numpy(coef / scale).float()
            model.stage_head.bias.copy_(torch.from_numpy(intercept - (coef * mean / scale).sum(axis=1)).float())
    if model.clinical is not None:
        _fit_clinical_mlp(model, tensors, train_rows, valid_rows, targets, seed, train_inputs)


def _fit_clinical_mlp(
    model: VisitSequenceModel,
    tensors: VisitTensors,
    train_rows: np.ndarray,
    valid_rows: np.ndarray,
    targets: dict[str, np.ndarray],
    seed: int,
    train_inputs: tuple[torch.Tensor, torch.Tensor | None],
    lr: float = 1e-3,
    weight_decay: float = 1e-2,
    max_steps: int = 1000,
    check_every: int = 5,
    patience: int = 20,
) -> None:
    """Train the clinical MLP and the heads on the clinical inputs alone, full-batch (see
    :func:`_initialise_heads`); the state's head weights stay at zero (they see zeros).
    ``train_inputs``: the training points' clinical inputs and probe (``None`` without one)."""
    heads = [head for head in (model.stage_head, model.risk_head) if head is not None]
    parameters = list(model.clinical.parameters()) + [p for head in heads for p in head.parameters()]
    device = parameters[0].device

    # The clinical inputs (and the probe's backbone outputs) are fixed: built once, not at every step.
    def inputs(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        probe = _probe_inputs(model, tensors, rows).to(device) if model.probe else None
        return _clinical_inputs(model, tensors, rows).to(device), probe

    train_inputs = tuple(t.to(device) if t is not None else None for t in train_inputs)
    valid_inputs = inputs(valid_rows)

    def outputs(fixed: tuple[torch.Tensor, torch.Tensor | None]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        clinical, probe = fixed
        state = torch.zeros((len(clinical), model.hidden), device=device)
        return model.heads(model.clinical_features(state, clinical, probe))

    def as_tensors(rows: np.ndarray) -> dict[str, torch.Tensor]:
        return {name: torch.from_numpy(values[rows]).to(device) for name, values in targets.items()}

    def score() -> float | None:
        model.eval()
        with torch.no_grad():
            logits, risk = outputs(valid_inputs)
        model.train()
        return _validation_score(
            None if logits is None else logits.float().cpu().numpy(),
            None if risk is None else risk.float().cpu().numpy(),
            {name: values[valid_rows] for name, values in targets.items()},
        )

    train_targets = as_tensors(train_rows)
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    validated = len(valid_rows) > 0 and score() is not None
    steps = max_steps if validated else 100
    snapshot = lambda: [p.detach().clone() for p in parameters]  # noqa: E731
    best, best_params, stale = (score(), snapshot(), 0) if validated else (None, None, 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.train()
        for step in range(1, steps + 1):
            logits, risk = outputs(train_inputs)
            loss = supervised_loss(logits, risk, train_targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if validated and step % check_every == 0:
                current = score()
                if current is not None and current > best + 1e-4:
                    best, best_params, stale = current, snapshot(), 0
                else:
                    stale += 1
                    if stale >= patience:
                        break
    if best_params is not None:
        with torch.no_grad():
            for param, value in zip(parameters, best_params, strict=True):
                param.copy_(value)
    model.eval()


def _risk_score(risk: np.ndarray | None) -> np.ndarray | None:
    """The ranking score ``[n]`` of a risk output (itself, or of log hazards ``[n, T]`` the log
    cumulative hazard at the risk horizon)."""
    if risk is None or risk.ndim == 1:
        return risk
    return risk_score(torch.from_numpy(risk).double()).float().numpy()


def _validation_score(
    logits: np.ndarray | None, risk: np.ndarray | None, targets: dict[str, np.ndarray]
) -> float | None:
    """What ``score`` reports, on the validation points: macro AUROC of the known stages, Harrell's
    C of the risks, or their mean; ``None`` where neither is defined (one stage, no event)."""
    scores = []
    if logits is not None:
        labels = targets["stage_label"]
        known = labels >= 0
        if len(np.unique(labels[known])) >= 2:
            proba = torch.softmax(torch.from_numpy(logits[known]), dim=1).numpy()
            scores.append(macro_auroc(labels[known], proba, np.arange(logits.shape[1])))
    if risk is not None and targets["event"].any():
        scores.append(harrell_c(targets["event"].astype(bool), targets["time"], _risk_score(risk)))
    return float(np.mean(scores)) if scores else None


def _with_targets(batch: Batch, targets: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch's tensors plus its points' targets (``stage_label``, ``event``, ``time``) on ``device``."""
    inputs = batch.tensors(device)
    for name, values in targets.items():
        inputs[name] = torch.from_numpy(values[batch.point_index]).to(device)
    return inputs


__all__ = ["NotFittedError", "VisitProgressionEstimator"]
