"""ψ and compatibility-trained query models on an explicit device (issue 22): the CPU run of the default, bf16
autocast close to it, banks and heads on the device, the models back on the CPU, numpy float32 results."""
from __future__ import annotations

import numpy as np
import torch

from asymret.compat import CMCETransform
from asymret.compat.query_train import train_compatible_query
from asymret.core.device import module_device
from asymret.core.space import Embeddings, Space
from asymret.encoders import create_encoder
from asymret.store.embeddings import EmbeddingStore
from asymret.training import TrainConfig


def _pair(n: int = 96, seed: int = 0) -> tuple[Embeddings, Embeddings]:
    rng = np.random.default_rng(seed)
    gallery = rng.standard_normal((n, 12)).astype(np.float32)
    query = gallery[:, :8] + 0.1 * rng.standard_normal((n, 8)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    ids = np.array([f"i{k}" for k in range(n)])
    return Embeddings(gallery, ids, Space("g", 12, True, "g")), Embeddings(query, ids, Space("q", 8, True, "q"))


def test_psi_on_an_explicit_cpu_and_in_bf16():
    gallery, query = _pair()
    default = CMCETransform(kind="mlp", hidden_dim=32, epochs=3).fit(gallery, query)
    cpu = CMCETransform(kind="mlp", hidden_dim=32, epochs=3, device="cpu").fit(gallery, query)
    assert default.fingerprint() == cpu.fingerprint()
    assert module_device(cpu.net) == torch.device("cpu")
    assert "device" not in cpu.config()["train"]
    bf16 = CMCETransform(kind="mlp", hidden_dim=32, epochs=3, device="cpu", precision="bf16").fit(gallery, query)
    mapped, mapped16 = cpu.transform(gallery), bf16.transform(gallery)
    assert mapped16.vectors.dtype == np.float32
    assert (mapped.vectors * mapped16.vectors).sum(axis=1).mean() > 0.95  # trained in bf16: close, not equal


def test_a_bank_method_on_an_explicit_cpu(tmp_path, tiny_train):
    data = tiny_train.subset(np.arange(64))
    teacher = create_encoder("convnet-xs", embedding_dim=8, seed=5)
    store = EmbeddingStore(tmp_path, device="cpu")
    students = []
    for device in ("auto", "cpu"):
        student = create_encoder("convnet-xs", embedding_dim=8, seed=6)
        train_compatible_query("csd", student, data, teacher, TrainConfig(epochs=1, batch_size=16, device=device, workers=0), store=store)
        students.append(student)
    assert students[0].fingerprint() == students[1].fingerprint()
    assert module_device(students[1]) == torch.device("cpu") and module_device(teacher) == torch.device("cpu")
