"""The backbone conformance suite passes the built-in backbone and catches broken ones."""

from __future__ import annotations

import pytest
import torch

from ehrprog.networks.visit_model import DefaultBackbone
from ehrprog.plugins import BackboneSpec, backbones, make_plugin_manager
from ehrprog.testing import check_backbone


@pytest.mark.parametrize("name", sorted(backbones(make_plugin_manager())))
def test_every_registered_backbone_conforms(name):
    done = check_backbone(backbones(make_plugin_manager())[name])
    assert {"shape", "padding", "masking", "determinism", "gradient", "causality", "save_load"} <= set(done)


def test_the_four_built_in_backbones_are_installed_through_the_entry_point_group():
    found = backbones(make_plugin_manager())
    assert {"cehrbert", "medbert", "behrt", "clinicalbert"} <= set(found)
    # Registered by their own distributions, not by ehrprog's core.
    assert {found[n].plugin for n in ("cehrbert", "medbert", "behrt", "clinicalbert")} == {
        "cehrbert",
        "medbert",
        "behrt",
        "clinicalbert",
    }


class _LeaksPadding(DefaultBackbone):
    def forward(self, codes, values, has_value, visit_mask, embedded=None, **context):
        out = super().forward(codes, values, has_value, visit_mask, embedded)
        return out + (codes == 0).float().mean(-1, keepdim=True)  # depends on the amount of padding


class _LooksAhead(DefaultBackbone):
    def forward(self, codes, values, has_value, visit_mask, embedded=None, **context):
        out = super().forward(codes, values, has_value, visit_mask, embedded)
        return (out + out.mean(1, keepdim=True)) * visit_mask[..., None]  # every visit reads all visits


class _Unseeded(DefaultBackbone):
    """Initialises from its own counter instead of torch's seeded generator."""

    made = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _Unseeded.made += 1
        generator = torch.Generator().manual_seed(_Unseeded.made)
        with torch.no_grad():
            self.code_embedding.weight[1:] = torch.randn(self.code_embedding.weight[1:].shape, generator=generator)


@pytest.mark.parametrize(
    ("cls", "rule"), [(_LeaksPadding, "padding"), (_Unseeded, "same seed"), (_LooksAhead, "later visit")]
)
def test_broken_backbones_fail_with_the_rule_they_break(cls, rule):
    def factory(vocab_size, dim=16, visit_encoder="attention", dropout=0.0, **params):
        return cls(vocab_size, dim, visit_encoder, dropout)

    with pytest.raises(AssertionError, match=rule):
        check_backbone(BackboneSpec("broken", factory))
