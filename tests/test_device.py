"""One device setting (core/device.py) and the training loop's device and precision, on a machine without a GPU
(``torch.cuda.is_available`` is forced False, so these hold on a GPU machine too)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from asymret.core.device import (
    autocast,
    grad_scaler,
    module_device,
    on_device,
    resolve_device,
    resolve_precision,
    resolve_workers,
)
from asymret.training import TrainConfig, batch_indices, train


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def test_explicit_cpu_and_auto_without_a_gpu(no_gpu):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert TrainConfig().torch_device() == torch.device("cpu")


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_a_missing_gpu_is_one_clear_line(no_gpu, spec):
    with pytest.raises(ValueError) as error:
        resolve_device(spec)
    message = str(error.value)
    assert "\n" not in message
    assert spec in message and "not available" in message and "available: cpu" in message


def test_an_unknown_device_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown device 'gpu': use one of auto, cpu, cuda, cuda:N"):
        resolve_device("gpu")


def test_precisions():
    cpu = torch.device("cpu")
    assert resolve_precision(None, cpu) == "fp32" and resolve_precision("BF16", cpu) == "bf16"
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", cpu)
    with pytest.raises(ValueError, match="unknown precision 'half'"):
        resolve_precision("half", cpu)
    assert grad_scaler(cpu, "bf16") is None and grad_scaler(cpu, "fp32") is None
    with autocast(cpu, "bf16"):
        assert (torch.ones(2, 3) @ torch.ones(3, 2)).dtype == torch.bfloat16
    with autocast(cpu, "fp32"):
        assert (torch.ones(2, 3) @ torch.ones(3, 2)).dtype == torch.float32


def test_workers():
    assert resolve_workers(None) >= 0 and resolve_workers(3) == 3 and resolve_workers(0) == 0
    with pytest.raises(ValueError, match="workers must be 0"):
        resolve_workers(-1)


def test_on_device_brings_modules_back():
    module = nn.Linear(3, 2)
    with on_device(module, None, device=torch.device("cpu")):
        assert module_device(module) == torch.device("cpu")
    assert module_device(module) == torch.device("cpu")
    assert module_device(nn.ReLU()) == torch.device("cpu")


def test_runtime_fields_are_not_part_of_the_recipe():
    """A model trained on a GPU is the same recipe (and fingerprint input) as one trained on the CPU."""
    assert TrainConfig(device="cpu", precision="bf16", workers=3).to_dict() == TrainConfig().to_dict()
    assert not {"device", "precision", "workers"} & set(TrainConfig().to_dict())


def _regression(config: TrainConfig) -> tuple[list[float], torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=generator)
    y = x @ torch.randn(8, 1, generator=generator)
    torch.manual_seed(0)
    model = nn.Linear(8, 1)
    history = train(model.parameters(), lambda rows: ((model(x[rows]) - y[rows]) ** 2).mean(),
                    lambda epoch, gen: batch_indices(len(x), 32, gen), config, modules=[model])
    return history.epoch_losses, model.weight.detach().clone()


def test_the_loop_on_an_explicit_cpu_is_todays_loop(no_gpu):
    base = TrainConfig(epochs=3, lr=0.05, schedule="constant")
    losses_auto, weight_auto = _regression(base)
    losses_cpu, weight_cpu = _regression(TrainConfig(epochs=3, lr=0.05, schedule="constant", device="cpu"))
    assert losses_auto == losses_cpu and torch.equal(weight_auto, weight_cpu)


def test_bf16_autocast_trains_on_cpu():
    losses32, weight32 = _regression(TrainConfig(epochs=6, lr=0.05, schedule="constant", device="cpu"))
    losses16, weight16 = _regression(TrainConfig(epochs=6, lr=0.05, schedule="constant", device="cpu", precision="bf16"))
    assert losses16[-1] < 0.1 * losses16[0]
    assert weight16.dtype == torch.float32  # master weights stay float32 under autocast
    assert torch.allclose(weight16, weight32, atol=0.05)


def test_fp16_on_cpu_is_refused_before_training():
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        _regression(TrainConfig(epochs=1, device="cpu", precision="fp16"))


def test_parameters_on_another_device_are_refused():
    weight = nn.Parameter(torch.zeros(2, device="meta"))
    with pytest.raises(ValueError, match="parameters are on meta, the run on cpu"):
        train([weight], lambda rows: weight.sum(), lambda epoch, gen: [torch.arange(2)], TrainConfig(epochs=1, device="cpu"))


def test_every_result_names_the_cpu_kernels_its_models_were_trained_with():
    """Models trained on AVX2 and AVX-512 hosts differ slightly (docs/RESULTS.md §6): the results say which ran."""
    from asymret.core.machine import machine_description

    machine = machine_description()
    assert machine["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability() != "unknown"
    assert machine["torch_threads"] == torch.get_num_threads()
