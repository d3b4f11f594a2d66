"""Pre-trained checkpoints in an evaluation: no leak through pre-training, and whether it paid.

**No leak.** A model fine-tuned from a checkpoint that read a held-out subject's records, scored on that subject,
is scored on data it learned from. Every checkpoint ``ehrprog pretrain`` writes fingerprints the
subjects it read (:func:`~ehrprog.networks.backbones.checkpoint.subjects_read`);
:func:`apart_from_pretraining` finds the held-out subjects among them and refuses the evaluation
(the default) or leaves those subjects out of the held-out set, counted. A checkpoint that records
no subjects (made elsewhere) cannot be checked: the result says so.

**Whether it paid.** With a checkpoint, the evaluation also fits the same model from scratch
(:data:`SCRATCH`: the same architecture, the backbone's weights not loaded), and scores any model
from elsewhere applied as it is (a site's saved model: the tabular way of using another site);
:func:`paid_lines` compares the model with each on the same held-out subjects, with paired
bootstrap intervals.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ehrprog.core.errors import InputError
from ehrprog.networks.backbones.checkpoint import subjects_read

OnOverlap = Literal["refuse", "exclude"]
#: The row of the same model from scratch, and the prefix of the rows of models applied as they are.
SCRATCH = "model, from scratch (no checkpoint)"
TRANSFER = "applied as it is: "


@dataclass(frozen=True)
class Overlap:
    """What :func:`apart_from_pretraining` found: ``keep`` (``[n]`` bool over the held-out rows),
    the held-out subjects checked and those pre-trained on (``None``: the checkpoint records none)."""

    keep: np.ndarray
    subjects: int
    pretrained_on: int | None

    def line(self, checkpoint: str | Path) -> str:
        """One line for the terminal and the report."""
        if self.pretrained_on is None:
            return (
                f"the checkpoint {checkpoint} records no pre-training subjects: whether it read any of the "
                f"{self.subjects:,} held-out subjects cannot be checked"
            )
        if not self.pretrained_on:
            return f"none of the {self.subjects:,} held-out subjects was in the checkpoint's pre-training population"
        return (
            f"{self.pretrained_on:,} of the {self.subjects:,} held-out subjects were in the checkpoint's "
            "pre-training population and are left out of the held-out set"
        )


def apart_from_pretraining(
    test_groups: np.ndarray, checkpoint: str | Path | None, on_overlap: OnOverlap = "refuse"
) -> Overlap:
    """The held-out rows (subject ids ``test_groups``, ``[n]``) that ``checkpoint`` did not read.

    Args:
        test_groups: the subject id of each held-out row.
        checkpoint: the pre-trained folder the model starts from (``None``: nothing to check).
        on_overlap: ``"refuse"``: raise :class:`~ehrprog.core.errors.InputError` naming the
            counts when any held-out subject was pre-trained on; ``"exclude"``: keep the others.
    """
    if on_overlap not in ("refuse", "exclude"):
        raise ValueError(f"on_overlap must be 'refuse' or 'exclude', got {on_overlap!r}")
    groups = np.asarray(test_groups, dtype=np.int64)
    subjects = np.unique(groups)
    everything = np.ones(len(groups), dtype=bool)
    if checkpoint is None:
        return Overlap(everything, len(subjects), 0)
    fingerprint = subjects_read(checkpoint)
    if fingerprint is None:
        return Overlap(everything, len(subjects), None)
    read = subjects[fingerprint.contains(subjects)]
    if len(read) and on_overlap == "refuse":
        raise InputError(
            f"{len(read):,} of the {len(subjects):,} held-out subjects were in the pre-training population of "
            f"{checkpoint} (its {Path(checkpoint, 'pretraining_subjects.json').name}): the model would be scored "
            "on records it learned from. Pre-train without them (pretrain(..., exclude_subjects=...), "
            "`ehrprog pretrain --exclude-subjects FILE`) or leave them out of the held-out set "
            "(on_overlap='exclude', `--exclude-overlap`)",
            file=str(checkpoint),
        )
    keep = ~np.isin(groups, read)
    if not keep.any():
        raise InputError(
            f"every one of the {len(subjects):,} held-out subjects was in the pre-training population of "
            f"{checkpoint}: nothing is left to score; pre-train without them",
            file=str(checkpoint),
        )
    return Overlap(keep, len(subjects), len(read))


def scratch_variant(model_params: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The variant of the model without its checkpoint (:data:`SCRATCH`), for
    :func:`~ehrprog.evaluation.heldout.evaluate_split`'s ``variants``; none without a checkpoint.
    The backbone's probe stays on (a checkpoint turns it on), so the two differ only in where the
    backbone's weights start."""
    params = model_params or {}
    if params.get("backbone__checkpoint") is None:
        return {}
    probe = params.get("backbone_probe", "auto")
    return {SCRATCH: {"backbone__checkpoint": None, "backbone_probe": True if probe == "auto" else probe}}


def paid_lines(
    rows: list, risks: dict[str, np.ndarray], event: np.ndarray, time: np.ndarray, groups: np.ndarray, seed: int
) -> list[str]:
    """The model from its checkpoint against the same model from scratch and against every model
    applied as it is, on progression C-index with a paired bootstrap 95% interval (200 resamples
    of the held-out subjects): one sentence a line."""
    from ehrprog.metrics import interval, paired_bootstrap_c

    c = {r.name: r.metrics["c_index"] for r in rows if "c_index" in r.metrics}
    model = rows[0].name
    lines = []
    others = [SCRATCH] if SCRATCH in c else []
    for other in others + [name for name in c if name.startswith(TRANSFER)]:
        boots = paired_bootstrap_c(event, time, {"a": risks[model], "b": risks[other]}, groups, 200, seed)
        low, high = interval(boots["a"] - boots["b"])
        verdict = "it paid" if low > 0 else ("it cost" if high < 0 else "inside the noise")
        what = "the same model from scratch" if other == SCRATCH else f"{other[len(TRANSFER) :]} applied as it is"
        lines.append(
            f"pre-training: the model from its checkpoint vs {what}: C-index {c[model]:.3f} vs {c[other]:.3f} "
            f"({c[model] - c[other]:+.3f}, paired bootstrap 95% [{low:+.3f}, {high:+.3f}]: {verdict})"
        )
    return lines


__all__ = ["SCRATCH", "TRANSFER", "OnOverlap", "Overlap", "apart_from_pretraining", "paid_lines", "scratch_variant"]
