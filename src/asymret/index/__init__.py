"""Gallery indexes: vectors of one embedding space, their string ids and per-item uncertainty.

:class:`~asymret.index.base.GalleryIndexBase` is the backend-independent interface (space checks, rejection, the
result, the saved folder); the backends — :class:`~asymret.index.faiss_index.FaissGalleryIndex` (alias
``GalleryIndex``, in-process FAISS), :class:`~asymret.index.exact.ExactIndex`,
:class:`~asymret.index.milvus.MilvusGalleryIndex` — are named in one registry (:mod:`asymret.index.backends`) and
made from one spec string (``create_index("faiss:IVF256,PQ16", space)``, ``"exact"``, ``"milvus:HNSW"``).
Backends are imported on first use, so ``import asymret.index`` stays cheap.
"""
from __future__ import annotations

from typing import Any

from .backends import INDEX_BACKENDS, IndexSpec, create_index, load_index, parse_index_spec
from .base import GalleryIndexBase, QuerySpaceError, SearchResult, SpaceMismatchError, describe_space

__all__ = [
    "GalleryIndexBase", "SearchResult", "QuerySpaceError", "SpaceMismatchError", "describe_space",
    "INDEX_BACKENDS", "IndexSpec", "create_index", "parse_index_spec",
    "ExactIndex", "FaissGalleryIndex", "GalleryIndex", "MilvusGalleryIndex", "load_index",
]

#: the backend classes importable from here, by the registry name of their backend
_CLASSES = {"FaissGalleryIndex": "faiss", "GalleryIndex": "faiss", "ExactIndex": "exact", "MilvusGalleryIndex": "milvus"}


def __getattr__(name: str) -> Any:
    if name in _CLASSES:
        return INDEX_BACKENDS[_CLASSES[name]].index_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
