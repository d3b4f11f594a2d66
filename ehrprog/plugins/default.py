"""The core plugin: registers the ``default`` backbone (learned from scratch) exactly as a
third-party plugin registers its own."""

from __future__ import annotations

from ehrprog.plugins.hookspecs import BackboneSpec, hookimpl


def _default(
    vocab_size: int,
    dim: int = 64,
    visit_encoder: str = "attention",
    dropout: float = 0.1,
    vocabulary=None,
    checkpoint: str | None = None,
    freeze: bool = False,
    within_transformer: bool | None = None,
    **params,
):
    """From scratch, or from a ``checkpoint`` folder (``ehrprog pretrain --backbone default``,
    ``save_backbone``): its ``dim`` and ``visit_encoder`` win, codes align to ``vocabulary``.
    ``within_transformer`` (a saved model's architecture) overrides ``visit_encoder``."""
    from ehrprog.networks.visit_model import DefaultBackbone

    if within_transformer is not None:
        visit_encoder = "transformer" if within_transformer else "attention"
    if checkpoint is None:
        return DefaultBackbone(vocab_size, dim, visit_encoder, dropout, **params).requires_grad_(not freeze)
    import json
    from pathlib import Path

    from ehrprog.networks.backbones.checkpoint import load_aligned, read_pretrained

    if vocabulary is None:
        raise ValueError("default: a checkpoint needs the estimator's vocabulary to align codes")
    _, state, codes = read_pretrained(checkpoint, DefaultBackbone.model_type)
    config = json.loads((Path(checkpoint) / "config.json").read_text())
    module = DefaultBackbone(vocab_size, int(config["dim"]), str(config["visit_encoder"]), dropout, **params)
    module.alignment = load_aligned(module, state, codes, vocabulary.codes)
    return module.requires_grad_(not freeze)


@hookimpl
def ehrprog_register_backbones(register) -> None:
    register(BackboneSpec("default", _default, "code embeddings + within-visit attention, learned from scratch"))
