"""Re-ranking inside a search: ``RerankedIndex(index, Reranking(...), shortlist=100).search(queries, k)``.

A :class:`Reranking` holds a re-ranker with the two sides it reads — the queries' local descriptors (computed with
the queries, on the query side) and the gallery items' (stored with the index, on the gallery side).  A
:class:`RerankedIndex` wraps a gallery index: it runs the index's global search ``shortlist`` deep (rejection
applied), then :meth:`Reranking.apply` re-ranks those candidates and keeps the first ``k``.  The index knows
nothing of re-ranking; ``index.search(queries, k, rerank=Reranking(...), shortlist=100)`` still works and is the
same search (the index hands it to :meth:`Reranking.over`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.space import Embeddings, Space
from ..index.base import GalleryIndexBase, SearchResult
from .base import PairSide, Reranker
from .shortlist import Shortlist

__all__ = ["Reranking", "RerankedIndex"]


@dataclass
class Reranking:
    """A re-ranker and its two sides: ``queries`` in the order of the searched queries, ``database`` holding at
    least every gallery item of the index (any order: matched by id)."""

    reranker: Reranker
    queries: PairSide
    database: PairSide
    _row_of: dict[str, int] | None = field(default=None, repr=False)

    def with_queries(self, queries: PairSide) -> "Reranking":
        """The same re-ranker and database for other queries (the id → row table is shared, not rebuilt)."""
        if self._row_of is None:
            self.database_rows(np.asarray(self.database.ids[:0]))
        return Reranking(self.reranker, queries, self.database, self._row_of)

    def database_rows(self, gallery_ids: np.ndarray) -> np.ndarray:
        """The row of ``database`` holding each of ``gallery_ids`` (any shape)."""
        if self._row_of is None:
            self._row_of = {item: row for row, item in enumerate(np.asarray(self.database.ids).astype(str).tolist())}
        flat = np.asarray(gallery_ids).astype(str).reshape(-1).tolist()
        missing = [item for item in flat if item not in self._row_of]
        if missing:
            raise ValueError(f"{len(set(missing))} gallery items have no local descriptors to re-rank with (e.g. {missing[0]!r})")
        return np.array([self._row_of[item] for item in flat], dtype=np.int64).reshape(np.shape(gallery_ids))

    def over(self, index: GalleryIndexBase, shortlist: int = 100) -> "RerankedIndex":
        """``index`` searched with this re-ranking (what ``index.search(..., rerank=self, shortlist=N)`` runs)."""
        return RerankedIndex(index, self, shortlist)

    def apply(self, result: SearchResult, gallery_ids: np.ndarray, k: int) -> SearchResult:
        """The global ``result`` (a :class:`~asymret.index.base.SearchResult`, ``shortlist`` deep) re-ranked: its
        first ``k`` after re-ranking, scored by the fused score."""
        if len(self.queries.ids) != len(result):
            raise ValueError(f"{len(result)} queries searched but {len(self.queries.ids)} queries' descriptors given")
        if result.query_ids is not None and not np.array_equal(np.asarray(result.query_ids).astype(str),
                                                                np.asarray(self.queries.ids).astype(str)):
            raise ValueError("the queries' local descriptors are not of the searched queries, in their order")
        found = result.positions >= 0
        candidates = np.full(result.positions.shape, -1, dtype=np.int64)
        candidates[found] = self.database_rows(np.asarray(gallery_ids)[result.positions[found]])
        shortlist = Shortlist(np.asarray(self.queries.ids), candidates, result.scores)
        order, fused = self.reranker.rerank(self.queries, self.database, shortlist)
        fused = np.where(found, fused, result.scores)  # a missing slot keeps its missing score, last
        order = np.take_along_axis(order, np.argsort(~np.take_along_axis(found, order, axis=1), axis=1, kind="stable"), axis=1)
        positions = np.take_along_axis(result.positions, order, axis=1)[:, :k]
        ids = np.take_along_axis(result.ids, order, axis=1)[:, :k]
        scores = np.take_along_axis(fused, order, axis=1)[:, :k].astype(np.float32)
        return SearchResult(ids=ids, scores=scores, positions=positions, query_ids=result.query_ids, n_rejected=result.n_rejected)


class RerankedIndex:
    """A gallery index whose searches are re-ranked: each query's global top-``shortlist`` (rejection applied
    first), re-ranked by ``reranking``, its first ``k`` returned, scored by the fused score.

    It answers :meth:`search` as the index does (same arguments but the re-ranking ones) and passes the index's
    ``space``, ``ids``, ``uncertainty``, length and :meth:`rejected_mask` through.
    """

    def __init__(self, index: GalleryIndexBase, reranking: Reranking, shortlist: int = 100) -> None:
        self.index = index
        self.reranking = reranking
        self.shortlist = shortlist

    def __repr__(self) -> str:
        return f"RerankedIndex({self.index!r}, {type(self.reranking.reranker).__name__}, shortlist={self.shortlist})"

    @property
    def space(self) -> Space:
        return self.index.space

    @property
    def ids(self) -> np.ndarray:
        return self.index.ids

    @property
    def uncertainty(self) -> np.ndarray:
        return self.index.uncertainty

    def __len__(self) -> int:
        return len(self.index)

    def rejected_mask(self, reject_fraction: float | None = None, reject_threshold: float | None = None,
                      exclude: np.ndarray | None = None) -> np.ndarray:
        return self.index.rejected_mask(reject_fraction, reject_threshold, exclude)

    def search(self, queries: Embeddings | np.ndarray, k: int = 10, reject_fraction: float | None = None,
               reject_threshold: float | None = None, space: Space | None = None,
               exclude: np.ndarray | None = None) -> SearchResult:
        """The index's :meth:`~asymret.index.base.GalleryIndexBase.search`, ``shortlist`` deep, re-ranked to ``k``."""
        k = GalleryIndexBase._validate_k(k)
        depth = max(GalleryIndexBase._validate_k(self.shortlist), k)
        if getattr(self.index, "metric", "ip") != "ip":
            raise ValueError("re-ranking fuses similarities: it needs an inner-product index (metric='ip')")
        result = self.index.search(queries, depth, reject_fraction=reject_fraction, reject_threshold=reject_threshold,
                                   space=space, exclude=exclude)
        return self.reranking.apply(result, self.index.ids, k)
