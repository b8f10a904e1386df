"""The store's device, precision and decoding workers: an explicit CPU is today's extraction, bf16 autocast is
close to fp32 and recorded (never mixed into an fp32 folder), and decoding threads write the same shards bit for bit."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from asymret.core.device import module_device
from asymret.core.manifest import read_manifest
from asymret.data.dataset import FileSource, ImageDataset
from asymret.encoders import create_encoder
from asymret.store.embeddings import EmbeddingStore

SEED = 11
#: bf16 autocast on the CPU vs fp32, the tiny models here (measured: max |Δ| ≈ 2e-3, min cosine ≈ 0.999995)
BF16_MAX_ABS, BF16_MIN_COSINE = 1e-2, 0.999


def _encoder(**kwargs):
    return create_encoder("convnet-xs", embedding_dim=8, seed=SEED, **kwargs)


def _files(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.name.startswith("shard_")}


def jpeg_dataset(root, count: int = 40, seed: int = 5) -> ImageDataset:
    """JPEGs of mixed sizes (RGB and grey), one unreadable file among them."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(count):
        h, w = (int(rng.integers(24, 90)), int(rng.integers(24, 90))) if k % 3 else (48, 48)
        shape = (h, w) if k % 5 == 0 else (h, w, 3)
        Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8)).save(root / f"im{k:03d}.jpg", quality=90)
        names.append(f"im{k:03d}.jpg")
    (root / "bad.jpg").write_bytes(b"not a jpeg at all" * 4)
    names.insert(17, "bad.jpg")
    n = len(names)
    return ImageDataset(name="jpegs", source=FileSource(root), ids=[name[:-4] for name in names], keys=names,
                        labels=np.arange(n) % 3, splits=["test"] * n, is_query=np.zeros(n, bool), is_gallery=np.ones(n, bool))


def test_an_explicit_cpu_writes_todays_shards(tmp_path, tiny_dataset):
    data = tiny_dataset.subset(np.arange(40))
    encoder = _encoder()
    default = EmbeddingStore(tmp_path / "a", shard_size=16, batch_size=5)
    explicit = EmbeddingStore(tmp_path / "b", shard_size=16, batch_size=5, device="cpu", precision="fp32", workers=0)
    default.extract(encoder, data)
    explicit.extract(encoder, data)
    assert _files(default.directory(encoder, data)) == _files(explicit.directory(encoder, data))
    assert module_device(encoder) == torch.device("cpu")
    assert read_manifest(explicit.directory(encoder, data))["precision"] == "fp32"
    marker = json.loads((explicit.directory(encoder, data) / "shard_00000.json").read_text())
    assert "precision" not in marker  # an fp32 shard's marker is byte for byte what it was


def test_bf16_is_close_to_fp32_stored_as_float32_and_recorded(tmp_path, tiny_dataset):
    data = tiny_dataset.subset(np.arange(60))
    encoder = _encoder()
    fp32 = EmbeddingStore(tmp_path / "fp32", device="cpu").get(encoder, data)
    store = EmbeddingStore(tmp_path / "bf16", device="cpu", precision="bf16")
    bf16 = store.get(encoder, data)
    assert bf16.vectors.dtype == np.float32 and bf16.ids.tolist() == fp32.ids.tolist()
    assert np.abs(bf16.vectors - fp32.vectors).max() <= BF16_MAX_ABS
    assert (bf16.vectors * fp32.vectors).sum(axis=1).min() >= BF16_MIN_COSINE
    assert not np.array_equal(bf16.vectors, fp32.vectors)  # autocast really ran
    directory = store.directory(encoder, data)
    assert read_manifest(directory)["precision"] == "bf16"
    assert json.loads((directory / "shard_00000.json").read_text())["precision"] == "bf16"


def test_a_folder_does_not_mix_precisions(tmp_path, tiny_dataset):
    data = tiny_dataset.subset(np.arange(40))
    encoder = _encoder()
    EmbeddingStore(tmp_path, shard_size=16, device="cpu", precision="bf16").extract(encoder, data, shards=[0])
    with pytest.raises(ValueError, match=r"holds shards computed in bf16: .* in fp32 would mix precisions"):
        EmbeddingStore(tmp_path, shard_size=16, device="cpu").extract(encoder, data)
    report = EmbeddingStore(tmp_path, shard_size=16, device="cpu", precision="bf16").extract(encoder, data)
    assert (report.computed_shards, report.reused_shards) == (2, 1)


def test_devices_and_precisions_refused_in_one_line(tmp_path):
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        EmbeddingStore(tmp_path, device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="runtime onnx computes in fp32"):
        EmbeddingStore(tmp_path, device="cpu", runtime="onnx", precision="bf16")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda' is not available"):
            EmbeddingStore(tmp_path, device="cuda")


@pytest.mark.parametrize("output", ["embedding", "pooled"])
def test_decoding_workers_write_the_same_shards_bit_for_bit(tmp_path, output):
    data = jpeg_dataset(tmp_path / "jpegs")
    encoder = _encoder(input_size=32)
    directories = []
    for workers in (0, 2):
        store = EmbeddingStore(tmp_path / f"store{workers}", shard_size=16, batch_size=6, device="cpu", workers=workers)
        report = store.extract(encoder, data, output=output)
        assert report.failed_ids == ["bad"]
        directories.append(store.directory(encoder, data, output))
    reference, threaded = (_files(d) for d in directories)
    assert len(reference) == 2 * 3 and reference == threaded
