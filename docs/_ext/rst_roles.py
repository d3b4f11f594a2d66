"""A griffe extension for the API reference: the docstrings' reStructuredText roles as Markdown.

``:class:`~ehrprog.tasks.Cohort``` becomes the cross-reference ``[`Cohort`][ehrprog.tasks.Cohort]``
(``~`` shows the last part only) and ````code```` becomes ```code```; in strict mode a reference
that names nothing documented fails the build, so a stale name in a docstring cannot stay.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

#: Names the package exports lazily (``ehrprog.__getattr__``), documented where they are defined.
ALIASES = {
    "ehrprog.VisitProgressionEstimator": "ehrprog.models.estimator.VisitProgressionEstimator",
    "ehrprog.load_cohort": "ehrprog.cohorts.read.load_cohort",
}
ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):`(~?)([\w.]+)`")
LITERAL = re.compile(r"``([^`]+?)``")


def _markdown(text: str, owner: str) -> str:
    def role(match: re.Match) -> str:
        short, target = match.group(1), match.group(2)
        if target.startswith("."):  # relative to the documented object's module
            target = owner.rsplit(".", 1)[0] + target
        shown = target.rsplit(".", 1)[-1] if short else target
        target = ALIASES.get(target, target)
        return f"[`{shown}`][{target}]"

    return LITERAL.sub(r"`\1`", ROLE.sub(role, text))


class RstRoles(griffe.Extension):
    """Rewrite every docstring as it is loaded."""

    def on_instance(self, *, node: Any, obj: griffe.Object, agent: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _markdown(obj.docstring.value, obj.path)
