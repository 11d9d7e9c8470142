"""The package's layers, checked from the source: a module imports only from layers below its own.

Layers, bottom to top (docs in README "Layout"):

    validation, metric names  ->  store  ->  losses | models | data  ->  metrics  ->  training
    ->  labs | viz  ->  cli (and the app, which is outside the package)

Every import counts, including the ones inside functions: an import placed in a function still makes
the layers depend on each other, it only hides the cycle from the interpreter.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "workbench"

# A group is a top-level module or subpackage of workbench; same-rank groups may not import each other.
RANK = {
    "validation": 0,
    "store": 1,
    "losses": 2,
    "models": 2,
    "data": 2,
    "metrics": 3,
    "training": 4,
    "labs": 5,
    "viz": 5,
    "cli": 6,
    "train": 6,  # the `python -m workbench.train` entry point
}
MAX_TOP_LEVEL_MODULES = 6


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every workbench module that ``name`` imports, at any depth of its code."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import submodule` depends on the submodule, not on the package's __init__
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names
            ]
        else:
            continue
        found.update(t for t in targets if t == "workbench" or t.startswith("workbench."))
    found.discard(name)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _group(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_group_has_a_layer():
    groups = {_group(name) for name in MODULES} - {None}
    assert groups <= set(RANK), f"modules outside every layer: {sorted(groups - set(RANK))}"


def test_at_most_six_modules_directly_under_the_package():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _group(n) is not None))
def test_imports_only_from_lower_layers(name):
    group = _group(name)
    wrong = sorted(
        target
        for target in GRAPH[name]
        if _group(target) is not None
        and _group(target) != group
        and RANK[_group(target)] >= RANK[group]
    )
    assert not wrong, f"{name} (layer {group}, rank {RANK[group]}) imports {wrong} from its layer or above"


def test_no_import_cycle():
    """Depth-first search over every module's imports, function-level ones included."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for target in sorted(GRAPH.get(name, ())):
            if state.get(target) == 1:
                cycle = [*stack[stack.index(target) :], target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target in GRAPH and state.get(target) is None:
                visit(target)
        stack.pop()
        state[name] = 2

    for name in sorted(GRAPH):
        if state.get(name) is None:
            visit(name)


def test_the_checker_sees_function_level_imports(tmp_path):
    # the rule would be empty if _imports missed imports placed inside functions
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from workbench.training import trainer\n")
    assert "workbench.training.trainer" in _imports("workbench.data.m", module)
