"""Re-ranking a search (``RerankedIndex``, or ``index.search(rerank=...)``): the same ranking as re-ranking the global
shortlist, rejection kept."""
from __future__ import annotations

import numpy as np
import pytest

from asymret.core.space import Embeddings
from asymret.index import GalleryIndex
from asymret.rerank import MaxSimReranker, PairSide, RerankedIndex, Reranking, global_shortlist


def _split(sides):
    embeddings, local = sides["test"]
    queries = Embeddings(embeddings.vectors[:10], embeddings.ids[:10], embeddings.space, embeddings.labels[:10])
    gallery = Embeddings(embeddings.vectors[10:], embeddings.ids[10:], embeddings.space, embeddings.labels[10:])
    return queries, gallery, local


def test_search_with_rerank_equals_reranking_the_global_shortlist(sides):
    queries, gallery, local = _split(sides)
    index = GalleryIndex(gallery.space)
    index.add(gallery, uncertainty=np.linspace(0.0, 1.0, len(gallery), dtype=np.float32))
    reranker = MaxSimReranker()
    reranker.fusion = {"lambda": 0.2, "gamma": 1.0}
    query_side = PairSide.from_local(local.align(queries.ids), 8)
    database_side = PairSide.from_local(local, 6)  # every test image, in the store's order: matched by id
    plain = index.search(queries, k=5)
    reranked_index = RerankedIndex(index, Reranking(reranker, query_side, database_side), shortlist=20)
    reranked = reranked_index.search(queries, k=5)
    assert reranked.ids.shape == (10, 5)
    assert reranked_index.space == index.space and len(reranked_index) == len(index)
    # the index's own search(rerank=...) is the same search
    through_index = index.search(queries, k=5, rerank=Reranking(reranker, query_side, database_side), shortlist=20)
    np.testing.assert_array_equal(through_index.ids, reranked.ids)
    np.testing.assert_array_equal(through_index.positions, reranked.positions)
    np.testing.assert_array_equal(through_index.scores, reranked.scores)
    # the reference: the same 20-deep shortlist re-ranked directly
    short = global_shortlist(queries, Embeddings(gallery.vectors, gallery.ids, gallery.space, gallery.labels), 20, exclude_same_id=False)
    gallery_side = PairSide.from_local(local.align(gallery.ids), 6)
    order, fused = reranker.rerank(query_side, gallery_side, short)
    expected_ids = gallery.ids[np.take_along_axis(short.candidates, order, axis=1)[:, :5]]
    np.testing.assert_array_equal(reranked.ids, expected_ids)
    np.testing.assert_allclose(reranked.scores, np.take_along_axis(fused, order, axis=1)[:, :5], rtol=1e-6)
    assert not np.array_equal(reranked.ids, plain.ids)  # the re-ranker changed something
    # rejection happens before re-ranking: a rejected item never comes back
    rejected = reranked_index.search(queries, k=5, reject_fraction=0.5)
    kept = set(index.ids[index.rejected_mask(reject_fraction=0.5) == False].tolist())  # noqa: E712
    assert set(rejected.ids[rejected.ids != ""].tolist()) <= kept and rejected.n_rejected == len(gallery) // 2
    again = index.search(queries, k=5, reject_fraction=0.5, rerank=Reranking(reranker, query_side, database_side), shortlist=20)
    np.testing.assert_array_equal(again.ids, rejected.ids)


def test_search_with_rerank_refuses_what_it_cannot_rerank(sides):
    queries, gallery, local = _split(sides)
    index = GalleryIndex(gallery.space)
    index.add(gallery)
    query_side = PairSide.from_local(local.align(queries.ids), 8)
    few = PairSide.from_local(local.align(gallery.ids[:5]), 6)  # descriptors of only five gallery items
    with pytest.raises(ValueError, match="no local descriptors"):
        index.search(queries, k=5, rerank=Reranking(MaxSimReranker(), query_side, few), shortlist=20)
    others = PairSide.from_local(local.align(gallery.ids[:10]), 8)  # the descriptors of other queries
    with pytest.raises(ValueError, match="not of the searched queries"):
        index.search(queries, k=5, rerank=Reranking(MaxSimReranker(), others, PairSide.from_local(local, 6)), shortlist=20)
    l2 = GalleryIndex(gallery.space, metric="l2")
    l2.add(gallery)
    with pytest.raises(ValueError, match="inner-product"):
        l2.search(queries, k=5, rerank=Reranking(MaxSimReranker(), query_side, PairSide.from_local(local, 6)), shortlist=20)
    with pytest.raises(ValueError, match="inner-product"):
        RerankedIndex(l2, Reranking(MaxSimReranker(), query_side, PairSide.from_local(local, 6)), shortlist=20).search(queries, k=5)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        RerankedIndex(index, Reranking(MaxSimReranker(), query_side, PairSide.from_local(local, 6)), shortlist=0).search(queries, k=5)
