"""A global shortlist and what re-ranking does to it: the fused scores reorder it.

The global search gives each query its top-S gallery items; a re-ranker scores those S pairs; the fused score
s = λ·g + (1 − λ)·σ(γ·logit) reorders them.  :mod:`asymret.eval.rerank` measures a shortlist with the same
ranking metrics as every global result (R@K, MAP@R) and chooses (λ, γ) on a validation split.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.space import Embeddings

__all__ = ["Shortlist", "global_shortlist", "fuse"]


@dataclass
class Shortlist:
    """Per query (rows of ``query_ids``): the ``candidates`` (Nq, S) as positions into the gallery, best first,
    their global ``scores`` (Nq, S), and R — how many same-label gallery items each query has (its own id excluded)."""

    query_ids: np.ndarray
    candidates: np.ndarray
    scores: np.ndarray
    query_labels: np.ndarray | None = None  # labels and R: only to measure (a search's shortlist has none)
    gallery_labels: np.ndarray | None = None
    n_positives: np.ndarray | None = None

    @property
    def depth(self) -> int:
        return int(self.candidates.shape[1])

    def relevant(self, order: np.ndarray | None = None) -> np.ndarray:
        """Bool (Nq, S): whether each listed item shares the query's label, in the global order or reordered by
        ``order`` (Nq, S) column indices."""
        if self.query_labels is None or self.gallery_labels is None:
            raise ValueError("this shortlist has no labels to measure it with")
        candidates = self.candidates if order is None else np.take_along_axis(self.candidates, order, axis=1)
        return (candidates >= 0) & (self.gallery_labels[np.maximum(candidates, 0)] == self.query_labels[:, None])

    def head(self, depth: int) -> "Shortlist":
        """The first ``depth`` candidates of every query (its MAP@R is exact while ``depth`` ≥ every R)."""
        return Shortlist(self.query_ids, self.candidates[:, :depth], self.scores[:, :depth], self.query_labels,
                         self.gallery_labels, self.n_positives)

    def reordered(self, fused: np.ndarray) -> np.ndarray:
        """Column order (Nq, S) by decreasing fused score (stable: ties keep the global order)."""
        return np.argsort(-fused, axis=1, kind="stable")


def global_shortlist(queries: Embeddings, gallery: Embeddings, depth: int, exclude_same_id: bool = True) -> Shortlist:
    """The exact top-``depth`` of ``queries`` in ``gallery`` (spaces checked), each query's own id excluded."""
    import faiss

    gallery.space.check_compatible(queries.space, "queries")
    if queries.labels is None or gallery.labels is None:
        raise ValueError("a shortlist to re-rank and measure needs labels on both sides")
    extra = 1 if exclude_same_id else 0
    index = faiss.IndexFlatIP(gallery.space.dim)
    index.add(gallery.vectors)
    scores, rows = index.search(queries.vectors, min(len(gallery), depth + extra))
    if exclude_same_id:
        same = gallery.ids[np.maximum(rows, 0)] == queries.ids[:, None]
        keep = ~same
        keep[keep.all(axis=1), -1] = False  # self not found in the top: drop the last column instead
        rows = rows[keep].reshape(len(rows), -1)
        scores = scores[keep].reshape(len(scores), -1)
    labels_q, labels_g = np.asarray(queries.labels), np.asarray(gallery.labels)
    _, counts = np.unique(labels_g, return_counts=True)
    count_of = dict(zip(np.unique(labels_g).tolist(), counts.tolist()))
    n_pos = np.array([count_of.get(label, 0) for label in labels_q.tolist()], dtype=np.int64)
    if exclude_same_id:
        in_gallery = np.isin(queries.ids, gallery.ids)
        n_pos = n_pos - in_gallery.astype(np.int64)
    return Shortlist(queries.ids, rows.astype(np.int64), scores.astype(np.float32), labels_q, labels_g, n_pos)


def fuse(global_scores: np.ndarray, logits: np.ndarray, lam: float, gamma: float) -> np.ndarray:
    """s = λ·g + (1 − λ)·σ(γ·logit) (AMES's and LOCORE's fusion)."""
    return lam * global_scores + (1.0 - lam) / (1.0 + np.exp(-gamma * logits))
