"""The plugin: one backbone, ``recency``, registered through ehrprog's hook.

Each visit's embedding is the mean of its code embeddings (values folded in along a learned
direction), plus an exponentially decaying summary of the visits before it with a learned
half-life in years: ``state_v = mean_v + exp(-gap_v / tau) * state_{v-1}``. It reads only visits
``0..v`` for visit ``v`` (ehrprog's conformance suite checks that) and uses the ``times`` context
(years since the previous visit).
"""

from __future__ import annotations

import torch
from torch import nn

from ehrprog.plugins import BackboneSpec, hookimpl


class RecencyBackbone(nn.Module):
    def __init__(self, vocab_size: int, dim: int = 64, half_life_years: float = 1.0) -> None:
        super().__init__()
        self.dim = dim
        self.code_embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.value_direction = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.log_tau = nn.Parameter(torch.tensor(float(half_life_years)).log())

    def code_embeddings(self) -> torch.Tensor:
        return self.code_embedding.weight

    def embed(self, codes, values, has_value) -> torch.Tensor:
        """``[B, V, C] -> [B, V, C, D]``."""
        return self.code_embedding(codes) + self.value_direction(codes) * (values * has_value)[..., None]

    def forward(self, codes, values, has_value, visit_mask, embedded=None, *, times=None, **context):
        """``[B, V, D]``: mean code embedding plus the decayed states of earlier visits."""
        x = self.embed(codes, values, has_value) if embedded is None else embedded
        present = (codes > 0)[..., None].to(x.dtype)
        means = (x * present).sum(2) / present.sum(2).clamp(min=1)  # [B, V, D]
        gaps = times[..., 1] if times is not None else torch.zeros(codes.shape[:2], device=codes.device)
        decay = torch.exp(-gaps / self.log_tau.exp())  # [B, V]
        states, state = [], torch.zeros_like(means[:, 0])
        for v in range(codes.shape[1]):  # visits are few; a scan keeps the example short
            state = means[:, v] + decay[:, v, None] * state
            states.append(state)
        return torch.stack(states, 1) * visit_mask[..., None].to(x.dtype)


def make_recency(vocab_size, dim=64, visit_encoder="attention", dropout=0.1, vocabulary=None, half_life_years=1.0):
    """Factory: ehrprog passes the estimator's sizes; ``backbone__half_life_years`` reaches it."""
    return RecencyBackbone(vocab_size, dim, half_life_years)


@hookimpl
def ehrprog_register_backbones(register):
    register(BackboneSpec("recency", make_recency, "recency-weighted bag of codes (example third-party plugin)"))
