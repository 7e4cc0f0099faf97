"""The tree follows the data: no module imports from a layer above its own (docs/layout.md,
"Import layers"), function-level imports included."""
from __future__ import annotations

import ast
import os
import re

from tests.support.paths import ROOT


def _layers() -> list[list[str]]:
    text = open(os.path.join(ROOT, "docs", "layout.md")).read()
    block = re.search(r"```layers\n(.*?)```", text, re.S).group(1)
    return [line.split(":", 1)[1].split() for line in block.strip().splitlines()]


PACKAGES = {"hardware": "nnos_hardware", "models": "nnos_models"}   # directory → the name it is imported by


def _dotted(rel: str) -> str:
    """A path relative to the repository (no .py) as the module name Python imports it by."""
    top, _, rest = rel.replace(os.sep, "/").partition("/")
    return ".".join([PACKAGES.get(top, top)] + (rest.split("/") if rest else []))


def _module(path: str) -> str:
    return _dotted(os.path.relpath(path, ROOT)[:-3]).removesuffix(".__init__")


def _imports(path: str) -> set[str]:
    """Every module ``path`` imports, relative imports resolved, ``from X import name`` as X.name."""
    mod = _module(path)
    pkg = mod if path.endswith("__init__.py") else mod.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            out |= {f"{base}.{a.name}" for a in node.names} | ({base} if node.module else set())
    return out


def test_no_module_imports_from_a_layer_above_its_own():
    layers = _layers()
    rank, exact = {}, set()                       # a package's __init__.py is that module alone
    for i, layer in enumerate(layers):
        for p in layer:
            name = _dotted(p.removesuffix("/__init__.py").removesuffix(".py"))
            rank[name] = i
            if p.endswith("__init__.py"):
                exact.add(name)

    def layer_of(mod: str) -> int | None:
        best = max((p for p in rank if mod == p or (p not in exact and mod.startswith(p + "."))), key=len,
                   default=None)
        return rank.get(best) if best else None
    upward, unplaced = [], []
    for top in ("nnos", "hardware"):
        for d, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if not f.endswith(".py"):
                    continue
                path = os.path.join(d, f)
                mine = layer_of(_module(path))
                if mine is None:
                    unplaced.append(_module(path))
                    continue
                for imp in _imports(path):
                    theirs = layer_of(imp)
                    if theirs is not None and theirs > mine:
                        upward.append(f"{_module(path)} imports {imp} ({layers[theirs]} is above {layers[mine]})")
    assert not unplaced, f"modules in no layer of docs/layout.md: {unplaced}"
    assert not upward, "\n".join(sorted(upward))


def test_tests_share_helpers_only_through_tests_support():
    """A test module imports another test directory's code only from tests/support/ (never a
    conftest.py or a test_*.py: that couples test files and runs their collection twice)."""
    bad = []
    for d, _, files in os.walk(os.path.join(ROOT, "tests")):
        for f in files:
            if not f.endswith(".py"):
                continue
            path = os.path.join(d, f)
            for imp in _imports(path):
                if imp.startswith("tests.") and not imp.startswith("tests.support"):
                    bad.append(f"{os.path.relpath(path, ROOT)} imports {imp}")
    assert not bad, "\n".join(sorted(bad))
