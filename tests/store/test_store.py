"""The embedding store: shards + manifest, reuse, resume after a hard kill, corrupt images, partial shards."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from asymret.encoders import create_encoder
from asymret.core.manifest import read_manifest
from asymret.store.embeddings import EmbeddingStore

SEED = 11


def _encoder():
    return create_encoder("convnet-xs", embedding_dim=8, seed=SEED)


def _shard_files(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("shard_"))


def _mtimes(directory, shards):
    return {
        name: (directory / name).stat().st_mtime_ns
        for s in shards
        for name in (f"shard_{s:05d}.npy", f"shard_{s:05d}.json")
    }


def _expected_vectors(encoder, dataset):
    images = [dataset.load(i) for i in range(len(dataset))]
    return encoder.embed_images(images)


# ------------------------------------------------------------------------------------------ extraction
def test_extraction_writes_shards_and_manifest(tmp_path, tiny_dataset):
    data = tiny_dataset.subset(np.arange(50))
    encoder = _encoder()
    store = EmbeddingStore(tmp_path, shard_size=16, batch_size=5)
    report = store.extract(encoder, data)
    directory = store.directory(encoder, data)
    assert directory.parent.name == f"{encoder.fingerprint()}-embedding"
    assert directory.name == data.fingerprint()
    assert (report.computed_shards, report.reused_shards, report.failed_ids) == (4, 0, [])
    assert _shard_files(directory) == [f"shard_{s:05d}.{ext}" for s in range(4) for ext in ("json", "npy")]
    assert [len(np.load(directory / f"shard_{s:05d}.npy")) for s in range(4)] == [16, 16, 16, 2]
    manifest = read_manifest(directory, kind="embedding-set")
    assert manifest["count"] == 50 and manifest["num_shards"] == 4 and manifest["dim"] == 8
    assert manifest["failed_ids"] == [] and manifest["normalized"] is True
    assert manifest["space"]["fingerprint"] == encoder.fingerprint()
    emb = store.get(encoder, data)
    assert emb.ids.tolist() == data.ids.tolist()
    np.testing.assert_array_equal(emb.labels, data.labels)
    assert emb.space == encoder.space()
    np.testing.assert_allclose(emb.vectors, _expected_vectors(encoder, data), atol=1e-5)
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_asking_again_reuses_without_recomputing(tmp_path, tiny_dataset, monkeypatch):
    data = tiny_dataset.subset(np.arange(30))
    encoder = _encoder()
    store = EmbeddingStore(tmp_path, shard_size=10)
    first = store.get(encoder, data)
    directory = store.directory(encoder, data)
    stamps = {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}

    calls = []
    original = type(encoder).forward
    monkeypatch.setattr(type(encoder), "forward", lambda self, x: calls.append(len(x)) or original(self, x))
    second = store.get(encoder, data)
    assert calls == []
    np.testing.assert_array_equal(second.vectors, first.vectors)
    assert {p.name: p.stat().st_mtime_ns for p in directory.iterdir()} == stamps
    report = store.extract(encoder, data)  # explicit extraction finds every shard done
    assert (report.computed_shards, report.reused_shards) == (0, 3) and calls == []

    # another model (one weight changed) gets its own directory and is computed
    with torch.no_grad():
        encoder.neck.bias[0] += 0.5
    assert store.directory(encoder, data) != directory
    third = store.get(encoder, data)
    assert sum(calls) == 30
    assert not np.allclose(third.vectors, first.vectors)


def test_pooled_output_has_backbone_dim_and_is_unnormalised(tmp_path, tiny_dataset):
    data = tiny_dataset.subset(np.arange(20))
    encoder = _encoder()
    store = EmbeddingStore(tmp_path, shard_size=8)
    pooled = store.get(encoder, data, output="pooled")
    assert pooled.vectors.shape == (20, encoder.feature_dim) and encoder.feature_dim != encoder.embedding_dim
    assert pooled.space.normalized is False and pooled.space.dim == encoder.feature_dim
    assert pooled.space.fingerprint == encoder.backbone_fingerprint()
    assert not np.allclose(np.linalg.norm(pooled.vectors, axis=1), 1.0)
    images = [data.load(i) for i in range(len(data))]
    with torch.no_grad():
        expected = encoder.pooled(encoder.preprocess(images)).numpy()
    np.testing.assert_allclose(pooled.vectors, expected, atol=1e-5)
    # the embedding path from cached pooled features equals the direct one
    with torch.no_grad():
        via_pooled = encoder.embed_pooled(torch.from_numpy(pooled.vectors)).numpy()
    np.testing.assert_allclose(via_pooled, store.get(encoder, data).vectors, atol=1e-5)
    manifest = read_manifest(store.directory(encoder, data, "pooled"))
    assert manifest["normalized"] is False and manifest["dim"] == encoder.feature_dim
    with pytest.raises(ValueError, match="output must be"):
        store.extract(encoder, data, output="logits")


def test_selected_shards_and_manifest_written_only_when_complete(tmp_path, tiny_dataset):
    data = tiny_dataset.subset(np.arange(40))
    encoder = _encoder()
    store = EmbeddingStore(tmp_path, shard_size=10)
    directory = store.directory(encoder, data)
    report = store.extract(encoder, data, shards=[2, 0, 2])
    assert (report.computed_shards, report.reused_shards) == (2, 0)
    assert _shard_files(directory) == ["shard_00000.json", "shard_00000.npy", "shard_00002.json", "shard_00002.npy"]
    assert not (directory / "manifest.json").exists()
    with pytest.raises(FileNotFoundError):
        EmbeddingStore.load(directory)
    report = store.extract(encoder, data, shards=[1, 2])
    assert (report.computed_shards, report.reused_shards) == (1, 1)
    assert not (directory / "manifest.json").exists()
    report = store.extract(encoder, data, shards=[3])
    assert (report.computed_shards, report.reused_shards) == (1, 0)
    assert (directory / "manifest.json").is_file()
    emb = EmbeddingStore.load(directory, data)
    assert emb.ids.tolist() == data.ids.tolist()
    np.testing.assert_allclose(emb.vectors, _expected_vectors(encoder, data), atol=1e-5)


def test_out_of_range_shards_are_refused(tmp_path, tiny_dataset):
    data = tiny_dataset.subset(np.arange(40))
    encoder = _encoder()
    store = EmbeddingStore(tmp_path, shard_size=10)
    for bad in ([4], [0, 12], [-1]):
        with pytest.raises(ValueError, match="shards must be in 0..3"):
            store.extract(encoder, data, shards=bad)
    assert not list(store.directory(encoder, data).glob("shard_*"))  # no stray shard file written


def test_load_refuses_another_dataset(tmp_path, tiny_dataset):
    data = tiny_dataset.subset(np.arange(12))
    encoder = _encoder()
    store = EmbeddingStore(tmp_path, shard_size=8)
    store.extract(encoder, data)
    with pytest.raises(ValueError, match="another dataset"):
        EmbeddingStore.load(store.directory(encoder, data), tiny_dataset.subset(np.arange(1, 13)))


# ------------------------------------------------------------------------------------------ corrupt images
def test_corrupt_image_is_skipped_and_reported(tmp_path, image_dir_dataset):
    encoder = _encoder()
    store = EmbeddingStore(tmp_path / "store", shard_size=3, batch_size=2)
    report = store.extract(encoder, image_dir_dataset)
    assert report.failed_ids == ["broken"]
    directory = store.directory(encoder, image_dir_dataset)
    manifest = read_manifest(directory)
    assert manifest["failed_ids"] == ["broken"]
    assert manifest["count"] == len(image_dir_dataset) - 1
    emb = store.get(encoder, image_dir_dataset)
    good = [i for i in image_dir_dataset.ids.tolist() if i != "broken"]
    assert emb.ids.tolist() == good
    rows = [image_dir_dataset.ids.tolist().index(i) for i in good]
    np.testing.assert_array_equal(emb.labels, image_dir_dataset.labels[rows])
    expected = encoder.embed_images([image_dir_dataset.load(r) for r in rows])
    np.testing.assert_allclose(emb.vectors, expected, atol=1e-5)


def test_shard_where_every_image_fails(tmp_path, image_dir_dataset):
    broken = int(np.flatnonzero(image_dir_dataset.ids == "broken")[0])
    others = np.flatnonzero(image_dir_dataset.ids != "broken")[:2]
    data = image_dir_dataset.subset([broken, *others])
    encoder = _encoder()
    store = EmbeddingStore(tmp_path / "store", shard_size=1)
    report = store.extract(encoder, data)
    assert report.failed_ids == ["broken"] and report.computed_shards == 3
    emb = store.get(encoder, data)
    assert emb.ids.tolist() == data.ids[1:].tolist() and emb.vectors.shape == (2, 8)


# ------------------------------------------------------------------------------------------ resume after kill -9
KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from asymret.data.dataset import ArraySource, ImageDataset
    from asymret.encoders import create_encoder
    from asymret.store.embeddings import EmbeddingStore

    data_file, root, kill_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
    arrays = np.load(data_file)
    dataset = ImageDataset(name="tiny", source=ArraySource(arrays["images"], origin=str(arrays["origin"])),
                           ids=arrays["ids"], keys=arrays["keys"], labels=arrays["labels"], splits=arrays["splits"],
                           is_query=arrays["is_query"], is_gallery=arrays["is_gallery"])
    encoder = create_encoder("convnet-xs", embedding_dim=8, seed=int(arrays["seed"]))
    print(encoder.fingerprint(), dataset.fingerprint(), flush=True)
    original = EmbeddingStore._write_shard
    written = []

    def write_then_die(self, directory, shard, vectors, ids, failed, *rest):
        if len(written) == kill_after:
            # die half-way through the next shard: its vectors are on disk but not its (completing) id file
            np.save(directory / f"shard_{shard:05d}.npy", vectors)
            os.kill(os.getpid(), signal.SIGKILL)
        original(self, directory, shard, vectors, ids, failed, *rest)
        written.append(shard)

    EmbeddingStore._write_shard = write_then_die
    EmbeddingStore(root, shard_size=int(arrays["shard_size"]), batch_size=4).extract(encoder, dataset)
    print("finished without being killed", flush=True)
    """
)


def test_resume_after_kill_9_computes_only_the_missing_shards(tmp_path, tiny_dataset, tiny_arrays):
    data = tiny_dataset.subset(np.arange(48))
    shard_size, kill_after = 8, 2  # 6 shards; killed while writing the third
    encoder = _encoder()
    np.savez(
        tmp_path / "data.npz", images=tiny_arrays["images"], ids=tiny_dataset.ids[:48], keys=tiny_dataset.keys[:48],
        labels=tiny_dataset.labels[:48], splits=tiny_dataset.splits[:48], is_query=tiny_dataset.is_query[:48],
        is_gallery=tiny_dataset.is_gallery[:48], origin=tiny_dataset.source.origin, seed=SEED, shard_size=shard_size,
    )
    script = tmp_path / "extract.py"
    script.write_text(KILL_SCRIPT)
    root = tmp_path / "store"
    env = {**os.environ, "ASYMRET_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "data.npz"), str(root), str(kill_after)],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == -9, result.stdout + result.stderr
    # the subprocess built the very same model and dataset
    assert result.stdout.split()[:2] == [encoder.fingerprint(), data.fingerprint()]

    store = EmbeddingStore(root, shard_size=shard_size, batch_size=4)
    directory = store.directory(encoder, data)
    assert not (directory / "manifest.json").exists()
    assert (directory / "shard_00002.npy").exists() and not (directory / "shard_00002.json").exists()
    finished = _mtimes(directory, range(kill_after))
    report = store.extract(encoder, data)
    assert (report.computed_shards, report.reused_shards) == (6 - kill_after, kill_after)
    assert _mtimes(directory, range(kill_after)) == finished
    assert (directory / "manifest.json").is_file()

    resumed = EmbeddingStore.load(directory, data)
    fresh_store = EmbeddingStore(tmp_path / "fresh", shard_size=shard_size, batch_size=4)
    fresh = fresh_store.get(encoder, data)
    assert resumed.ids.tolist() == fresh.ids.tolist() == data.ids.tolist()
    np.testing.assert_allclose(resumed.vectors, fresh.vectors, atol=1e-6)
    assert json.loads((directory / "manifest.json").read_text())["count"] == 48


def test_a_model_producing_nan_writes_nothing(tmp_path, tiny_dataset):
    import torch

    from asymret.encoders import create_encoder

    encoder = create_encoder("convnet-xs", embedding_dim=8, name="broken")
    with torch.no_grad():
        encoder.neck.weight.fill_(float("nan")) if hasattr(encoder.neck, "weight") else None
    store = EmbeddingStore(tmp_path, shard_size=10)
    data = tiny_dataset.subset(np.arange(20))
    with pytest.raises(ValueError, match="NaN or inf for 10 images of shard 0"):
        store.extract(encoder, data)
    assert not list(store.directory(encoder, data).glob("shard_*"))


def test_find_by_space_prefers_the_model_that_defines_the_space(tmp_path, tiny_dataset):
    """A compatibility-trained query model lives in its gallery model's space; a ψ fitted on the gallery model
    must read the gallery model's embeddings, not the query model's."""
    from asymret.encoders import create_encoder

    gallery = create_encoder("convnet-s", embedding_dim=8, name="gallery", seed=1)
    student = create_encoder("convnet-xs", embedding_dim=8, name="student", seed=2)
    student.config["compat_training"] = {"teacher_space": gallery.space().to_dict()}
    assert student.space().fingerprint == gallery.space().fingerprint != student.fingerprint()
    store = EmbeddingStore(tmp_path, shard_size=16)
    data = tiny_dataset.subset(np.arange(12))
    own, other = store.get(gallery, data), store.get(student, data)
    found = store.find(gallery.space().fingerprint, data)
    np.testing.assert_array_equal(found.vectors, own.vectors)
    assert not np.allclose(found.vectors, other.vectors)
    with pytest.raises(FileNotFoundError, match="embed it first"):
        store.find("0" * 16, data)


# ------------------------------------------------------------------------------------------ shard size
def test_default_shards_are_small_and_the_folder_pins_its_shard_size(tmp_path, tiny_dataset):
    """A kill loses at most one shard, so the default is small; a folder keeps the size it was started with."""
    from asymret.store.embeddings import DEFAULT_SHARD_SIZE, LAYOUT_FILE

    assert DEFAULT_SHARD_SIZE <= 256 and EmbeddingStore(tmp_path).shard_size == DEFAULT_SHARD_SIZE
    data = tiny_dataset.subset(np.arange(40))
    encoder = _encoder()
    EmbeddingStore(tmp_path, shard_size=8, batch_size=4).extract(encoder, data, shards=[0, 1])
    directory = EmbeddingStore(tmp_path).directory(encoder, data)
    assert json.loads((directory / LAYOUT_FILE).read_text()) == {"shard_size": 8}
    before = _mtimes(directory, [0, 1])
    # resumed with the default size: continues with the folder's 8 (shard 0 of size 256 would be another shard)
    report = EmbeddingStore(tmp_path, batch_size=4).extract(encoder, data)
    assert (report.computed_shards, report.reused_shards) == (3, 2)
    assert _mtimes(directory, [0, 1]) == before
    assert read_manifest(directory)["shard_size"] == 8
    # shard numbers under another explicit size would name other rows: refused
    with pytest.raises(ValueError, match="started with shard size 8"):
        EmbeddingStore(tmp_path, shard_size=5).extract(encoder, data, shards=[0])
    emb = EmbeddingStore(tmp_path, shard_size=5).get(encoder, data)
    assert emb.ids.tolist() == data.ids.tolist()


def test_a_shard_written_with_other_boundaries_is_not_taken_for_this_one(tmp_path, tiny_dataset):
    """Folders of older versions have no layout file: a shard marker counts only if it holds exactly its rows."""
    from asymret.store.embeddings import LAYOUT_FILE

    data = tiny_dataset.subset(np.arange(24))
    encoder = _encoder()
    EmbeddingStore(tmp_path, shard_size=16, batch_size=4).extract(encoder, data, shards=[0])  # rows 0..15
    directory = EmbeddingStore(tmp_path).directory(encoder, data)
    (directory / LAYOUT_FILE).unlink()  # as an older version left it
    report = EmbeddingStore(tmp_path, shard_size=8, batch_size=4).extract(encoder, data)
    assert (report.computed_shards, report.reused_shards) == (3, 0)  # shard 0 recomputed with rows 0..7
    emb = EmbeddingStore.load(directory, data)
    assert emb.ids.tolist() == data.ids.tolist()
    np.testing.assert_allclose(emb.vectors, _expected_vectors(encoder, data), atol=1e-5)


# ------------------------------------------------------------------------------------------ runtimes
def test_onnx_runtime_gives_torchs_embeddings_in_the_same_folder_and_resumes_torchs_shards(tmp_path, image_dir_dataset):
    """onnxruntime as the inference engine: the same store folder and embeddings within tolerance; shards computed
    by torch are reused and the missing ones computed by onnxruntime (one folder, both runtimes recorded); an
    unreadable image is skipped the same way."""
    encoder = _encoder()
    data = image_dir_dataset
    by_torch = EmbeddingStore(tmp_path / "torch", shard_size=3).get(encoder, data)
    mixed = EmbeddingStore(tmp_path / "mixed", shard_size=3)
    mixed.extract(encoder, data, shards=[0])
    onnx_store = EmbeddingStore(tmp_path / "mixed", shard_size=3, batch_size=2, runtime="onnx")
    report = onnx_store.extract(encoder, data)
    assert (report.computed_shards, report.reused_shards) == (2, 1)
    directory = onnx_store.directory(encoder, data)
    assert directory.relative_to(tmp_path / "mixed") == mixed.directory(encoder, data).relative_to(tmp_path / "mixed")
    manifest = read_manifest(directory, kind="embedding-set")
    assert manifest["runtimes"] == ["onnx", "torch"] and manifest["failed_ids"] == by_torch_failed(tmp_path / "torch", encoder, data)
    by_onnx = onnx_store.get(encoder, data)
    assert by_onnx.ids.tolist() == by_torch.ids.tolist() and by_onnx.space == by_torch.space
    np.testing.assert_allclose(by_onnx.vectors, by_torch.vectors, atol=1e-5)
    assert (tmp_path / "mixed" / "_onnx" / encoder.fingerprint() / "model.onnx").is_file()  # exported once, reused
    assert EmbeddingStore.load(directory).space == encoder.space()


def by_torch_failed(root, encoder, data):
    return read_manifest(EmbeddingStore(root).directory(encoder, data), kind="embedding-set")["failed_ids"]


def test_onnx_runtime_refuses_an_unknown_runtime_and_runs_other_outputs_through_torch(tmp_path, tiny_dataset):
    with pytest.raises(ValueError, match="runtime must be one of torch, onnx"):
        EmbeddingStore(tmp_path, runtime="tensorrt")
    # the exported model holds the embedding only: pooled features come from torch, the same as a torch store's
    data, encoder = tiny_dataset.subset(np.arange(4)), _encoder()
    pooled = EmbeddingStore(tmp_path / "onnx", runtime="onnx").get(encoder, data, output="pooled")
    by_torch = EmbeddingStore(tmp_path / "torch").get(encoder, data, output="pooled")
    assert pooled.space == by_torch.space and pooled.ids.tolist() == by_torch.ids.tolist()
    np.testing.assert_array_equal(pooled.vectors, by_torch.vectors)
    assert not (tmp_path / "onnx" / "_onnx").exists()  # nothing exported for it
