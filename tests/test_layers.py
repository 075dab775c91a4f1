"""The package's layers point down, never up, and no module imports itself in a circle.

Read from the source (every ``import`` and ``from ... import``, at module level or inside a function), not from
what happens to be imported at run time, so a lazy upward import is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "resnetkit"

# Bottom to top (STYLE.md, rule 16). A module may import its own layer's package and any lower layer; layers of the
# same rank (deploy, compress) are siblings and do not import each other.
LAYERS = {
    "io": 0, "options": 0, "errors": 0, "runtime": 0,
    "models": 1,
    "data": 2,
    "weights": 3,
    "train": 4,
    "deploy": 5, "compress": 5, "analysis": 5, "tasks": 5,
    "workflows": 6,
    "serve": 7,
    "cli": 8, "__init__": 8, "__main__": 9,
}  # fmt: skip


def module_name(path: Path) -> str:
    parts = ["resnetkit", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(module: str) -> set[str]:
    path = MODULES[module]
    return imports_in(path.read_text(), module, path.name == "__init__.py")


def imports_in(source: str, module: str, is_package: bool = False) -> set[str]:
    """The resnetkit modules that ``source`` (the text of ``module``) imports anywhere, inside functions too
    (packages resolve to their ``__init__``)."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # ``from pkg import module`` needs the module; ``from pkg import name`` needs the package
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    return {name for name in found if name in MODULES and name != module}


GRAPH = {module: imports_of(module) for module in MODULES}


def test_every_layer_is_known():
    assert {layer_of(m) for m in MODULES} <= set(LAYERS), "add the new subpackage to LAYERS"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    here = layer_of(module)
    upward = sorted(target for target in GRAPH[module]
                    if layer_of(target) != here and LAYERS[layer_of(target)] >= LAYERS[here])  # fmt: skip
    assert not upward, f"{module} (layer {here}) imports {upward}: a layer may only import lower ones"


def test_no_import_circles():
    """Tarjan's strongly connected components over the module graph: every component is a single module."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert not circles, f"import circles: {circles}"


def test_nothing_is_imported_by_string():
    """``importlib.import_module`` would hide an import from the checks above."""
    users = [m for m, path in MODULES.items() if "import_module(" in path.read_text()]
    assert not users, f"{users} import modules by name"


def test_the_checker_sees_a_lazy_upward_import():
    source = "import torch\nfrom .config import ResNetConfig\n\ndef f():\n    from ..weights.hub import load_pretrained\n"
    assert imports_in(source, "resnetkit.models.registry") == {
        "resnetkit.models.config", "resnetkit.weights.hub"}  # fmt: skip
