"""Re-ranking inside a search: ``index.search(queries, k, rerank=Reranking(...), shortlist=100)``.

A :class:`Reranking` holds a re-ranker with the two sides it reads — the queries' local descriptors (computed with
the queries, on the query side) and the gallery items' (stored with the index, on the gallery side).  The index
runs its global search ``shortlist`` deep (rejection applied), then :meth:`Reranking.apply` re-ranks those
candidates and keeps the first ``k``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .base import PairSide, Reranker
from .shortlist import Shortlist

__all__ = ["Reranking"]


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

    def apply(self, result, gallery_ids: np.ndarray, k: int):
        """The global ``result`` (a :class:`~asymret.index.base.SearchResult`, ``shortlist`` deep) re-ranked: its
        first ``k`` after re-ranking, scored by the fused score."""
        from ..index.base import SearchResult

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
