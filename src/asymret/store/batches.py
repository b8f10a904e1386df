"""One batch of the embedding store as every extraction engine computes it: the store's local engine
(:func:`local_batches`, this process) and the Ray engine's actors (:mod:`.ray_engine`) both run these, so the two
compute the same numbers from the same batches."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..data.batches import load_batch
from ..data.dataset import ImageDataset
from ..encoders.encoder import Encoder
from ..encoders.local import LocalSpec, local_descriptors
from ..encoders.onnx import onnx_forward

__all__ = ["BatchResult", "make_forward", "embed_batch", "local_batches"]

#: an engine's answer for one batch: vectors of the readable images, their rows, (id, reason) of the unreadable
BatchResult = tuple[np.ndarray, list[int], list[tuple[str, str]]]


def make_forward(encoder: Encoder, output: str, runtime: str, onnx_cache: Path):
    """The batch function of one store output: preprocessed tensor → vectors tensor."""
    if output == "embedding":
        return onnx_forward(encoder, onnx_cache) if runtime == "onnx" else encoder
    if output == "pooled":
        return encoder.pooled
    spec = LocalSpec.from_output(output)
    return lambda batch: local_descriptors(encoder, batch, spec)


def embed_batch(encoder: Encoder, forward, dataset: ImageDataset, rows: np.ndarray) -> BatchResult:
    """One batch as every engine computes it: load (skipping unreadable images), preprocess, forward."""
    images, kept, bad = load_batch(dataset, rows)
    if not len(images):
        return np.zeros((0, 0), np.float32), [], bad
    with torch.no_grad():
        return forward(encoder.preprocess(images)).float().numpy(), list(kept), bad


def local_batches(encoder: Encoder, dataset: ImageDataset, output: str, runtime: str, onnx_cache: Path,
                  batches: list[np.ndarray]) -> Iterator[BatchResult]:
    """The local engine: the batches in this process, in order."""
    encoder.eval()
    forward = make_forward(encoder, output, runtime, onnx_cache)
    for rows in batches:
        yield embed_batch(encoder, forward, dataset, rows)
