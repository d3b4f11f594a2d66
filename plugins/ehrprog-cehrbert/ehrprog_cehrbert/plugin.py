"""The ehrprog plugin of CEHR-BERT: the ``cehrbert`` backbone and the loader of cehrbert checkpoints."""

from __future__ import annotations

import pluggy

hookimpl = pluggy.HookimplMarker("ehrprog")


def _load(folder):
    from ehrprog_cehrbert.model import load_cehrbert_checkpoint

    return load_cehrbert_checkpoint(folder)


def _backbone(vocab_size: int, visit_types: list[str] | None = None, **params):
    """Factory; ``visit_types`` is the label set of the visit-type pre-training objective."""
    from ehrprog_cehrbert.model import cehrbert_backbone

    if visit_types is not None:
        params["visit_types"] = visit_types
    return cehrbert_backbone(vocab_size, **params)


@hookimpl
def ehrprog_register_checkpoint_loaders(register) -> None:
    from ehrprog.plugins import CheckpointLoader

    register(CheckpointLoader("cehrbert", _load, "checkpoints saved by the cehrbert package (save_pretrained)"))


@hookimpl
def ehrprog_register_backbones(register) -> None:
    from ehrprog.plugins import BackboneSpec

    register(
        BackboneSpec(
            "cehrbert",
            _backbone,
            "CEHR-BERT (Pang et al. 2021): concept + time + age + visit-order embeddings, VS/VE and "
            "artificial time tokens; MLM + visit-type pre-training; reads cehrbert checkpoints",
        )
    )
