"""Training the visit history as an offset on the tabular model: the steps
``VisitProgressionEstimator.fit`` composes, each a function of what it is given.

* :func:`point_targets`: the per-point training targets and the stage classes;
* :func:`validation_split`: the units (subjects, or the user's groups) held out for early stopping;
* :func:`build_model`: the visit network for a vocabulary, from the registered backbone;
* :func:`engine_settings` and :func:`validator`: what the one training engine
  (:func:`~ehrprog.networks.training.train`) runs with;
* :func:`training_record`: the fitted attributes read off the engine's result;
* :func:`judge_history`: the rule that keeps the history only beyond its noise;
* :func:`baseline_hazard`: the Breslow baseline of the kept model's risks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import torch
from sklearn.model_selection import GroupShuffleSplit

from ehrprog.cohorts.cohort import CohortX
from ehrprog.features.tensors import VisitTensors
from ehrprog.models.breslow import BreslowSurvival
from ehrprog.networks.inference import as_trained, batched_outputs, outputs_score, paired_gain, with_targets
from ehrprog.networks.piecewise import DAYS_PER_YEAR, SURVIVAL_PIECES_YEARS, base_log_hazards
from ehrprog.networks.training import TrainSettings, train
from ehrprog.networks.visit_model import SupervisedObjective, VisitSequenceModel, supervised_loss


def value_scale(X: CohortX) -> tuple[float, float]:
    """Mean and standard deviation of the points' finite current staging-lab values."""
    if "current_value" not in X.column_names:
        return (0.0, 1.0)
    values = X.column("current_value").cast(pl.Float64)
    values = values.filter(values.is_finite())
    if values.len() < 2:
        return (0.0, 1.0)
    std = float(values.std())
    return (float(values.mean()), std if std > 1e-6 else 1.0)


def point_targets(
    target: str, stage: np.ndarray | None, event: np.ndarray | None, tte: np.ndarray | None, n: int
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """``(targets, classes)``: per point what the heads of ``target`` train on: ``stage_label``
    (class index, -1 unknown; int8) for a stage target, ``event`` and ``time`` (days) for a
    survival target (``event`` and ``tte`` themselves, not copies: the heads read them as float32,
    :func:`~ehrprog.networks.inference.as_trained`); the stage classes (``None`` without a stage
    target)."""
    targets, classes = {}, None
    if target in ("stage", "both"):
        known = ~np.isnan(stage)
        classes = np.unique(stage[known]).astype(np.int64)
        if len(classes) < 2:
            raise ValueError(f"need at least two stages in y to classify, got {classes.tolist()}")
        if len(classes) > 127:
            raise ValueError(f"at most 127 stage classes can be classified, got {len(classes)}")
        stage_idx = np.full(n, -1, dtype=np.int8)
        stage_idx[known] = np.searchsorted(classes, stage[known].astype(np.int64))
        targets["stage_label"] = stage_idx
    if target in ("progression", "both"):
        targets["event"] = event
        targets["time"] = tte
    return targets, classes


def validation_split(subjects: np.ndarray, groups: Any, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation rows: ``fraction`` of the ``groups`` (default the subjects) held
    out whole; no validation with fewer than 5 groups. A group must hold whole subjects."""
    units = subjects if groups is None else np.asarray(groups)
    if units.shape != subjects.shape:
        raise ValueError(f"groups must hold one value per point ({len(subjects):,}), got shape {units.shape}")
    if groups is not None:  # a subject split between training and validation would leak
        pairs = pl.DataFrame({"subject": subjects, "group": units.astype(str)}).unique()
        if pairs.height != len(np.unique(subjects)):
            raise ValueError("groups must keep each subject's points in one group (a subject spans several)")
    rows = np.arange(len(subjects), dtype=np.int32 if len(subjects) < 2**31 else np.int64)
    if fraction > 0 and len(np.unique(units)) >= 5:
        split = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        train, valid = next(split.split(rows, groups=units))
        return train.astype(rows.dtype), valid.astype(rows.dtype)
    return rows, np.array([], dtype=rows.dtype)


def build_model(
    estimator: Any, n_classes: int, architecture: dict[str, Any] | None = None, *, saved: bool = False
) -> VisitSequenceModel:
    """The visit network for ``estimator.vocabulary_`` with the heads its ``target`` needs
    (``n_classes`` stages), its backbone from the registered plugin.

    ``architecture`` (from a saved estimator) replaces the backbone parameters that point at a
    pre-trained source. With ``saved``, no string-valued backbone parameter (a path: a checkpoint
    or a text encoder) reaches the factory: a saved estimator opens nothing outside its own folder.
    """
    from ehrprog.plugins import get_backbone

    spec = get_backbone(estimator.backbone)
    routed = estimator._routed("backbone__")
    if saved:
        routed = {k: v for k, v in routed.items() if not isinstance(v, str)}
    defaults = {
        "vocab_size": estimator.vocabulary_.size,
        "dim": estimator.embedding_dim,
        "visit_encoder": estimator.visit_encoder,
        "dropout": estimator.dropout,
        "vocabulary": estimator.vocabulary_,
    }
    try:
        backbone = spec.factory(**{**defaults, **routed, **(architecture or {})})
    except TypeError as error:
        given = ", ".join(f"backbone__{name}" for name in sorted(routed)) or "none"
        raise ValueError(
            f"backbone {estimator.backbone!r} does not take the parameters given to it ({given}): {error}. "
            "In a grid over several backbones, give each its own parameters with a list of grids: "
            '[{"backbone": ["default"]}, {"backbone": ["cehrbert"], "backbone__checkpoint": [DIR]}]'
        ) from error
    probe = estimator.backbone_probe
    if probe == "auto":  # on when a pre-trained checkpoint is given
        probe = getattr(estimator, "backbone__checkpoint", None) is not None
    return VisitSequenceModel(
        backbone,
        n_classes=n_classes if estimator.target in ("stage", "both") else 0,
        risk=estimator.target in ("progression", "both"),
        hidden=estimator.hidden_dim,
        sequence_encoder=estimator.sequence_encoder,
        dropout=estimator.dropout,
        probe=bool(probe),
        survival_pieces=len(SURVIVAL_PIECES_YEARS) + 1 if estimator.survival_head == "piecewise" else 0,
    )


def engine_settings(estimator: Any, device: torch.device, seed: int) -> TrainSettings:
    """The training engine's settings from the estimator's parameters."""
    return TrainSettings(
        max_epochs=estimator.max_epochs,
        lr=estimator.lr,
        weight_decay=estimator.weight_decay,
        n_iter_no_change=estimator.n_iter_no_change,
        tol=estimator.tol,
        device=device,
        seed=seed,
        verbose=bool(estimator.verbose),
        monitor="valid_score" if estimator.selection == "score" else "valid_loss",
        greater_is_better=estimator.selection == "score",
    )


def validator(
    tensors: VisitTensors, targets: dict[str, np.ndarray], rows: np.ndarray, device: torch.device, batch_size: int
):
    """The engine's validation step: the loss and the score (:func:`~ehrprog.networks.inference.outputs_score`)
    of the points ``rows``."""
    held_out = {name: as_trained(values[rows]) for name, values in targets.items()}

    def validate(objective: SupervisedObjective) -> dict[str, float]:
        logits, risk = batched_outputs(objective.model, tensors, rows, device, batch_size)
        with torch.no_grad():
            loss = supervised_loss(
                None if logits is None else torch.from_numpy(logits),
                None if risk is None else torch.from_numpy(risk),
                {name: torch.from_numpy(values) for name, values in held_out.items()},
            )
        figures = {"valid_loss": float(loss)}
        score = outputs_score(logits, risk, held_out)
        if score is not None:
            figures["valid_score"] = score
        return figures

    return validate


def training_record(result: Any) -> dict[str, Any]:
    """The fitted attributes of a training run: ``initial_validation_`` (epoch 0, the tabular
    model alone), ``history_`` (one dict per epoch), ``n_iter_``, ``best_epoch_``,
    ``loss_curve_``, ``validation_loss_curve_``."""
    initial = [record for record in result.history if record["epoch"] == 0]
    history = [record for record in result.history if record["epoch"] > 0]
    return {
        "initial_validation_": {k: v for k, v in initial[0].items() if k != "epoch"} if initial else None,
        "history_": history,
        "n_iter_": result.n_iter,
        "best_epoch_": result.best_epoch,
        "loss_curve_": [record["train_loss"] for record in history],
        "validation_loss_curve_": [record["valid_loss"] for record in history if "valid_loss" in record],
    }


#: The fewest validation subjects on which a history is judged (and can be kept); see :func:`judge_history`.
MIN_VALIDATION_SUBJECTS = 30


def judge_history(
    model: VisitSequenceModel,
    start: dict[str, torch.Tensor],
    epoch0: tuple[np.ndarray | None, np.ndarray | None] | None,
    tensors: VisitTensors,
    targets: dict[str, np.ndarray],
    valid_rows: np.ndarray,
    subjects: np.ndarray,
    device: torch.device,
    seed: int,
    batch_size: int,
    best_epoch: int,
) -> dict[str, Any]:
    """Keep what the history learned only where it beats the tabular model (epoch 0, whose
    validation outputs are ``epoch0``) on the validation subjects by more than its noise: the gain
    in validation score must exceed one standard error of a paired bootstrap over those subjects
    (:func:`~ehrprog.networks.inference.paired_gain`, 200 resamples), and there must be at least
    :data:`MIN_VALIDATION_SUBJECTS` of them: with fewer, the best of several epochs' gains on the
    same few subjects, and its bootstrap error, say too little (the usual rule of thumb of 30 for a
    subject-level bootstrap). Otherwise ``model`` is put back to its ``start`` state (offsets zero:
    the tabular model exactly).

    Returns the fitted attributes: ``history_gain_`` (the kept model's validation score minus the
    tabular model's; 0.0 when the history is dropped, ``None`` without a validation split),
    ``history_gain_se_``, ``history_trial_gain_`` (the best epoch's gain, kept or not),
    ``history_kept_`` and ``best_epoch_`` (0 when dropped)."""
    found = {
        "history_gain_": None,
        "history_gain_se_": None,
        "history_trial_gain_": None,
        "history_kept_": best_epoch > 0,
        "best_epoch_": best_epoch,
    }
    if epoch0 is None:
        return found
    held_out = {name: as_trained(values[valid_rows]) for name, values in targets.items()}
    kept = batched_outputs(model, tensors, valid_rows, device, batch_size)
    gain, se = paired_gain(kept, epoch0, held_out, subjects[valid_rows], seed)
    found["history_gain_se_"] = se if np.isfinite(se) else None
    found["history_trial_gain_"] = gain if np.isfinite(gain) else None
    enough = len(np.unique(subjects[valid_rows])) >= MIN_VALIDATION_SUBJECTS
    if best_epoch > 0 and enough and np.isfinite(gain) and np.isfinite(se) and gain > se:
        found["history_gain_"] = gain
        return found
    model.load_state_dict(start)
    found.update(best_epoch_=0, history_kept_=False, history_gain_=0.0 if np.isfinite(gain) else None)
    return found


def baseline_hazard(
    model: VisitSequenceModel,
    tensors: VisitTensors,
    rows: np.ndarray,
    event: np.ndarray,
    tte: np.ndarray,
    device: torch.device,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(event_times_, cumulative_baseline_hazard_)`` of the points ``rows`` (days): Breslow's
    baseline of the model's risks (Cox head), or the event times alone (piecewise head: its
    hazards are absolute)."""
    times = np.unique(tte[rows][event[rows].astype(bool)]).astype(np.float64)
    if model.survival_pieces:
        return times, None
    risk = batched_outputs(model, tensors, rows, device, batch_size)[1]
    breslow = BreslowSurvival().fit(risk, tte[rows], event[rows])
    return breslow.event_times_, breslow.cumulative_baseline_hazard_


def fit_history(
    estimator: Any,
    X: CohortX,
    targets: dict[str, np.ndarray],
    classes: np.ndarray | None,
    event: np.ndarray | None,
    tte: np.ndarray | None,
    subjects: np.ndarray,
    train_rows: np.ndarray,
    valid_rows: np.ndarray,
    seed: int,
    device: torch.device,
) -> None:
    """The composed fit of :class:`~ehrprog.models.estimator.VisitProgressionEstimator` once its
    targets, split and vocabulary are set: the tabular part's outputs stacked out-of-fold by subject
    on every point, the visit network built with its offsets at zero (the piecewise head's
    constants from those outputs), trained by the one engine with epoch 0 (the tabular part alone)
    a candidate, the history judged against its noise (:func:`judge_history`), and Breslow's
    baseline on the tabular model's outputs for every training point. Sets the fitted attributes
    on ``estimator``."""
    risk = estimator.target in ("progression", "both")
    n_classes = len(classes) if classes is not None else 0
    stacked = estimator.tabular_.fit_stacked(
        X,
        stage=targets["stage_label"] if classes is not None else None,
        n_classes=n_classes,
        event=event.astype(bool, copy=False) if risk else None,
        time=tte if risk else None,
        groups=subjects,
        # every point: the validation points' outputs are out-of-fold too
        train_rows=np.arange(len(X), dtype=np.int32 if len(X) < 2**31 else np.int64),
    )
    tensors = estimator._visit_tensors(X, stacked)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = estimator._build_model(n_classes)
    if model.survival_pieces:  # each piece's log hazard given the tabular log relative risks
        time_years = torch.from_numpy(tte[train_rows] / DAYS_PER_YEAR)
        offsets = torch.from_numpy(stacked[train_rows, 0].astype(np.float64))
        base = base_log_hazards(time_years, torch.from_numpy(event[train_rows] > 0), SURVIVAL_PIECES_YEARS, offsets)
        with torch.no_grad():
            model.risk_head.bias.copy_(base.float())
    epoch0 = batched_outputs(model, tensors, valid_rows, device, estimator.batch_size) if len(valid_rows) else None
    start = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    result = train(
        SupervisedObjective(model),
        lambda epoch: tensors.plan_batches(train_rows, estimator.batch_size, np.random.default_rng([seed, epoch])),
        lambda rows, where: with_targets(tensors.batch(rows), targets, where),
        engine_settings(estimator, device, seed),
        validate=validator(tensors, targets, valid_rows, device, estimator.batch_size) if len(valid_rows) else None,
        validate_first=True,
    )
    record = training_record(result)
    record.update(
        judge_history(
            model, start, epoch0, tensors, targets, valid_rows, subjects, device, seed, estimator.batch_size,
            record["best_epoch_"],
        )
    )  # fmt: skip
    for name, value in record.items():
        setattr(estimator, name, value)
    estimator.model_ = model.eval()
    estimator.heldout_ = None  # held-out scores of this fit: set by whoever measures them (model card)
    if risk:
        # The baseline is fitted to the risks predictions will have: the tabular model fitted
        # on every training point (not the stacked outputs the offsets were trained against).
        tabular = estimator.tabular_
        fitted = tabular.fitted_outputs(stacked) if hasattr(tabular, "fitted_outputs") else tabular.transform(X)
        tensors.point_features = fitted.astype(np.float32)
        estimator.event_times_, estimator.cumulative_baseline_hazard_ = baseline_hazard(
            model, tensors, train_rows, event, tte, device, estimator.batch_size
        )


__all__ = [
    "MIN_VALIDATION_SUBJECTS",
    "baseline_hazard",
    "build_model",
    "engine_settings",
    "fit_history",
    "judge_history",
    "point_targets",
    "training_record",
    "validation_split",
    "validator",
    "value_scale",
]
