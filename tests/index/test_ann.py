"""Compressed and approximate FAISS indexes through the factory string: exact re-ranking of the shortlist from the
float vectors (on disk once saved), nprobe/efSearch chosen for a target recall, rejection kept correct on every type."""
from __future__ import annotations

import numpy as np
import pytest

from asymret.core.space import Embeddings, Space, l2_normalize
from asymret.index import ExactIndex, GalleryIndex, load_index
from asymret.index.tuning import recall_at_k, tune_for_recall

DIM = 16
SPACE = Space("ann-space", DIM, True, "query-enc")
# small codebooks (4-bit PQ): FAISS trains 8-bit ones slowly on 2 cores; OPQ is in the benchmark
FACTORIES = ["IVF16,Flat", "IVF16,PQ4x4", "IVF16,SQ8", "HNSW8", "PQ4x4"]


def clustered(n: int, seed: int, centres: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return l2_normalize(centres[rng.integers(0, len(centres), n)] + 0.35 * rng.standard_normal((n, DIM)).astype(np.float32))


@pytest.fixture(scope="module")
def data():
    centres = np.random.default_rng(0).standard_normal((40, DIM)).astype(np.float32)
    gallery = Embeddings(clustered(2000, 1, centres), np.array([f"g{i}" for i in range(2000)]), SPACE)
    queries = Embeddings(clustered(100, 2, centres), np.arange(100).astype(str), SPACE)
    uncertainty = np.random.default_rng(3).uniform(0, 1, 2000).astype(np.float32)
    exact = ExactIndex.from_embeddings(gallery, uncertainty)
    return gallery, queries, uncertainty, exact


@pytest.fixture(scope="module")
def built(data):
    """Per factory: the plain index, and one re-ranking a shortlist deep enough to hold every item exactly."""
    gallery, _, uncertainty, _ = data
    indexes = {}
    for factory in FACTORIES:
        plain = GalleryIndex(SPACE, factory=factory)
        plain.add(gallery, uncertainty)
        deep = GalleryIndex(SPACE, factory=factory, exact_rerank=len(gallery) // 10, **({"nprobe": 16} if "IVF" in factory else {}))
        if factory.startswith("HNSW"):
            deep.set_search_parameters(ef_search=len(gallery))
        deep.add(gallery, uncertainty)
        indexes[factory] = plain, deep
    return indexes


@pytest.mark.parametrize("factory", FACTORIES)
@pytest.mark.parametrize("rejection", [{}, {"reject_fraction": 0.3}, {"reject_threshold": 0.6}])
def test_every_index_type_keeps_rejection_exact_and_a_deep_exact_rerank_is_exact(data, built, factory, rejection):
    _, queries, _, exact = data
    plain, deep = built[factory]
    rejected = exact.rejected_mask(**rejection)
    truth = exact.search(queries, k=10, **rejection)
    approximate = plain.search(queries, k=10, **rejection)
    assert not rejected[approximate.positions[approximate.positions >= 0]].any()  # never a rejected item
    assert approximate.n_rejected == truth.n_rejected
    # re-ranking a shortlist that holds every kept item is exact search, whatever the compression
    reranked = deep.search(queries, k=10, **rejection)
    np.testing.assert_array_equal(reranked.positions, truth.positions)
    np.testing.assert_allclose(reranked.scores, truth.scores, atol=1e-5)


def test_exact_rerank_lifts_a_pq_index_and_its_vectors_are_memory_mapped_after_loading(data, tmp_path):
    gallery, queries, uncertainty, exact = data
    truth = exact.search(queries, k=10).positions
    recalls = {}
    for depth in (0, 10):
        index = GalleryIndex(SPACE, factory="IVF16,PQ2x4", nprobe=4, exact_rerank=depth)
        index.add(gallery, uncertainty)
        recalls[depth] = recall_at_k(index.search(queries, k=10).positions, truth)
    assert recalls[10] > recalls[0] + 0.2  # 1-byte codes: the exact rescoring recovers most of what they lose
    index.save(tmp_path)
    loaded = load_index(tmp_path)
    assert isinstance(loaded._vectors, np.memmap)
    np.testing.assert_array_equal(loaded.search(queries, k=10, reject_fraction=0.2).ids, index.search(queries, k=10, reject_fraction=0.2).ids)
    plain = GalleryIndex(SPACE, factory="IVF16,Flat")
    plain.add(gallery, uncertainty)
    with pytest.raises(ValueError, match="before adding"):
        plain.set_search_parameters(exact_rerank=5)


@pytest.mark.parametrize("factory, parameter", [("IVF64,Flat", "nprobe"), ("HNSW4", "ef_search")])
def test_the_smallest_search_parameter_reaching_the_target_recall_is_chosen(data, factory, parameter):
    gallery, queries, uncertainty, exact = data
    sample = gallery.take(np.arange(0, 2000, 10))  # gallery vectors as queries: no test query is used to tune
    index = GalleryIndex(SPACE, factory=factory)
    index.add(gallery, uncertainty)
    choice = tune_for_recall(index, sample, exact.search(sample, k=10).positions, target=0.95)
    assert choice["parameter"] == parameter and choice["reached"] and choice["recall"] >= 0.95
    assert len(choice["sweep"]) == 1 or choice["sweep"][-2]["recall"] < 0.95  # the one before fell short
    assert recall_at_k(index.search(sample, k=10).positions, exact.search(sample, k=10).positions) == pytest.approx(choice["recall"])
