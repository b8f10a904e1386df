"""Exact, deterministic search in numpy: the reference every other backend is measured against.

:class:`ExactIndex` is a :class:`~asymret.index.base.GalleryIndexBase` like the FAISS backend, so evaluation runs
through the same ``search`` whichever backend a user serves.  Scores are inner products; ties are broken by the
lower position, so two runs (and two machines) rank identically, which FAISS does not promise for tied scores.
"""
from __future__ import annotations

import os

import numpy as np

from ..core.space import Embeddings, Space
from .base import GalleryIndexBase, SearchResult, describe_space

__all__ = ["ExactIndex", "exact_topk"]

VECTORS_FILE = "vectors.npy"
IDS_FILE = "ids.npy"
UNCERTAINTY_FILE = "uncertainty.npy"

#: elements (queries × gallery) scored per chunk, to bound memory
CHUNK_ELEMENTS = 1 << 23


def exact_topk(queries: np.ndarray, gallery: np.ndarray, depth: int, excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``depth`` gallery rows by inner product for each query, ties broken by the lower row.

    ``excluded`` (bool, one per gallery row) removes rows from every ranking.  Returns ``(positions, scores)``
    of shape (nq, depth); entries past the available rows are ``-1`` / ``-inf``.
    """
    nq, ng = len(queries), len(gallery)
    out_pos = np.full((nq, depth), -1, dtype=np.int64)
    out_score = np.full((nq, depth), -np.inf, dtype=np.float32)
    if nq == 0 or ng == 0 or depth == 0:
        return out_pos, out_score
    kth = min(depth, ng)
    chunk = max(1, CHUNK_ELEMENTS // ng)
    for start in range(0, nq, chunk):
        stop = min(nq, start + chunk)
        sims = queries[start:stop] @ gallery.T  # (c, ng)
        if excluded is not None:
            sims[:, excluded] = -np.inf
        # the kth largest value is the cut: take everything above it, then the lowest rows equal to it
        cut = np.partition(sims, ng - kth, axis=1)[:, ng - kth]
        selected = sims > cut[:, None]
        equal = sims == cut[:, None]
        missing = kth - selected.sum(axis=1)
        tied = np.flatnonzero(equal.sum(axis=1) > missing)
        if len(tied):
            equal[tied] &= np.cumsum(equal[tied], axis=1) <= missing[tied, None]
        selected |= equal
        rows, cols = np.nonzero(selected)  # row-major: exactly kth per row, ascending position
        cols = cols.reshape(stop - start, kth)
        vals = sims[rows, cols.reshape(-1)].reshape(stop - start, kth)
        order = np.argsort(-vals, axis=1, kind="stable")  # stable: equal scores keep ascending position
        cols = np.take_along_axis(cols, order, axis=1)
        vals = np.take_along_axis(vals, order, axis=1)
        cols[~np.isfinite(vals)] = -1
        vals[cols < 0] = -np.inf
        out_pos[start:stop, :kth] = cols
        out_score[start:stop, :kth] = vals
    return out_pos, out_score


class ExactIndex(GalleryIndexBase):
    """Exact inner-product search over vectors held in memory (numpy), with the index interface."""

    backend = "exact"
    backend_title = "exact"

    def __init__(self, space: Space) -> None:
        if not isinstance(space, Space):
            raise TypeError(f"space must be an asymret.core.space.Space, got {type(space).__name__}")
        self._space = space
        self._vectors = np.zeros((0, space.dim), dtype=np.float32)
        self._ids = np.zeros(0, dtype=str)
        self._uncertainty = np.zeros(0, dtype=np.float32)

    @classmethod
    def from_embeddings(cls, embeddings: Embeddings, uncertainty: np.ndarray | None = None) -> "ExactIndex":
        index = cls(embeddings.space)
        index.add(embeddings, uncertainty)
        return index

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors

    def __repr__(self) -> str:
        return f"ExactIndex({len(self)} items, space={describe_space(self._space)})"

    def add(self, embeddings: Embeddings, uncertainty: np.ndarray | None = None) -> None:
        vectors, ids, unc = self._validate_additions(embeddings, uncertainty)
        if not len(ids):
            return
        self._vectors = np.concatenate([self._vectors, vectors]) if len(self) else vectors.copy()
        self._ids = np.concatenate([self._ids, ids]) if len(self) else ids.copy()
        self._uncertainty = np.concatenate([self._uncertainty, unc]) if len(self) else unc.copy()

    def _search(
        self,
        queries: Embeddings | np.ndarray,
        k: int = 10,
        reject_fraction: float | None = None,
        reject_threshold: float | None = None,
        space: Space | None = None,
        exclude: np.ndarray | None = None,
    ) -> SearchResult:
        vectors, query_ids = self._validate_queries(queries, space)
        k = self._validate_k(k)
        rejected = self.rejected_mask(reject_fraction, reject_threshold, exclude)
        n_rejected = int(rejected.sum())
        positions, scores = exact_topk(vectors, self._vectors, k, rejected if n_rejected else None)
        return self._result(scores, positions, query_ids, n_rejected)

    @property
    def summary(self) -> str:
        return "exact (numpy)"

    def save(self, directory: str | os.PathLike) -> None:
        """``vectors.npy``, ``ids.npy``, ``uncertainty.npy`` in a new version sub-folder and, last, the manifest (an
        interrupted save leaves the index that was there, whole)."""
        self._save_folder(directory, arrays={VECTORS_FILE: self._vectors, IDS_FILE: self._ids, UNCERTAINTY_FILE: self._uncertainty})

    @classmethod
    def load(cls, directory: str | os.PathLike, expect_space: Space | None = None) -> "ExactIndex":
        directory, manifest, space = cls._open_folder(directory, expect_space)
        folder = cls._check_files(directory, manifest, (VECTORS_FILE, IDS_FILE, UNCERTAINTY_FILE))
        arrays = {name: np.load(folder / name, allow_pickle=False) for name in (VECTORS_FILE, IDS_FILE, UNCERTAINTY_FILE)}
        index = cls(space)
        index._vectors = np.ascontiguousarray(arrays[VECTORS_FILE], dtype=np.float32)
        index._ids = arrays[IDS_FILE].astype(str)
        index._uncertainty = arrays[UNCERTAINTY_FILE].astype(np.float32)
        if not (len(index._vectors) == len(index._ids) == len(index._uncertainty) == int(manifest["count"])):
            raise ValueError(f"gallery index {directory} is inconsistent: item counts differ")
        return index
