"""The backbone conformance suite passes the built-in backbone and catches broken ones."""

from __future__ import annotations

import pytest
import torch

from ehrprog.model import DefaultBackbone
from ehrprog.plugins import BackboneSpec, backbones, make_plugin_manager
from ehrprog.testing import check_backbone


@pytest.mark.parametrize("name", sorted(backbones(make_plugin_manager())))
def test_every_registered_backbone_conforms(name):
    done = check_backbone(backbones(make_plugin_manager())[name])
    assert {"shape", "padding", "masking", "determinism", "gradient", "save_load"} <= set(done)


class _LeaksPadding(DefaultBackbone):
    def forward(self, codes, values, has_value, visit_mask, embedded=None):
        out = super().forward(codes, values, has_value, visit_mask, embedded)
        return out + (codes == 0).float().mean(-1, keepdim=True)  # depends on the amount of padding


class _Unseeded(DefaultBackbone):
    """Initialises from its own counter instead of torch's seeded generator."""

    made = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _Unseeded.made += 1
        generator = torch.Generator().manual_seed(_Unseeded.made)
        with torch.no_grad():
            self.code_embedding.weight[1:] = torch.randn(self.code_embedding.weight[1:].shape, generator=generator)


@pytest.mark.parametrize(("cls", "rule"), [(_LeaksPadding, "padding"), (_Unseeded, "same seed")])
def test_broken_backbones_fail_with_the_rule_they_break(cls, rule):
    def factory(vocab_size, dim=16, visit_encoder="attention", dropout=0.0, **params):
        return cls(vocab_size, dim, visit_encoder, dropout)

    with pytest.raises(AssertionError, match=rule):
        check_backbone(BackboneSpec("broken", factory))
