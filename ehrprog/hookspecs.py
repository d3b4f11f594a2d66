"""Plugin hooks (pluggy). A plugin implements them with ``ehrprog.plugins.hookimpl``.

Built-in and third-party plugins are found the same way: through the ``ehrprog`` entry point
group (``[project.entry-points.ehrprog]`` in a plugin's pyproject).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from ehrprog.plugins import BackboneSpec, CheckpointLoader

hookspec = pluggy.HookspecMarker("ehrprog")


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
