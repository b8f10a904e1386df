"""Imports run strictly downhill along the data flow, and importing the package is cheap."""
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
    """(line, absolute module) of every import in ``path``, function-local ones included, TYPE_CHECKING ones not."""
    tree = ast.parse(path.read_text())
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(child) for child in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
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


def test_every_import_runs_downhill():
    uphill = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        source = _layer_of(_module_name(path))
        if source is None:  # asymret/__init__.py: lazy re-exports only
            continue
        for line, target in _imports(path):
            layer = _layer_of(target)
            if layer is not None and layer > source:
                uphill.append(f"{path.relative_to(PACKAGE_ROOT)}:{line} imports {target} ({LAYERS[source]} → {LAYERS[layer]})")
    assert not uphill, "imports against the data flow:\n" + "\n".join(uphill)


def test_the_layer_check_sees_an_uphill_import(tmp_path, monkeypatch):
    """The check itself must fail on a module of a low layer that imports a higher one (a local import too)."""
    fake_root = tmp_path / "asymret"
    (fake_root / "core").mkdir(parents=True)
    (fake_root / "core" / "bad.py").write_text("def f():\n    from ..index import GalleryIndex\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE_ROOT", fake_root)
    with pytest.raises(AssertionError, match="core → index"):
        test_every_import_runs_downhill()


@pytest.mark.parametrize("module, forbidden", [
    ("asymret", ["torch", "faiss", "asymret.data", "asymret.encoders"]),
    ("asymret.core.space", ["torch", "faiss", "asymret.data"]),
    ("asymret.index", ["torch", "faiss", "asymret.gallery", "asymret.compat"]),
])
def test_imports_are_cheap(module, forbidden):
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert not [name for name in forbidden if name in loaded]
