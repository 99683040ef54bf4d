"""The package's architecture, checked: each layer imports only from the layers below it, no cycles.

The layers, bottom to top (docs/architecture.md explains each). A module may import from its own
layer and from any layer below; an import upwards names the offending file and line. Imports
inside functions count too: a lazy import still couples the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import superres

PACKAGE = Path(superres.__file__).parent

#: Bottom to top. A name is a subpackage or a module directly in `src/superres`.
LAYERS = (
    ("errors", "atomic", "configs"),
    ("ops",),
    ("images",),
    ("models",),
    ("zoo",),
    ("inference",),
    ("evaluation",),
    ("batch",),
    ("training",),
    ("lab",),
    ("api",),
    ("serve",),
    ("cli", "__main__"),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every superres import in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: a relative import"
            base = node.module or ""
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name == "superres" or name.startswith("superres.")]


def layer_of(module: str) -> str | None:
    """`superres.inference.tiling.auto_tile` -> "inference"; the package root itself -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def all_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_sits_in_a_layer() -> None:
    for path in all_modules():
        name = module_name(path)
        assert name == "superres" or layer_of(name), f"{name} belongs to no layer: add it to LAYERS"


def test_each_layer_imports_only_from_below() -> None:
    upward = []
    for path in all_modules():
        own = layer_of(module_name(path))
        if own is None:
            continue
        for line, target in imported_names(path):
            # `from superres import __version__`: the root holds the version and the lazy facade only.
            theirs = layer_of(target)
            if theirs is not None and RANK[theirs] > RANK[own]:
                where = f"{path.relative_to(PACKAGE.parent)}:{line}"
                upward.append(f"{where} ({own}) imports {target} ({theirs})")
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_no_import_cycles_between_modules() -> None:
    modules = {module_name(path): path for path in all_modules()}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for _, target in imported_names(path):
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            # A package's __init__ re-exporting its own modules is not a cycle of behaviour.
            if target != name and not name.startswith(target + "."):
                targets.add(target)
        graph[name] = targets
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_at_most_five_modules_directly_in_the_package() -> None:
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top) <= 5, top
