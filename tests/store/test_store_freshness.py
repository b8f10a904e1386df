"""The store keyed on what the pixels are (issue 23, item 4): an image edited or replaced under its name is re-embedded
and the rest reused; shards checksummed and checked on read; folders from before stamps stay usable."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from asymret.core.manifest import read_manifest
from asymret.data.dataset import FileSource, ImageDataset
from asymret.encoders import create_encoder
from asymret.store.embeddings import EmbeddingStore
from asymret.store.freshness import CorruptStoreError, StaleEmbeddingsError

COUNT, SHARD = 7, 3  # shards: rows 0-2, 3-5, 6
FIXED_TIME = 1_700_000_000  # every file's mtime, so that only what a test changes differs


def _write(root, index: int, seed: int, fmt: str = "png") -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(28, 28), dtype=np.uint8)
    path = root / f"img{index}.{fmt}"
    Image.fromarray(pixels).save(path)
    os.utime(path, (FIXED_TIME, FIXED_TIME))


def _folder(tmp_path, fmt: str = "png") -> ImageDataset:
    root = tmp_path / "images"
    root.mkdir()
    for i in range(COUNT):
        _write(root, i, seed=i, fmt=fmt)
    names = [f"img{i}.{fmt}" for i in range(COUNT)]
    return ImageDataset(name="imgs", source=FileSource(root, mode="L"), ids=[f"id{i}" for i in range(COUNT)], keys=names,
                        labels=np.arange(COUNT) % 2, splits=["test"] * COUNT, is_query=np.ones(COUNT, bool),
                        is_gallery=np.ones(COUNT, bool))


def _encoder():
    return create_encoder("convnet-xs", embedding_dim=8, seed=5)


@pytest.fixture
def loads(monkeypatch):
    """The keys of every image read from disk (any thread)."""
    seen: list[str] = []
    original = FileSource.load
    monkeypatch.setattr(FileSource, "load", lambda self, key: seen.append(str(key)) or original(self, key))
    return seen


def test_an_image_edited_in_place_is_re_embedded_and_the_rest_reused(tmp_path, loads):
    """The probe: overwrite an image and embed again — it used to print '1 reused' and keep the old vector."""
    data, encoder = _folder(tmp_path), _encoder()
    store = EmbeddingStore(tmp_path / "store", shard_size=SHARD, batch_size=2, workers=0)
    before = store.get(encoder, data)
    directory = store.directory(encoder, data)
    _write(data.source.root, 4, seed=99)  # same name, other pixels (and another mtime: FIXED_TIME is reset below)
    os.utime(data.source.root / "img4.png", (FIXED_TIME + 5, FIXED_TIME + 5))
    loads.clear()

    report = store.extract(encoder, data)
    assert report.changed_ids == ["id4"] and (report.computed_shards, report.reused_shards) == (1, 2)
    assert loads == ["img4.png"]  # only the edited image is read again: its shard's other rows are kept
    after = store.get(encoder, data)
    assert after.ids.tolist() == before.ids.tolist()
    fresh = encoder.embed_images([data.load(4)])[0]
    np.testing.assert_allclose(after.vectors[4], fresh, atol=1e-5)
    assert not np.allclose(after.vectors[4], before.vectors[4])
    others = [i for i in range(COUNT) if i != 4]
    np.testing.assert_array_equal(after.vectors[others], before.vectors[others])  # bit for bit: not recomputed
    assert read_manifest(directory, kind="embedding-set")["count"] == COUNT


def test_get_notices_an_edit_by_itself_and_load_refuses_stale_vectors(tmp_path, loads):
    data, encoder = _folder(tmp_path), _encoder()
    store = EmbeddingStore(tmp_path / "store", shard_size=SHARD, workers=0)
    store.get(encoder, data)
    directory = store.directory(encoder, data)
    _write(data.source.root, 0, seed=42)
    os.utime(data.source.root / "img0.png", (FIXED_TIME + 1, FIXED_TIME + 1))
    with pytest.raises(StaleEmbeddingsError, match=r"1 images of imgs changed .*'id0': img0.png"):
        EmbeddingStore.load(directory, data)
    with pytest.raises(StaleEmbeddingsError, match="embed them again"):
        store.find(encoder.space().fingerprint, data)  # no model to re-embed with: refused, never stale vectors
    loads.clear()
    got = store.get(encoder, data)
    assert loads == ["img0.png"]
    np.testing.assert_allclose(got.vectors[0], encoder.embed_images([data.load(0)])[0], atol=1e-5)
    EmbeddingStore.load(directory, data)  # fresh again


def test_a_replaced_image_of_other_size_and_a_deleted_one(tmp_path):
    data, encoder = _folder(tmp_path), _encoder()
    store = EmbeddingStore(tmp_path / "store", shard_size=SHARD, workers=0)
    store.get(encoder, data)
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(data.source.root / "img2.png")  # replaced: other size
    os.utime(data.source.root / "img2.png", (FIXED_TIME, FIXED_TIME))  # even with the old time
    (data.source.root / "img6.png").unlink()
    report = store.extract(encoder, data)
    assert sorted(report.changed_ids) == ["id2", "id6"] and report.failed_ids == ["id6"]
    got = store.get(encoder, data)
    assert "id6" not in got.ids.tolist() and len(got) == COUNT - 1
    np.testing.assert_allclose(got.vectors[2], encoder.embed_images([data.load(2)])[0], atol=1e-5)
    assert read_manifest(store.directory(encoder, data), kind="embedding-set")["failed_ids"] == ["id6"]


def test_content_detection_catches_an_edit_that_keeps_size_and_time(tmp_path):
    data, encoder = _folder(tmp_path, fmt="bmp"), _encoder()  # BMP: the same size for any pixels
    by_stat = EmbeddingStore(tmp_path / "store", shard_size=SHARD, workers=0)
    by_content = EmbeddingStore(tmp_path / "store", shard_size=SHARD, workers=0, change_detection="content")
    first = by_content.get(encoder, data)
    path = data.source.root / "img3.bmp"
    size = path.stat().st_size
    _write(data.source.root, 3, seed=77, fmt="bmp")  # other pixels, same size, same mtime
    assert path.stat().st_size == size and path.stat().st_mtime_ns == FIXED_TIME * 10**9
    np.testing.assert_array_equal(by_stat.get(encoder, data).vectors, first.vectors)  # size and time cannot tell
    report = by_content.extract(encoder, data)
    assert report.changed_ids == ["id3"]
    np.testing.assert_allclose(by_content.get(encoder, data).vectors[3], encoder.embed_images([data.load(3)])[0], atol=1e-5)
    with pytest.raises(ValueError, match="change detection must be one of stat, content"):
        EmbeddingStore(tmp_path, change_detection="hash")


def test_a_corrupted_shard_is_one_error_naming_the_file(tmp_path):
    data, encoder = _folder(tmp_path), _encoder()
    store = EmbeddingStore(tmp_path / "store", shard_size=SHARD, workers=0)
    store.get(encoder, data)
    directory = store.directory(encoder, data)
    manifest = read_manifest(directory, kind="embedding-set")
    assert len(manifest["shard_sha256"]) == 3 and all(manifest["shard_sha256"])
    shard = directory / "shard_00001.npy"
    data_bytes = bytearray(shard.read_bytes())
    data_bytes[-3] ^= 0x40  # one flipped bit in a vector: np.load would read it silently
    shard.write_bytes(bytes(data_bytes))
    for read in (lambda: store.get(encoder, data), lambda: EmbeddingStore.load(directory)):
        with pytest.raises(CorruptStoreError, match=r"shard_00001\.npy is corrupted") as error:
            read()
        assert "\n" not in str(error.value)
    shard.write_bytes(bytes(data_bytes[:40]))  # truncated
    with pytest.raises(CorruptStoreError, match=r"shard_00001\.npy"):
        EmbeddingStore.load(directory)
    shard.unlink()  # the advice: deleted, ...
    (directory / "shard_00000.json").write_text('{"ids": [')
    with pytest.raises(CorruptStoreError, match=r"shard_00000\.json cannot be read"):
        EmbeddingStore.load(directory)
    # ... extraction recomputes it (and the shard of the unreadable marker) and reads clean
    report = store.extract(encoder, data)
    assert report.computed_shards == 2
    assert len(store.get(encoder, data)) == COUNT


def _strip_to_an_older_folder(directory) -> None:
    """What a folder written before stamps and checksums looks like."""
    for marker in directory.glob("shard_*.json"):
        meta = json.loads(marker.read_text())
        meta.pop("stamps"), meta.pop("sha256")
        marker.write_text(json.dumps(meta))
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest.pop("shard_sha256"), manifest.pop("change_detection")
    (directory / "manifest.json").write_text(json.dumps(manifest))


def test_a_folder_from_before_stamps_is_reused_and_then_watched(tmp_path, loads):
    data, encoder = _folder(tmp_path), _encoder()
    store = EmbeddingStore(tmp_path / "store", shard_size=SHARD, workers=0)
    first = store.get(encoder, data)
    directory = store.directory(encoder, data)
    _strip_to_an_older_folder(directory)
    np.testing.assert_array_equal(EmbeddingStore.load(directory, data).vectors, first.vectors)  # usable as it is
    loads.clear()
    np.testing.assert_array_equal(store.get(encoder, data).vectors, first.vectors)
    assert loads == []  # adopted: nothing re-embedded ...
    meta = json.loads((directory / "shard_00000.json").read_text())
    assert set(meta["stamps"]["stat"]) == {"id0", "id1", "id2"} and meta["sha256"]
    assert all(read_manifest(directory, kind="embedding-set")["shard_sha256"])
    _write(data.source.root, 5, seed=123)  # ... and an edit from now on is noticed
    os.utime(data.source.root / "img5.png", (FIXED_TIME + 9, FIXED_TIME + 9))
    assert store.extract(encoder, data).changed_ids == ["id5"]


def test_an_interrupted_re_embedding_leaves_no_manifest_and_resumes(tmp_path, monkeypatch):
    data, encoder = _folder(tmp_path), _encoder()
    store = EmbeddingStore(tmp_path / "store", shard_size=SHARD, workers=0)
    store.get(encoder, data)
    directory = store.directory(encoder, data)
    _write(data.source.root, 1, seed=55)
    os.utime(data.source.root / "img1.png", (FIXED_TIME + 3, FIXED_TIME + 3))
    original = type(encoder).forward
    monkeypatch.setattr(type(encoder), "forward", lambda self, x: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        store.extract(encoder, data)
    assert not (directory / "manifest.json").exists()  # never a whole-looking folder with a stale vector
    monkeypatch.setattr(type(encoder), "forward", original)
    got = store.get(encoder, data)
    np.testing.assert_allclose(got.vectors[1], encoder.embed_images([data.load(1)])[0], atol=1e-5)
