"""The Ray engine's actors ask Ray for a GPU when the device is one (issue 22, item 4) — checked on the options the
actor pool is created with (Ray itself faked: no cluster, no GPU needed)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")  # ray.data: the engine's API

from asymret.encoders import create_encoder  # noqa: E402
from asymret.store.ray_engine import EmbedActor, ray_batches  # noqa: E402


@pytest.fixture
def fake_ray(monkeypatch):
    """A Ray with ``resources`` that records what ``map_batches`` is asked for instead of running it."""
    seen: dict = {}
    resources = {"CPU": 4.0, "GPU": 2.0}

    def map_batches(fn, **options):
        seen.update(options, fn=fn)
        return SimpleNamespace(iter_rows=lambda: iter(()))

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "cluster_resources", lambda: dict(resources))
    monkeypatch.setattr(ray, "put", lambda value: value)
    monkeypatch.setattr(ray.data, "from_items", lambda items, **_: SimpleNamespace(map_batches=map_batches))
    return seen, resources


def _run(tmp_path, tiny_dataset, device) -> None:
    encoder = create_encoder("convnet-xs", embedding_dim=8, seed=0)
    list(ray_batches(encoder, tiny_dataset, "embedding", "torch", tmp_path, [], threads_per_actor=1, device=device))


def test_gpu_actors_ask_for_one_gpu_each(fake_ray, tmp_path, tiny_dataset):
    seen, _ = fake_ray
    _run(tmp_path, tiny_dataset, torch.device("cuda", 0))
    assert seen["fn"] is EmbedActor and seen["num_gpus"] == 1
    assert seen["fn_constructor_kwargs"]["device"] == "cuda"
    assert seen["compute"].max_size == 2  # one actor per GPU, though the CPUs would allow 4


@pytest.mark.parametrize("device", [None, torch.device("cpu")])
def test_cpu_actors_ask_for_no_gpu(fake_ray, tmp_path, tiny_dataset, device):
    seen, _ = fake_ray
    _run(tmp_path, tiny_dataset, device)
    assert "num_gpus" not in seen and seen["fn_constructor_kwargs"]["device"] == "cpu"
    assert seen["compute"].max_size == 4


def test_a_cluster_without_gpus_is_refused_in_one_line(fake_ray, tmp_path, tiny_dataset):
    _, resources = fake_ray
    resources.pop("GPU")
    with pytest.raises(ValueError, match="no GPU"):
        _run(tmp_path, tiny_dataset, torch.device("cuda", 0))


def _run_onnx(tmp_path, tiny_dataset, onnx_device) -> None:
    encoder = create_encoder("convnet-xs", embedding_dim=8, seed=0)
    list(ray_batches(encoder, tiny_dataset, "embedding", "onnx", tmp_path, [], threads_per_actor=1, device=None,
                     onnx_device=onnx_device))


def test_onnx_actors_ask_for_a_gpu_when_the_cuda_provider_is_chosen(fake_ray, tmp_path, tiny_dataset, monkeypatch):
    """Issue 22 audit, open item 1: the onnx runtime on a GPU — Ray gives each actor one, it runs the CUDA provider
    there and keeps its batches on the CPU (onnxruntime takes numpy)."""
    import asymret.store.ray_engine as ray_engine
    from asymret.encoders.onnx import CPU_PROVIDER, CUDA_PROVIDER

    asked = []
    monkeypatch.setattr(ray_engine, "onnx_providers",
                        lambda device: asked.append(device) or [(CUDA_PROVIDER, {"device_id": 0}), CPU_PROVIDER])
    seen, _ = fake_ray
    _run_onnx(tmp_path, tiny_dataset, "cuda")
    assert asked == ["cuda"]
    assert seen["fn"] is EmbedActor and seen["num_gpus"] == 1
    kwargs = seen["fn_constructor_kwargs"]
    assert kwargs["runtime"] == "onnx" and kwargs["onnx_device"] == "cuda" and kwargs["device"] == "cpu"
    assert seen["compute"].max_size == 2  # one actor per GPU, as the torch runtime on a GPU


def test_onnx_actors_on_a_gpu_cluster_without_gpus_are_refused(fake_ray, tmp_path, tiny_dataset, monkeypatch):
    import asymret.store.ray_engine as ray_engine
    from asymret.encoders.onnx import CPU_PROVIDER, CUDA_PROVIDER

    monkeypatch.setattr(ray_engine, "onnx_providers", lambda device: [(CUDA_PROVIDER, {"device_id": 0}), CPU_PROVIDER])
    _, resources = fake_ray
    resources.pop("GPU")
    with pytest.raises(ValueError, match="no GPU for device cuda"):
        _run_onnx(tmp_path, tiny_dataset, "cuda")


@pytest.mark.parametrize("onnx_device", ["cpu", "auto"])
def test_onnx_actors_on_the_cpu_ask_for_no_gpu(fake_ray, tmp_path, tiny_dataset, onnx_device):
    """The CPU provider (this machine has no GPU: ``auto`` is the CPU): the options of before."""
    seen, _ = fake_ray
    _run_onnx(tmp_path, tiny_dataset, onnx_device)
    assert "num_gpus" not in seen
    kwargs = seen["fn_constructor_kwargs"]
    assert kwargs["onnx_device"] == "cpu" and kwargs["device"] == "cpu"
    assert seen["compute"].max_size == 4


def test_an_onnx_gpu_actor_runs_the_cuda_provider_on_cpu_batches(monkeypatch, tmp_path, tiny_dataset):
    """``EmbedActor`` itself (no Ray needed): ``onnx_device`` reaches ``make_forward``, the model and the batches
    stay on the CPU."""
    import asymret.store.batches as batches

    made = []
    monkeypatch.setattr(batches, "make_forward", lambda *args: made.append(args) or (lambda batch: batch))
    monkeypatch.setattr(torch, "set_num_threads", lambda threads: None)  # this test process keeps its threads
    encoder = create_encoder("convnet-xs", embedding_dim=8, seed=0)
    actor = EmbedActor(encoder, tiny_dataset, "embedding", "onnx", str(tmp_path), 1, device="cpu", onnx_device="cuda")
    assert made[0][2:] == ("onnx", tmp_path, "cuda")
    assert actor.device == torch.device("cpu")
    cpu = EmbedActor(encoder, tiny_dataset, "embedding", "onnx", str(tmp_path), 1)
    assert made[1][2:] == ("onnx", tmp_path, "cpu") and cpu.device == torch.device("cpu")
