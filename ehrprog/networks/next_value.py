"""The value half of the time-and-value pre-training objective (marked time to event, in the
manner of ORA-style models): at every visit, the next value of each frequent lab.

At every real visit ``v`` the backbone's state ``h_v`` (visits ``0..v`` only) predicts, for each of
``J`` *task labs* (the codes that carry a value at the most visits), the lab's standardised value
(``(x - mean) / std`` of the training readings, as the model's inputs hold it) at the first later
visit where it is measured: a Gaussian with mean ``mu[v, j]`` and standard deviation
``sigma[v, j]`` from one linear layer. Where the lab is never measured again the pair is censored:
it adds nothing to this loss (when it comes is the time-to-event half's, :mod:`ehrprog.networks.tte`).
The loss is the Gaussian negative log-likelihood averaged over the uncensored (visit, lab) pairs::

    0.5 * ((y - mu) / sigma) ** 2 + log sigma      (+ 0.5 log 2 pi, dropped)

A visit with several readings of a lab reads their mean. Like the time-to-event objective, it
reads the backbone's ``forward`` output only, so every backbone can be pre-trained with it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

#: Bounds of the predicted log standard deviation (standardised units).
LOG_SIGMA_RANGE = (-4.0, 3.0)


def visit_lab_values(
    codes: torch.Tensor, values: torch.Tensor, has_value: torch.Tensor, lab_of_row: torch.Tensor, n_labs: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each visit's value of each task lab: ``(value [B, V, J], present [B, V, J])``.

    Args:
        codes: ``[B, V, C]`` vocabulary rows; ``values`` ``[B, V, C]`` standardised values;
            ``has_value`` ``[B, V, C]`` bool.
        lab_of_row: ``[vocab]`` the task lab of each row, -1 for other codes.
        n_labs: ``J``.
    """
    lab = lab_of_row[codes]
    counted = has_value & (lab >= 0)
    slot = torch.where(counted, lab, n_labs)  # the extra slot collects everything else
    b, v, _ = codes.shape
    sums = torch.zeros(b, v, n_labs + 1, device=codes.device, dtype=torch.float32)
    counts = torch.zeros_like(sums)
    sums.scatter_add_(2, slot, torch.where(counted, values.float(), 0.0))
    counts.scatter_add_(2, slot, counted.float())
    present = counts[..., :n_labs] > 0
    return sums[..., :n_labs] / counts[..., :n_labs].clamp(min=1.0), present


def next_values(
    value: torch.Tensor, present: torch.Tensor, visit_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per visit and lab, the value at the first later visit where it is present.

    Args:
        value: ``[B, V, J]`` each visit's value (any where absent).
        present: ``[B, V, J]`` bool, the lab measured at the visit.
        visit_mask: ``[B, V]`` bool, real visits.

    Returns:
        ``(next [B, V, J], observed [B, V, J] bool)``: ``observed`` False where the lab is not
        measured at any later real visit (censored; ``next`` is then meaningless).
    """
    b, v, j = value.shape
    index = torch.arange(v, device=value.device).view(1, v, 1).expand(b, v, j)
    at = torch.where(present & visit_mask[..., None], index, torch.full_like(index, v))
    later = torch.flip(torch.cummin(torch.flip(at, [1]), dim=1).values, [1])
    later = torch.cat([later[:, 1:], torch.full_like(later[:, :1], v)], dim=1)  # strictly later visits
    observed = later < v
    return torch.gather(value, 1, later.clamp(max=v - 1)), observed


class NextValueObjective(nn.Module):
    """The next-value objective around a backbone (see the module docstring).

    Args:
        lab_rows: ``[J]`` vocabulary rows of the task labs (:func:`frequent_labs`).
        vocab_size: rows of the vocabulary.
        hidden: the backbone's output size ``H``.
    """

    def __init__(self, lab_rows: np.ndarray, vocab_size: int, hidden: int) -> None:
        super().__init__()
        lookup = torch.full((vocab_size,), -1, dtype=torch.long)
        lookup[torch.as_tensor(lab_rows, dtype=torch.long)] = torch.arange(len(lab_rows))
        self.register_buffer("lab_of_row", lookup, persistent=False)
        self.n_labs = len(lab_rows)
        self.head = nn.Linear(hidden, 2 * self.n_labs)

    def targets(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(next value [B, V, J], observed [B, V, J])`` of every visit of the batch."""
        value, present = visit_lab_values(
            batch["codes"], batch["values"], batch["has_value"], self.lab_of_row, self.n_labs
        )
        return next_values(value, present, batch["visit_mask"])

    def loss_from_states(
        self, states: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The mean Gaussian negative log-likelihood over uncensored (real visit, lab) pairs of the
        per-visit ``states`` ``[B, V, H]``, and its parts."""
        target, observed = self.targets(batch)
        mask = batch["visit_mask"]
        out = self.head(states[mask].float()).view(-1, 2, self.n_labs)
        mu, log_sigma = out[:, 0], out[:, 1].clamp(*LOG_SIGMA_RANGE)
        y, seen = target[mask], observed[mask]
        nll = 0.5 * ((y - mu) / log_sigma.exp()) ** 2 + log_sigma
        value = nll[seen].mean() if bool(seen.any()) else states.sum() * 0.0
        return value, {"value": float(value.detach()), "value_observed_rate": float(seen.float().mean())}


def frequent_labs(batches, k: int, min_readings: int = 20) -> np.ndarray:
    """Vocabulary rows of the ``k`` codes carrying a value at the most visits of ``batches``
    (``codes``/``has_value`` tensors), at least ``min_readings`` times, most frequent first."""
    counts: dict[int, int] = {}
    for batch in batches:
        rows = batch["codes"][batch["has_value"] & (batch["codes"] > 1)]
        found, n = torch.unique(rows, return_counts=True)
        for row, count in zip(found.tolist(), n.tolist(), strict=True):
            counts[row] = counts.get(row, 0) + count
    ranked = sorted((row for row, n in counts.items() if n >= min_readings), key=lambda r: (-counts[r], r))
    return np.asarray(ranked[:k], dtype=np.int64)


__all__ = ["LOG_SIGMA_RANGE", "NextValueObjective", "frequent_labs", "next_values", "visit_lab_values"]
