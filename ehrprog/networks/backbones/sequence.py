"""``SequenceBackbone``: the shared machinery of BERT-family EHR backbones (CEHR-BERT, Med-BERT, BEHRT).

A subclass supplies its token layout (:class:`~ehrprog.networks.backbones.tokens.TokenLayout`), its
embedding recipe (:meth:`SequenceBackbone.combine`) and, optionally, a secondary pre-training
objective (:meth:`SequenceBackbone.secondary_loss`); this class does the rest:

* code vectors: ``code_embedding`` ``[vocab, H]`` rows in the estimator's vocabulary order (0
  padding, 1 unknown), structural tokens from ``special_embedding`` ``[len(SPECIAL_TOKENS), H]``;
* the BERT encoder, run **block-causally** when it feeds the estimator (a token of visit ``v``
  attends to visits ``0..v`` only, so one pass serves every prediction point without leaking
  later visits) and bidirectionally when pre-training, as the papers do;
* per-visit embeddings ``[B, V, H]``: the mean of each visit's token states;
* masked-LM pre-training (15% of code tokens: 80% ``[MASK]``, 10% a random code, 10% kept; the
  decoder is tied to ``code_embedding``), plus the subclass's secondary objective;
* ``architecture()`` for rebuilding, and the vocabulary alignment of :mod:`ehrprog.networks.backbones.checkpoint`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ehrprog.networks.backbones.bert import BertEncoder, EncoderConfig, MaskedLMHead, attention_bias
from ehrprog.networks.backbones.tokens import MASK, SPECIAL_TOKENS, TokenLayout, Tokens, layout_tokens, pool_visits

MLM_PROBABILITY = 0.15


class SequenceBackbone(nn.Module):
    """Base class of token-sequence backbones; see the module docstring.

    Args:
        vocab_size: rows of the code vocabulary (padding and unknown included).
        hidden_size: encoder width.
        num_hidden_layers: encoder layers.
        num_attention_heads: attention heads per layer.
        intermediate_size: feed-forward width (``None``: ``4 * hidden_size``).
        dropout: dropout in embeddings and encoder.
        max_visit_positions: size of visit-position tables (visit indices are clipped to it).
        attention_dropout: dropout on attention probabilities (see :class:`EncoderConfig`).
    """

    model_type: ClassVar[str] = ""
    layout: ClassVar[TokenLayout] = TokenLayout()
    #: Parameters whose first axis runs over the code vocabulary (re-aligned when vocabularies differ).
    vocab_parameters: ClassVar[tuple[str, ...]] = ("code_embedding.weight", "mlm.bias")

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int = 64,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 4,
        intermediate_size: int | None = None,
        dropout: float = 0.1,
        max_visit_positions: int = 512,
        attention_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.config = EncoderConfig(
            hidden_size,
            num_hidden_layers,
            num_attention_heads,
            intermediate_size or 4 * hidden_size,
            1e-12,
            dropout,
            attention_dropout,
        )
        self.max_visit_positions = max_visit_positions
        self.dim = hidden_size
        self.code_embedding = nn.Embedding(vocab_size, hidden_size, padding_idx=0)
        self.special_embedding = nn.Embedding(len(SPECIAL_TOKENS), hidden_size)
        for table in (self.code_embedding, self.special_embedding):
            nn.init.normal_(table.weight, std=0.02)
        with torch.no_grad():
            self.code_embedding.weight[0].zero_()
        self.encoder = BertEncoder(self.config)
        self.mlm = MaskedLMHead(hidden_size, vocab_size)
        self.embedding_dropout = nn.Dropout(dropout)
        self.alignment: dict[str, int] | None = None

    @classmethod
    def create(
        cls,
        vocab_size: int,
        dim: int = 64,
        visit_encoder: str | None = None,
        dropout: float = 0.1,
        vocabulary: Any = None,
        checkpoint: str | None = None,
        freeze: bool = False,
        **params: Any,
    ) -> SequenceBackbone:
        """The backbone factory: from scratch (``hidden_size`` = ``dim`` unless given), or from a
        pre-trained ``checkpoint`` folder aligned to ``vocabulary`` (its sizes win; ``dim`` and
        ``visit_encoder`` do not apply). ``freeze`` keeps the backbone's parameters fixed."""
        if checkpoint is None:
            params.setdefault("hidden_size", dim)
            return cls(vocab_size, dropout=dropout, **params).requires_grad_(not freeze)
        if vocabulary is None:
            raise ValueError(f"{cls.model_type}: a checkpoint needs the estimator's vocabulary to align codes")
        architecture, state, codes = cls.read_checkpoint(checkpoint)
        clash = {k for k in params if k in architecture and params[k] != architecture[k]}
        if clash:
            raise ValueError(
                f"{checkpoint}: the checkpoint fixes {sorted(clash)} "
                f"({ {k: architecture[k] for k in sorted(clash)} }); drop those backbone__ parameters"
            )
        module = cls(vocab_size, dropout=dropout, **{**params, **architecture})
        from ehrprog.networks.backbones.checkpoint import load_aligned

        module.alignment = load_aligned(module, state, codes, vocabulary.codes)
        return module.requires_grad_(not freeze)

    @classmethod
    def read_checkpoint(cls, folder: str) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[str]]:
        """``(architecture, state_dict, codes)`` of a pre-trained folder (subclasses may read other layouts)."""
        from ehrprog.networks.backbones.checkpoint import read_pretrained

        return read_pretrained(folder, cls.model_type)

    # ------------------------------------------------------------ the interface the estimator uses
    def architecture(self) -> dict[str, Any]:
        """Factory parameters that rebuild this module without its pre-trained source."""
        c = self.config
        return {
            "hidden_size": c.hidden_size,
            "num_hidden_layers": c.num_hidden_layers,
            "num_attention_heads": c.num_attention_heads,
            "intermediate_size": c.intermediate_size,
            "max_visit_positions": self.max_visit_positions,
            "checkpoint": None,
        }

    def code_embeddings(self) -> torch.Tensor:
        """The code embedding matrix ``[vocab, H]`` (row 0 padding, row 1 unknown codes)."""
        return self.code_embedding.weight

    def embed(self, codes: torch.Tensor, values: torch.Tensor, has_value: torch.Tensor) -> torch.Tensor:
        """Code vectors ``[B, V, C, H]`` (subclasses may fold values in)."""
        return self.code_embedding(codes)

    def tokens(
        self,
        codes: torch.Tensor,
        values: torch.Tensor,
        has_value: torch.Tensor,
        visit_mask: torch.Tensor,
        times: torch.Tensor | None = None,
        visit_days: torch.Tensor | None = None,
    ) -> Tokens:
        """The packed token sequence of a visit batch (ages from ``times[..., 2]`` = age / 100 years)."""
        ages = times[..., 2] * 100.0 if times is not None else None
        return layout_tokens(codes, values, has_value, visit_mask, visit_days, ages, self.vocab_size, self.layout)

    def token_vectors(self, tokens: Tokens, code_vectors: torch.Tensor) -> torch.Tensor:
        """Token vectors ``[B, L, H]``: a code token takes its row of ``code_vectors`` ``[B, V, C, H]``,
        a structural token its special embedding, padding zeros."""
        h = code_vectors.shape[-1]
        flat = code_vectors.reshape(-1, h)
        from_codes = flat[tokens.slot.clamp(min=0)]
        special = self.special_embedding((tokens.ids - self.vocab_size).clamp(0, len(SPECIAL_TOKENS) - 1))
        vectors = torch.where(tokens.is_code[..., None], from_codes, special.to(from_codes.dtype))
        return vectors * tokens.attend[..., None].to(vectors.dtype)

    def combine(self, tokens: Tokens, vectors: torch.Tensor) -> torch.Tensor:
        """The model's input embeddings ``[B, L, H]`` from token vectors and token context."""
        raise NotImplementedError

    def hidden_states(self, tokens: Tokens, vectors: torch.Tensor, causal: bool) -> torch.Tensor:
        """Encoder output ``[B, L, H]`` (block-causal over visits when ``causal``)."""
        x = self.combine(tokens, vectors)
        bias = attention_bias(tokens.attend, tokens.block if causal else None, x.dtype)
        return self.encoder(x, bias)

    def forward(
        self,
        codes: torch.Tensor,
        values: torch.Tensor,
        has_value: torch.Tensor,
        visit_mask: torch.Tensor,
        embedded: torch.Tensor | None = None,
        *,
        times: torch.Tensor | None = None,
        visit_days: torch.Tensor | None = None,
        **context: torch.Tensor,
    ) -> torch.Tensor:
        """Per-visit embeddings ``[B, V, H]``; visit ``v`` depends on visits ``0..v`` only."""
        tokens = self.tokens(codes, values, has_value, visit_mask, times, visit_days)
        vectors = self.token_vectors(tokens, self.embed(codes, values, has_value) if embedded is None else embedded)
        hidden = self.hidden_states(tokens, vectors, causal=True)
        return pool_visits(hidden, tokens, codes.shape[1]) * visit_mask[..., None].to(hidden.dtype)

    # ------------------------------------------------------------ pre-training
    def secondary_loss(
        self, tokens: Tokens, hidden: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> tuple[str, torch.Tensor] | None:
        """The model's second pre-training objective ``(name, loss)``, or ``None``."""
        return None

    def pretraining_loss(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Masked-LM loss (plus the secondary objective) on a visit batch, bidirectional attention.

        Returns the total loss and its parts by name (``mlm``, ``mlm_accuracy`` and the secondary's).
        """
        codes = batch["codes"]
        tokens = self.tokens(
            codes, batch["values"], batch["has_value"], batch["visit_mask"], batch.get("times"), batch.get("visit_days")
        )
        vectors = self.token_vectors(tokens, self.embed(codes, batch["values"], batch["has_value"]))
        device = codes.device
        draw = torch.rand(tokens.ids.shape, generator=generator, device="cpu").to(device)
        how = torch.rand(tokens.ids.shape, generator=generator, device="cpu").to(device)
        random_codes = torch.randint(2, max(self.vocab_size, 3), tokens.ids.shape, generator=generator).to(device)
        chosen = tokens.is_code & (draw < MLM_PROBABILITY)
        to_mask = chosen & (how < 0.8)
        to_random = chosen & (how >= 0.8) & (how < 0.9)
        mask_vector = self.special_embedding.weight[MASK].to(vectors.dtype)
        vectors = torch.where(to_mask[..., None], mask_vector, vectors)
        vectors = torch.where(to_random[..., None], self.code_embedding(random_codes).to(vectors.dtype), vectors)
        hidden = self.hidden_states(tokens, vectors, causal=False)
        parts: dict[str, float] = {}
        loss = hidden.sum() * 0.0
        if chosen.any():
            logits = self.mlm(hidden[chosen], self.code_embedding.weight)
            labels = tokens.ids[chosen]
            mlm = nn.functional.cross_entropy(logits.float(), labels)
            loss = loss + mlm
            parts["mlm"] = float(mlm.detach())
            parts["mlm_accuracy"] = float((logits.argmax(-1) == labels).float().mean())
        secondary = self.secondary_loss(tokens, hidden, batch)
        if secondary is not None:
            name, value = secondary
            loss = loss + value
            parts[name] = float(value.detach())
        return loss, parts


def fixed_sinusoid_table(size: int, positions: int) -> torch.Tensor:
    """The fixed sine/cosine position table ``[positions, size]`` of the Transformer paper."""
    import math

    position = torch.arange(positions).unsqueeze(1)
    div = torch.exp(torch.arange(0, size, 2) * (-math.log(10000.0) / size))
    table = torch.zeros(positions, size)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div[: size // 2])
    return table


__all__ = ["MLM_PROBABILITY", "SequenceBackbone", "fixed_sinusoid_table"]
