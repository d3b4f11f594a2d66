"""Old module paths that moved with the layout by stage (``docs/architecture.md``): they keep working
for one release, each with a ``DeprecationWarning`` naming where its contents went.

An import of an old path (``import ehrprog.baselines``, ``from ehrprog.store import
load_cohort``) is answered by :class:`MovedFinder`, installed at the end of ``sys.meta_path`` by
``ehrprog/__init__``: it makes a stand-in module whose attributes are read from the new modules
(a name is looked up in each new module in turn) and warns once, when the old path is first
imported. Nothing here imports the new modules until an old path is used, so this module sits
outside the stages (it imports no part of ehrprog by name).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from typing import Any

#: Old module path -> the modules its contents moved to (first the main one).
MOVED: dict[str, tuple[str, ...]] = {
    "ehrprog.errors": ("ehrprog.core.errors",),
    "ehrprog.redaction": ("ehrprog.core.redaction",),
    "ehrprog.files": ("ehrprog.core.files",),
    "ehrprog.output": ("ehrprog.core.output",),
    "ehrprog.version": ("ehrprog.core.version",),
    "ehrprog.schema": ("ehrprog.io.schema",),
    "ehrprog.events": ("ehrprog.io.events",),
    "ehrprog.ordering": ("ehrprog.io.ordering",),
    "ehrprog.units": ("ehrprog.io.units",),
    "ehrprog.accounting": ("ehrprog.io.accounting",),
    "ehrprog.quality": ("ehrprog.io.quality",),
    "ehrprog.sources": ("ehrprog.io.sources",),
    "ehrprog.visit_arrays": ("ehrprog.visits.arrays",),
    "ehrprog.tasks.cohort": ("ehrprog.cohorts.cohort",),
    "ehrprog.targets": ("ehrprog.cohorts.targets",),
    "ehrprog.store_format": ("ehrprog.cohorts.format",),
    "ehrprog.store_write": ("ehrprog.cohorts.write",),
    "ehrprog.store": ("ehrprog.cohorts.read", "ehrprog.features.sharded"),
    "ehrprog.build": ("ehrprog.tasks.build",),
    "ehrprog.windowed_counts": ("ehrprog.features.windowed",),
    "ehrprog.batching": ("ehrprog.features.tensors", "ehrprog.cohorts.arrays"),
    "ehrprog.model": ("ehrprog.networks.visit_model",),
    "ehrprog.survival": ("ehrprog.networks.piecewise",),
    "ehrprog.training": ("ehrprog.networks.training",),
    "ehrprog.inference": ("ehrprog.networks.inference",),
    "ehrprog.explain": ("ehrprog.networks.explain",),
    "ehrprog.backbones": ("ehrprog.networks.backbones", "ehrprog.models.pretrain"),
    "ehrprog.backbones.bert": ("ehrprog.networks.backbones.bert",),
    "ehrprog.backbones.tokens": ("ehrprog.networks.backbones.tokens",),
    "ehrprog.backbones.checkpoint": ("ehrprog.networks.backbones.checkpoint",),
    "ehrprog.backbones.sequence": ("ehrprog.networks.backbones.sequence",),
    "ehrprog.backbones.tte": ("ehrprog.networks.tte",),
    "ehrprog.backbones.pretrain": ("ehrprog.models.pretrain",),
    "ehrprog.hookspecs": ("ehrprog.plugins.hookspecs",),
    "ehrprog.default_backbone": ("ehrprog.plugins.default",),
    "ehrprog.tabular": ("ehrprog.models.tabular", "ehrprog.features.clinical"),
    "ehrprog.boosted_cox": ("ehrprog.models.boosted_cox",),
    "ehrprog.breslow": ("ehrprog.models.breslow",),
    "ehrprog.baselines": ("ehrprog.models.baselines",),
    "ehrprog.history_fit": ("ehrprog.models.history_fit",),
    "ehrprog.estimator": ("ehrprog.models.estimator",),
    "ehrprog.persistence": ("ehrprog.models.persistence",),
    "ehrprog.model_card": ("ehrprog.models.model_card",),
    "ehrprog.ray_train": ("ehrprog.models.ray_train",),
    "ehrprog.report": ("ehrprog.evaluation.report",),
}

#: Attributes a stand-in never takes from the new modules (they say what the stand-in itself is).
_OWN = frozenset({"__path__", "__file__", "__cached__", "__builtins__", "__wrapped__"})
#: Old packages (their old submodules are imported through them).
_PACKAGES = {"ehrprog.backbones"}


def message(old: str) -> str:
    """The deprecation message for ``old``: where its contents are now."""
    new = " and ".join(MOVED[old])
    return f"{old} moved to {new} (docs/architecture.md); import it from there: the old path goes in the next release"


class _Moved(types.ModuleType):
    """A stand-in for a moved module: attributes are read from the new modules, in order."""

    def __init__(self, old: str) -> None:
        super().__init__(old, f"Moved: {message(old)}.")
        self.__moved_to__ = MOVED[old]
        if old in _PACKAGES:
            self.__path__: list[str] = []

    def __getattr__(self, name: str) -> Any:
        if name in _OWN:
            raise AttributeError(name)
        for target in self.__moved_to__:
            module = importlib.import_module(target)
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"module {self.__name__!r} (moved to {', '.join(self.__moved_to__)}) has no {name!r}")

    def __dir__(self) -> list[str]:
        names: set[str] = set()
        for target in self.__moved_to__:
            names.update(dir(importlib.import_module(target)))
        return sorted(names)


class _Loader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        warnings.warn(message(spec.name), DeprecationWarning, stacklevel=_importer_level())
        return _Moved(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to run: the stand-in reads the new modules when asked."""


class MovedFinder(importlib.abc.MetaPathFinder):
    """Finds the old paths of :data:`MOVED` (only where no real module of that name exists)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Loader(), is_package=fullname in _PACKAGES)


def _importer_level() -> int:
    """``stacklevel`` that points the warning at the code doing the import: past the import
    machinery (``warnings`` itself skips ``importlib._bootstrap`` frames without counting them),
    ``importlib.import_module`` and the package's ``__getattr__``."""
    frame, level = sys._getframe(2), 2
    while frame is not None:
        name = frame.f_code.co_filename
        if not ("importlib" in name and "_bootstrap" in name):
            if not (name.endswith(("importlib/__init__.py", "ehrprog/__init__.py"))):
                return level
            level += 1
        frame = frame.f_back
    return level


def install() -> None:
    """Put :class:`MovedFinder` at the end of ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedFinder())
