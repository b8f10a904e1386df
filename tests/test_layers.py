"""Imports run strictly downhill along the data flow (TYPE_CHECKING ones too), no module imports another that
imports it back (file by file), and importing the package is cheap."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import asymret

PACKAGE_ROOT = Path(asymret.__file__).parent

#: the data flow, bottom first; a module may import only from its own layer or one below
LAYERS = ["core", "data", "training", "encoders", "store", "compat", "gallery", "index", "rerank", "eval",
          "pipeline", "service", "cli"]

def _layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "asymret" or len(parts) < 2:
        return None
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else None


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in ``path``: function-local and TYPE_CHECKING ones included (a type
    named against the flow is a dependency against the flow all the same)."""
    tree = ast.parse(path.read_text())
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                targets = [target] if node.module else [f"{target}.{alias.name}" for alias in node.names]
            else:
                targets = [node.module or ""]
            found += [(node.lineno, t) for t in targets]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def _uphill() -> list[tuple[str, int, str, str]]:
    """(file relative to the package, line, imported module, "layer → layer") of every import against the flow."""
    found = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        source = _layer_of(_module_name(path))
        if source is None:  # asymret/__init__.py: lazy re-exports only
            continue
        for line, target in _imports(path):
            layer = _layer_of(target)
            if layer is not None and layer > source:
                found.append((path.relative_to(PACKAGE_ROOT).as_posix(), line, target, f"{LAYERS[source]} → {LAYERS[layer]}"))
    return found


def test_every_import_runs_downhill():
    uphill = [f"{file}:{line} imports {target} ({flow})" for file, line, target, flow in _uphill()]
    assert not uphill, "imports against the data flow:\n" + "\n".join(uphill)


def _module_files() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE_ROOT.rglob("*.py"))}


def _import_graph() -> dict[str, set[str]]:
    """Module → the modules of the package it imports (each import's own target: ``from .x import y`` is an edge
    to ``x``, or to ``x.y`` where that is a module; a parent package's ``__init__`` is not an edge of its own)."""
    modules = _module_files()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for _, target in _imports(path):
            while target and target not in modules:  # ``from pkg import name`` of a non-module name
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in sorted(graph.get(node, ())):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
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


def test_no_module_imports_one_that_imports_it_back():
    circles = _circles(_import_graph())
    assert not circles, "import circles (file by file):\n" + "\n".join(" ↔ ".join(circle) for circle in circles)


def test_the_layer_check_sees_an_uphill_import(tmp_path, monkeypatch):
    """The check itself must fail on a module of a low layer that imports a higher one (a local import too)."""
    fake_root = tmp_path / "asymret"
    (fake_root / "core").mkdir(parents=True)
    (fake_root / "core" / "bad.py").write_text("def f():\n    from ..index import GalleryIndex\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE_ROOT", fake_root)
    with pytest.raises(AssertionError, match="core → index"):
        test_every_import_runs_downhill()


def test_the_layer_check_sees_a_type_checking_import(tmp_path, monkeypatch):
    fake_root = tmp_path / "asymret"
    (fake_root / "core").mkdir(parents=True)
    (fake_root / "core" / "typed.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..index.base import SearchResult\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE_ROOT", fake_root)
    with pytest.raises(AssertionError, match="core/typed.py:3 imports asymret.index.base"):
        test_every_import_runs_downhill()


def test_the_circle_check_sees_a_circle(tmp_path, monkeypatch):
    """Two modules of one layer importing each other (one of them inside a function) are a circle; a module
    importing its package's ``__init__`` names only, or a third module, is not."""
    fake_root = tmp_path / "asymret"
    (fake_root / "rerank").mkdir(parents=True)
    (fake_root / "rerank" / "__init__.py").write_text("from .base import load\nfrom .ames import Model\n")
    (fake_root / "rerank" / "base.py").write_text("from .shortlist import fuse\ndef load():\n    from .ames import Model\n")
    (fake_root / "rerank" / "ames.py").write_text("from .base import load\nfrom . import shortlist\n")
    (fake_root / "rerank" / "shortlist.py").write_text("import numpy\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE_ROOT", fake_root)
    assert _circles(_import_graph()) == [["asymret.rerank.ames", "asymret.rerank.base"]]
    with pytest.raises(AssertionError, match="asymret.rerank.ames ↔ asymret.rerank.base"):
        test_no_module_imports_one_that_imports_it_back()


@pytest.mark.parametrize("module, forbidden", [
    ("asymret", ["torch", "faiss", "asymret.data", "asymret.encoders"]),
    ("asymret.core.space", ["torch", "faiss", "asymret.data"]),
    ("asymret.index", ["torch", "faiss", "asymret.gallery", "asymret.compat"]),
])
def test_imports_are_cheap(module, forbidden):
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert not [name for name in forbidden if name in loaded]
