"""The hierarchical visit model: codes within a visit, then the sequence of visits, then heads.

Shapes: a batch holds ``B`` subjects, ``V`` visits each (padded), ``C`` codes per visit (padded),
embedding size ``D``, sequence state size ``H``; ``P`` prediction points gather states at their
last input visit.

::

    codes [B,V,C] -> embeddings [B,V,C,D] (+ standardised lab value * value direction)
      -> within-visit encoder (masked attention pooling, or a transformer layer then pooling) [B,V,D]
      -> + time features (years since first / previous visit, age) [B,V,D]
      -> causal sequence encoder (GRU, LSTM or causal transformer) [B,V,H]
      -> gather at each point's last input visit [P,H] (+ the probe: the backbone output there [P,D])
      -> offset heads, linear, started at zero: stage offsets [P,K], risk offset [P] (or [P,T])
      -> + the tabular model's outputs (ehrprog.models.tabular: a booster or linear Cox and a logistic
         model on the clinical table), each scaled by one learned number (1 at the start)

The tabular model is fitted first (its outputs stacked out-of-fold on the training subjects) and
is frozen; the network learns only what the history adds to it. Epoch 0 (offsets at zero) is the
tabular model exactly, so what training gains over it on validation is the history's measured
contribution (``VisitProgressionEstimator.history_gain_``).

The survival head is a Cox proportional-hazards model: trained with the partial likelihood
(Breslow's handling of ties) and given a Breslow baseline hazard after training. It was chosen
over a discrete-time hazard because it needs no time grid, handles censoring exactly, gives the
risk score that Harrell's C ranks, and matches the Cox baselines it is compared with. Nothing
loops over visits or codes in ``forward``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ehrprog.cohorts.targets import breslow_baseline
from ehrprog.networks import piecewise
from ehrprog.networks.piecewise import SURVIVAL_PIECES_YEARS

#: Per-visit context every backbone may read (keyword arguments of its ``forward``):
#: ``times`` ``[B,V,3]`` (years since first visit, years since previous, age / 100 years) and
#: ``visit_days`` ``[B,V]`` (visit start in days since 1970-01-01).
CONTEXT = ("times", "visit_days")


class AttentionPool(nn.Module):
    """Masked additive attention pooling over the last-but-one axis: ``[..., N, D] -> [..., D]``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = self.score(x).squeeze(-1).masked_fill(~mask, -1e4)
        weights = torch.softmax(logits.float(), dim=-1).to(x.dtype) * mask
        return (weights.unsqueeze(-1) * x).sum(-2)


class DefaultBackbone(nn.Module):
    """Code embeddings and a within-visit encoder learned from scratch: visits -> ``[B, V, D]``.

    Backbone plugins replace this module behind the same ``forward`` signature. It can be
    pre-trained (``ehrprog pretrain --objective tte``) and loaded back with ``backbone__checkpoint``.
    """

    model_type: ClassVar[str] = "ehrprog-default"
    #: Parameters indexed by code (re-aligned to another vocabulary when a checkpoint is loaded).
    vocab_parameters: ClassVar[tuple[str, ...]] = ("code_embedding.weight", "value_direction.weight")

    def __init__(self, vocab_size: int, dim: int = 64, visit_encoder: str = "attention", dropout: float = 0.1) -> None:
        super().__init__()
        if visit_encoder not in ("attention", "transformer"):
            raise ValueError(f"visit_encoder must be 'attention' or 'transformer', got {visit_encoder!r}")
        self.code_embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.value_direction = nn.Embedding(vocab_size, dim, padding_idx=0)
        nn.init.normal_(self.code_embedding.weight, std=dim**-0.5)
        nn.init.normal_(self.value_direction.weight, std=dim**-0.5)
        with torch.no_grad():
            self.code_embedding.weight[0].zero_()
            self.value_direction.weight[0].zero_()
        self.within = (
            nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=2 * dim, dropout=dropout, batch_first=True)
            if visit_encoder == "transformer"
            else None
        )
        self.pool = AttentionPool(dim)
        self.dim = dim

    def architecture(self) -> dict[str, Any]:
        """Factory parameters that rebuild this module without its pre-trained source (its sizes
        win over the estimator's ``embedding_dim`` and ``visit_encoder``)."""
        return {"dim": self.dim, "within_transformer": self.within is not None, "checkpoint": None}

    def pretrained_config(self) -> dict[str, Any]:
        """What a checkpoint folder records beyond ``architecture()`` (the sizes the estimator sets)."""
        return {"dim": self.dim, "visit_encoder": "transformer" if self.within is not None else "attention"}

    def code_embeddings(self) -> torch.Tensor:
        """The code embedding matrix ``[vocab, D]`` (row 0 padding, row 1 unknown codes)."""
        return self.code_embedding.weight

    def embed(self, codes: torch.Tensor, values: torch.Tensor, has_value: torch.Tensor) -> torch.Tensor:
        """Code embeddings with their standardised values: ``[B,V,C] -> [B,V,C,D]``."""
        table = self.code_embeddings()
        return nn.functional.embedding(codes, table, padding_idx=0) + self.value_direction(codes) * (
            values * has_value
        ).unsqueeze(-1)

    def forward(
        self,
        codes: torch.Tensor,
        values: torch.Tensor,
        has_value: torch.Tensor,
        visit_mask: torch.Tensor,
        embedded: torch.Tensor | None = None,
        **context: torch.Tensor,
    ) -> torch.Tensor:
        """Visit embeddings ``[B,V,D]``; ``embedded`` replaces :meth:`embed`'s output (for attributions).
        ``context`` (``times``, ``visit_days``) is not used by this backbone."""
        code_mask = codes > 0  # [B,V,C]
        x = self.embed(codes, values, has_value) if embedded is None else embedded
        if self.within is not None:
            b, v, c, d = x.shape
            flat_mask = code_mask.reshape(b * v, c)
            rows = flat_mask.any(-1)  # only visits with codes go through the transformer
            flat = x.reshape(b * v, c, d)
            encoded = torch.zeros_like(flat)
            encoded[rows] = self.within(flat[rows], src_key_padding_mask=~flat_mask[rows])
            x = encoded.reshape(b, v, c, d)
        pooled = self.pool(x, code_mask)  # [B,V,D]
        return pooled * visit_mask.unsqueeze(-1)


class VisitSequenceModel(nn.Module):
    """Backbone + time features + causal sequence encoder + offset heads on a tabular model's outputs.

    The batch's ``point_features`` ``[P, O]`` are the tabular model's outputs for each point
    (:class:`~ehrprog.models.tabular.TabularModel`: the log relative risk, then the stage logits). The
    model returns ``tabular * scale + offset(state)``: the offsets are linear in the sequence
    state (and the probe), start at zero, and are what the visit history adds (the parts:
    ``VisitProgressionEstimator.decision_components``).

    Only the heads a target needs are built: ``n_classes`` > 0 gives the stage head (``None``
    otherwise), ``risk`` the survival head; so every parameter takes part in the loss (as DDP
    requires) and a saved model holds no untrained head.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        n_classes: int,
        risk: bool = True,
        hidden: int = 64,
        sequence_encoder: str = "gru",
        dropout: float = 0.1,
        probe: bool = False,
        survival_pieces: int = 0,
    ) -> None:
        super().__init__()
        dim = backbone.dim
        self.backbone = backbone
        self.time_projection = nn.Linear(3, dim)
        self.sequence_encoder = sequence_encoder
        if sequence_encoder == "gru":
            self.sequence = nn.GRU(dim, hidden, batch_first=True)
        elif sequence_encoder == "lstm":
            self.sequence = nn.LSTM(dim, hidden, batch_first=True)
        elif sequence_encoder == "transformer":
            self.input_projection = nn.Linear(dim, hidden)
            layer = nn.TransformerEncoderLayer(
                hidden, nhead=4, dim_feedforward=2 * hidden, dropout=dropout, batch_first=True
            )
            self.sequence = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        else:
            raise ValueError(f"sequence_encoder must be 'gru', 'lstm' or 'transformer', got {sequence_encoder!r}")
        self.hidden = hidden
        self.dropout = nn.Dropout(dropout)
        # The probe: the backbone's own output at the prediction visit read linearly by the heads
        # (a pre-trained backbone's patient representation, usable before any fine-tuning).
        self.probe = dim if probe else 0
        head_in = hidden + self.probe
        if n_classes < 1 and not risk:
            raise ValueError("the model needs a stage head (n_classes >= 1), a risk head (risk=True) or both")
        self.n_classes = n_classes
        self.stage_head = nn.Linear(head_in, n_classes) if n_classes > 0 else None
        # Cox: one log relative risk; piecewise: one log hazard per piece of SURVIVAL_PIECES_YEARS.
        self.survival_pieces = survival_pieces
        self.risk_head = nn.Linear(head_in, survival_pieces or 1) if risk else None
        # How much of the tabular output each head keeps (learned; 1 at the start).
        self.risk_scale = nn.Parameter(torch.ones(())) if risk else None
        self.stage_scale = nn.Parameter(torch.ones(())) if n_classes > 0 else None
        # The offsets start at zero: epoch 0 is exactly the tabular model.
        with torch.no_grad():
            for head in (self.stage_head, self.risk_head):
                if head is not None:
                    head.weight.zero_()
                    head.bias.zero_()

    @property
    def n_tabular(self) -> int:
        """Columns of the tabular outputs the model reads: the risk (1) then the stage logits (K)."""
        return int(self.risk_head is not None) + self.n_classes

    def visit_embeddings(self, batch: dict[str, torch.Tensor], embedded: torch.Tensor | None = None) -> torch.Tensor:
        """The backbone's per-visit output ``[B, V, D]`` (visit v reads visits 0..v only)."""
        context = {key: batch[key] for key in CONTEXT if key in batch}
        return self.backbone(
            batch["codes"], batch["values"], batch["has_value"], batch["visit_mask"], embedded, **context
        )

    def encode(
        self, batch: dict[str, torch.Tensor], embedded: torch.Tensor | None = None, visits: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-visit causal states ``[B, V, H]``: state v depends on visits 0..v only
        (``visits``: the :meth:`visit_embeddings` when already computed)."""
        if visits is None:
            visits = self.visit_embeddings(batch, embedded)
        x = visits + self.time_projection(batch["times"])
        if self.sequence_encoder == "transformer":
            length = x.shape[1]
            causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=x.device), diagonal=1)
            return self.sequence(self.input_projection(x), mask=causal, src_key_padding_mask=~batch["visit_mask"])
        states, _ = self.sequence(x)
        return states

    def forward(
        self, batch: dict[str, torch.Tensor], embedded: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Stage logits ``[P, K]`` and the risk output (log relative risks ``[P]`` or log hazards
        ``[P, T]``) for the batch's points (``None`` for a missing head): the tabular outputs
        ``batch["point_features"]`` scaled, plus the history's offsets."""
        tabular = batch["point_features"]
        if tabular.shape[-1] != self.n_tabular:
            raise ValueError(f"the model reads {self.n_tabular} tabular outputs per point, got {tabular.shape[-1]}")
        features = self.history_features(batch, embedded)
        tabular = tabular.to(features.dtype)
        logits = risk = None
        if self.risk_head is not None:
            offset = self.risk_head(features)
            risk = self.risk_scale * tabular[:, :1] + offset  # [P, 1] or [P, T]
            if not self.survival_pieces:
                risk = risk.squeeze(-1)
        if self.stage_head is not None:
            logits = self.stage_scale * tabular[:, -self.n_classes :] + self.stage_head(features)
        return logits, risk

    def tabular_outputs(self, tabular: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The outputs with the offsets' weights at zero, from the tabular outputs ``[P, O]`` alone
        (no visit is read): each scaled as the heads scale it, plus the heads' biases. Stage logits
        ``[P, K]`` and the risk output ``[P]`` / ``[P, T]`` (``None`` for a missing head)."""
        logits = risk = None
        if self.risk_head is not None:
            risk = self.risk_scale * tabular[:, :1] + self.risk_head.bias
            if not self.survival_pieces:
                risk = risk.squeeze(-1)
        if self.stage_head is not None:
            logits = self.stage_scale * tabular[:, -self.n_classes :] + self.stage_head.bias
        return logits, risk

    def risk_score(self, risk: torch.Tensor) -> torch.Tensor:
        """The ranking score ``[P]`` of a risk output: itself (Cox), or the log cumulative hazard
        at :data:`~ehrprog.networks.piecewise.RISK_HORIZON_YEARS` (piecewise)."""
        return piecewise.risk_score(risk) if self.survival_pieces else risk

    def history_features(self, batch: dict[str, torch.Tensor], embedded: torch.Tensor | None = None) -> torch.Tensor:
        """What the offsets read, ``[P, H (+ D)]``: the state at each point's last input visit
        (with dropout) and the probe (the backbone's output there) where the model has one."""
        visits = self.visit_embeddings(batch, embedded)
        states = self.encode(batch, visits=visits)
        at = (batch["point_subject"], batch["point_visit"])
        parts = [self.dropout(states[at])]
        if self.probe:
            parts.append(visits[at].to(parts[0].dtype))
        return torch.cat(parts, dim=-1)


class SupervisedObjective(nn.Module):
    """The training objective of :class:`VisitSequenceModel` for the training engine.

    ``forward(inputs)`` reads the batch tensors plus ``stage_label`` ``[P]`` (class index, -1
    where no next stage is known), ``event`` ``[P]`` and ``time`` ``[P]`` (days), and returns
    ``(loss, parts)``: cross-entropy over known stages (stage head) plus the Cox partial
    likelihood (risk head), with ``parts["weight"]`` the number of points.
    """

    def __init__(self, model: VisitSequenceModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logits, risk = self.model(inputs)
        return supervised_loss(logits, risk, inputs), {"weight": float(len(inputs["point_subject"]))}


def supervised_loss(
    logits: torch.Tensor | None, risk: torch.Tensor | None, targets: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Cross-entropy of known stages (``stage_label`` >= 0) plus the Cox partial likelihood of
    ``risk`` ``[P]`` given ``event`` and ``time`` (days), or for log hazards ``[P, T]`` the mean
    piecewise-exponential negative log-likelihood, for whichever heads are present."""
    anchor = logits if logits is not None else risk
    loss = anchor.sum() * 0.0
    if logits is not None:
        labels = targets["stage_label"]
        known = labels >= 0
        if bool(known.any()):
            loss = loss + nn.functional.cross_entropy(logits[known].float(), labels[known].long())
    if risk is not None and risk.dim() == 2:  # piecewise-exponential hazards, times in years
        years = targets["time"].float() / piecewise.DAYS_PER_YEAR
        nll = piecewise.piecewise_exponential_nll(risk.float(), years, targets["event"] > 0, SURVIVAL_PIECES_YEARS)
        loss = loss + nll.mean()
    elif risk is not None:
        loss = loss + cox_partial_likelihood(risk, targets["time"], targets["event"])
    return loss


def cox_partial_likelihood(risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Negative Cox log partial likelihood with Breslow ties, averaged over events.

    ``-(1/d) * sum_{i: event} [ r_i - log sum_{j: t_j >= t_i} exp(r_j) ]`` for risks ``r`` ``[N]``,
    times ``t`` ``[N]`` (days) and event indicators ``[N]``; 0 when the batch holds no event.
    """
    order = torch.argsort(time, descending=True, stable=True)
    r, t = risk[order], time[order]
    if r.dtype in (torch.float16, torch.bfloat16):  # mixed precision: sum in float32
        r = r.float()
    e = event[order].to(r.dtype)
    log_cumsum = torch.logcumsumexp(r, dim=0)
    # With ties, every tied subject's risk set includes all of them: use the last index of each tie.
    last_of_tie = torch.searchsorted(-t, -t, right=True) - 1
    denominators = log_cumsum[last_of_tie]
    n_events = e.sum()
    if n_events == 0:
        return risk.sum() * 0.0
    return -((r - denominators) * e).sum() / n_events


__all__ = [
    "AttentionPool",
    "DefaultBackbone",
    "SupervisedObjective",
    "VisitSequenceModel",
    "breslow_baseline",
    "cox_partial_likelihood",
    "supervised_loss",
]
