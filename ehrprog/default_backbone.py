"""The core plugin: registers the ``default`` backbone (learned from scratch) exactly as a
third-party plugin registers its own."""

from __future__ import annotations

from ehrprog.plugins import BackboneSpec, hookimpl


def _default(
    vocab_size: int, dim: int = 64, visit_encoder: str = "attention", dropout: float = 0.1, vocabulary=None, **params
):
    from ehrprog.model import DefaultBackbone

    return DefaultBackbone(vocab_size, dim, visit_encoder, dropout, **params)


@hookimpl
def ehrprog_register_backbones(register) -> None:
    register(BackboneSpec("default", _default, "code embeddings + within-visit attention, learned from scratch"))
