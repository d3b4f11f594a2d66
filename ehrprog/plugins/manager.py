"""Backbone plugins: discovery, registration and lookup.

A plugin manager is made by :func:`make_plugin_manager` (no global state at import). The active
manager used by name lookups is created on first use; tests swap it with
:func:`use_plugin_manager` to register and unregister plugins in isolation.

The interface a backbone factory returns is a ``torch.nn.Module`` with

* ``dim``: the embedding size D;
* ``embed(codes, values, has_value) -> [B, V, C, D]``: code embeddings with their values;
* ``forward(codes, values, has_value, visit_mask, embedded=None, *, times, visit_days) -> [B, V, D]``:
  per-visit embeddings (``embedded`` replaces ``embed``'s output, for attributions; ``times``
  ``[B,V,3]`` and ``visit_days`` ``[B,V]`` are the visit context of :data:`ehrprog.networks.visit_model.CONTEXT`).
  Embedding ``v`` may depend on visits ``0..v`` only (the estimator reads every point's state at
  its last input visit from one pass over the subject's history, so a backbone that looked ahead
  would leak later visits into earlier points);
* ``code_embeddings() -> [vocab, D]``: the code embedding matrix (row 0 padding, 1 unknown).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import pluggy

from ehrprog.plugins import default, hookspecs
from ehrprog.plugins.hookspecs import BackboneSpec, CheckpointLoader

ENTRY_POINT_GROUP = "ehrprog"


def make_plugin_manager(*, load_entry_points: bool = True) -> pluggy.PluginManager:
    """A fresh plugin manager with the hookspecs, the core plugin and (by default) every plugin
    installed under the ``ehrprog`` entry point group."""
    manager = pluggy.PluginManager("ehrprog")
    manager.add_hookspecs(hookspecs)
    manager.register(default, name="ehrprog.default_backbone")
    if load_entry_points:
        manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    return manager


_active: pluggy.PluginManager | None = None


def plugin_manager() -> pluggy.PluginManager:
    """The manager name lookups use (created on first use)."""
    global _active
    if _active is None:
        _active = make_plugin_manager()
    return _active


@contextlib.contextmanager
def use_plugin_manager(manager: pluggy.PluginManager) -> Iterator[pluggy.PluginManager]:
    """Make ``manager`` the active one inside the ``with`` block."""
    global _active
    previous, _active = _active, manager
    try:
        yield manager
    finally:
        _active = previous


def _collect(manager: pluggy.PluginManager | None, hook: str, kind: str) -> dict[str, Any]:
    """Call ``hook`` on every plugin, collecting what each registers by name (duplicates are errors)."""
    manager = manager or plugin_manager()
    found: dict[str, Any] = {}
    for plugin_name, plugin in manager.list_name_plugin():
        impl = getattr(plugin, hook, None)
        if impl is None:
            continue

        def register(spec: Any, _plugin: str = plugin_name) -> None:
            if spec.name in found:
                raise ValueError(
                    f"{kind} {spec.name!r} registered twice (by {found[spec.name].plugin!r} and {_plugin!r})"
                )
            found[spec.name] = dataclasses.replace(spec, plugin=_plugin)

        impl(register=register)
    return dict(sorted(found.items()))


def backbones(manager: pluggy.PluginManager | None = None) -> dict[str, BackboneSpec]:
    """Every registered backbone by name.

    Raises:
        ValueError: two plugins register the same name.
    """
    return _collect(manager, "ehrprog_register_backbones", "backbone")


def checkpoint_loaders(manager: pluggy.PluginManager | None = None) -> dict[str, CheckpointLoader]:
    """Every registered checkpoint loader by name."""
    return _collect(manager, "ehrprog_register_checkpoint_loaders", "checkpoint loader")


def get_checkpoint_loader(name: str, manager: pluggy.PluginManager | None = None) -> CheckpointLoader:
    """The checkpoint loader called ``name``; an unknown name fails with the available ones."""
    available = checkpoint_loaders(manager)
    if name not in available:
        raise ValueError(f"no checkpoint loader {name!r}; available: {sorted(available)}")
    return available[name]


def get_backbone(name: str, manager: pluggy.PluginManager | None = None) -> BackboneSpec:
    """The backbone called ``name``; an unknown name fails with the list of available ones."""
    available = backbones(manager)
    if name not in available:
        raise ValueError(
            f"unknown backbone {name!r}; available: {sorted(available)} (install a plugin that "
            f"registers it, see docs/plugins.md)"
        )
    return available[name]
