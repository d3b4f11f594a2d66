"""The ehrprog plugin of BEHRT: registers the ``behrt`` backbone."""

from __future__ import annotations

import pluggy

hookimpl = pluggy.HookimplMarker("ehrprog")


def _backbone(vocab_size: int, **params):
    from ehrprog_behrt.model import behrt_backbone

    return behrt_backbone(vocab_size, **params)


@hookimpl
def ehrprog_register_backbones(register) -> None:
    from ehrprog.plugins import BackboneSpec

    register(
        BackboneSpec(
            "behrt",
            _backbone,
            "BEHRT (Li et al. 2020): word + age + segment + visit-position embeddings; MLM pre-training",
        )
    )
