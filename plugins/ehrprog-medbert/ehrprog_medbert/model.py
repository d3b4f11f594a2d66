"""Med-BERT (Rasmy et al., 2021, "Med-BERT: pretrained contextualized embeddings on large-scale
structured electronic health records for disease prediction") for ehrprog.

Sequence: ``[CLS]`` then the codes of each visit in order (no separators: the visit embedding tells
visits apart). Input embedding = code + visit ("visit serialization": the visit's index, learned)
+ code serialization (the code's position inside its visit, learned), then layer norm and dropout.
Then a BERT encoder.

Pre-training, as the paper: masked-LM plus prolonged length of stay (PLOS), a binary label per
sequence, "some visit lasted more than 7 days", predicted from the pooled ``[CLS]`` state (BERT
pooler: dense + tanh, then a linear classifier). Visit lengths come from the visits' start and
end; where every visit lasts under a day (same-day grouping, outpatient data) the label is
constant and the objective is skipped for that batch, which the pre-training history shows as a
missing ``plos`` entry.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ehrprog.networks.backbones.sequence import SequenceBackbone
from ehrprog.networks.backbones.tokens import TokenLayout, Tokens

PROLONGED_STAY_DAYS = 7.0
MAX_CODE_POSITIONS = 256


class MedBertBackbone(SequenceBackbone):
    """Med-BERT as the estimator's backbone (see the module docstring and
    :class:`~ehrprog.networks.backbones.sequence.SequenceBackbone` for the arguments)."""

    model_type: ClassVar[str] = "ehrprog-medbert"
    layout: ClassVar[TokenLayout] = TokenLayout(cls=True)

    def __init__(self, vocab_size: int, hidden_size: int = 64, *args: Any, **kwargs: Any) -> None:
        super().__init__(vocab_size, hidden_size, *args, **kwargs)
        self.visit_embedding = nn.Embedding(self.max_visit_positions, hidden_size)
        self.serialization_embedding = nn.Embedding(MAX_CODE_POSITIONS, hidden_size)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=1e-12)
        for table in (self.visit_embedding, self.serialization_embedding):
            nn.init.normal_(table.weight, std=0.02)
        self.pooler = nn.Linear(hidden_size, hidden_size)
        self.plos_head = nn.Linear(hidden_size, 1)

    def combine(self, tokens: Tokens, vectors: torch.Tensor) -> torch.Tensor:
        visit = tokens.order.clamp(0, self.max_visit_positions - 1)
        position = tokens.position.clamp(0, MAX_CODE_POSITIONS - 1)
        x = vectors + self.visit_embedding(visit) + self.serialization_embedding(position)
        return self.embedding_dropout(self.layer_norm(x)) * tokens.attend[..., None].to(x.dtype)

    def secondary_loss(self, tokens: Tokens, hidden: torch.Tensor, batch: dict[str, torch.Tensor]):
        """Prolonged length of stay (> 7 days in some visit) from the pooled ``[CLS]`` state."""
        if "visit_los" not in batch:
            return None
        label = ((batch["visit_los"] > PROLONGED_STAY_DAYS) & batch["visit_mask"]).any(1).to(hidden.dtype)
        if label.min() == label.max():  # one class only: nothing to learn from this batch
            return None
        logit = self.plos_head(torch.tanh(self.pooler(hidden[:, 0]))).squeeze(-1)
        return "plos", nn.functional.binary_cross_entropy_with_logits(logit.float(), label.float())


#: The ``medbert`` backbone factory (see :meth:`SequenceBackbone.create`).
medbert_backbone = MedBertBackbone.create
