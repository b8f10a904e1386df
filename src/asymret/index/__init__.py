"""Gallery indexes: vectors of one embedding space, their string ids and per-item uncertainty.

:class:`~asymret.index.base.GalleryIndexBase` is the backend-independent interface (space checks, rejection,
search, save/load); :class:`~asymret.index.faiss_index.FaissGalleryIndex` (alias ``GalleryIndex``) is the
in-process FAISS backend.  Backends are imported on first use, so ``import asymret.index`` stays cheap.
"""
from __future__ import annotations

import os
from typing import Any

from ..core.space import Space

from .base import GalleryIndexBase, QuerySpaceError, SearchResult, SpaceMismatchError, describe_space

__all__ = [
    "GalleryIndexBase", "SearchResult", "QuerySpaceError", "SpaceMismatchError", "describe_space",
    "ExactIndex", "FaissGalleryIndex", "GalleryIndex", "MilvusGalleryIndex", "load_index",
]

#: manifest ``backend`` → module and class that load it
_BACKENDS = {"faiss": (".faiss_index", "FaissGalleryIndex"), "exact": (".exact", "ExactIndex"),
             "milvus": (".milvus", "MilvusGalleryIndex")}


def load_index(directory: str | os.PathLike, expect_space: Space | None = None) -> GalleryIndexBase:
    """Load a saved gallery index of any backend (the manifest names it)."""
    import importlib

    from ..core.manifest import read_manifest

    backend = read_manifest(directory, kind=GalleryIndexBase.manifest_kind).get("backend", "faiss")
    if backend not in _BACKENDS:
        raise ValueError(f"{directory} holds a gallery index of unknown backend {backend!r}; known: {', '.join(_BACKENDS)}")
    module, name = _BACKENDS[backend]
    return getattr(importlib.import_module(module, __package__), name).load(directory, expect_space=expect_space)


def __getattr__(name: str) -> Any:
    if name in ("FaissGalleryIndex", "GalleryIndex"):
        from .faiss_index import FaissGalleryIndex

        return FaissGalleryIndex
    if name == "MilvusGalleryIndex":
        from .milvus import MilvusGalleryIndex

        return MilvusGalleryIndex
    if name == "ExactIndex":
        from .exact import ExactIndex

        return ExactIndex
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
