"""The plugin interface: the hooks (pluggy), the ``hookimpl`` marker a plugin implements them
with, and the specs it registers (also importable from :mod:`ehrprog.plugins`).

Built-in and third-party plugins are found the same way: through the ``ehrprog`` entry point
group (``[project.entry-points.ehrprog]`` in a plugin's pyproject).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("ehrprog")
hookimpl = pluggy.HookimplMarker("ehrprog")


@dataclass(frozen=True)
class BackboneSpec:
    """A named backbone: ``factory(vocab_size=..., dim=..., visit_encoder=..., dropout=...,
    vocabulary=..., **params)`` returns the module (its interface: :mod:`ehrprog.plugins`).

    ``vocabulary`` is the estimator's :class:`~ehrprog.features.tensors.Vocabulary` (code strings and
    descriptions of embedding rows 2.., for aligning pre-trained vocabularies) or ``None``;
    ``params`` are the estimator's ``backbone__*`` parameters. A module may define
    ``architecture() -> dict``: the factory parameters that rebuild it without its pre-trained
    source (a saved estimator then loads without the checkpoint folder)."""

    name: str
    factory: Callable[..., Any]
    description: str = ""
    plugin: str = field(default="", compare=False)


@dataclass(frozen=True)
class CheckpointLoader:
    """A named loader: ``load(folder) -> torch.nn.Module`` whose ``forward(**inputs)`` returns a
    dict of output tensors (see ``ehrprog verify-checkpoint``)."""

    name: str
    load: Callable[[Any], Any]
    description: str = ""
    plugin: str = field(default="", compare=False)


@hookspec
def ehrprog_register_backbones(register: Callable[[BackboneSpec], None]) -> None:
    """Register visit encoders: call ``register(BackboneSpec(...))`` once per backbone.

    A backbone turns a visit batch into per-visit embeddings ``[B, V, D]`` and exports its code
    embeddings; see :class:`ehrprog.plugins.BackboneSpec` for the interface its factory returns.
    """


@hookspec
def ehrprog_register_checkpoint_loaders(register: Callable[[CheckpointLoader], None]) -> None:
    """Register loaders of published checkpoint formats: call ``register(CheckpointLoader(...))``.

    A loader reads a checkpoint folder in its original package's layout without executing code and
    returns a torch module whose ``forward(**inputs)`` returns a dict of named output tensors, so
    ``ehrprog verify-checkpoint`` can compare it with outputs the original package computed.
    """
