"""Where onnxruntime runs (issue 22): the CUDA provider on a CUDA device when onnxruntime has it, else the CPU
provider; an explicit CUDA device without the provider is one line.  This machine has no GPU: the device and the
providers onnxruntime offers are faked, and the sessions are recorded (then run on the CPU)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import asymret.encoders.onnx as onnx
import asymret.store.embeddings as store_module
from asymret.core.device import resolve_device
from asymret.encoders import create_encoder
from asymret.encoders.onnx import CPU_PROVIDER, CUDA_PROVIDER, OnnxEncoder, export_onnx, load_query_model, onnx_providers
from asymret.store import EmbeddingStore
from asymret.store.query import embed_images

CUDA_FIRST = [CUDA_PROVIDER, "CPUExecutionProvider"]


def _fake_gpu(monkeypatch, providers: list[str]) -> list[list]:
    """A machine with GPUs (``auto`` and ``cuda[:N]`` resolve to them) whose onnxruntime offers ``providers``; returns
    the providers each new session was asked for (the sessions themselves run on the CPU)."""

    def resolve(device="auto"):
        spec = str(device or "auto").strip().lower()
        if spec == "auto" or spec.startswith("cuda"):
            return torch.device("cuda", int(spec.partition(":")[2] or 0))
        return resolve_device(device)

    sessions: list[list] = []
    real_session = onnx._session

    def recording(path, wanted):
        sessions.append(wanted)
        return real_session(path, [CPU_PROVIDER])

    monkeypatch.setattr(onnx, "resolve_device", resolve)
    monkeypatch.setattr(store_module, "resolve_device", resolve)
    monkeypatch.setattr("onnxruntime.get_available_providers", lambda: list(providers))
    monkeypatch.setattr(onnx, "_session", recording)
    return sessions


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_arrays):
    encoder = create_encoder("convnet-xs", embedding_dim=16, input_size=28, seed=0)
    images = [image if image.ndim == 3 else image[..., None] for image in tiny_arrays["images"][:6]]
    folder = export_onnx(encoder, tmp_path_factory.mktemp("onnx") / "q")
    return encoder, folder, images


def test_the_cpu_path_is_unchanged(exported):
    _, folder, images = exported
    assert onnx_providers("cpu") == [CPU_PROVIDER]
    if not torch.cuda.is_available():  # this machine: auto is the CPU
        assert onnx_providers("auto") == onnx_providers(None) == [CPU_PROVIDER]
    model = load_query_model(folder, device="cpu")
    assert model.providers == [CPU_PROVIDER] and model._session.get_providers() == [CPU_PROVIDER]
    assert model.embed_images(images).shape == (6, 16)


def test_a_cuda_device_gets_the_cuda_provider_when_onnxruntime_has_it(monkeypatch, exported):
    _, folder, images = exported
    sessions = _fake_gpu(monkeypatch, CUDA_FIRST)
    assert onnx_providers("cuda:1") == [(CUDA_PROVIDER, {"device_id": 1}), CPU_PROVIDER]
    assert onnx_providers("auto") == onnx_providers("cuda") == [(CUDA_PROVIDER, {"device_id": 0}), CPU_PROVIDER]
    assert onnx_providers("cpu") == [CPU_PROVIDER]  # a GPU machine still runs on the CPU when asked to
    model = load_query_model(folder, device="cuda:1")  # the CLI's and the service's way in
    assert isinstance(model, OnnxEncoder) and sessions[-1] == [(CUDA_PROVIDER, {"device_id": 1}), CPU_PROVIDER]
    assert model.embed_images(images).shape == (6, 16)


def test_an_explicit_cuda_device_without_the_cuda_provider_is_one_line(monkeypatch, exported, tmp_path):
    _, folder, _ = exported
    sessions = _fake_gpu(monkeypatch, ["AzureExecutionProvider", CPU_PROVIDER])
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match=r"has no CUDA provider for device cuda:\d .*install onnxruntime-gpu") as error:
            onnx_providers(device)
        assert "\n" not in str(error.value)
        with pytest.raises(ValueError, match="has no CUDA provider"):
            load_query_model(folder, device=device)
        with pytest.raises(ValueError, match="has no CUDA provider"):
            EmbeddingStore(tmp_path, runtime="onnx", device=device)
    assert sessions == []  # refused before any session starts
    assert onnx_providers("auto") == [CPU_PROVIDER]  # auto falls back to the CPU, as before
    assert load_query_model(folder, device="auto").providers == [CPU_PROVIDER]
    EmbeddingStore(tmp_path, runtime="onnx", device="auto")
    EmbeddingStore(tmp_path, runtime="torch", device="cuda")  # the torch runtime does not need onnxruntime's provider


def test_the_store_runs_its_onnx_export_on_the_devices_provider(monkeypatch, exported, tmp_path, tiny_dataset):
    encoder, _, images = exported
    data = tiny_dataset.subset(np.arange(10))
    on_cpu = EmbeddingStore(tmp_path / "cpu", shard_size=4, batch_size=4, runtime="onnx", device="cpu").get(encoder, data)
    sessions = _fake_gpu(monkeypatch, CUDA_FIRST)
    store = EmbeddingStore(tmp_path / "gpu", shard_size=4, batch_size=4, runtime="onnx", device="cuda:1")
    on_gpu = store.get(encoder, data)  # extraction: the export's session on cuda:1's provider
    parity, *used = sessions  # the export measures its parity with torch on the CPU, then runs where it is asked
    assert parity == [CPU_PROVIDER] and used and all(wanted == [(CUDA_PROVIDER, {"device_id": 1}), CPU_PROVIDER] for wanted in used)
    np.testing.assert_allclose(on_gpu.vectors, on_cpu.vectors, atol=1e-5)  # (run on the CPU here: the same numbers)
    count = len(sessions)
    assert embed_images(store, encoder, images).shape == (6, 16)  # query embedding through the store: the same session
    assert len(sessions) == count
