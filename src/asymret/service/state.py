"""What the search service holds while it runs: the served index (hot-swappable), the query model behind a
micro-batcher, and the gallery's images for thumbnails.

Hot swap: a new index version is loaded and checked completely in a background thread, then replaces the served
one with a single reference assignment under a lock.  A request takes one :class:`ServedIndex` snapshot at its
start and uses only it, so it is answered entirely from the old version or entirely from the new one — never from
a half-loaded index — and no request waits for a load.
"""
from __future__ import annotations

import io
import logging
import os
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from queue import Empty, Queue
from typing import Any, Callable, Sequence

import numpy as np

from ..core.manifest import read_manifest
from ..core.space import Space
from ..index import GalleryIndexBase, load_index

log = logging.getLogger(__name__)

__all__ = ["ServedIndex", "IndexSlot", "MicroBatcher", "GalleryImages", "png_bytes"]


@dataclass(frozen=True)
class ServedIndex:
    """One loaded index version: what a request searches from start to end."""

    index: GalleryIndexBase
    path: str
    version: int
    loaded_at: float
    manifest_files: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"version": self.version, "path": self.path, "items": len(self.index), "space": self.index.space.fingerprint,
                "dim": self.index.space.dim, "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at))}


class IndexSlot:
    """The served index and its background replacement.

    ``swap(path)`` starts loading ``path`` in a thread (refusing an index of another space than ``space``) and
    returns at once; the served index changes only when the new one is fully loaded.  One load at a time.
    """

    def __init__(self, space: Space, loader: Callable[[str, Space], GalleryIndexBase] | None = None) -> None:
        self.space = space
        self._load = loader or (lambda path, space: load_index(path, expect_space=space))
        self._lock = threading.Lock()
        self._current: ServedIndex | None = None
        self._loading: str | None = None
        self._last_error: str | None = None
        self._versions = 0
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> ServedIndex | None:
        return self._current  # one reference read: atomic

    def load_now(self, path: str | os.PathLike) -> ServedIndex:
        """Load ``path`` in this thread and serve it (start-up)."""
        served = self._build(str(path))
        with self._lock:
            self._current = served
        return served

    def swap(self, path: str | os.PathLike) -> bool:
        """Start replacing the served index by ``path`` in the background; False if a load is already running."""
        with self._lock:
            if self._loading is not None:
                return False
            self._loading, self._last_error = str(path), None
        self._thread = threading.Thread(target=self._swap, args=(str(path),), name="index-swap", daemon=True)
        self._thread.start()
        return True

    def wait(self, timeout: float | None = None) -> None:
        """Block until a running swap has finished (tests, the CLI)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def status(self) -> dict[str, Any]:
        current = self._current
        return {"serving": current.describe() if current else None, "loading": self._loading, "last_error": self._last_error}

    def _swap(self, path: str) -> None:
        try:
            served = self._build(path)
        except Exception as error:  # a bad new version must leave the served one in place
            log.warning("index swap to %s failed: %s", path, error)
            with self._lock:
                self._loading, self._last_error = None, f"{type(error).__name__}: {error}"
            return
        with self._lock:
            self._current, self._loading = served, None
        log.info("now serving index version %d from %s (%d items)", served.version, path, len(served.index))

    def _build(self, path: str) -> ServedIndex:
        index = self._load(path, self.space)
        try:
            files = read_manifest(path).get("files", {})
        except (FileNotFoundError, ValueError):
            files = {}
        with self._lock:
            self._versions += 1
            version = self._versions
        return ServedIndex(index, path, version, time.time(), files)


class MicroBatcher:
    """Runs ``function(items) -> results`` on batches of concurrently submitted items in one worker thread.

    A request's item waits at most ``max_wait`` seconds for others to join it (up to ``max_batch``), so concurrent
    image queries share one forward pass — the query model runs batched, not once per request per thread
    (2 cores oversubscribed by 32 concurrent forward passes answer slower than one batch of 32).
    """

    def __init__(self, function: Callable[[list[Any]], Sequence[Any]], max_batch: int = 32, max_wait: float = 0.002) -> None:
        self.function, self.max_batch, self.max_wait = function, max_batch, max_wait
        self._queue: Queue[tuple[Any, Future]] = Queue()
        self._thread = threading.Thread(target=self._work, name="micro-batcher", daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> Future:
        future: Future = Future()
        self._queue.put((item, future))
        return future

    def __call__(self, item: Any, timeout: float | None = 60.0) -> Any:
        return self.submit(item).result(timeout)

    def _work(self) -> None:
        while True:
            batch = [self._queue.get()]
            deadline = time.perf_counter() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.perf_counter())))
                except Empty:
                    break
            try:
                results = self.function([item for item, _ in batch])
            except Exception as error:  # the whole batch failed: every waiting request learns why
                for _, future in batch:
                    future.set_exception(error)
                continue
            for (_, future), result in zip(batch, results):
                future.set_result(result)


class GalleryImages:
    """Gallery item id → thumbnail PNG, from the dataset the index was built on (its ids are the index's ids)."""

    def __init__(self, dataset, size: int = 96) -> None:
        self.dataset = dataset
        self.size = size
        self._rows = {item: row for row, item in enumerate(dataset.ids.tolist())}
        self.thumbnail = lru_cache(maxsize=4096)(self._thumbnail)

    def __contains__(self, item: str) -> bool:
        return item in self._rows

    def _thumbnail(self, item: str) -> bytes:
        return png_bytes(self.dataset.load(self._rows[item]), self.size)


def png_bytes(pixels: np.ndarray, size: int | None = None) -> bytes:
    """HxW or HxWxC uint8 pixels as PNG bytes; with ``size``, resized so that the longer side is ``size``."""
    from PIL import Image

    image = Image.fromarray(pixels[:, :, 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels)
    if size is not None:
        scale = size / max(image.size)
        # small images (28-px Fashion-MNIST) are enlarged without blurring, large ones shrunk smoothly
        resample = Image.NEAREST if scale > 1 else Image.BILINEAR
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def index_directory(path: str | os.PathLike) -> Path:
    """``path`` as an index folder, or a clear error (used by the admin endpoint before a background load)."""
    directory = Path(path)
    if not (directory / "manifest.json").is_file():
        raise FileNotFoundError(f"{directory} is not an index folder (no manifest.json)")
    return directory


def as_float_matrix(value: Any) -> np.ndarray:
    """A JSON embedding (one vector or a list of vectors) as float32 (n, d), or ValueError saying what is wrong.
    Dimension, NaN/inf and unit length are the index's own query checks."""
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError, OverflowError):
        raise ValueError("embedding must be a list of numbers (or a list of such lists)") from None
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"embedding must be one vector or a non-empty list of vectors, got shape {list(array.shape)}")
    return array
