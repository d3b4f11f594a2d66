"""Plugin hooks (pluggy). A plugin implements them with ``ehrprog.plugins.hookimpl``.

Built-in and third-party plugins are found the same way: through the ``ehrprog`` entry point
group (``[project.entry-points.ehrprog]`` in a plugin's pyproject).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from ehrprog.plugins import BackboneSpec

hookspec = pluggy.HookspecMarker("ehrprog")


@hookspec
def ehrprog_register_backbones(register: Callable[[BackboneSpec], None]) -> None:
    """Register visit encoders: call ``register(BackboneSpec(...))`` once per backbone.

    A backbone turns a visit batch into per-visit embeddings ``[B, V, D]`` and exports its code
    embeddings; see :class:`ehrprog.plugins.BackboneSpec` for the interface its factory returns.
    """
