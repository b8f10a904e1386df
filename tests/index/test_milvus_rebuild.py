"""An in-place rebuild of a Milvus index never loses the old one (issue 23, item 7): each build writes a collection
of its own, the folder's manifest switches to it in one atomic replacement, and only then is the superseded
collection dropped — a crash mid-insert or before the manifest leaves the old index loadable with its old results."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pymilvus")

import asymret.index.base as base  # noqa: E402
import asymret.index.milvus as milvus  # noqa: E402
from asymret.core.space import Embeddings, Space, l2_normalize  # noqa: E402
from asymret.index import MilvusGalleryIndex, load_index  # noqa: E402

DIM = 8
SPACE = Space("milvus-rebuild-fp", DIM, True, "rebuild-enc")


class Crash(BaseException):
    """What a kill looks like to the code being killed: nothing after it runs (except cleanup handlers)."""


def _gallery(n: int, prefix: str) -> tuple[Embeddings, np.ndarray]:
    vectors = l2_normalize(np.random.default_rng(n).normal(size=(n, DIM)).astype(np.float32))
    return Embeddings(vectors, [f"{prefix}{i}" for i in range(n)], SPACE), np.linspace(0, 1, n, dtype=np.float32)


def _queries() -> Embeddings:
    return Embeddings(l2_normalize(np.random.default_rng(7).normal(size=(6, DIM)).astype(np.float32)), list("abcdef"), SPACE)


def _build(uri, n: int, prefix: str, collection: str = "gallery") -> MilvusGalleryIndex:
    index = MilvusGalleryIndex(SPACE, uri, collection=collection)
    index.add(*_gallery(n, prefix))
    return index


def _crash_upserts(monkeypatch, index: MilvusGalleryIndex, after: int) -> None:
    real, calls = index._milvus.upsert, []

    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) > after:
            raise Crash("upsert")
        return real(*args, **kwargs)

    monkeypatch.setattr(index._milvus, "upsert", crashing)


def _collections(index: MilvusGalleryIndex) -> list[str]:
    return sorted(index._milvus.list_collections())


def test_a_rebuild_crashing_mid_insert_leaves_the_old_index_and_the_next_one_cleans_up(tmp_path, monkeypatch):
    folder = tmp_path / "idx"
    old = _build(folder / "milvus.db", 300, "old")
    old.save(folder)
    expected = old.search(_queries(), k=5)
    assert old.collection.startswith("gallery_v") and old.name == "gallery"

    monkeypatch.setattr(milvus, "BATCH", 100)  # several insert calls: the crash comes after some rows are in
    crashed = MilvusGalleryIndex(SPACE, folder / "milvus.db", collection="gallery")
    _crash_upserts(monkeypatch, crashed, after=2)
    with pytest.raises(Crash):
        crashed.add(*_gallery(500, "new"))
    monkeypatch.undo()
    assert crashed.collection != old.collection and crashed.collection in _collections(crashed)  # rows written there

    loaded = load_index(folder, expect_space=SPACE)
    assert loaded.collection == old.collection and loaded.ids.tolist() == old.ids.tolist()
    got = loaded.search(_queries(), k=5)
    np.testing.assert_array_equal(got.ids, expected.ids)
    np.testing.assert_allclose(got.scores, expected.scores, atol=1e-5)

    rerun = _build(folder / "milvus.db", 500, "new")  # run again to the end: the new index takes over
    rerun.save(folder)
    assert load_index(folder).ids.tolist() == rerun.ids.tolist()
    # the superseded collection and the crashed build's are dropped: the folder's Milvus Lite file is the folder's
    assert _collections(rerun) == [rerun.collection]
    assert json.loads((folder / "manifest.json").read_text())["name"] == "gallery"


def test_a_rebuild_crashing_at_its_manifest_leaves_the_old_index_and_its_collection(tmp_path, monkeypatch):
    folder = tmp_path / "idx"
    old = _build(folder / "milvus.db", 120, "old")
    old.save(folder)
    new = _build(folder / "milvus.db", 80, "new")
    monkeypatch.setattr(base, "write_manifest", lambda *args, **kwargs: (_ for _ in ()).throw(Crash("manifest")))
    with pytest.raises(Crash):
        new.save(folder)
    monkeypatch.undo()
    loaded = load_index(folder, expect_space=SPACE)
    assert loaded.collection == old.collection and old.collection in _collections(new)
    np.testing.assert_array_equal(loaded.search(_queries(), k=5).ids, old.search(_queries(), k=5).ids)


def test_a_shared_milvus_drops_only_the_collection_the_folder_named(tmp_path):
    """A Milvus (a server, or a Lite file outside the folder) is shared: a save drops the collection it supersedes,
    never another build's — two folders under one collection name no longer replace each other's collection."""
    uri = tmp_path / "shared.db"
    first, other = _build(uri, 50, "a"), _build(uri, 60, "b")
    first.save(tmp_path / "first")
    other.save(tmp_path / "other")  # the same name, another folder: both stay whole
    assert load_index(tmp_path / "first").ids.tolist() == first.ids.tolist()
    rebuilt = _build(uri, 70, "c")
    rebuilt.save(tmp_path / "first")
    assert _collections(rebuilt) == sorted([other.collection, rebuilt.collection])
    assert load_index(tmp_path / "other").ids.tolist() == other.ids.tolist()
    assert load_index(tmp_path / "first").ids.tolist() == rebuilt.ids.tolist()


def test_a_folder_saved_with_an_unversioned_collection_loads_and_is_superseded(tmp_path):
    """Folders saved before versioned collections name the collection itself (and no ``name``)."""
    folder = tmp_path / "idx"
    legacy = MilvusGalleryIndex(SPACE, folder / "milvus.db", collection="asymret_gallery", _create=False)
    legacy._create_collection()
    legacy.add(*_gallery(40, "old"))
    legacy.save(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.pop("name")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    loaded = load_index(folder)
    assert (loaded.collection, loaded.name) == ("asymret_gallery", "asymret_gallery")
    rebuilt = _build(folder / "milvus.db", 30, "new", collection="asymret_gallery")
    rebuilt.save(folder)
    assert _collections(rebuilt) == [rebuilt.collection]


def test_a_collection_name_milvus_would_refuse_is_refused_first(tmp_path):
    with pytest.raises(ValueError, match="collection name"):
        MilvusGalleryIndex(SPACE, tmp_path / "milvus.db", collection="my-gallery")
