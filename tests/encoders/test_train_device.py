"""Training on an explicit device and precision (issue 22): an explicit CPU is the default run bit for bit,
decoding threads do not change what is learned, bf16 autocast trains, the model comes back on the CPU and the
recipe recorded with it (its fingerprint) does not name the device."""
from __future__ import annotations

import copy

import numpy as np
import torch

from asymret.core.device import module_device
from asymret.encoders import create_encoder, train_encoder
from asymret.training import TrainConfig


def _trained(dataset, **config):
    encoder = create_encoder("convnet-xs", embedding_dim=8, seed=3)
    history = train_encoder(encoder, dataset, TrainConfig(epochs=2, batch_size=16, lr=3e-3, seed=0, **config))
    return encoder, history


def test_an_explicit_cpu_trains_the_default_model(tiny_train):
    data = tiny_train.subset(np.arange(64))
    default, history = _trained(data)
    explicit, history_cpu = _trained(data, device="cpu", precision="fp32", workers=0)
    assert default.fingerprint() == explicit.fingerprint()
    assert history.epoch_losses == history_cpu.epoch_losses
    assert module_device(explicit) == torch.device("cpu")
    assert not {"device", "precision", "workers"} & set(explicit.config["training"])


def test_decoding_threads_train_the_same_model(image_dir_dataset):
    data = image_dir_dataset.subset(np.arange(1, len(image_dir_dataset)))  # the readable images
    one, _ = _trained(data, device="cpu", workers=0)
    threaded, _ = _trained(data, device="cpu", workers=2)
    assert one.fingerprint() == threaded.fingerprint()


def test_bf16_autocast_trains_on_cpu(tiny_train):
    data = tiny_train.subset(np.arange(64))
    encoder, history = _trained(data, device="cpu", precision="bf16")
    assert all(np.isfinite(history.epoch_losses))
    assert all(p.dtype == torch.float32 for p in encoder.parameters())  # master weights stay float32
    assert encoder.classifier.weight.device == torch.device("cpu")
    before = copy.deepcopy(encoder)
    train_encoder(encoder, data, TrainConfig(epochs=1, batch_size=16, device="cpu", precision="bf16"), freeze_backbone=True,
                  center=True)
    assert encoder.fingerprint() != before.fingerprint() and len(encoder.config["center"]) == 8
