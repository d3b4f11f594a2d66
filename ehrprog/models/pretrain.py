"""Pre-train a backbone on the user's own visits with its paper's objectives (``ehrprog pretrain``).

Every subject contributes one sequence: its last ``max_visits`` visits. A share of subjects
(``validation_fraction``) is held out, and the loss on them, under a fixed masking draw, is what
``history`` reports as ``valid_loss``: it falling shows the model learned something that
generalises, not that it memorised. The result is written in the layout
:func:`ehrprog.networks.backbones.checkpoint.save_pretrained` describes, which the estimator loads with
``backbone__checkpoint=DIR``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from ehrprog.cohorts.cohort import CohortX
from ehrprog.cohorts.fingerprint import SubjectFingerprint
from ehrprog.features.sharded import visit_tensors
from ehrprog.features.tensors import VisitTensors, Vocabulary
from ehrprog.networks.next_value import NextValueObjective, frequent_labs
from ehrprog.networks.training import TrainSettings, train
from ehrprog.networks.tte import TimeToEventObjective, base_log_rates, frequent_codes, visit_states
from ehrprog.visits.grouping import VisitFrame

#: The objectives ``pretrain`` offers: the backbone's own (its paper's masked LM and secondary
#: objective), time to event (:mod:`ehrprog.networks.tte`), time and value (time to event plus
#: each frequent lab's next value, :mod:`ehrprog.networks.next_value`), summed where combined.
OBJECTIVES = ("mlm", "tte", "mlm+tte", "tte+value", "mlm+tte+value")


class PretrainingObjective(torch.nn.Module):
    """Pre-training objectives for the training engine: ``forward(inputs)`` is the sum of the
    backbone's ``pretraining_loss`` (when ``mlm``, under the masking ``generator``), the
    time-to-event loss (when ``tte`` is given) and the next-value loss (when ``value`` is given).
    Going through ``forward`` lets DDP synchronise."""

    def __init__(
        self,
        module: torch.nn.Module,
        generator: torch.Generator,
        mlm: bool = True,
        tte: TimeToEventObjective | None = None,
        value: NextValueObjective | None = None,
    ) -> None:
        super().__init__()
        self.module = module
        self.generator = generator
        self.mlm = mlm
        self.tte = tte
        self.value = value

    def forward(
        self, inputs: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        losses, parts = [], {}
        if self.mlm:
            loss, parts = self.module.pretraining_loss(inputs, generator or self.generator)
            losses.append(loss)
        heads = [head for head in (self.tte, self.value) if head is not None]
        if heads:  # one pass of the backbone serves both heads
            states = visit_states(self.module, inputs)
            for head in heads:
                loss, head_parts = head.loss_from_states(states, inputs)
                losses.append(loss)
                parts = {**parts, **head_parts}
        return sum(losses[1:], losses[0]), {**parts, "weight": float(len(inputs["point_subject"]))}


@dataclass
class PretrainResult:
    """What :func:`pretrain` did: the folder written, per-epoch losses, sizes (``n_subjects``
    counts the ``n_validation`` subjects held out too; ``n_excluded`` were left out on request)."""

    folder: Path
    history: list[dict[str, float]] = field(default_factory=list)
    n_subjects: int = 0
    n_validation: int = 0
    n_codes: int = 0
    objectives: list[str] = field(default_factory=list)
    n_excluded: int = 0


def check_objective(backbone: str, objective: str) -> None:
    """Raise ``ValueError`` now, before any data is read, when ``backbone`` is not registered or
    cannot train with ``objective`` (masked LM needs the module's ``pretraining_loss``)."""
    from ehrprog.plugins import get_backbone

    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    spec = get_backbone(backbone)
    if "mlm" not in objective:
        return
    try:  # a tiny module tells whether the backbone has a masked-LM objective
        module = spec.factory(vocab_size=8, dim=8, visit_encoder="attention", dropout=0.0, vocabulary=None)
    except Exception:  # a factory that needs real data: checked later, on the real module
        return
    if not hasattr(module, "pretraining_loss"):
        raise ValueError(
            f"backbone {backbone!r} has no masked-LM objective (its module defines no pretraining_loss); "
            "use --objective tte"
        )


def whole_histories(visits: VisitFrame) -> CohortX:
    """One pseudo prediction point per subject that reads all its visits (for pre-training)."""
    points = (
        visits.frame.select("subject_id", pl.col("visits").list.len().cast(pl.Int64).alias("n_visits"))
        .filter(pl.col("n_visits") > 0)
        .with_columns(pl.lit(None, pl.Int64).alias("current_stage"))
    )
    return CohortX(points, visits)


def pretrain(
    backbone: str,
    visits: VisitFrame | CohortX,
    out: str | Path,
    *,
    epochs: int = 5,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 1e-2,
    max_visits: int = 64,
    max_codes_per_visit: int = 32,
    min_code_count: int = 1,
    validation_fraction: float = 0.1,
    dim: int = 64,
    dropout: float = 0.1,
    device: str = "auto",
    random_state: int = 0,
    progress: Callable[[dict[str, float]], None] | None = None,
    objective: str = "mlm",
    tte_codes: int = 256,
    value_codes: int = 32,
    steps_per_epoch: int | None = None,
    overwrite: bool = False,
    exclude_subjects: Any = None,
    verbose: bool = False,
    **params: Any,
) -> PretrainResult:
    """Pre-train the registered backbone ``backbone`` on ``visits`` and write it to ``out``.

    Args:
        backbone: a registered backbone. ``"mlm"`` needs a module that defines
            ``pretraining_loss`` (CEHR-BERT, Med-BERT, BEHRT, a plugin's that does); ``"tte"``
            works with any backbone that can be saved (a ``model_type`` and ``architecture()``).
        visits: grouped visits of the pre-training subjects, or a population saved on disk
            (``ehrprog.load_cohort(DIR).X`` of ``ehrprog build --population``), whose visits are
            then read shard by shard: memory does not grow with the population.
        out: folder to write (created).
        epochs: passes over the training subjects (AdamW).
        batch_size: subjects per batch.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        max_visits: last visits of each history read.
        max_codes_per_visit: first codes of each visit read.
        min_code_count: codes seen fewer times share the unknown embedding.
        validation_fraction: subjects held out for the reported validation loss.
        dim: hidden size (when ``params`` holds no ``hidden_size``).
        dropout: dropout inside the encoder.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``.
        random_state: seeds the split, the initialisation, the order and the masking.
        progress: called with each epoch's record.
        verbose: a progress bar over each epoch's steps, with the running loss.
        objective: ``"mlm"`` (the backbone's own objectives), ``"tte"`` (time to the next
            occurrence of the ``tte_codes`` most frequent codes, piecewise-exponential, see
            :mod:`ehrprog.networks.tte`), ``"mlm+tte"`` (both summed), ``"tte+value"`` (time to
            event plus each frequent lab's next value, a Gaussian on the standardised value,
            :mod:`ehrprog.networks.next_value`) or ``"mlm+tte+value"``.
        tte_codes: how many task codes the time-to-event objective predicts.
        value_codes: how many labs (codes with values, most often measured first) the next-value
            objective predicts (``objective`` ``"tte+value"`` or ``"mlm+tte+value"``).
        steps_per_epoch: train on at most this many batches an epoch (the first of its shuffled
            order; ``None``: all).
        exclude_subjects: subject ids to leave out (the test subjects of a later evaluation: a
            checkpoint that read them would be scored on records it learned from). The subjects
            read are fingerprinted in ``pretraining_subjects.json``
            (:class:`~ehrprog.cohorts.fingerprint.SubjectFingerprint`), which ``evaluate`` checks.
        overwrite: write into a non-empty ``out`` that is not a pre-trained backbone folder
            ehrprog wrote, keeping its files (without it such a folder, a saved estimator or a
            Hugging Face model say, is refused before any training; see :mod:`ehrprog.core.output`).
        **params: further backbone parameters (``num_hidden_layers=...``).
    """
    from ehrprog.plugins import get_backbone

    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if tte_codes < 1:
        raise ValueError(f"tte_codes must be at least 1, got {tte_codes}")
    if steps_per_epoch is not None and steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be at least 1 or None, got {steps_per_epoch}")
    from ehrprog.networks.backbones.checkpoint import checkpoint_output

    spec = get_backbone(backbone)
    inputs = [params["checkpoint"]] if params.get("checkpoint") else []
    if isinstance(visits, CohortX) and getattr(visits, "store", None) is not None:
        inputs.append(visits.store.root)
    checkpoint_output(out, overwrite=overwrite, inputs=inputs)  # before any training
    X = visits if isinstance(visits, CohortX) else whole_histories(visits)
    excluded = 0
    if exclude_subjects is not None:
        leave_out = np.isin(X.points["subject_id"].to_numpy(), np.asarray(exclude_subjects, dtype=np.int64))
        excluded = int(leave_out.sum())
        X = X[np.flatnonzero(~leave_out)]
    if len(X) < 2:
        raise ValueError(f"pre-training needs at least 2 subjects with visits, got {len(X)}")
    rng = np.random.default_rng(random_state)
    subjects = rng.permutation(len(X))
    n_valid = round(validation_fraction * len(X)) if validation_fraction > 0 else 0
    n_valid = min(max(n_valid, 1 if validation_fraction > 0 else 0), len(X) - 1)
    valid_rows, train_rows = np.sort(subjects[:n_valid]), np.sort(subjects[n_valid:])
    vocabulary = Vocabulary.fit(X[train_rows], min_count=min_code_count)
    tensors = visit_tensors(X, vocabulary, max_codes_per_visit, max_visits)
    if "visit_types" not in params and "checkpoint" not in params and _accepts(spec.factory, "visit_types"):
        params["visit_types"] = tensors.visit_types  # the label set of a visit-type objective
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_state)
        try:
            module = spec.factory(
                vocab_size=vocabulary.size,
                dim=dim,
                visit_encoder="attention",
                dropout=dropout,
                vocabulary=vocabulary,
                **params,
            )
        except TypeError as error:
            raise ValueError(f"backbone {backbone!r} does not take the parameters {sorted(params)}: {error}") from error
    if "mlm" in objective and not hasattr(module, "pretraining_loss"):
        raise ValueError(
            f"backbone {backbone!r} has no masked-LM objective (its module defines no pretraining_loss); "
            "use objective='tte'"
        )
    if not getattr(module, "model_type", "") or not hasattr(module, "architecture"):
        raise ValueError(f"backbone {backbone!r} cannot be saved as a pre-trained folder (no model_type)")
    tte = None
    if "tte" in objective:
        task_rows = frequent_codes(X[train_rows], vocabulary.codes, tte_codes)
        if not len(task_rows):
            raise ValueError("the time-to-event objective found no codes in the training subjects")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(random_state + 1)
            tte = TimeToEventObjective(task_rows, vocabulary.size, _output_size(module, dim))
        sample = tensors.subject_batches(train_rows[: min(len(train_rows), 2000)], 256)
        tte.head.log_base.data.copy_(torch.from_numpy(base_log_rates(tte, (b.tensors("cpu") for b in sample))))
    value = None
    if "value" in objective:
        sample = tensors.subject_batches(train_rows[: min(len(train_rows), 2000)], 256)
        lab_rows = frequent_labs((b.tensors("cpu") for b in sample), value_codes)
        if not len(lab_rows):
            raise ValueError("the next-value objective found no code with values (labs) in the training subjects")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(random_state + 2)
            value = NextValueObjective(lab_rows, vocabulary.size, _output_size(module, dim))
    generator = torch.Generator().manual_seed(random_state)
    task = PretrainingObjective(module, generator, mlm="mlm" in objective, tte=tte, value=value)
    result = PretrainResult(
        Path(out), n_subjects=len(X), n_validation=len(valid_rows), n_codes=len(vocabulary.codes), n_excluded=excluded
    )

    def plan(epoch: int) -> list[np.ndarray]:
        batches = tensors.plan_batches(train_rows, batch_size, np.random.default_rng([random_state, epoch]))
        return batches[:steps_per_epoch] if steps_per_epoch is not None else batches

    def load(rows: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        return tensors.batch(rows).tensors(device)

    def validate(objective: PretrainingObjective) -> dict[str, float]:
        return _validation(objective, tensors, valid_rows, batch_size, torch_device, random_state)

    settings = TrainSettings(
        max_epochs=epochs,
        lr=lr,
        weight_decay=weight_decay,
        device=torch_device,
        seed=random_state,
        verbose=verbose,
        description="pre-training epoch",
    )
    trained = train(
        task,
        plan,
        load,
        settings,
        validate=validate if len(valid_rows) else None,
        validate_first=True,
        on_epoch=progress,
    )
    result.history = trained.history
    result.objectives = sorted(
        k[6:]
        for k in result.history[-1]
        if k.startswith("train_") and k != "train_loss" and "accuracy" not in k and "rate" not in k
    )
    from ehrprog.networks.backbones.checkpoint import SUBJECTS_FILE, save_pretrained

    module.cpu().eval()
    save_pretrained(
        module,
        vocabulary.codes,
        out,
        backbone=backbone,
        **(module.pretrained_config() if hasattr(module, "pretrained_config") else {}),
        pretraining={
            "subjects": len(X),
            "validation_subjects": len(valid_rows),
            "epochs": epochs,
            "lr": lr,
            "batch_size": batch_size,
            "max_visits": max_visits,
            "max_codes_per_visit": max_codes_per_visit,
            "random_state": random_state,
            "objective": objective,
            "tte_codes": tte.n_codes if tte is not None else 0,
            "value_codes": value.n_labs if value is not None else 0,
            "excluded_subjects": excluded,
        },
        overwrite=overwrite,
        files={
            "pretraining_history.json": json.dumps(result.history, indent=1),
            SUBJECTS_FILE: json.dumps(SubjectFingerprint.of(X.points["subject_id"].to_numpy()).to_json()),
        },
    )
    return result


def _accepts(factory: Callable, name: str) -> bool:
    """Whether ``factory`` takes the keyword ``name``."""
    import inspect

    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters


def _output_size(module: torch.nn.Module, dim: int) -> int:
    """The width ``H`` of a backbone's per-visit output."""
    config = getattr(module, "config", None)
    return int(getattr(config, "hidden_size", None) or getattr(module, "dim", dim))


def _validation(
    objective: PretrainingObjective, tensors: VisitTensors, rows, batch_size: int, device, seed: int
) -> dict:
    """Held-out losses under one fixed masking draw (the same every epoch)."""
    objective.eval()
    generator = torch.Generator().manual_seed(seed + 1)
    total, count, parts_sum = 0.0, 0, {}
    with torch.no_grad():
        for batch in tensors.subject_batches(rows, batch_size):
            loss, parts = objective(batch.tensors(device), generator)
            parts.pop("weight", None)
            n = len(batch.point_index)
            total += float(loss) * n
            count += n
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v * n
    return {"valid_loss": total / max(count, 1), **{f"valid_{k}": v / max(count, 1) for k, v in parts_sum.items()}}


__all__ = ["OBJECTIVES", "PretrainResult", "PretrainingObjective", "check_objective", "pretrain", "whole_histories"]
