"""Shared machinery of pre-trained backbones: BERT encoder, visit token sequences, checkpoints,
vocabulary alignment (pre-training is :mod:`ehrprog.models.pretrain`). The built-in backbones
(``plugins/``) and third-party ones build on it; see ``docs/plugins.md``."""

from ehrprog.networks.backbones.bert import BertEncoder, EncoderConfig, MaskedLMHead, attention_bias
from ehrprog.networks.backbones.checkpoint import (
    align_rows,
    load_aligned,
    match_codes,
    read_pretrained,
    save_pretrained,
)
from ehrprog.networks.backbones.sequence import SequenceBackbone
from ehrprog.networks.backbones.tokens import SPECIAL_TOKENS, TokenLayout, Tokens, layout_tokens, pool_visits

__all__ = [
    "SPECIAL_TOKENS",
    "BertEncoder",
    "EncoderConfig",
    "MaskedLMHead",
    "SequenceBackbone",
    "TokenLayout",
    "Tokens",
    "align_rows",
    "attention_bias",
    "layout_tokens",
    "load_aligned",
    "match_codes",
    "pool_visits",
    "read_pretrained",
    "save_pretrained",
]
