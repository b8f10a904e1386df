"""A dataset embedded by a query model, whichever form the model has: a torch :class:`~asymret.encoders.Encoder`
through the store (cached, run by the store's runtime), or one exported to ONNX
(:class:`~asymret.encoders.onnx.OnnxEncoder`) run directly by onnxruntime — not cached, as the store keys its
embeddings by the torch model that computed them.  Unreadable images are skipped either way.  Images given
directly (a search's query images) are embedded with the store's runtime (:func:`embed_images`)."""
from __future__ import annotations

import numpy as np

from ..core.device import autocast, on_device
from ..core.progress import log
from ..core.space import Embeddings
from ..data.batches import load_batch
from ..data.dataset import ImageDataset
from ..encoders.encoder import Encoder
from ..encoders.onnx import OnnxEncoder, onnx_forward
from .embeddings import ONNX_CACHE, EmbeddingStore

__all__ = ["embed_images", "query_embeddings"]


def embed_images(store: EmbeddingStore, model: Encoder | OnnxEncoder, images: list[np.ndarray], batch_size: int = 256) -> np.ndarray:
    """HxWxC uint8 images → (N, d) float32 embeddings by ``model``: an exported model by onnxruntime; a torch encoder
    eagerly, or — with the store's runtime ``onnx`` — exported once into the store (as the store's extraction does)
    and run by onnxruntime.  A torch encoder runs on the store's device and precision (and comes back where it was)."""
    if isinstance(model, OnnxEncoder):
        return model.embed_images(images, batch_size)
    if store.runtime == "torch":
        with on_device(model, device=store.device), autocast(store.device, store.precision):
            return model.embed_images(images, batch_size)
    forward = onnx_forward(model, store.root / ONNX_CACHE, store.onnx_device)
    out = [forward(model.preprocess(images[i : i + batch_size])).numpy() for i in range(0, len(images), batch_size)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, model.embedding_dim), np.float32)


def query_embeddings(store: EmbeddingStore, model: Encoder | OnnxEncoder, dataset: ImageDataset, batch_size: int = 256) -> Embeddings:
    """``dataset``'s embeddings by ``model`` (a torch encoder or an exported ONNX query model), with labels."""
    if not isinstance(model, OnnxEncoder):
        return store.get(model, dataset)
    vectors, rows = [], []
    for start in range(0, len(dataset), batch_size):
        images, kept, failed = load_batch(dataset, range(start, min(len(dataset), start + batch_size)))
        for item_id, reason in failed:
            log.warning("skipping unreadable image %s: %s", item_id, reason)
        if len(kept):
            vectors.append(model.embed_images(images))
            rows += kept
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, model.embedding_dim), np.float32)
    return Embeddings(matrix, dataset.ids[rows], model.space(), dataset.labels[rows])
