"""The package's layout keeps its promises: layers import downwards only, small rooms, no globals.

Read from the source with `ast`, so a change that breaks the house's rules fails here, not in review.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "weathernote"

# Bottom to top: a unit may import only units of lower layers (and of its own).
LAYERS: list[set[str]] = [
    {"ops", "errors", "clock", "tasks", "settings", "breaker"},
    {"bounded", "model"},
    {"redis"},
    {"upstream"},
    {"demand"},
    {"cache"},
    {"live"},
    {"prewarm", "fairuse"},
    {"graphql"},
    {"services"},
    {"http"},
    {"cli", "topology"},
    {"__main__"},
]
STANDALONE = {"simulator"}  # the Open-Meteo simulator: a program of its own, imports nothing of the service
MAX_MODULES_PER_PACKAGE = 10
MAX_CLASS_LINES = 250


def _unit(module: str) -> str:
    """The top-level unit of `weathernote.x.y`: `x`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "weathernote"


def _modules() -> dict[str, ast.Module]:
    trees = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        trees[name] = ast.parse(path.read_text(), str(path))
    return trees


def _imports(tree: ast.Module) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("weathernote"):
            if node.module == "weathernote":
                found |= {f"weathernote.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("weathernote")}
    return found


def _layer(unit: str) -> int:
    return next(index for index, layer in enumerate(LAYERS) if unit in layer)


def test_every_unit_has_a_layer() -> None:
    units = {_unit(name) for name in _modules()} - {"weathernote"}
    known = set().union(*LAYERS) | STANDALONE
    assert units <= known, f"units without a layer: {sorted(units - known)}"


def test_imports_run_downwards_only() -> None:
    upward = defaultdict(set)
    for name, tree in _modules().items():
        source = _unit(name)
        if source == "weathernote":
            continue
        for imported in _imports(tree):
            target = _unit(imported)
            if target == source:
                continue
            if source in STANDALONE or target in STANDALONE:
                if source in STANDALONE:
                    upward[name].add(imported)
                continue
            if _layer(target) >= _layer(source):
                upward[name].add(imported)
    assert not upward, f"imports that run sideways or up: {dict(upward)}"


def test_packages_have_a_facade_and_few_modules() -> None:
    for directory in sorted({path.parent for path in PACKAGE.rglob("*.py")}):
        init = directory / "__init__.py"
        assert init.exists(), f"{directory} has no __init__.py"
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), f"{init} says nothing of its package"
        modules = list(directory.glob("*.py"))
        assert len(modules) <= MAX_MODULES_PER_PACKAGE, f"{directory}: {len(modules)} modules"


def test_classes_are_small_documented_and_nothing_is_global() -> None:
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            assert not isinstance(node, ast.Global), f"`global` in {name}:{node.lineno}"
            if isinstance(node, ast.ClassDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                assert lines <= MAX_CLASS_LINES, f"{name}.{node.name} is {lines} lines long"
                if not node.name.startswith("_"):
                    assert ast.get_docstring(node), f"{name}.{node.name} has no docstring"
