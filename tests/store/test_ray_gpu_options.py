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
