"""The package's layers import one way: core <- data, models <- pipeline, training <- evaluation
<- cli, with the cross-cutting modules (errors, config, fsutil, logs, distributed) below all.
A module may import from its own subpackage and from any layer below its own, never sideways
or up, and no two modules import each other (directly or not). Imports inside functions count."""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(__file__), "..", "defect_gen")
RANK = {"errors": 0, "config": 0, "fsutil": 0, "logs": 0, "distributed": 0, "core": 1, "data": 2, "models": 2,
        "pipeline": 3, "training": 3, "evaluation": 4, "cli": 5}


def _modules() -> dict[str, str]:
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), PACKAGE)[:-3].replace(os.sep, ".")
                out[rel.removesuffix(".__init__") if rel != "__init__" else ""] = os.path.join(folder, f)
    return out


def _imports(path: str) -> set[str]:
    """defect_gen.X.Y names a file imports (relative to the package), anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("defect_gen"):
            base = node.module.removeprefix("defect_gen").lstrip(".")
            found |= {f"{base}.{a.name}".lstrip(".") for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("defect_gen").lstrip(".") for a in node.names
                      if a.name.startswith("defect_gen")}
    return found


def _layer(module: str) -> str:
    return module.split(".")[0]


def test_the_top_level_holds_only_the_cross_cutting_modules():
    top = {m for m in _modules() if m and "." not in m and m not in RANK}
    assert top == {"__main__"}, top


@pytest.mark.parametrize("module", sorted(m for m in _modules() if m and m != "__main__"))
def test_each_module_imports_only_from_below_or_its_own_layer(module):
    own = _layer(module)
    for name in _imports(_modules()[module]):
        target = _layer(name)
        if target not in RANK or target == own or RANK[target] == RANK[own] == 0:
            continue  # the cross-cutting modules may use each other (test_no_import_cycle keeps that acyclic)
        assert RANK[target] < RANK[own], f"defect_gen.{module} imports defect_gen.{name}: {own} may not use {target}"


def test_no_import_cycle():
    mods = _modules()
    edges = {}
    for m, path in mods.items():
        targets = set()
        for name in _imports(path):
            while name and name not in mods:
                name = name.rpartition(".")[0]
            if name and name != m:
                targets.add(name)
        edges[m] = targets

    def reach(a):
        seen, stack = set(), [a]
        while stack:
            for b in edges.get(stack.pop(), ()):
                if b not in seen:
                    seen.add(b)
                    stack.append(b)
        return seen

    cycles = sorted({tuple(sorted((a, b))) for a in mods for b in reach(a) if a != b and a in reach(b)})
    assert not cycles, cycles
