"""The package imports no circle: every ``import`` of an ehrprog module by another (at the top of a
file or inside a function, ``if TYPE_CHECKING:`` blocks aside) forms a graph without cycles.

A lazy import inside a function hides a circle from Python, not from the design: the estimator
loading itself through a persistence module that imports the estimator is still a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import ehrprog

ROOT = Path(ehrprog.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    modules = {}
    for file in ROOT.rglob("*.py"):
        parts = file.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = file
    return modules


def _strip_type_checking(tree: ast.AST) -> ast.AST:
    class Strip(ast.NodeTransformer):
        def visit_If(self, node: ast.If) -> ast.AST | None:
            test = node.test
            if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
            ):
                return None
            return self.generic_visit(node)

    return Strip().visit(tree)


def _imports(name: str, file: Path, modules: dict[str, Path]) -> set[str]:
    """The ehrprog modules ``name`` imports (``from pkg import submodule`` names the submodule; a
    module's own parent packages are not counted: Python runs them first, they are not a circle)."""
    tree = _strip_type_checking(ast.parse(file.read_text()))
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            submodules = [f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in modules]
            found.update(submodules)
            if len(submodules) < len(node.names):
                found.add(module)
    targets = set()
    for module in found:
        while module and module not in modules:
            module = module.rpartition(".")[0]
        if module and module != name and not name.startswith(module + "."):
            targets.add(module)
    return targets


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_imports_no_circle():
    modules = _modules()
    graph = {name: _imports(name, file, modules) for name, file in modules.items()}
    assert _cycles(graph) == []


def test_the_check_sees_a_circle_through_a_lazy_import():
    """The checker itself: a lazy import back to an importer is a circle; a TYPE_CHECKING one is not."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert _cycles(graph) == [["a", "b"]]
    modules = _modules()
    persistence = _imports("ehrprog.persistence", modules["ehrprog.persistence"], modules)
    assert "ehrprog.estimator" not in persistence  # only under TYPE_CHECKING there
    estimator = _imports("ehrprog.estimator", modules["ehrprog.estimator"], modules)
    assert "ehrprog.persistence" in estimator  # a lazy import inside a method, counted


def test_no_module_imports_the_package_root():
    """``from ehrprog import __version__`` inside a module is a circle through ``ehrprog/__init__``
    (which imports nearly everything): the version lives in ``ehrprog.version``. Submodule imports
    written ``from ehrprog import survival`` name the submodule and are fine. The demo is a program
    written against the public API (``python -m ehrprog.demo``; nothing imports it)."""
    modules = _modules()
    offenders = []
    for name, file in modules.items():
        if name in ("ehrprog", "ehrprog.demo"):
            continue
        for node in ast.walk(_strip_type_checking(ast.parse(file.read_text()))):
            if isinstance(node, ast.ImportFrom) and node.module == "ehrprog" and not node.level:
                names = [a.name for a in node.names if f"ehrprog.{a.name}" not in modules]
                offenders += [f"{name}: from ehrprog import {n}" for n in names]
            elif isinstance(node, ast.Import):
                offenders += [f"{name}: import ehrprog" for a in node.names if a.name == "ehrprog"]
    assert offenders == []
