"""Backbone plugins: discovery, isolation, lookup errors, and a plugin-provided backbone in the estimator."""

from __future__ import annotations

import types

import numpy as np
import pytest

import ehrprog as ep
from ehrprog.cli import main
from ehrprog.plugins import (
    BackboneSpec,
    backbones,
    get_backbone,
    hookimpl,
    hookspecs,
    make_plugin_manager,
    use_plugin_manager,
)


def _plugin_with(name: str, factory) -> types.SimpleNamespace:
    @hookimpl
    def ehrprog_register_backbones(register):
        register(BackboneSpec(name, factory, f"test backbone {name}"))

    return types.SimpleNamespace(ehrprog_register_backbones=ehrprog_register_backbones)


def _tiny(vocab_size, dim=16, visit_encoder="attention", dropout=0.0, vocabulary=None, **params):
    from ehrprog.networks.visit_model import DefaultBackbone

    module = DefaultBackbone(vocab_size, dim, visit_encoder, dropout)
    module.extra = params
    module.vocabulary = vocabulary
    return module


def test_the_default_backbone_is_registered_by_the_core_plugin():
    found = backbones(make_plugin_manager(load_entry_points=False))
    assert "default" in found
    assert found["default"].plugin == "ehrprog.default_backbone"  # its name as registered, kept across the move


def test_plugins_register_and_unregister_in_isolation():
    manager = make_plugin_manager(load_entry_points=False)
    plugin = _plugin_with("tiny", _tiny)
    manager.register(plugin, name="tiny-plugin")
    assert set(backbones(manager)) == {"default", "tiny"}
    manager.unregister(plugin)
    assert set(backbones(manager)) == {"default"}
    # Another fresh manager never saw it.
    assert "tiny" not in backbones(make_plugin_manager(load_entry_points=False))


def test_unknown_backbone_fails_with_the_available_names():
    with pytest.raises(ValueError, match=r"available: \['default'\]"):
        get_backbone("nope", make_plugin_manager(load_entry_points=False))


def test_two_plugins_registering_one_name_is_an_error():
    manager = make_plugin_manager(load_entry_points=False)
    manager.register(_plugin_with("default", _tiny), name="clash")
    with pytest.raises(ValueError, match="registered twice"):
        backbones(manager)


def test_every_hook_is_documented():
    hooks = [name for name in dir(hookspecs) if name.startswith("ehrprog_")]
    assert hooks == ["ehrprog_register_backbones", "ehrprog_register_checkpoint_loaders"]
    assert all(getattr(hookspecs, name).__doc__ for name in hooks)


def test_a_plugin_backbone_trains_in_the_estimator_with_routed_parameters(sim_omop):
    cohort = ep.tasks.CKDProgression().build(ep.read_omop(sim_omop))
    manager = make_plugin_manager(load_entry_points=False)
    manager.register(_plugin_with("tiny", _tiny), name="tiny-plugin")
    with use_plugin_manager(manager):
        est = ep.VisitProgressionEstimator(
            backbone="tiny", backbone__flavour="mint", embedding_dim=16, hidden_dim=16, max_epochs=1, random_state=0
        ).fit(cohort.X, cohort.y)
    assert est.model_.backbone.extra == {"flavour": "mint"}
    # The factory receives the estimator's vocabulary, row for row (for pre-trained alignment).
    assert est.model_.backbone.vocabulary.codes == est.vocabulary_.codes
    assert est.vocabulary_.size == len(est.vocabulary_.codes) + 2
    assert np.isfinite(est.predict_proba(cohort.X[:5])).all()


def test_cli_lists_plugins_and_backbones(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "ehrprog.default_backbone" in out
    assert "default: code embeddings" in out
