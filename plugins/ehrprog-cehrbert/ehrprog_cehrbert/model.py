"""CEHR-BERT as the ``cehrbert`` package (1.5) computes it, in plain torch.

Shapes: batch ``B``, sequence ``L``, hidden ``H``, time-embedding size ``T`` (``n_time_embd``).

Embeddings (``CehrBertEmbeddings``): a concept embedding ``[B, L, H]``; where a token carries a
value, ``concat(embedding, clamp(value, -10, 10))`` goes through a linear layer back to ``H`` and
a tanh-approximated GELU instead. Time (days / 1000) and age (years / 100) each become
``sin(x * w + phi)`` ``[B, L, T]``; the visit order, shifted so the row's smallest positive order
is 0 and clipped to the position range, indexes a fixed sine/cosine table ``[B, L, T]``. The four
parts are concatenated (``H + 3T``), projected to ``H``, passed through the tanh GELU, and a
visit-segment embedding is added. Then a post-layer-norm BERT encoder, the BERT pooler and the
masked-LM head with decoder weights tied to the concept embedding.

Loading reads ``config.json`` and ``model.safetensors`` only (no pickle, no code execution).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn


@dataclass
class CehrBertConfig:
    vocab_size: int
    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 512
    n_time_embd: int = 16
    n_visit_segments: int = 3
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    time_embedding_scaling_factor: float = 1000.0
    age_embedding_scaling_factor: float = 100.0
    tie_word_embeddings: bool = True

    @classmethod
    def from_json(cls, path: Path) -> CehrBertConfig:
        raw = json.loads(Path(path).read_text())
        if raw.get("model_type") != "cehrbert":
            raise ValueError(f"{path}: model_type is {raw.get('model_type')!r}, expected 'cehrbert'")
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in raw.items() if k in fields})


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.gelu(x, approximate="tanh")


class _Sinusoid(nn.Module):
    """``sin(x * w + phi)`` with learned ``w``, ``phi`` ``[1, T]``: ``[B, L] -> [B, L, T]``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1, size))
        self.phi = nn.Parameter(torch.zeros(1, size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x.unsqueeze(-1) * self.w + self.phi)


class _FixedPositions(nn.Module):
    """The fixed sine/cosine position table ``pe`` ``[max_positions, T]`` (a buffer in the checkpoint)."""

    def __init__(self, size: int, max_positions: int) -> None:
        super().__init__()
        position = torch.arange(max_positions).unsqueeze(1)
        div = torch.exp(torch.arange(0, size, 2) * (-math.log(10000.0) / size))
        pe = torch.zeros(max_positions, size)
        pe[:, 0::2] = torch.sin(position * div)
        pe[:, 1::2] = torch.cos(position * div)
        self.register_buffer("pe", pe)

    def forward(self, orders: torch.Tensor) -> torch.Tensor:
        positive = torch.where(orders > 0, orders, torch.full_like(orders, torch.iinfo(orders.dtype).max))
        first = positive.min(dim=1, keepdim=True).values
        first = torch.where(first == torch.iinfo(orders.dtype).max, torch.zeros_like(first), first)
        shifted = (orders - first).clamp(0, self.pe.shape[0] - 1)
        return self.pe[shifted]


class CehrBertEmbeddings(nn.Module):
    def __init__(self, config: CehrBertConfig) -> None:
        super().__init__()
        h, t = config.hidden_size, config.n_time_embd
        self.config = config
        self.concept_embeddings = nn.Embedding(config.vocab_size, h, padding_idx=0)
        self.concept_value_transformation_layer = nn.Module()
        self.concept_value_transformation_layer.merge_value_transformation_layer = nn.Linear(h + 1, h)
        self.time_embedding_layer = _Sinusoid(t)
        self.age_embedding_layer = _Sinusoid(t)
        self.positional_embedding_layer = _FixedPositions(t, config.max_position_embeddings)
        self.linear_proj = nn.Linear(h + 3 * t, h)
        self.visit_segment_embeddings = nn.Embedding(config.n_visit_segments, h)

    def forward(
        self, input_ids, ages, dates, visit_concept_orders, visit_segments, concept_values, concept_value_masks
    ) -> torch.Tensor:
        concept = self.concept_embeddings(input_ids)  # [B,L,H]
        merge = self.concept_value_transformation_layer.merge_value_transformation_layer
        valued = _gelu_tanh(merge(torch.cat([concept, concept_values.clamp(-10, 10).unsqueeze(-1)], dim=-1)))
        mask = concept_value_masks.unsqueeze(-1).to(concept.dtype)
        concept = valued * mask + concept * (1 - mask)
        time = self.time_embedding_layer(dates.to(concept.dtype) / self.config.time_embedding_scaling_factor)
        age = self.age_embedding_layer(ages.to(concept.dtype) / self.config.age_embedding_scaling_factor)
        position = self.positional_embedding_layer(visit_concept_orders)
        merged = _gelu_tanh(self.linear_proj(torch.cat([concept, time, age, position], dim=-1)))
        return merged + self.visit_segment_embeddings(visit_segments)


class _Attention(nn.Module):
    def __init__(self, config: CehrBertConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.heads = config.num_attention_heads
        self.self = nn.Module()
        self.self.query, self.self.key, self.self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        self.output = nn.Module()
        self.output.dense = nn.Linear(h, h)
        self.output.LayerNorm = nn.LayerNorm(h, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        b, length, h = x.shape
        d = h // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, length, self.heads, d).transpose(1, 2)

        q, k, v = split(self.self.query(x)), split(self.self.key(x)), split(self.self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d) + additive_mask
        context = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, length, h)
        return self.output.LayerNorm(self.output.dense(context) + x)


class _Layer(nn.Module):
    def __init__(self, config: CehrBertConfig) -> None:
        super().__init__()
        self.attention = _Attention(config)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.output = nn.Module()
        self.output.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.output.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        attended = self.attention(x, additive_mask)
        inner = nn.functional.gelu(self.intermediate.dense(attended))
        return self.output.LayerNorm(self.output.dense(inner) + attended)


class CehrBertModel(nn.Module):
    def __init__(self, config: CehrBertConfig) -> None:
        super().__init__()
        self.cehr_bert_embeddings = CehrBertEmbeddings(config)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(_Layer(config) for _ in range(config.num_hidden_layers))
        self.pooler = nn.Module()
        self.pooler.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, attention_mask: torch.Tensor, **inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden state ``[B, L, H]`` and pooled output ``[B, H]``; ``inputs`` are the
        embedding inputs by name (``input_ids``, ``ages``, ``dates``, ``visit_concept_orders``,
        ``visit_segments``, ``concept_values``, ``concept_value_masks``)."""
        x = self.cehr_bert_embeddings(**inputs)
        additive = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.encoder.layer:
            x = layer(x, additive)
        pooled = torch.tanh(self.pooler.dense(x[:, 0]))
        return x, pooled


class CehrBertForPreTraining(nn.Module):
    """CEHR-BERT with its masked-LM head: ``forward(**inputs)`` -> last hidden state ``[B, L, H]``,
    pooled output ``[B, H]`` and MLM logits ``[B, L, vocab]``."""

    def __init__(self, config: CehrBertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = CehrBertModel(config)
        self.cls = nn.Module()
        self.cls.predictions = nn.Module()
        self.cls.predictions.transform = nn.Module()
        self.cls.predictions.transform.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.cls.predictions.transform.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.cls.predictions.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, attention_mask: torch.Tensor, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden, pooled = self.bert(attention_mask, **inputs)
        transform = self.cls.predictions.transform
        h = transform.LayerNorm(nn.functional.gelu(transform.dense(hidden)))
        decoder = self.bert.cehr_bert_embeddings.concept_embeddings.weight  # tied
        logits = h @ decoder.T + self.cls.predictions.bias
        return {"last_hidden_state": hidden, "pooler_output": pooled, "prediction_logits": logits}


def load_cehrbert_checkpoint(folder: str | Path) -> CehrBertForPreTraining:
    """Load a checkpoint folder written by ``cehrbert``'s ``save_pretrained`` (config.json +
    model.safetensors). Every tensor must be used and every parameter filled."""
    folder = Path(folder)
    config = CehrBertConfig.from_json(folder / "config.json")
    model = CehrBertForPreTraining(config)
    state = load_file(str(folder / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"{folder}: tensors this model does not have: {sorted(unexpected)}")
    if missing:
        raise ValueError(f"{folder}: parameters the checkpoint lacks: {sorted(missing)}")
    return model.eval()
