"""The ehrprog plugin of Med-BERT: registers the ``medbert`` backbone."""

from __future__ import annotations

import pluggy

hookimpl = pluggy.HookimplMarker("ehrprog")


def _backbone(vocab_size: int, **params):
    from ehrprog_medbert.model import medbert_backbone

    return medbert_backbone(vocab_size, **params)


@hookimpl
def ehrprog_register_backbones(register) -> None:
    from ehrprog.plugins import BackboneSpec

    register(
        BackboneSpec(
            "medbert",
            _backbone,
            "Med-BERT (Rasmy et al. 2021): code + visit + code-order embeddings; MLM + prolonged-length-of-stay "
            "pre-training",
        )
    )
