"""The package's imports: they flow one way along the stages of ``docs/architecture.md`` and form
no circle. Every ``import`` of an ehrprog module by another counts, at the top of a file or inside
a function (``if TYPE_CHECKING:`` blocks aside).

A lazy import inside a function hides a circle or an upward import from Python, not from the
design: the estimator loading itself through a persistence module that imports the estimator is
still a circle, and a reader calling into the models is still the data layer depending on them."""

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


def _graph() -> dict[str, set[str]]:
    """Every ehrprog module and the ehrprog modules it imports."""
    modules = _modules()
    return {name: _imports(name, file, modules) for name, file in modules.items()}


def test_the_package_imports_no_circle():
    assert _cycles(_graph()) == []


def test_the_check_sees_a_circle_through_a_lazy_import():
    """The checker itself: a lazy import back to an importer is a circle; a TYPE_CHECKING one is not."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert _cycles(graph) == [["a", "b"]]
    modules = _modules()
    persistence = _imports("ehrprog.models.persistence", modules["ehrprog.models.persistence"], modules)
    assert "ehrprog.models.estimator" not in persistence  # only under TYPE_CHECKING there
    explanations = _imports("ehrprog.models.explanations", modules["ehrprog.models.explanations"], modules)
    assert "ehrprog.networks.explain" in explanations  # a lazy import inside a method, counted


#: The stages, lowest first: a module may import its own stage and the stages before it. The
#: programs (the CLI, the demo, the test helpers, the package root) sit on top.
STAGES = (
    "core",
    "io",
    "datasets",
    "visits",
    "cohorts",
    "tasks",
    "features",
    "metrics",
    "networks",
    "plugins",
    "models",
    "evaluation",
    "programs",
)
#: Stages only the programs may import: the simulated worlds are a source of data for the demo,
#: the benchmarks and the tests, not a part of the flow.
ONLY_FOR_PROGRAMS = {"datasets"}
PROGRAMS = {"ehrprog", "ehrprog.cli", "ehrprog.demo", "ehrprog.testing", "ehrprog._moved"}


def stage_of(module: str) -> str:
    """The stage of an ehrprog module: its subpackage, or ``programs``."""
    if module in PROGRAMS or any(module.startswith(p + ".") for p in PROGRAMS if p != "ehrprog"):
        return "programs"
    stage = module.split(".")[1]
    assert stage in STAGES, f"{module} is in no stage of docs/architecture.md: add its folder to STAGES"
    return stage


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import that goes against the flow, as ``"importer (stage) -> imported (stage)"``."""
    found = []
    for importer, imported in sorted(graph.items()):
        low = STAGES.index(stage_of(importer))
        for module in sorted(imported):
            stage = stage_of(module)
            upward = STAGES.index(stage) > low
            if upward or (stage in ONLY_FOR_PROGRAMS and stage_of(importer) not in ("programs", stage)):
                found.append(f"{importer} ({stage_of(importer)}) -> {module} ({stage})")
    return found


def test_imports_flow_one_way_along_the_stages():
    assert upward_imports(_graph()) == []


def test_every_module_is_in_a_stage_and_none_is_over_500_lines():
    too_long = []
    for name, file in _modules().items():
        stage_of(name)
        lines = len(file.read_text().splitlines())
        if lines > 500:
            too_long.append(f"{name}: {lines} lines")
    assert too_long == []


def test_the_check_sees_an_upward_import_even_a_lazy_one(tmp_path):
    """The checker itself, on a planted file: a reader that imports the estimator inside a function."""
    planted = tmp_path / "planted.py"
    planted.write_text(
        "def read():\n    from ehrprog.models.estimator import VisitProgressionEstimator\n"
        "    return VisitProgressionEstimator\n"
    )
    modules = _modules()
    graph = {"ehrprog.io.planted": _imports("ehrprog.io.planted", planted, modules)}
    assert upward_imports(graph) == ["ehrprog.io.planted (io) -> ehrprog.models.estimator (models)"]
    # the simulated worlds are for programs only, even from a stage above them
    assert upward_imports({"ehrprog.tasks.ckd": {"ehrprog.datasets.simulate"}}) == [
        "ehrprog.tasks.ckd (tasks) -> ehrprog.datasets.simulate (datasets)"
    ]
    assert upward_imports({"ehrprog.cli": {"ehrprog.datasets.simulate", "ehrprog.models.estimator"}}) == []


def test_no_module_imports_the_package_root():
    """``from ehrprog import __version__`` inside a module is a circle through ``ehrprog/__init__``
    (which imports nearly everything): the version lives in ``ehrprog.core.version``. Submodule imports
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
