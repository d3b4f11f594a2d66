"""BEHRT (Li et al., 2020, "BEHRT: Transformer for Electronic Health Records") for ehrprog.

Sequence: ``[CLS]``, then each visit's codes followed by ``[SEP]``. Input embedding = word
(code) + age + segment + position, then layer norm and dropout, as in the reference
implementation (deepmedicine/BEHRT):

* age: a learned embedding of the whole year of age at the visit (0-120, clipped);
* segment: two learned vectors alternating visit by visit (``A``/``B``), ``[CLS]`` takes ``A``;
* position: the visit's index in the sequence (every code of a visit shares it), looked up in a
  fixed sine/cosine table, as BEHRT's pre-computed position embedding.

Then a BERT encoder; pre-training is masked-LM only (the paper's single objective).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ehrprog.networks.backbones.sequence import SequenceBackbone, fixed_sinusoid_table
from ehrprog.networks.backbones.tokens import TokenLayout, Tokens

MAX_AGE_YEARS = 120


class BehrtBackbone(SequenceBackbone):
    """BEHRT as the estimator's backbone (see the module docstring and
    :class:`~ehrprog.networks.backbones.sequence.SequenceBackbone` for the arguments)."""

    model_type: ClassVar[str] = "ehrprog-behrt"
    layout: ClassVar[TokenLayout] = TokenLayout(cls=True, separator=True)

    def __init__(self, vocab_size: int, hidden_size: int = 64, *args: Any, **kwargs: Any) -> None:
        super().__init__(vocab_size, hidden_size, *args, **kwargs)
        self.age_embedding = nn.Embedding(MAX_AGE_YEARS + 1, hidden_size)
        self.segment_embedding = nn.Embedding(2, hidden_size)
        self.register_buffer("position_table", fixed_sinusoid_table(hidden_size, self.max_visit_positions))
        self.layer_norm = nn.LayerNorm(hidden_size, eps=1e-12)
        for table in (self.age_embedding, self.segment_embedding):
            nn.init.normal_(table.weight, std=0.02)

    def combine(self, tokens: Tokens, vectors: torch.Tensor) -> torch.Tensor:
        age = torch.floor(tokens.ages + 1e-3).long().clamp(0, MAX_AGE_YEARS)
        segment = (tokens.segment - 1).clamp(min=0)  # visits alternate A/B; [CLS] is A
        position = tokens.order.clamp(0, self.max_visit_positions - 1)
        x = vectors + self.age_embedding(age) + self.segment_embedding(segment) + self.position_table[position]
        return self.embedding_dropout(self.layer_norm(x)) * tokens.attend[..., None].to(x.dtype)


#: The ``behrt`` backbone factory (see :meth:`SequenceBackbone.create`).
behrt_backbone = BehrtBackbone.create
