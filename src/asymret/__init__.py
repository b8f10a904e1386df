"""asymret — asymmetric image retrieval.

The public API, in data-flow order::

    import asymret as ar
    data = ar.load_dataset("fashion-mnist")
    model = ar.create_encoder("convnet-xs", embedding_dim=64); ar.train_encoder(model, data.select(split="train"), ar.TrainConfig())
    store = ar.EmbeddingStore("runs/embeddings"); emb = store.get(model, data.select(split="test"))
    psi = ar.CMCETransform(head=query.classifier).fit(gallery_emb, query_emb)
    index = ar.GalleryIndex(space); index.add(emb); index.search(queries, k=10)

Names are imported on first use (PEP 562), so ``import asymret`` — and importing any one sub-package — does not
load torch, FAISS or the rest of the library.
"""
from __future__ import annotations

import importlib
from typing import Any

from .core.version import __version__

#: public name → module that defines it
_EXPORTS: dict[str, str] = {
    "SpaceMismatchError": "core.manifest",
    "Embeddings": "core.space", "Space": "core.space",
    "ensemble_mean": "core.uncertainty", "pairwise_uncertainty": "core.uncertainty", "rejection_mask": "core.uncertainty",
    "ImageDataset": "data", "ImageLoadError": "data", "load_dataset": "data",
    "CosineClassifier": "encoders", "Encoder": "encoders", "create_encoder": "encoders", "list_backbones": "encoders",
    "load_encoder": "encoders", "register_backbone": "encoders", "train_encoder": "encoders",
    "TrainConfig": "training",
    "EmbeddingStore": "store",
    "CMCETransform": "compat",
    "create_loss": "compat.losses", "list_losses": "compat.losses",
    "QUERY_METHODS": "compat.query_train", "train_compatible_query": "compat.query_train",
    "train_query_model": "compat.query_train",
    "CMCEEnsemble": "gallery",
    "GalleryIndex": "index",
    "ExactIndex": "index", "load_index": "index", "evaluate": "eval.metrics", "ranking_metrics": "eval.metrics",
    "retrieval_metrics": "eval.metrics", "risk_coverage": "eval.metrics",
    "tar_at_far": "eval.metrics",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'asymret' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # cache: later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
