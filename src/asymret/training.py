"""The one training loop.  Encoders, CMCE transformations and compatibility-trained query models all train here.

A caller supplies the parameters to optimise, a function that turns a batch into a loss, and a function that
yields an epoch's batches; the loop owns the optimiser, the schedule, seeding, progress and the loss history.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .core.device import autocast, grad_scaler, resolve_device, resolve_precision
from .core.progress import log, progress_bar

#: where and how a run computes, not what it learns: left out of :meth:`TrainConfig.to_dict` (the record kept with a
#: trained model, part of its fingerprint), so a model trained on a GPU is the same recipe as one trained on a CPU
RUNTIME_FIELDS = ("device", "precision", "workers")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # adamw | sgd
    schedule: str = "cosine"  # cosine | constant
    warmup_epochs: float = 0.0
    seed: int = 0
    m_per_class: int = 0  # > 0: class-balanced batches of m images per class (metric learning with few images per class)
    device: str = "auto"  # auto | cpu | cuda | cuda:N (asymret.core.device)
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 with a grad scaler, CUDA only)
    workers: int | None = None  # image-decoding threads when images are read (None: from the cores)

    def to_dict(self) -> dict[str, Any]:
        """The recipe (without the runtime fields: :data:`RUNTIME_FIELDS`)."""
        return {key: value for key, value in asdict(self).items() if key not in RUNTIME_FIELDS}

    def torch_device(self) -> torch.device:
        """The resolved device (ValueError in one line for a device that is not there)."""
        return resolve_device(self.device)


@dataclass
class TrainHistory:
    epoch_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"epoch_losses": self.epoch_losses, "seconds": self.seconds}


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed Python's, numpy's and torch's global generators for the block, then restore their previous states.

    Training is reproducible from its seed, and a caller's own random streams are left where they were.
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    # torch.manual_seed reseeds the GPUs' generators too: keep theirs as well once CUDA is up (forking them would
    # otherwise start CUDA in a CPU-only run)
    gpus = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=gpus):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def batch_indices(n: int, batch_size: int, generator: torch.Generator, shuffle: bool = True, drop_last: bool = True) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    return [order[i : i + batch_size] for i in range(0, stop, batch_size)]


def epoch_batches(labels: np.ndarray | torch.Tensor | int, config: TrainConfig) -> Callable[[int, torch.Generator], list]:
    """The batches of one epoch, as the training loop asks for them: shuffled rows, or — with
    ``config.m_per_class`` — class-balanced batches (pytorch-metric-learning's ``MPerClassSampler``: m images of
    each of batch_size/m classes, for as many rows as the data has).  ``labels`` may be a row count when m is 0."""
    if not config.m_per_class:
        n = labels if isinstance(labels, int) else len(labels)
        return lambda epoch, generator: batch_indices(n, config.batch_size, generator)
    from pytorch_metric_learning.samplers import MPerClassSampler

    if isinstance(labels, int):
        raise ValueError("class-balanced batches (m_per_class) need the labels")
    labels = np.asarray(labels)
    if config.batch_size % config.m_per_class:
        raise ValueError(f"batch_size {config.batch_size} must be a multiple of m_per_class {config.m_per_class}")
    classes = len(np.unique(labels))
    # a small dataset cannot fill a batch with m images of batch_size/m classes: use fewer classes per batch
    batch_size = min(config.batch_size, config.m_per_class * classes)

    def batches(epoch: int, generator: torch.Generator) -> list[torch.Tensor]:
        # the sampler draws from numpy's global generator, which the loop seeds (and restores afterwards)
        sampler = MPerClassSampler(labels, m=config.m_per_class, batch_size=batch_size, length_before_new_iter=max(len(labels), batch_size))
        rows = torch.as_tensor(list(iter(sampler)), dtype=torch.long)
        return [rows[i : i + batch_size] for i in range(0, len(rows) - batch_size + 1, batch_size)]

    return batches


def train(
    parameters: Iterable[nn.Parameter],
    compute_loss: Callable[[Any], torch.Tensor],
    epoch_batches: Callable[[int, torch.Generator], Sequence[Any]],
    config: TrainConfig,
    modules: Sequence[nn.Module] = (),
    description: str = "train",
) -> TrainHistory:
    """Run ``config.epochs`` epochs of ``compute_loss`` over ``epoch_batches(epoch, generator)``.

    ``modules`` are switched to train mode for the loop and back to eval mode after it.  The caller puts the
    parameters and its data on ``config.device`` (:func:`asymret.core.device.on_device`); the loop runs
    ``compute_loss`` under ``config.precision``'s autocast and scales the loss for fp16.
    """
    with seeded(config.seed):
        return _train(parameters, compute_loss, epoch_batches, config, modules, description)


def _train(parameters, compute_loss, epoch_batches, config: TrainConfig, modules, description: str) -> TrainHistory:
    # a CPU generator on every device: the batches (row indices) are the same on a GPU; callers move them
    generator = torch.Generator().manual_seed(config.seed)
    params = [p for p in parameters if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: no parameter requires grad")
    device = config.torch_device()
    precision = resolve_precision(config.precision, device)
    misplaced = [p for p in params if p.device.type != device.type]
    if misplaced:
        raise ValueError(f"{description}: {len(misplaced)} parameters are on {misplaced[0].device}, the run on {device}")
    scaler = grad_scaler(device, precision)
    if config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    elif config.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay, nesterov=True)
    else:
        raise ValueError(f"unknown optimizer {config.optimizer!r}")
    history = TrainHistory()
    first = epoch_batches(0, generator)
    steps_per_epoch = max(1, len(first))
    total_steps = steps_per_epoch * config.epochs
    warmup = int(config.warmup_epochs * steps_per_epoch)

    def lr_at(step: int) -> float:
        if warmup and step < warmup:
            return config.lr * (step + 1) / warmup
        if config.schedule == "constant":
            return config.lr
        progress = (step - warmup) / max(1, total_steps - warmup)
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    for module in modules:
        module.train()
    start, step = time.perf_counter(), 0
    try:
        with progress_bar(total_steps, description) as advance:
            for epoch in range(config.epochs):
                batches = first if epoch == 0 else epoch_batches(epoch, generator)
                total, count = 0.0, 0
                for batch in batches:
                    for group in optimizer.param_groups:
                        group["lr"] = lr_at(step)
                    with autocast(device, precision):
                        loss = compute_loss(batch)
                    loss = loss.float()
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"{description}: loss became {float(loss)} at epoch {epoch}, step {step}")
                    optimizer.zero_grad(set_to_none=True)
                    if scaler is None:
                        loss.backward()
                        optimizer.step()
                    else:
                        scaler.scale(loss).backward()
                        scaler.step(optimizer)
                        scaler.update()
                    total, count, step = total + float(loss.detach()), count + 1, step + 1
                    advance(1)
                history.epoch_losses.append(total / max(1, count))
    finally:
        for module in modules:
            module.eval()
    history.seconds = time.perf_counter() - start
    if history.epoch_losses:
        log.info("%s: %d epochs in %.1fs, loss %.4f → %.4f", description, config.epochs, history.seconds,
                 history.epoch_losses[0], history.epoch_losses[-1])
    return history
