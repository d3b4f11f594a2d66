"""Backbone plugins: the hook specifications a plugin implements (:mod:`~ehrprog.plugins.hookspecs`:
:data:`~ehrprog.plugins.hookspecs.hookimpl`, :class:`~ehrprog.plugins.hookspecs.BackboneSpec`,
:class:`~ehrprog.plugins.hookspecs.CheckpointLoader`), the manager that finds them
(:mod:`~ehrprog.plugins.manager`) and the core plugin, the default backbone
(:mod:`~ehrprog.plugins.default`).

May import :mod:`ehrprog.networks` and every stage below it (see ``docs/architecture.md``)."""

from ehrprog.plugins.hookspecs import BackboneSpec, CheckpointLoader, hookimpl
from ehrprog.plugins.manager import (
    ENTRY_POINT_GROUP,
    backbones,
    checkpoint_loaders,
    get_backbone,
    get_checkpoint_loader,
    make_plugin_manager,
    plugin_manager,
    use_plugin_manager,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "BackboneSpec",
    "CheckpointLoader",
    "backbones",
    "checkpoint_loaders",
    "get_backbone",
    "get_checkpoint_loader",
    "hookimpl",
    "make_plugin_manager",
    "plugin_manager",
    "use_plugin_manager",
]
