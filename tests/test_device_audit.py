"""Issue 22's audit (/work/notes/issue22-audit.md): tensors made on the device they are used on, the GPUs' random
streams kept by ``seeded``, ψ's precision on transform too — on a machine without a GPU (meta device, monkeypatch)."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from asymret.compat import CMCETransform
from asymret.core.space import Embeddings, Space
from asymret.encoders import create_encoder
from asymret.training import seeded


def test_the_centre_is_made_on_the_embeddings_device():
    encoder = create_encoder("convnet-xs", embedding_dim=8, seed=0)
    encoder.config["center"] = [0.1] * 8
    pooled = torch.randn(3, encoder.feature_dim)
    expected = torch.nn.functional.normalize(
        torch.nn.functional.normalize(encoder.neck(pooled), dim=1) - torch.tensor([0.1] * 8), dim=1)
    torch.testing.assert_close(encoder.embed_pooled(pooled), expected)
    encoder.to("meta")
    out = encoder.embed_pooled(torch.zeros(3, encoder.feature_dim, device="meta"))
    assert out.device.type == "meta"
    assert encoder.__dict__["_center_tensor"][1].device.type == "meta"  # made there, not copied from the CPU
    assert encoder.center.device.type == "cpu"  # the public value stays a CPU tensor


def test_seeded_keeps_the_gpus_generators_once_cuda_is_up(monkeypatch):
    forked: list = []

    @contextlib.contextmanager
    def fork_rng(devices=None, **_):
        forked.append(list(devices))
        yield

    monkeypatch.setattr(torch.random, "fork_rng", fork_rng)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    with seeded(0):
        pass
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: None)
    with seeded(0):
        pass
    assert forked == [[], [0, 1]]  # no CUDA start in a CPU run; every GPU's stream restored on a GPU one


def _pair(n: int = 96) -> tuple[Embeddings, Embeddings]:
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((n, 12)).astype(np.float32)
    query = gallery[:, :8] + 0.1 * rng.standard_normal((n, 8)).astype(np.float32)
    ids = np.array([f"i{k}" for k in range(n)])
    return (Embeddings(gallery / np.linalg.norm(gallery, axis=1, keepdims=True), ids, Space("g", 12, True, "g")),
            Embeddings(query / np.linalg.norm(query, axis=1, keepdims=True), ids, Space("q", 8, True, "q")))


def test_psi_transforms_in_its_precision_and_returns_float32(tmp_path):
    gallery, query = _pair()
    psi = CMCETransform(kind="mlp", hidden_dim=32, epochs=2, device="cpu").fit(gallery, query)
    psi.save(tmp_path / "psi")
    fp32 = psi.transform(gallery)
    np.testing.assert_array_equal(CMCETransform.load(tmp_path / "psi", device="cpu").transform(gallery).vectors, fp32.vectors)
    bf16 = CMCETransform.load(tmp_path / "psi", device="cpu", precision="bf16")
    assert bf16.fingerprint() == psi.fingerprint()  # a runtime setting, not part of ψ
    mapped = bf16.transform(gallery)
    assert mapped.vectors.dtype == np.float32 and not np.array_equal(mapped.vectors, fp32.vectors)  # autocast ran
    assert (mapped.vectors * fp32.vectors).sum(axis=1).min() > 0.99
    assert CMCETransform.load(tmp_path / "psi", device="cpu").transform(Embeddings(
        gallery.vectors[:0], gallery.ids[:0], gallery.space)).vectors.shape == (0, 8)


def test_psi_refuses_fp16_on_the_cpu_before_fitting():
    gallery, query = _pair()
    psi = CMCETransform(kind="linear", epochs=1, device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        psi.fit(gallery, query)
