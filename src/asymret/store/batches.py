"""One batch of the embedding store as every extraction engine computes it: the store's local engine
(:func:`local_batches`, this process) and the Ray engine's actors (:mod:`.ray_engine`) both run these, so the two
compute the same numbers from the same batches."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..core.device import autocast, to_device
from ..data.batches import load_batch, preprocessed_batches
from ..data.dataset import ImageDataset
from ..encoders.encoder import Encoder
from ..encoders.local import LocalSpec, local_descriptors
from ..encoders.onnx import onnx_forward

__all__ = ["BatchResult", "make_forward", "embed_batch", "local_batches"]

#: an engine's answer for one batch: vectors of the readable images, their rows, (id, reason) of the unreadable
BatchResult = tuple[np.ndarray, list[int], list[tuple[str, str]]]


def make_forward(encoder: Encoder, output: str, runtime: str, onnx_cache: Path, onnx_device: Any = "cpu"):
    """The batch function of one store output: preprocessed tensor → vectors tensor (``onnx_device``: where the onnx
    runtime runs the model; its batches stay CPU tensors)."""
    if output == "embedding":
        return onnx_forward(encoder, onnx_cache, onnx_device) if runtime == "onnx" else encoder
    if output == "pooled":
        return encoder.pooled
    spec = LocalSpec.from_output(output)
    return lambda batch: local_descriptors(encoder, batch, spec)


def forward_batch(forward, batch: torch.Tensor, device: torch.device | None = None, precision: str = "fp32") -> np.ndarray:
    """A preprocessed (CPU) batch through ``forward`` on ``device`` (the model is there) under ``precision``'s
    autocast: float32 numpy vectors back on the CPU.  A torch.Tensor from onnxruntime's forward is a CPU one."""
    device = device or torch.device("cpu")
    with torch.no_grad(), autocast(device, precision):
        return forward(to_device(batch, device)).float().cpu().numpy()


def embed_batch(encoder: Encoder, forward, dataset: ImageDataset, rows: np.ndarray, device: torch.device | None = None,
                precision: str = "fp32") -> BatchResult:
    """One batch as every engine computes it: load (skipping unreadable images), preprocess, forward."""
    images, kept, bad = load_batch(dataset, rows)
    if not len(images):
        return np.zeros((0, 0), np.float32), [], bad
    return forward_batch(forward, encoder.preprocess(images), device, precision), list(kept), bad


def local_batches(encoder: Encoder, dataset: ImageDataset, output: str, runtime: str, onnx_cache: Path,
                  batches: list[np.ndarray], device: torch.device | None = None, precision: str = "fp32",
                  workers: int | None = 0, onnx_device: Any = "cpu") -> Iterator[BatchResult]:
    """The local engine: the batches in this process, in order (the encoder already on ``device``; the onnx runtime
    on ``onnx_device``); ``workers`` threads decode and preprocess the images ahead of the model (the same tensors as
    this thread makes)."""
    encoder.eval()
    forward = make_forward(encoder, output, runtime, onnx_cache, onnx_device)
    for tensor, kept, bad in preprocessed_batches(dataset, batches, encoder.preprocess, workers):
        if tensor is None:
            yield np.zeros((0, 0), np.float32), [], bad
        else:
            yield forward_batch(forward, tensor, device, precision), list(kept), bad
