"""Uploaded images → query vectors without blocking the service: a pixel limit read from the header, decoding and
preprocessing in bounded thread pools off the event loop, only the model's forward pass micro-batched.

An upload's header says how many pixels it has before anything is decoded.  Over the service's limit (default
16.8 M pixels, 4096², well below the library's 89.5 M) it is refused with 413.  Under it, the image is decoded and
preprocessed to the model's input size in a pool: images above ``heavy_pixels`` in a one-thread lane of their own,
the rest in ``workers`` threads — so one large image (seconds of decoding and hundreds of MB) occupies one thread
and never the others, and only as many large images are in memory at once as the heavy lane has threads.  The
micro-batcher then sees small preprocessed tensors only: a batch is never held up by someone else's resize.
"""
from __future__ import annotations

import io
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

import numpy as np

from ..data.dataset import ImageLoadError, ImageTooLargeError, allow_pillow_pixels, max_image_pixels, read_image

__all__ = ["DEFAULT_SERVICE_MAX_PIXELS", "ImageRefused", "ImageWorkers", "preprocessed_forward"]

#: the service's default pixel limit for uploads: 4096 × 4096 (a 12-MP phone photo fits; the library allows 89.5 M)
DEFAULT_SERVICE_MAX_PIXELS = 4096 * 4096


class ImageRefused(Exception):
    """An upload the service will not embed: ``status`` (413 over a limit, 422 unreadable, 503 busy) and why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class ImageWorkers:
    """Decodes and preprocesses uploads in bounded pools; ``submit(data, name)`` → a Future of the model input."""

    def __init__(self, preprocess: Callable[[], Callable], max_pixels: int = DEFAULT_SERVICE_MAX_PIXELS, workers: int = 2,
                 heavy_pixels: int = 2_000_000, max_pending: int = 64) -> None:
        self._preprocess = preprocess  # looked up per image: the query model's Preprocess
        self.max_pixels, self.heavy_pixels, self.max_pending = int(max_pixels), int(heavy_pixels), int(max_pending)
        self._light = ThreadPoolExecutor(max(1, workers), thread_name_prefix="decode")
        self._heavy = ThreadPoolExecutor(1, thread_name_prefix="decode-heavy")
        self._pending = 0
        self._lock = threading.Lock()

    def limit(self) -> int:
        """The pixel limit in force: the service's, or the library's (``ASYMRET_MAX_IMAGE_PIXELS``) when lower."""
        return min(self.max_pixels, max_image_pixels())

    def submit(self, data: bytes, name: str) -> Future:
        """Check the header here (cheap), then decode + preprocess in a pool; ImageRefused when refused or busy."""
        width, height = image_size(data, name)
        limit = self.limit()
        if width * height > limit:
            raise ImageRefused(413, f"image {name} is {width}×{height} = {width * height:,} pixels, over this service's "
                                    f"limit of {limit:,} pixels (--max-image-pixels; a decompression bomb?)")
        with self._lock:
            if self._pending >= self.max_pending:
                raise ImageRefused(503, f"{self._pending} images are waiting to be decoded: try again shortly")
            self._pending += 1
        pool = self._heavy if width * height > self.heavy_pixels else self._light
        try:
            future = pool.submit(self._prepare, data, name)
        except RuntimeError:  # the pool is shut down (the service is stopping)
            self._done(None)
            raise ImageRefused(503, "the service is shutting down") from None
        future.add_done_callback(self._done)
        return future

    def _done(self, _future: Future | None) -> None:
        with self._lock:
            self._pending -= 1

    def _prepare(self, data: bytes, name: str) -> Any:
        try:
            pixels = read_image(io.BytesIO(data), name=name)
        except ImageTooLargeError as error:
            raise ImageRefused(413, str(error)) from None
        except ImageLoadError as error:
            if _is_bomb(error.__cause__):  # over Pillow's own limit (when the service's is set above it)
                raise ImageRefused(413, f"{error} (Pillow's own pixel limit: ASYMRET_MAX_IMAGE_PIXELS raises it)") from None
            raise ImageRefused(422, str(error)) from None
        return self._preprocess()([pixels])  # (1, C, S, S): the batcher only stacks these

    def shutdown(self) -> None:
        self._light.shutdown(wait=False, cancel_futures=True)
        self._heavy.shutdown(wait=False, cancel_futures=True)


def image_size(data: bytes, name: str) -> tuple[int, int]:
    """An image's width and height from its header (nothing decoded), or ImageRefused(422)."""
    import warnings

    from PIL import Image

    allow_pillow_pixels(max_image_pixels())  # as read_image does: the header is judged against our limit, not Pillow's
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is judged here, against our limit
            with Image.open(io.BytesIO(data)) as image:
                return image.size
    except Image.UnidentifiedImageError:
        raise ImageRefused(422, f"cannot read image {name}: not an image format Pillow can read") from None
    except Image.DecompressionBombError:  # only the size is needed and Pillow would not give it: over every limit
        raise ImageRefused(413, f"image {name} is over Pillow's pixel limit (a decompression bomb?)") from None
    except Exception as error:  # Pillow raises many types for bad headers
        raise ImageRefused(422, f"cannot read image {name}: {type(error).__name__}: {error}") from None


def _is_bomb(error: BaseException | None) -> bool:
    from PIL import Image

    return isinstance(error, (Image.DecompressionBombError, Image.DecompressionBombWarning))


def preprocessed_forward(model, local_rows: Callable[[np.ndarray], np.ndarray] | None = None) -> Callable[[list[Any]], list[tuple]]:
    """``model``'s forward pass on preprocessed (1, C, S, S) inputs, batched: ``function(list)`` → one
    ``(vector, local row or None)`` per input; ``local_rows`` (a re-ranking's query-side local layer) runs on the
    same batch.

    The same numbers as ``model.embed_images`` (which is preprocess, then this), split so that preprocessing runs in
    the decoding pool and only the forward pass in the micro-batcher."""
    import torch

    from ..encoders.onnx import OnnxEncoder, _run

    if isinstance(model, OnnxEncoder):
        session = model._session  # the exported model's onnxruntime session (its embed_images runs the same call)

        def embed(pixels: torch.Tensor) -> np.ndarray:
            return _run(session, pixels.numpy())
    else:
        from ..core.device import module_device, to_device

        def embed(pixels: torch.Tensor) -> np.ndarray:
            model.eval()
            with torch.inference_mode():
                return model(to_device(pixels, module_device(model))).float().cpu().numpy().astype(np.float32)

    def forward(batch: list[Any]) -> list[tuple]:
        pixels = torch.cat(batch)
        vectors = embed(pixels)
        local = local_rows(pixels.numpy()) if local_rows is not None else [None] * len(vectors)
        return list(zip(vectors, local))
    return forward
