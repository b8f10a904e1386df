"""Reading images in batches for extraction and training (augmentation is in :mod:`asymret.data.augment`).

Unreadable images never stop a job: they come back as (id, reason) failures, are reported and skipped.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np
import torch

from ..core.progress import log, progress_bar
from .dataset import ArraySource, ImageDataset, ImageLoadError

__all__ = ["load_batch", "load_tensors"]


def load_batch(dataset: ImageDataset, rows: Iterable[int]) -> tuple[list[np.ndarray] | np.ndarray, list[int], list[tuple[str, str]]]:
    """Pixels of ``rows``; unreadable images are returned as (id, reason) failures instead of raising.

    In-memory sources answer with one (B, H, W, C) array (one fancy index instead of a Python loop).
    """
    rows = [int(row) for row in rows]
    if isinstance(dataset.source, ArraySource):
        return dataset.source.images[dataset.keys[rows].astype(np.int64)], rows, []
    images, kept, failed = [], [], []
    for row in rows:
        try:
            images.append(dataset.load(int(row)))
            kept.append(int(row))
        except ImageLoadError as error:
            failed.append((str(dataset.ids[row]), str(error)))
    return images, kept, failed


def load_tensors(dataset: ImageDataset, preprocess: Callable[[Any], torch.Tensor], batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """All readable images of ``dataset`` preprocessed into one tensor, their labels, and the rows kept."""
    chunks, kept_rows = [], []
    with progress_bar(len(dataset), f"load {dataset.name}") as advance:
        for start in range(0, len(dataset), batch_size):
            images, kept, failed = load_batch(dataset, range(start, min(len(dataset), start + batch_size)))
            for item_id, reason in failed:
                log.warning("skipping unreadable image %s: %s", item_id, reason)
            if len(images):
                chunks.append(preprocess(images))
                kept_rows += kept
            advance(min(batch_size, len(dataset) - start))
    if not chunks:
        raise ValueError(f"no readable image in {dataset.name}")
    rows = np.asarray(kept_rows)
    return torch.cat(chunks), torch.as_tensor(dataset.labels[rows]), rows
