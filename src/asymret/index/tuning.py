"""Recall tuning of an approximate index: the smallest search-time parameter (IVF ``nprobe``, HNSW ``efSearch``)
whose recall@k against exact search reaches a target, measured on gallery vectors used as queries (never on test
queries) — what ``asymret build-index --target-recall`` does."""
from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from ..core.space import Embeddings
from .base import GalleryIndexBase
from .exact import ExactIndex
from .faiss_index import FaissGalleryIndex

__all__ = ["recall_at_k", "tune_for_recall", "tune_on_gallery"]


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each query's exact top-k positions (``exact``, (nq, k)) among its found ones (``found``)."""
    return float(np.mean([len(set(f[f >= 0].tolist()) & set(e[e >= 0].tolist())) / max(1, int((e >= 0).sum()))
                          for f, e in zip(found, exact)]))


def tune_for_recall(index: FaissGalleryIndex, queries: Embeddings, exact_positions: np.ndarray, target: float,
                    k: int = 10) -> dict[str, Any]:
    """The smallest ``nprobe`` (IVF) or ``efSearch`` (HNSW) whose recall@k against ``exact_positions`` (the exact
    top-k of ``queries``, e.g. a sample of gallery vectors, never test queries) reaches ``target``; the index is
    left set to it (to the largest value tried if none reaches it).  Returns the choice and the sweep."""
    inner = faiss.downcast_index(index.faiss_index)
    while isinstance(inner, (faiss.IndexPreTransform, faiss.IndexRefine)):
        inner = faiss.downcast_index(inner.index if isinstance(inner, faiss.IndexPreTransform) else inner.base_index)
    if isinstance(inner, faiss.IndexIVF):
        name, values = "nprobe", [v for v in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096) if v <= inner.nlist]
    elif isinstance(inner, faiss.IndexHNSW):
        name, values = "ef_search", [max(k, v) for v in (16, 32, 64, 128, 256, 512, 1024)]
    else:
        recall = recall_at_k(index.search(queries, k=k).positions, exact_positions)
        return {"parameter": None, "value": None, "recall": recall, "reached": recall >= target, "sweep": []}
    sweep = []
    for value in values:
        index.set_search_parameters(**{name: value})
        recall = recall_at_k(index.search(queries, k=k).positions, exact_positions)
        sweep.append({name: value, "recall": recall})
        if recall >= target:
            break
    return {"parameter": name, "value": sweep[-1][name], "recall": sweep[-1]["recall"], "reached": sweep[-1]["recall"] >= target,
            "sweep": sweep}


def tune_on_gallery(index: GalleryIndexBase, gallery: Embeddings, target: float, sample: int = 1000, k: int = 10,
                    seed: int = 0) -> dict[str, Any] | None:
    """:func:`tune_for_recall` on a seeded sample of ``sample`` gallery vectors as queries, against the exact top-``k``
    of the gallery; ``None`` for a backend with nothing to tune here (not FAISS).  The choice also says how many
    vectors were sampled (``"queries"``)."""
    if not isinstance(index, FaissGalleryIndex):
        return None
    chosen = gallery.take(np.random.default_rng(seed).choice(len(gallery), min(sample, len(gallery)), replace=False))
    exact = ExactIndex.from_embeddings(gallery).search(chosen, k=k).positions
    return {**tune_for_recall(index, chosen, exact, target, k=k), "queries": len(chosen), "target": target}
