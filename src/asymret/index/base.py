"""Gallery indexes: vectors of one embedding space, their string ids and per-item uncertainty.

:class:`GalleryIndexBase` is the backend-independent interface (FAISS, exact, Milvus).  It owns the logic
every backend shares: checking that queries and gallery additions live in the index's embedding space, and
deciding which gallery items are rejected for their uncertainty (:func:`asymret.core.uncertainty.rejection_mask`).
The backends: :class:`~asymret.index.faiss_index.FaissGalleryIndex` (alias ``GalleryIndex``, in-process FAISS),
:class:`~asymret.index.exact.ExactIndex` and :class:`~asymret.index.milvus.MilvusGalleryIndex`.

Scores are similarities for ``metric="ip"`` (higher is better) and squared L2 distances for ``metric="l2"``
(lower is better).  Where a query has fewer than ``k`` results the row is padded with id ``''``, position
``-1`` and score ``-inf`` (ip) / ``+inf`` (l2).
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from ..core.manifest import SpaceMismatchError
from ..core.space import Embeddings, Space
from ..core.uncertainty import rejection_mask

__all__ = [
    "GalleryIndexBase",
    "SearchResult",
    "QuerySpaceError",
    "SpaceMismatchError",
    "describe_space",
]

#: tolerance on ``| ||v|| - 1 |`` for vectors of an L2-normalised space (same as :class:`Embeddings`).
UNIT_NORM_ATOL = 1e-3


class QuerySpaceError(SpaceMismatchError, TypeError):
    """A bare array was given as queries without saying which embedding space it lives in.

    It is both a :class:`SpaceMismatchError` and a :class:`TypeError`, so either ``except`` catches it.
    """


def describe_space(space: Space) -> str:
    """One-line description of a space for error messages: name, fingerprint, dim, normalisation."""
    return (
        f"{space.name or '<unnamed>'!s} [fingerprint {space.fingerprint}, dim {space.dim}, "
        f"{'L2-normalised' if space.normalized else 'not normalised'}]"
    )


@dataclass(eq=False)
class SearchResult:
    """Top-k results for ``nq`` queries: ``ids`` (nq, k) str, ``scores`` (nq, k) float32, ``positions`` (nq, k) int64.

    Missing results (fewer than ``k`` kept gallery items) have id ``''``, position ``-1``.  ``query_ids`` are the
    query ids when the queries were given as :class:`Embeddings`; ``n_rejected`` is the number of gallery items
    excluded by uncertainty rejection.
    """

    ids: np.ndarray
    scores: np.ndarray
    positions: np.ndarray
    query_ids: np.ndarray | None = None
    n_rejected: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def k(self) -> int:
        return int(self.ids.shape[1])

    @property
    def found(self) -> np.ndarray:
        """Bool (nq, k): True where a result exists."""
        return self.positions >= 0


class SearchWrapper(Protocol):
    """What ``search(..., rerank=…)`` takes: something that wraps an index in another search, e.g. an
    :class:`asymret.rerank.Reranking` (whose ``over`` gives an :class:`asymret.rerank.RerankedIndex`).  The index
    names no re-ranking type: the re-ranking package sits after it in the data flow."""

    def over(self, index: "GalleryIndexBase", shortlist: int) -> "SearchesLikeAnIndex": ...


class SearchesLikeAnIndex(Protocol):
    """What a :class:`SearchWrapper` gives: a search with the index's arguments (but the wrapping ones)."""

    def search(self, queries: Embeddings | np.ndarray, k: int, reject_fraction: float | None, reject_threshold: float | None,
               space: Space | None, exclude: np.ndarray | None) -> "SearchResult": ...


class GalleryIndexBase(ABC):
    """Interface of a gallery index living in one embedding :class:`Space`.

    Items are numbered by *position* (0..len-1, in insertion order); ``ids[position]`` is the item's string id and
    ``uncertainty[position]`` its uncertainty (higher = less reliable).
    """

    #: the ``kind`` written to the manifest of a saved index
    manifest_kind: ClassVar[str] = "gallery-index"

    # ------------------------------------------------------------------ the state every backend keeps
    # Each backend holds its space in ``_space`` and the per-position ids and uncertainty in ``_ids`` and
    # ``_uncertainty`` (numpy arrays, also for a remote backend: rejection is decided from them).
    _space: Space
    _ids: np.ndarray
    _uncertainty: np.ndarray

    @property
    def space(self) -> Space:
        """The embedding space of the gallery (queries must come from the same space)."""
        return self._space

    @property
    def ids(self) -> np.ndarray:
        """String ids (N,) by position."""
        return self._ids

    @property
    def uncertainty(self) -> np.ndarray:
        """Float32 uncertainty (N,) by position."""
        return self._uncertainty

    def __len__(self) -> int:
        return len(self._ids)

    # ------------------------------------------------------------------ abstract interface
    @abstractmethod
    def add(self, embeddings: Embeddings, uncertainty: np.ndarray | None = None) -> None:
        """Append gallery items (refusing another space or duplicate ids)."""

    def search(
        self,
        queries: Embeddings | np.ndarray,
        k: int = 10,
        reject_fraction: float | None = None,
        reject_threshold: float | None = None,
        space: Space | None = None,
        exclude: np.ndarray | None = None,
        rerank: SearchWrapper | None = None,
        shortlist: int = 100,
    ) -> SearchResult:
        """Top-``k`` gallery items for each query, among the items not rejected for their uncertainty.

        ``exclude`` (bool, one per position) removes further items from every query's results, e.g. the kept
        sets of a risk–coverage curve.  This is the ranker every evaluation goes through
        (:func:`asymret.eval.metrics.evaluate_index`).

        ``rerank`` (an :class:`asymret.rerank.Reranking`: a re-ranker with the queries' and the gallery items'
        local descriptors) re-ranks each query's global top-``shortlist`` (rejection applied first) and returns
        its first ``k``, scored by the fused score: the same search as
        ``asymret.rerank.RerankedIndex(index, rerank, shortlist).search(...)``, which it hands the search to.
        """
        if rerank is not None:
            return rerank.over(self, shortlist).search(queries, k, reject_fraction, reject_threshold, space, exclude)
        return self._search(queries, k, reject_fraction, reject_threshold, space, exclude)

    @abstractmethod
    def _search(self, queries: Embeddings | np.ndarray, k: int, reject_fraction: float | None, reject_threshold: float | None,
                space: Space | None, exclude: np.ndarray | None) -> SearchResult:
        """The backend's global top-``k`` (see :meth:`search`)."""

    @abstractmethod
    def save(self, directory: str | os.PathLike) -> None:
        """Store the index in ``directory`` (manifest written last)."""

    @classmethod
    @abstractmethod
    def load(cls, directory: str | os.PathLike, expect_space: Space | None = None) -> "GalleryIndexBase":
        """Load an index saved by :meth:`save`; refuse it if ``expect_space`` is given and differs."""

    # ------------------------------------------------------------------ shared logic
    def rejected_mask(
        self, reject_fraction: float | None = None, reject_threshold: float | None = None, exclude: np.ndarray | None = None
    ) -> np.ndarray:
        """Bool mask (N,) of the gallery items rejected for their uncertainty (True = rejected).

        ``reject_fraction=f`` rejects the ``floor(f * N)`` items with the highest uncertainty (ties broken by
        position: the earlier item is rejected first); ``reject_threshold=t`` rejects every item with
        uncertainty ``> t``.  Given both, an item is rejected if either rule rejects it.  ``exclude`` (bool per
        position) is rejected too.
        """
        # the rule's mask is kept for the next search with the same rule (a service asks it once per request;
        # it sorts every item's uncertainty); adding items changes the length and so the key
        key = (reject_fraction, reject_threshold, len(self))
        memo = self.__dict__.setdefault("_rejection_memo", {})
        rejected = memo.get(key)
        if rejected is None:
            rejected = rejection_mask(self.uncertainty, reject_fraction, reject_threshold)
            rejected.flags.writeable = False  # shared by every caller of the same rule
            if len(memo) >= 8:
                memo.clear()
            memo[key] = rejected
        if exclude is not None:
            exclude = np.asarray(exclude)
            if exclude.dtype != bool or exclude.shape != (len(self),):
                raise ValueError(f"exclude must be a bool array with one entry per gallery item ({len(self)}), got {exclude.dtype} {exclude.shape}")
            rejected = rejected | exclude
        return rejected

    @staticmethod
    def _validate_k(k: int) -> int:
        if isinstance(k, bool) or int(k) != k or int(k) < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        return int(k)

    def _check_same_space(self, other: Space, what: str) -> None:
        """:meth:`Space.check_compatible` with a message that names both spaces."""
        try:
            self.space.check_compatible(other, what=what)
        except SpaceMismatchError as error:
            raise SpaceMismatchError(
                f"{error} -- {what} space: {describe_space(other)}; gallery index space: {describe_space(self.space)}"
            ) from None

    def _validate_queries(self, queries: Embeddings | np.ndarray, space: Space | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Float32 C-contiguous query vectors (nq, d) checked against the index space, and the query ids (or None)."""
        if isinstance(queries, Embeddings):
            self._check_same_space(queries.space, "queries")
            if space is not None and space != queries.space:
                self._check_same_space(space, "queries (space= argument)")
            query_space, vectors, query_ids = queries.space, queries.vectors, queries.ids
        elif isinstance(queries, np.ndarray) or hasattr(queries, "__array__"):
            if space is None:
                raise QuerySpaceError(
                    "queries given as a bare array do not say which embedding space they live in; wrap them in "
                    "asymret.core.space.Embeddings(vectors, ids, space) or pass search(..., space=<Space of the queries>). "
                    f"The gallery index space is {describe_space(self.space)}"
                )
            if not isinstance(space, Space):
                raise TypeError(f"space= must be an asymret.core.space.Space, got {type(space).__name__}")
            self._check_same_space(space, "queries")
            query_space, vectors, query_ids = space, np.asarray(queries), None
            if vectors.ndim == 1:
                vectors = vectors[None, :]
        else:
            raise TypeError(
                f"queries must be asymret.core.space.Embeddings or a numpy array (with space=), got {type(queries).__name__}"
            )
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.space.dim:
            raise SpaceMismatchError(
                f"query vectors have shape {vectors.shape}, but the gallery index space {describe_space(self.space)} "
                f"has dimension {self.space.dim} (query space: {describe_space(query_space)})"
            )
        if len(vectors):
            if not np.isfinite(vectors).all():
                raise ValueError(f"{int((~np.isfinite(vectors)).any(axis=1).sum())} query vectors contain NaN or inf")
            if self.space.normalized:
                norms = np.linalg.norm(vectors, axis=1)
                off = np.abs(norms - 1.0) > UNIT_NORM_ATOL
                if off.any():
                    raise SpaceMismatchError(
                        f"{int(off.sum())} of {len(vectors)} query vectors are not unit length (norms from "
                        f"{norms.min():.4g} to {norms.max():.4g}), but the gallery index space "
                        f"{describe_space(self.space)} is L2-normalised (query space: {describe_space(query_space)}); "
                        "normalise the queries (asymret.core.space.l2_normalize) with the encoder that produced this space"
                    )
        return vectors, query_ids

    def _validate_additions(self, embeddings: Embeddings, uncertainty: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Checked (vectors float32 (n, d), ids str (n,), uncertainty float32 (n,)) for :meth:`add`."""
        if not isinstance(embeddings, Embeddings):
            raise TypeError(
                f"add() takes asymret.core.space.Embeddings (vectors + ids + space), got {type(embeddings).__name__}"
            )
        self._check_same_space(embeddings.space, "gallery embeddings to add")
        vectors = np.ascontiguousarray(embeddings.vectors, dtype=np.float32)
        ids = np.asarray(embeddings.ids).astype(str)
        n = len(ids)
        if vectors.shape != (n, self.space.dim):
            raise SpaceMismatchError(f"vectors {vectors.shape} do not match {n} ids of dimension {self.space.dim}")
        if n and not np.isfinite(vectors).all():
            raise ValueError(f"{int((~np.isfinite(vectors)).any(axis=1).sum())} gallery vectors contain NaN or inf")
        if n and self.space.normalized:
            norms = np.linalg.norm(vectors, axis=1)
            off = np.abs(norms - 1.0) > UNIT_NORM_ATOL
            if off.any():
                raise SpaceMismatchError(
                    f"{int(off.sum())} of {n} gallery vectors are not unit length, but the index space "
                    f"{describe_space(self.space)} is L2-normalised"
                )
        if uncertainty is None:
            unc = np.zeros(n, dtype=np.float32)
        else:
            unc = np.asarray(uncertainty, dtype=np.float32).reshape(-1)
            if unc.shape != (n,):
                raise ValueError(f"uncertainty has {unc.size} values for {n} gallery items")
            if np.isnan(unc).any():
                raise ValueError(f"uncertainty contains {int(np.isnan(unc).sum())} NaN values")
        unique, counts = np.unique(ids, return_counts=True)
        if len(unique) != n:
            dup = unique[counts > 1]
            raise ValueError(f"{len(dup)} ids occur more than once in the added embeddings, e.g. {dup[:5].tolist()}")
        if len(self) and n:
            clash = np.isin(ids, self.ids)
            if clash.any():
                raise ValueError(
                    f"{int(clash.sum())} ids are already in the gallery index, e.g. {ids[clash][:5].tolist()}; "
                    "duplicate ids are refused (remove/update is not supported)"
                )
        return vectors, ids, unc

