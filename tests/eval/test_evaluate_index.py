"""One retrieval path: evaluation measures the rankings the evaluated index itself returns."""
from __future__ import annotations

import numpy as np
import pytest

from asymret.core.space import Embeddings, Space, l2_normalize
from asymret.eval.metrics import evaluate, ranking_metrics, retrieval_metrics
from asymret.index import ExactIndex, FaissGalleryIndex, load_index


def _clustered(seed: int, n: int = 3000, dim: int = 16, n_labels: int = 30):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_labels, dim))
    labels = rng.integers(0, n_labels, n)
    vectors = l2_normalize(centres[labels] + 0.9 * rng.standard_normal((n, dim)))
    return vectors, labels


def _metrics_from_search(index, queries: Embeddings, labels_by_id: dict, ks, depth: int, **kwargs) -> dict:
    """Reference: metrics computed by hand from the index's own search results (self excluded)."""
    result = index.search(queries, k=depth + 1, **kwargs)
    relevant, r = [], []
    kept = ~index.rejected_mask(kwargs.get("reject_fraction"), kwargs.get("reject_threshold"))
    kept_labels = np.array([labels_by_id[i] for i in index.ids])[kept]
    kept_ids = index.ids[kept]
    for row, (qid, qlab) in enumerate(zip(queries.ids, queries.labels)):
        ids = [i for i in result.ids[row] if i and i != qid][:depth]
        relevant.append([labels_by_id[i] == qlab for i in ids] + [False] * (depth - len(ids)))
        r.append(int(((kept_labels == qlab) & (kept_ids != qid)).sum()))
    return ranking_metrics(np.array(relevant), np.array(r), ks)


def test_ivf_index_is_scored_by_its_own_search_not_the_exact_ranking():
    vectors, labels = _clustered(0)
    space = Space("s" * 16, vectors.shape[1], name="test")
    ids = np.array([f"img{i}" for i in range(len(vectors))])
    gallery = Embeddings(vectors, ids, space, labels)
    queries = gallery.take(np.arange(300))
    labels_by_id = dict(zip(ids.tolist(), labels.tolist()))

    ivf = FaissGalleryIndex(space, factory="IVF64,Flat", nprobe=1)
    ivf.add(gallery)
    exact = ExactIndex.from_embeddings(gallery)
    ks = (1, 4, 8)

    got_ivf = evaluate(queries, index=ivf, gallery_labels=labels_by_id, ks=ks)
    got_exact = evaluate(queries, index=exact, gallery_labels=labels_by_id, ks=ks)
    depth = max(max(ks), int(np.bincount(labels).max()))
    assert got_ivf == pytest.approx(_metrics_from_search(ivf, queries, labels_by_id, ks, depth))
    # nprobe=1 of 64 lists returns other neighbours than exact search: the numbers must differ
    assert abs(got_ivf["map@r"] - got_exact["map@r"]) > 0.01
    # the exact index reproduces the vector-level reference
    assert got_exact == pytest.approx(retrieval_metrics(vectors[:300], labels[:300], vectors, labels, ks, ids[:300], ids))


def test_evaluate_applies_the_rejection_a_user_asks_for():
    vectors, labels = _clustered(1, n=600)
    space = Space("s" * 16, vectors.shape[1], name="test")
    ids = np.arange(len(vectors)).astype(str)
    gallery = Embeddings(vectors, ids, space, labels)
    uncertainty = np.random.default_rng(1).random(len(vectors)).astype(np.float32)
    index = FaissGalleryIndex(space)
    index.add(gallery, uncertainty)
    queries = gallery.take(np.arange(100))
    got = evaluate(queries, index=index, gallery_labels=labels, ks=(1, 2), reject_fraction=0.3)
    kept = ~index.rejected_mask(0.3)
    want = retrieval_metrics(vectors[:100], labels[:100], vectors, labels, (1, 2), ids[:100], ids, gallery_mask=kept)
    assert got == pytest.approx(want)
    assert got != pytest.approx(evaluate(queries, index=index, gallery_labels=labels, ks=(1, 2)))


def test_ranking_metrics_hand_computed():
    # query 0: R=2, results [rel, not, rel] -> AP@R = (1/1 + 0) / 2 = 0.5 (the hit at rank 3 is past R)
    # query 1: R=1, results [not, rel, not] -> AP@R = 0; recall@1 0, recall@2 1
    # query 2: R=0 -> counted in recall (a miss), not in MAP@R
    relevant = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0]], dtype=bool)
    got = ranking_metrics(relevant, np.array([2, 1, 0]), ks=(1, 2))
    assert got["recall@1"] == pytest.approx(1 / 3)
    assert got["recall@2"] == pytest.approx(2 / 3)
    assert got["map@r"] == pytest.approx(0.25)
    assert got["num_queries_without_positives"] == 1


@pytest.mark.parametrize("factory", ["Flat", "HNSW16", "IVF8,Flat"])
def test_exclude_mask_removes_items_on_every_backend(factory):
    vectors, labels = _clustered(2, n=400)
    space = Space("s" * 16, vectors.shape[1])
    emb = Embeddings(vectors, np.arange(400).astype(str), space, labels)
    index = ExactIndex(space) if factory == "Flat" else FaissGalleryIndex(space, factory=factory, nprobe=8 if "IVF" in factory else None)
    index.add(emb)
    exclude = np.zeros(400, dtype=bool)
    exclude[::3] = True
    result = index.search(emb.take(np.arange(20)), k=10, exclude=exclude)
    assert (result.positions >= 0).all()
    assert not exclude[result.positions].any()
    assert result.n_rejected == int(exclude.sum())


def test_exact_index_round_trip_and_load_index_dispatch(tmp_path):
    vectors, labels = _clustered(3, n=50)
    space = Space("s" * 16, vectors.shape[1], name="x")
    emb = Embeddings(vectors, np.arange(50).astype(str), space, labels)
    exact = ExactIndex.from_embeddings(emb, np.linspace(0, 1, 50))
    exact.save(tmp_path / "exact")
    faiss_index = FaissGalleryIndex(space)
    faiss_index.add(emb)
    faiss_index.save(tmp_path / "faiss")
    loaded_exact, loaded_faiss = load_index(tmp_path / "exact"), load_index(tmp_path / "faiss", expect_space=space)
    assert isinstance(loaded_exact, ExactIndex) and isinstance(loaded_faiss, FaissGalleryIndex)
    queries = emb.take(np.arange(5))
    np.testing.assert_array_equal(loaded_exact.search(queries, 5).ids, exact.search(queries, 5).ids)
    np.testing.assert_array_equal(loaded_exact.uncertainty, exact.uncertainty)
    np.testing.assert_array_equal(loaded_faiss.search(queries, 5).ids, exact.search(queries, 5).ids)


def test_instance_recall_hand_case():
    space = Space("s" * 16, 2, name="t")
    # gallery: a=(1,0) b=(0,1) c=(0.8,0.6); queries: a' near b, b' near b, c' near a, d' has no gallery copy
    gallery = Embeddings(l2_normalize(np.array([[1, 0], [0, 1], [0.8, 0.6]], np.float32)), np.array(["a", "b", "c"]), space,
                         np.array([0, 1, 2]))
    queries = Embeddings(l2_normalize(np.array([[0.1, 1], [0, 1], [1, 0.05], [1, 1]], np.float32)), np.array(["a", "b", "c", "d"]), space,
                         np.array([0, 1, 2, 3]))
    got = evaluate(queries, index=ExactIndex.from_embeddings(gallery), gallery_labels=gallery.labels, ks=(1,), instance_ks=(1, 2))
    got = {name: value for name, value in got.items() if name.startswith("instance_")}
    # ranks of the own image: a' → b, c, a (3rd); b' → b (1st); c' → a, c (2nd); d' → none
    assert got == {"instance_recall@1": 0.25, "instance_recall@2": 0.5}
