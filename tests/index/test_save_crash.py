"""Index writes never destroy the previous version (issue 23, item 7): a save interrupted at any point leaves one
whole, loadable index — the old one until the new manifest is in place, the new one after."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import asymret.index.base as base
from asymret.core.space import Embeddings, Space, l2_normalize
from asymret.index import create_index, load_index

DIM = 8
SPACE = Space("crash-fp", DIM, True, "crash-enc")


def _index(spec: str, n: int, prefix: str):
    vectors = l2_normalize(np.random.default_rng(n).normal(size=(n, DIM)).astype(np.float32))
    index = create_index(spec, SPACE)
    index.add(Embeddings(vectors, [f"{prefix}{i}" for i in range(n)], SPACE), np.linspace(0, 1, n, dtype=np.float32))
    return index


class Crash(BaseException):
    """What a kill looks like to the code being killed: nothing after it runs (except cleanup handlers)."""


def _crash_at(monkeypatch, name: str, after: int = 0) -> None:
    """``base.<name>`` raises :class:`Crash` on its call number ``after`` (0 = the first)."""
    original, calls = getattr(base, name), []

    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) > after:
            raise Crash(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(base, name, crashing)


CRASH_POINTS = [("_write_file", 0), ("_write_file", 1), ("_write_file", 2), ("write_manifest", 0)]


@pytest.mark.parametrize("spec", ["faiss:Flat", "exact"])
@pytest.mark.parametrize("point, after", CRASH_POINTS)
def test_a_rebuild_crashing_before_its_manifest_leaves_the_old_index(tmp_path, monkeypatch, spec, point, after):
    """The probe: the manifest used to be deleted before the new files were written — a crash left neither."""
    old, new = _index(spec, 30, "old"), _index(spec, 50, "new")
    old.save(tmp_path / "idx")
    _crash_at(monkeypatch, point, after)
    with pytest.raises(Crash):
        new.save(tmp_path / "idx")
    monkeypatch.undo()
    loaded = load_index(tmp_path / "idx", expect_space=SPACE)
    assert loaded.ids.tolist() == old.ids.tolist()
    np.testing.assert_array_equal(loaded.search(_queries(), 5).ids, old.search(_queries(), 5).ids)
    assert not list((tmp_path / "idx").glob(".data-*.partial"))  # an interrupted write cleans up after itself
    new.save(tmp_path / "idx")  # and the next save works and takes over
    assert load_index(tmp_path / "idx").ids.tolist() == new.ids.tolist()
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert [p.name for p in (tmp_path / "idx").iterdir() if p.name.startswith(".")] == []
    assert manifest["data"] in {p.name for p in (tmp_path / "idx").iterdir()}


def _queries() -> Embeddings:
    vectors = l2_normalize(np.random.default_rng(99).normal(size=(4, DIM)).astype(np.float32))
    return Embeddings(vectors, [f"q{i}" for i in range(4)], SPACE)


def test_a_crash_after_the_manifest_leaves_the_new_index(tmp_path, monkeypatch):
    old, new = _index("faiss:Flat", 30, "old"), _index("faiss:Flat", 50, "new")
    old.save(tmp_path / "idx")
    _crash_at(monkeypatch, "_remove_superseded")
    with pytest.raises(Crash):
        new.save(tmp_path / "idx")
    monkeypatch.undo()
    assert load_index(tmp_path / "idx").ids.tolist() == new.ids.tolist()
    old.save(tmp_path / "idx")  # the versions left behind are removed by the next save
    assert len([p for p in (tmp_path / "idx").iterdir() if p.name.startswith("data-")]) in (1, 2)
    assert load_index(tmp_path / "idx").ids.tolist() == old.ids.tolist()


def test_a_hard_kill_mid_write_leaves_the_old_index(tmp_path):
    """kill -9 runs no cleanup: the half-written version stays a ``.partial`` folder that no manifest names."""
    old = _index("faiss:Flat", 30, "old")
    old.save(tmp_path / "idx")
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(__file__.rsplit('/', 1)[0])!r})
        import asymret.index.base as base
        from test_save_crash import _index
        original, calls = base._write_file, []
        def killed(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                os._exit(9)
            return original(*args, **kwargs)
        base._write_file = killed
        _index("faiss:Flat", 50, "new").save({str(tmp_path / "idx")!r})
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 9, result.stderr
    assert len(list((tmp_path / "idx").glob(".data-*.partial"))) == 1
    assert load_index(tmp_path / "idx").ids.tolist() == old.ids.tolist()
    _index("faiss:Flat", 50, "new").save(tmp_path / "idx")
    assert not list((tmp_path / "idx").glob(".data-*.partial"))


def test_an_index_saved_before_version_folders_is_replaced_only_once_the_new_one_is_whole(tmp_path, monkeypatch):
    old, new = _index("faiss:Flat", 30, "old"), _index("faiss:Flat", 50, "new")
    folder = tmp_path / "idx"
    old.save(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    for saved in (folder / manifest.pop("data")).iterdir():  # the layout of earlier versions: files at the top
        saved.rename(folder / saved.name)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    _crash_at(monkeypatch, "write_manifest")
    with pytest.raises(Crash):
        new.save(folder)
    monkeypatch.undo()
    assert load_index(folder).ids.tolist() == old.ids.tolist()
    new.save(folder)
    assert load_index(folder).ids.tolist() == new.ids.tolist()
    assert not (folder / "index.faiss").exists() and not (folder / "ids.npy").exists()  # the old files, once superseded


def test_a_manifest_naming_a_folder_outside_is_refused(tmp_path):
    _index("exact", 5, "x").save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    manifest["data"] = "../elsewhere"
    (tmp_path / "idx" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="malformed: data folder"):
        load_index(tmp_path / "idx")
