"""Reading images in batches for extraction and training (augmentation is in :mod:`asymret.data.augment`).

Unreadable images never stop a job: they come back as (id, reason) failures, are reported and skipped.

Decoding in parallel (:func:`preprocessed_batches`, ``workers`` > 0): a pool of threads decodes and preprocesses
the images of file-backed datasets one by one (Pillow and torch release the GIL while they work) and reads one
batch ahead while the caller's model runs; the batches come back in order, each the same tensor bit for bit as the
main thread makes it (preprocessing an image alone gives the same numbers as in a batch; ``tests/data`` checks it).
In-memory datasets are one fancy index and need no thread.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from ..core.device import resolve_workers
from ..core.progress import log, progress_bar
from .dataset import ArraySource, ImageDataset, ImageLoadError

__all__ = ["load_batch", "load_tensors", "preprocessed_batches"]

#: one preprocessed batch: the tensor of the readable images (None if none was), their rows, (id, reason) failures
Prepared = tuple["torch.Tensor | None", list[int], list[tuple[str, str]]]


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


def _prepare_one(dataset: ImageDataset, row: int, preprocess: Callable[[Any], torch.Tensor]) -> tuple[torch.Tensor | None, str]:
    """One image decoded and preprocessed (a worker thread's task), or (None, reason)."""
    try:
        return preprocess([dataset.load(row)]), ""
    except ImageLoadError as error:
        return None, str(error)


def _prepared(dataset: ImageDataset, rows: Sequence[int], futures: list[Future]) -> Prepared:
    tensors, kept, failed = [], [], []
    for row, future in zip(rows, futures):
        tensor, reason = future.result()
        if tensor is None:
            failed.append((str(dataset.ids[row]), reason))
        else:
            tensors.append(tensor)
            kept.append(int(row))
    return (torch.cat(tensors) if tensors else None), kept, failed


def preprocessed_batches(dataset: ImageDataset, batches: Iterable[Sequence[int]], preprocess: Callable[[Any], torch.Tensor],
                         workers: int | None = 0, ahead: int = 2) -> Iterator[Prepared]:
    """``(tensor, kept rows, failures)`` of each batch of rows, in order.  ``workers`` threads (None: from the
    cores; 0: this thread, as :func:`load_batch` then ``preprocess``) decode and preprocess file images, up to
    ``ahead`` batches before the one being consumed.  The tensors are identical whatever ``workers`` is."""
    workers = resolve_workers(workers)
    if workers == 0 or isinstance(dataset.source, ArraySource):
        for rows in batches:
            images, kept, failed = load_batch(dataset, rows)
            yield (preprocess(images) if len(images) else None), kept, failed
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="asymret-decode") as pool:
        pending: deque[tuple[list[int], list[Future]]] = deque()
        queue = iter(batches)

        def submit() -> bool:
            rows = next(queue, None)
            if rows is None:
                return False
            rows = [int(row) for row in rows]
            pending.append((rows, [pool.submit(_prepare_one, dataset, row, preprocess) for row in rows]))
            return True

        while len(pending) < max(1, ahead) and submit():
            pass
        try:
            while pending:
                rows, futures = pending.popleft()
                submit()
                yield _prepared(dataset, rows, futures)
        finally:  # a consumer that stops early (an error downstream): drop the decoding not started yet
            for _, futures in pending:
                for future in futures:
                    future.cancel()


def load_tensors(dataset: ImageDataset, preprocess: Callable[[Any], torch.Tensor], batch_size: int = 512,
                 workers: int | None = 0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """All readable images of ``dataset`` preprocessed into one tensor, their labels, and the rows kept
    (``workers``: decoding threads, see :func:`preprocessed_batches`; the same tensor whatever their number)."""
    chunks, kept_rows = [], []
    batches = [range(start, min(len(dataset), start + batch_size)) for start in range(0, len(dataset), batch_size)]
    with progress_bar(len(dataset), f"load {dataset.name}") as advance:
        for rows, (tensor, kept, failed) in zip(batches, preprocessed_batches(dataset, batches, preprocess, workers)):
            for item_id, reason in failed:
                log.warning("skipping unreadable image %s: %s", item_id, reason)
            if tensor is not None:
                chunks.append(tensor)
                kept_rows += kept
            advance(len(rows))
    if not chunks:
        raise ValueError(f"no readable image in {dataset.name}")
    rows = np.asarray(kept_rows)
    return torch.cat(chunks), torch.as_tensor(dataset.labels[rows]), rows
