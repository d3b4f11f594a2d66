"""Time-to-event pre-training in the spirit of MOTOR (Steinberg et al., ICLR 2024), for any backbone.

At every real visit ``v`` of a subject the backbone's per-visit state ``h_v`` (which, by the
backbone contract, reads visits ``0..v`` only) predicts, for each of ``K`` *task codes* (the
codes seen at the most visits), the time from ``v`` to the code's next occurrence in a later
visit. Where the code never recurs the time is censored at the subject's last visit. Each
(visit, code) pair is a survival problem with a **piecewise-exponential** hazard: constant within
each of ``T`` time pieces (:data:`PIECES_DAYS`), log hazard ``log λ[v, t, k] = <A h_v [t], w_k> +
b[t, k]`` (a low-rank product as MOTOR's: ``A`` maps the state to one ``R``-vector per piece,
``w_k`` is the code's ``R``-vector). The loss is the exact negative log-likelihood under right
censoring, averaged over (visit, code) pairs::

    -log L = sum_t λ[t] * exposure[t]  -  event * log λ[piece of the event time]

with ``exposure[t]`` the time (years) spent in piece ``t`` before the event or censoring.
Nothing here depends on how the backbone is built: the objective reads its ``forward`` output
``[B, V, H]`` only, so every registered backbone (default, CEHR-BERT, Med-BERT, BEHRT,
ClinicalBERT, a plugin's) can be pre-trained with it.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch
from torch import nn

from ehrprog.networks import piecewise

#: Upper edges of the hazard pieces in days (the last piece is open-ended).
PIECES_DAYS: tuple[float, ...] = (30.0, 90.0, 180.0, 365.0, 730.0, 1095.0, 1825.0)
_YEAR = 365.25
PIECES_YEARS: tuple[float, ...] = tuple(d / _YEAR for d in PIECES_DAYS)


def frequent_codes(X, vocabulary_codes: list[str], k: int) -> np.ndarray:
    """Vocabulary rows (``2..``) of the ``k`` codes present at the most input visits of ``X``'s
    points (a :class:`~ehrprog.tasks.CohortX`, counted part by part), most frequent first."""
    from ehrprog.cohorts.arrays import visit_arrays

    parts = []
    for part, _ in X.parts():
        arrays = visit_arrays(part)
        needed = arrays.visits_needed(part.points["subject_id"].to_numpy(), part.points["n_visits"].to_numpy())
        parts.append(arrays.visit_counts(needed))
    counts = (
        pl.concat(parts)
        .group_by("code")
        .agg(pl.col("visits").sum().alias("len"))
        .filter(pl.col("len") > 0)
        .sort(["len", "code"], descending=[True, False])
    )
    row = {code: i + 2 for i, code in enumerate(vocabulary_codes)}
    rows = [row[c] for c in counts["code"].to_list() if c in row]
    return np.asarray(rows[:k], dtype=np.int64)


def next_occurrence(
    present: torch.Tensor, visit_days: torch.Tensor, visit_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per visit and task code, the days to the code's next occurrence, or to censoring.

    Args:
        present: ``[B, V, K]`` bool, task code ``k`` recorded at visit ``v``.
        visit_days: ``[B, V]`` visit start in days.
        visit_mask: ``[B, V]`` bool, real visits (padding after them).

    Returns:
        ``(days [B, V, K] float, event [B, V, K] bool)``: the time from visit ``v`` to the first
        later visit holding code ``k`` (``event``), else to the subject's last visit (censored).
    """
    inf = torch.tensor(float("inf"), device=visit_days.device)
    day = visit_days.float()
    at = torch.where(present & visit_mask[..., None], day[..., None], inf)  # [B, V, K]
    # strictly later: the first occurrence among visits v+1.. = reverse cumulative min, shifted by one
    later = torch.flip(torch.cummin(torch.flip(at, [1]), dim=1).values, [1])
    later = torch.cat([later[:, 1:], torch.full_like(later[:, :1], float("inf"))], dim=1)
    last_day = torch.where(visit_mask, day, torch.full_like(day, -float("inf"))).max(1).values  # [B]
    event = torch.isfinite(later)
    until = torch.where(event, later, last_day[:, None, None].expand_as(later)) - day[..., None]
    return until.clamp(min=0.0), event


def piecewise_exponential_nll(log_hazard: torch.Tensor, years: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood per pair ``[N, K]`` of log hazards ``[N, T, K]`` (per year, pieces
    :data:`PIECES_DAYS`) given times ``[N, K]`` (years) and events ``[N, K]``
    (:func:`ehrprog.networks.piecewise.piecewise_exponential_nll`)."""
    return piecewise.piecewise_exponential_nll(log_hazard, years, event, PIECES_YEARS)


class PiecewiseExponentialHead(nn.Module):
    """Low-rank piecewise-exponential hazards ``[N, T, K]`` (log, per year) from states ``[N, H]``."""

    def __init__(self, hidden: int, n_codes: int, rank: int = 64, n_pieces: int = len(PIECES_DAYS) + 1) -> None:
        super().__init__()
        self.n_pieces, self.rank = n_pieces, rank
        self.to_pieces = nn.Linear(hidden, n_pieces * rank)
        self.code_vectors = nn.Parameter(torch.randn(n_codes, rank) * rank**-0.5)
        self.log_base = nn.Parameter(torch.zeros(n_pieces, n_codes))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        pieces = self.to_pieces(states).view(-1, self.n_pieces, self.rank)  # [N, T, R]
        return pieces @ self.code_vectors.T + self.log_base  # [N, T, K]


class TimeToEventObjective(nn.Module):
    """The time-to-event pre-training objective around a backbone (see the module docstring).

    The backbone is not owned here: :meth:`loss` takes it, so one backbone can serve several
    objectives at once (masked LM and this one).

    Args:
        task_rows: ``[K]`` vocabulary rows of the task codes (:func:`frequent_codes`).
        vocab_size: rows of the vocabulary.
        hidden: the backbone's output size ``H``.
        rank: the rank of the hazard head.
        base_rates: ``[T, K]`` optional starting log hazards (per year), e.g. each code's overall rate.
    """

    def __init__(
        self,
        task_rows: np.ndarray,
        vocab_size: int,
        hidden: int,
        rank: int = 64,
        base_rates: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        lookup = torch.full((vocab_size,), -1, dtype=torch.long)
        lookup[torch.as_tensor(task_rows, dtype=torch.long)] = torch.arange(len(task_rows))
        self.register_buffer("task_of_row", lookup, persistent=False)
        self.n_codes = len(task_rows)
        self.head = PiecewiseExponentialHead(hidden, self.n_codes, rank)
        if base_rates is not None:
            with torch.no_grad():
                self.head.log_base.copy_(torch.as_tensor(base_rates, dtype=torch.float32))

    def targets(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(years [B, V, K], event [B, V, K])`` of every visit of the batch (see :func:`next_occurrence`)."""
        codes = batch["codes"]
        task = self.task_of_row[codes]  # [B, V, C], -1 where not a task code
        b, v, _ = codes.shape
        present = torch.zeros(b, v, self.n_codes + 1, dtype=torch.bool, device=codes.device)
        present.scatter_(2, torch.where(task >= 0, task, self.n_codes), True)
        days, event = next_occurrence(present[..., : self.n_codes], batch["visit_days"], batch["visit_mask"])
        return days / _YEAR, event

    def loss(self, backbone: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The mean negative log-likelihood over (real visit, task code) pairs of ``backbone``'s
        per-visit states (:func:`visit_states`), and its parts."""
        return self.loss_from_states(visit_states(backbone, batch), batch)

    def loss_from_states(
        self, states: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """As :meth:`loss`, from the per-visit ``states`` ``[B, V, H]`` already computed."""
        years, event = self.targets(batch)
        mask = batch["visit_mask"]
        log_hazard = self.head(states[mask].float())
        nll = piecewise_exponential_nll(log_hazard, years[mask], event[mask])
        value = nll.mean() if nll.numel() else states.sum() * 0.0
        return value, {"tte": float(value.detach()), "tte_event_rate": float(event[mask].float().mean())}


def visit_states(backbone: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``backbone``'s per-visit states ``[B, V, H]`` of a batch
    (``forward(codes, values, has_value, visit_mask, times=, visit_days=)``)."""
    return backbone(
        batch["codes"],
        batch["values"],
        batch["has_value"],
        batch["visit_mask"],
        times=batch.get("times"),
        visit_days=batch.get("visit_days"),
    )


def base_log_rates(objective: TimeToEventObjective, batches) -> np.ndarray:
    """Each task code's maximum-likelihood constant hazard per piece over ``batches`` ``[T, K]``
    (log, per year: events in the piece over exposure in it, pooled over visits); a neutral start."""
    years, events = [], []
    with torch.no_grad():
        for batch in batches:
            y, e = objective.targets(batch)
            years.append(y[batch["visit_mask"]].cpu())
            events.append(e[batch["visit_mask"]].cpu())
    y, e = torch.cat(years).double(), torch.cat(events)
    rates = [piecewise.base_log_hazards(y[:, k], e[:, k], PIECES_YEARS) for k in range(y.shape[1])]
    return torch.stack(rates, dim=1).float().numpy()


__all__ = [
    "PIECES_DAYS",
    "PiecewiseExponentialHead",
    "TimeToEventObjective",
    "base_log_rates",
    "frequent_codes",
    "next_occurrence",
    "piecewise_exponential_nll",
    "visit_states",
]
