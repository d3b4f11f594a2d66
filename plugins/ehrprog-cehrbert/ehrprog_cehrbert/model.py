"""CEHR-BERT (Pang et al., 2021) as the ``cehrbert`` package (1.5) computes it, in plain torch.

Shapes: batch ``B``, sequence ``L``, hidden ``H``, time-embedding size ``T`` (``n_time_embd``).

Embeddings: a concept embedding ``[B, L, H]``; where a token carries a value,
``concat(embedding, clamp(value, -10, 10))`` goes through a linear layer back to ``H`` and a
tanh-approximated GELU instead. Time (days / 1000) and age (years / 100) each become
``sin(x * w + phi)`` ``[B, L, T]``; the visit order, shifted so the row's smallest positive order
is 0 and clipped to the position range, indexes a fixed sine/cosine table ``[B, L, T]``. The four
parts are concatenated (``H + 3T``), projected to ``H``, passed through the tanh GELU, and a
visit-segment embedding is added. Then a post-layer-norm BERT encoder, the BERT pooler and the
masked-LM head with decoder weights tied to the concept embedding.

Two modules use that recipe:

* :class:`CehrBertForPreTraining` mirrors cehrbert's own module and parameter names, so
  :func:`load_cehrbert_checkpoint` reads cehrbert's ``save_pretrained`` folders exactly (the
  ``verify-checkpoint`` parity check);
* :class:`CehrBertBackbone` is the estimator's backbone: visits become CEHR-BERT's sequence
  (``[CLS]``, then per visit an artificial time token ``W0``-``W3``/``M1``-``M11``/``LT`` for the gap,
  ``VS``, the codes, ``VE``), with visit orders, alternating visit segments, dates and ages as
  cehrbert builds them. Pre-training is masked-LM plus visit-type prediction (the paper's
  secondary objective: each visit's type predicted from its ``VS`` state; the type is not an
  input). ``checkpoint=`` reads ehrprog's own pre-trained folders and cehrbert's.

Loading reads JSON and safetensors only (no pickle, no code execution).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file
from torch import nn

from ehrprog.networks.backbones.bert import BertEncoder, attention_bias, gelu_tanh
from ehrprog.networks.backbones.sequence import SequenceBackbone, fixed_sinusoid_table
from ehrprog.networks.backbones.tokens import SPECIAL_TOKENS, VS, TokenLayout, Tokens


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


class _Sinusoid(nn.Module):
    """``sin(x * w + phi)`` with learned ``w``, ``phi`` ``[1, T]``: ``[B, L] -> [B, L, T]``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1, size))
        self.phi = nn.Parameter(torch.zeros(1, size))
        nn.init.normal_(self.w, std=0.02)
        nn.init.normal_(self.phi, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x.unsqueeze(-1) * self.w + self.phi)


class _FixedPositions(nn.Module):
    """The fixed sine/cosine position table ``pe`` ``[max_positions, T]`` (a buffer in the checkpoint)."""

    def __init__(self, size: int, max_positions: int) -> None:
        super().__init__()
        self.register_buffer("pe", fixed_sinusoid_table(size, max_positions))

    def forward(self, orders: torch.Tensor) -> torch.Tensor:
        positive = torch.where(orders > 0, orders, torch.full_like(orders, torch.iinfo(orders.dtype).max))
        first = positive.min(dim=1, keepdim=True).values
        first = torch.where(first == torch.iinfo(orders.dtype).max, torch.zeros_like(first), first)
        shifted = (orders - first).clamp(0, self.pe.shape[0] - 1)
        return self.pe[shifted]


class CehrBertMixer(nn.Module):
    """Everything of CEHR-BERT's embedding layer but the concept table: value merging, time, age,
    visit-order and visit-segment embeddings (cehrbert's parameter names)."""

    def __init__(
        self,
        hidden: int,
        n_time_embd: int,
        max_positions: int,
        n_visit_segments: int = 3,
        time_scale: float = 1000.0,
        age_scale: float = 100.0,
    ) -> None:
        super().__init__()
        self.time_scale, self.age_scale = time_scale, age_scale
        self.concept_value_transformation_layer = nn.Module()
        self.concept_value_transformation_layer.merge_value_transformation_layer = nn.Linear(hidden + 1, hidden)
        self.time_embedding_layer = _Sinusoid(n_time_embd)
        self.age_embedding_layer = _Sinusoid(n_time_embd)
        self.positional_embedding_layer = _FixedPositions(n_time_embd, max_positions)
        self.linear_proj = nn.Linear(hidden + 3 * n_time_embd, hidden)
        self.visit_segment_embeddings = nn.Embedding(n_visit_segments, hidden)

    def merge_values(self, concept: torch.Tensor, values: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Concept vectors ``[..., H]`` with values folded in where ``masks`` is set."""
        merge = self.concept_value_transformation_layer.merge_value_transformation_layer
        valued = gelu_tanh(merge(torch.cat([concept, values.to(concept.dtype).clamp(-10, 10)[..., None]], dim=-1)))
        mask = masks[..., None].to(concept.dtype)
        return valued * mask + concept * (1 - mask)

    def mix(self, concept, dates, ages, orders, segments) -> torch.Tensor:
        """Input embeddings ``[B, L, H]`` from concept vectors and token context ``[B, L]``."""
        time = self.time_embedding_layer(dates.to(concept.dtype) / self.time_scale)
        age = self.age_embedding_layer(ages.to(concept.dtype) / self.age_scale)
        position = self.positional_embedding_layer(orders)
        merged = gelu_tanh(self.linear_proj(torch.cat([concept, time, age, position], dim=-1)))
        return merged + self.visit_segment_embeddings(segments)


class CehrBertEmbeddings(CehrBertMixer):
    def __init__(self, config: CehrBertConfig) -> None:
        super().__init__(
            config.hidden_size,
            config.n_time_embd,
            config.max_position_embeddings,
            config.n_visit_segments,
            config.time_embedding_scaling_factor,
            config.age_embedding_scaling_factor,
        )
        self.concept_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=0)

    def forward(
        self, input_ids, ages, dates, visit_concept_orders, visit_segments, concept_values, concept_value_masks
    ) -> torch.Tensor:
        concept = self.merge_values(self.concept_embeddings(input_ids), concept_values, concept_value_masks)
        return self.mix(concept, dates, ages, visit_concept_orders, visit_segments)


class CehrBertModel(nn.Module):
    def __init__(self, config: CehrBertConfig) -> None:
        super().__init__()
        self.cehr_bert_embeddings = CehrBertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = nn.Module()
        self.pooler.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, attention_mask: torch.Tensor, **inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden state ``[B, L, H]`` and pooled output ``[B, H]``; ``inputs`` are the
        embedding inputs by name (``input_ids``, ``ages``, ``dates``, ``visit_concept_orders``,
        ``visit_segments``, ``concept_values``, ``concept_value_masks``)."""
        x = self.cehr_bert_embeddings(**inputs)
        x = self.encoder(x, attention_bias(attention_mask.bool(), None, x.dtype))
        pooled = torch.tanh(self.pooler.dense(x[:, 0]))
        return x, pooled


class CehrBertForPreTraining(nn.Module):
    """CEHR-BERT with its masked-LM head: ``forward(**inputs)`` -> last hidden state ``[B, L, H]``,
    pooled output ``[B, H]`` and MLM logits ``[B, L, vocab]``."""

    def __init__(self, config: CehrBertConfig) -> None:
        super().__init__()
        from ehrprog.networks.backbones.bert import MaskedLMHead

        self.config = config
        self.bert = CehrBertModel(config)
        self.cls = nn.Module()
        self.cls.predictions = MaskedLMHead(config.hidden_size, config.vocab_size, config.layer_norm_eps)

    def forward(self, attention_mask: torch.Tensor, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden, pooled = self.bert(attention_mask, **inputs)
        decoder = self.bert.cehr_bert_embeddings.concept_embeddings.weight  # tied
        return {
            "last_hidden_state": hidden,
            "pooler_output": pooled,
            "prediction_logits": self.cls.predictions(hidden, decoder),
        }


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


def _is_structural(token: str) -> bool:
    return token.startswith("[") or token in SPECIAL_TOKENS


def convert_cehrbert_checkpoint(folder: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[str]]:
    """A cehrbert ``save_pretrained`` folder as ``(architecture, state, codes)`` of
    :class:`CehrBertBackbone`: concept tokens become codes (rows 2..; row 0 ``[PAD]``, row 1
    ``[OOV]``), structural tokens (``[MASK]``, ``[CLS]``, ``VS``, ``VE``, time tokens) go to the
    special table by name (``[SEP]``, which CEHR-BERT does not use, gets the mean of the others),
    and the pooler, which the backbone does not use, is dropped."""
    folder = Path(folder)
    config = CehrBertConfig.from_json(folder / "config.json")
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    state = load_file(str(folder / "model.safetensors"))
    by_id = sorted(vocab.items(), key=lambda item: item[1])
    codes = [token for token, _ in by_id if not _is_structural(token)]
    rows = [vocab["[PAD]"], vocab.get("[OOV]", vocab["[PAD]"])] + [vocab[c] for c in codes]
    table = state["bert.cehr_bert_embeddings.concept_embeddings.weight"]
    present = [vocab[t] for t in SPECIAL_TOKENS if t in vocab]
    special = torch.stack([table[vocab[t]] if t in vocab else table[present].mean(0) for t in SPECIAL_TOKENS])
    out = {"code_embedding.weight": table[rows], "special_embedding.weight": special}
    out["mlm.bias"] = state["cls.predictions.bias"][rows]
    for name, tensor in state.items():
        if name.startswith("bert.cehr_bert_embeddings.") and "concept_embeddings" not in name:
            out["mixer." + name.removeprefix("bert.cehr_bert_embeddings.")] = tensor
        elif name.startswith("bert.encoder."):
            out[name.removeprefix("bert.")] = tensor
        elif name.startswith("cls.predictions.transform."):
            out["mlm." + name.removeprefix("cls.predictions.")] = tensor
    architecture = {
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "max_visit_positions": config.max_position_embeddings,
        "n_time_embd": config.n_time_embd,
        "time_embedding_scaling_factor": config.time_embedding_scaling_factor,
        "age_embedding_scaling_factor": config.age_embedding_scaling_factor,
        "visit_types": None,
    }
    return architecture, out, codes


class CehrBertBackbone(SequenceBackbone):
    """CEHR-BERT as the estimator's backbone (see the module docstring).

    Args (beyond :class:`~ehrprog.networks.backbones.sequence.SequenceBackbone`'s):
        n_time_embd: size T of the time, age and visit-order embeddings.
        visit_types: the visit-type labels of the pre-training objective (index 0 unknown);
            ``None`` or a single type: no visit-type head.
        time_embedding_scaling_factor, age_embedding_scaling_factor: cehrbert's input scales
            (days / 1000, years / 100).
    """

    model_type: ClassVar[str] = "ehrprog-cehrbert"
    layout: ClassVar[TokenLayout] = TokenLayout(cls=True, time_tokens=True, visit_start=True, visit_end=True)

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int = 64,
        *args: Any,
        n_time_embd: int = 16,
        visit_types: list[str] | None = None,
        time_embedding_scaling_factor: float = 1000.0,
        age_embedding_scaling_factor: float = 100.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(vocab_size, hidden_size, *args, **kwargs)
        self.n_time_embd = n_time_embd
        self.visit_types = list(visit_types) if visit_types else None
        self.mixer = CehrBertMixer(
            hidden_size,
            n_time_embd,
            self.max_visit_positions,
            3,
            time_embedding_scaling_factor,
            age_embedding_scaling_factor,
        )
        self.visit_type_head = (
            nn.Linear(hidden_size, len(self.visit_types)) if self.visit_types and len(self.visit_types) > 2 else None
        )

    def architecture(self) -> dict[str, Any]:
        return {
            **super().architecture(),
            "n_time_embd": self.n_time_embd,
            "visit_types": self.visit_types,
            "time_embedding_scaling_factor": self.mixer.time_scale,
            "age_embedding_scaling_factor": self.mixer.age_scale,
        }

    def embed(self, codes: torch.Tensor, values: torch.Tensor, has_value: torch.Tensor) -> torch.Tensor:
        return self.mixer.merge_values(self.code_embedding(codes), values, has_value)

    def combine(self, tokens: Tokens, vectors: torch.Tensor) -> torch.Tensor:
        # cehrbert's ages are whole years (a small margin keeps exact years from float rounding).
        ages = torch.floor(tokens.ages + 1e-3)
        mixed = self.mixer.mix(vectors, tokens.days, ages, tokens.order, tokens.segment)
        return self.embedding_dropout(mixed * tokens.attend[..., None].to(mixed.dtype))

    def secondary_loss(self, tokens: Tokens, hidden: torch.Tensor, batch: dict[str, torch.Tensor]):
        """Visit-type prediction from each visit's ``VS`` state (unknown types are ignored)."""
        if self.visit_type_head is None or "visit_type" not in batch:
            return None
        starts = tokens.attend & (tokens.ids == self.vocab_size + VS)
        b_index, positions = torch.nonzero(starts, as_tuple=True)
        labels = batch["visit_type"][b_index, tokens.block[b_index, positions]]
        known = labels > 0
        if not known.any():
            return None
        logits = self.visit_type_head(hidden[b_index[known], positions[known]])
        return "visit_type", nn.functional.cross_entropy(logits.float(), labels[known])

    @classmethod
    def read_checkpoint(cls, folder: str) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[str]]:
        """ehrprog's pre-trained folders, and cehrbert's own ``save_pretrained`` folders."""
        config = Path(folder) / "config.json"
        if config.is_file() and json.loads(config.read_text()).get("model_type") == "cehrbert":
            return convert_cehrbert_checkpoint(folder)
        return super().read_checkpoint(folder)


#: The ``cehrbert`` backbone factory (see :meth:`SequenceBackbone.create`).
cehrbert_backbone = CehrBertBackbone.create
