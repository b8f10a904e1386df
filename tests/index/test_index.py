"""Tests of the FAISS gallery index: exactness, rejection, persistence and refusal of foreign spaces."""
from __future__ import annotations

import json

import numpy as np
import pytest

from asymret.index import (
    FaissGalleryIndex,
    GalleryIndex,
    GalleryIndexBase,
    QuerySpaceError,
    SearchResult,
)
from asymret.core.manifest import SpaceMismatchError
from asymret.core.space import Embeddings, Space, l2_normalize

DIM = 16
SPACE = Space("query-fp-aaaa", DIM, True, "query-enc", provenance=(("cmce", "tfp-1234"),))


def make_embeddings(n: int, seed: int, space: Space = SPACE, prefix: str = "g") -> Embeddings:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, space.dim)).astype(np.float32)
    if space.normalized:
        vectors = l2_normalize(vectors)
    return Embeddings(vectors, np.array([f"{prefix}{i}" for i in range(n)]), space)


def brute_force(gallery: np.ndarray, queries: np.ndarray, k: int, keep: np.ndarray | None = None):
    scores = queries @ gallery.T
    if keep is not None:
        scores = np.where(keep[None, :], scores, -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


@pytest.fixture(scope="module")
def gallery():
    return make_embeddings(500, seed=0)


@pytest.fixture(scope="module")
def uncertainty():
    return np.random.default_rng(1).random(500).astype(np.float32)


@pytest.fixture(scope="module")
def queries():
    return make_embeddings(40, seed=2, prefix="q")


@pytest.fixture()
def index(gallery, uncertainty):
    idx = FaissGalleryIndex(SPACE)
    idx.add(gallery, uncertainty)
    return idx


def test_interface_and_alias(index, gallery, uncertainty):
    assert GalleryIndex is FaissGalleryIndex
    assert isinstance(index, GalleryIndexBase)
    assert len(index) == 500
    assert index.space == SPACE
    np.testing.assert_array_equal(index.ids, gallery.ids)
    assert index.uncertainty.dtype == np.float32
    np.testing.assert_array_equal(index.uncertainty, uncertainty)


def test_exact_search_matches_brute_force(index, gallery, queries):
    result = index.search(queries, k=10)
    assert isinstance(result, SearchResult)
    assert result.ids.shape == result.scores.shape == result.positions.shape == (40, 10)
    assert result.scores.dtype == np.float32 and result.positions.dtype == np.int64
    order, scores = brute_force(gallery.vectors, queries.vectors, 10)
    np.testing.assert_allclose(result.scores, scores, atol=1e-5)
    # positions equal up to ties (random floats: no ties in practice)
    np.testing.assert_array_equal(result.positions, order)
    np.testing.assert_array_equal(result.ids, gallery.ids[order])
    np.testing.assert_array_equal(result.query_ids, queries.ids)
    assert result.n_rejected == 0


def test_uncertainty_defaults_to_zero_and_incremental_add(queries):
    first, second = make_embeddings(100, seed=5), make_embeddings(60, seed=6, prefix="h")
    idx = FaissGalleryIndex(SPACE)
    idx.add(first)
    idx.add(second, np.ones(60))
    assert len(idx) == 160
    np.testing.assert_array_equal(idx.uncertainty, np.r_[np.zeros(100), np.ones(60)].astype(np.float32))
    both = np.vstack([first.vectors, second.vectors])
    order, _ = brute_force(both, queries.vectors, 5)
    np.testing.assert_array_equal(idx.search(queries, 5).positions, order)


def test_fewer_items_than_k_are_padded():
    idx = FaissGalleryIndex(SPACE)
    idx.add(make_embeddings(3, seed=7))
    result = idx.search(make_embeddings(2, seed=8, prefix="q"), k=5)
    assert (result.positions[:, :3] >= 0).all() and (result.positions[:, 3:] == -1).all()
    assert (result.ids[:, 3:] == "").all() and np.isneginf(result.scores[:, 3:]).all()
    empty = FaissGalleryIndex(SPACE).search(make_embeddings(2, seed=8, prefix="q"), k=4)
    assert (empty.positions == -1).all() and (empty.ids == "").all()


# ---------------------------------------------------------------------------------------------- rejection
def test_rejected_mask_fraction_and_threshold(index, uncertainty):
    mask = index.rejected_mask(reject_fraction=0.1)
    assert mask.dtype == bool and mask.sum() == 50
    assert set(np.flatnonzero(mask)) == set(np.argsort(-uncertainty)[:50])
    assert uncertainty[mask].min() >= uncertainty[~mask].max()
    mask_t = index.rejected_mask(reject_threshold=0.8)
    np.testing.assert_array_equal(mask_t, uncertainty > 0.8)
    np.testing.assert_array_equal(index.rejected_mask(0.1, 0.8), mask | mask_t)
    assert not index.rejected_mask().any()
    assert index.rejected_mask(reject_fraction=1.0).all()
    with pytest.raises(ValueError, match="reject_fraction"):
        index.rejected_mask(reject_fraction=1.5)


def test_rejection_ties_are_deterministic():
    idx = FaissGalleryIndex(SPACE)
    idx.add(make_embeddings(10, seed=9), np.array([0, 1, 1, 1, 0, 0, 0, 0, 0, 0]))
    np.testing.assert_array_equal(np.flatnonzero(idx.rejected_mask(reject_fraction=0.2)), [1, 2])


@pytest.mark.parametrize("kwargs", [{"reject_fraction": 0.3}, {"reject_threshold": 0.5}, {"reject_fraction": 0.2, "reject_threshold": 0.9}])
def test_search_with_rejection(index, gallery, queries, kwargs):
    rejected = index.rejected_mask(**kwargs)
    assert 0 < rejected.sum() < 500
    result = index.search(queries, k=20, **kwargs)
    assert result.n_rejected == rejected.sum()
    assert (result.positions >= 0).all(), "k results must still be returned from the kept items"
    assert not rejected[result.positions].any()
    assert not np.isin(result.ids, gallery.ids[rejected]).any()
    order, scores = brute_force(gallery.vectors, queries.vectors, 20, keep=~rejected)
    np.testing.assert_array_equal(result.positions, order)
    np.testing.assert_allclose(result.scores, scores, atol=1e-5)
    assert index._selectors_supported is None  # flat indexes keep FAISS's BLAS path: over-fetch, not selectors


def test_flat_rejection_when_the_nearest_items_are_rejected():
    """The flat over-fetch is exact even when a query's whole first fetch is rejected (the short-query redo)."""
    gallery = make_embeddings(500, seed=0)
    query = make_embeddings(1, seed=5, prefix="q")
    closeness = gallery.vectors @ query.vectors[0]
    uncertainty = np.zeros(500, np.float32)
    uncertainty[np.argsort(-closeness)[:450]] = 1.0  # reject the 450 nearest items
    idx = FaissGalleryIndex(SPACE)
    idx.add(gallery, uncertainty)
    result = idx.search(query, k=10, reject_threshold=0.5)
    order, scores = brute_force(gallery.vectors, query.vectors, 10, keep=uncertainty <= 0.5)
    np.testing.assert_array_equal(result.positions, order)
    np.testing.assert_allclose(result.scores, scores, atol=1e-5)


def test_rejection_fallback_without_selector_support(uncertainty, gallery, queries, monkeypatch):
    """Index types without selector support fall back to over-fetching; results are the same."""
    index = FaissGalleryIndex(SPACE, "HNSW16")  # a non-flat index that supports selectors
    index.add(gallery, uncertainty)
    index.set_search_parameters(ef_search=512)
    expected = index.search(queries, k=15, reject_fraction=0.25)
    assert index._selectors_supported is True
    monkeypatch.setattr(index, "_selectors_supported", False)
    fallback = index.search(queries, k=15, reject_fraction=0.25)
    np.testing.assert_array_equal(fallback.positions, expected.positions)
    np.testing.assert_allclose(fallback.scores, expected.scores, atol=1e-6)


def test_rejection_on_index_without_selectors(uncertainty):
    """PQ8x4fs (fast-scan) refuses search parameters: the over-fetch path keeps results correct."""
    gallery = make_embeddings(500, seed=0)
    idx = FaissGalleryIndex(SPACE, "PQ8x4fs")
    idx.add(gallery, uncertainty)
    result = idx.search(make_embeddings(10, seed=3, prefix="q"), k=10, reject_fraction=0.4)
    assert idx._selectors_supported is False
    rejected = idx.rejected_mask(reject_fraction=0.4)
    assert (result.positions >= 0).all() and not rejected[result.positions].any()


def test_reject_everything(index, queries):
    result = index.search(queries, k=3, reject_fraction=1.0)
    assert (result.positions == -1).all() and (result.ids == "").all()


# ---------------------------------------------------------------------------------------------- IVF
def test_ivf_factory_trains_and_searches():
    gallery = make_embeddings(2000, seed=10)
    unc = np.random.default_rng(11).random(2000).astype(np.float32)
    idx = FaissGalleryIndex(SPACE, "IVF4,Flat", nprobe=4)
    assert not idx.is_trained
    idx.add(gallery, unc)
    assert idx.is_trained and len(idx) == 2000
    queries = make_embeddings(20, seed=12, prefix="q")
    order, _ = brute_force(gallery.vectors, queries.vectors, 10)
    np.testing.assert_array_equal(idx.search(queries, 10).positions, order)  # nprobe = nlist: exact
    rejected = idx.rejected_mask(reject_fraction=0.2)
    result = idx.search(queries, 10, reject_fraction=0.2)
    assert (result.positions >= 0).all() and not rejected[result.positions].any()
    np.testing.assert_array_equal(result.positions, brute_force(gallery.vectors, queries.vectors, 10, ~rejected)[0])


def test_trained_factory_with_too_few_vectors_fails_clearly():
    idx = FaissGalleryIndex(SPACE, "IVF64,Flat")
    with pytest.raises(ValueError, match="nlist=64"):
        idx.add(make_embeddings(10, seed=13))
    assert len(idx) == 0


def test_invalid_factory():
    with pytest.raises(ValueError, match="factory"):
        FaissGalleryIndex(SPACE, "NotAnIndex42")


# ---------------------------------------------------------------------------------------------- persistence
def test_save_load_round_trip(index, queries, tmp_path):
    index.save(tmp_path / "idx")
    data = json.loads((tmp_path / "idx" / "manifest.json").read_text())["data"]
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == [data, "manifest.json"]  # one version's files, its manifest
    assert sorted(p.name for p in (tmp_path / "idx" / data).iterdir()) == ["ids.npy", "index.faiss", "uncertainty.npy"]
    loaded = FaissGalleryIndex.load(tmp_path / "idx", expect_space=SPACE)
    assert loaded.space == SPACE and len(loaded) == len(index)
    np.testing.assert_array_equal(loaded.ids, index.ids)
    np.testing.assert_array_equal(loaded.uncertainty, index.uncertainty)
    for kwargs in ({}, {"reject_fraction": 0.2}, {"reject_threshold": 0.7}):
        a, b = index.search(queries, 10, **kwargs), loaded.search(queries, 10, **kwargs)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.scores, b.scores)

    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["kind"] == "gallery-index"
    assert manifest["space"] == SPACE.to_dict()
    assert manifest["query_space_fingerprint"] == "query-fp-aaaa"
    assert manifest["provenance"] == [["cmce", "tfp-1234"]]
    assert manifest["factory"] == "Flat" and manifest["metric"] == "ip"
    assert manifest["count"] == 500 and manifest["dim"] == DIM and manifest["normalized"] is True
    assert set(manifest["files"]) == {"index.faiss", "ids.npy", "uncertainty.npy"}


def test_save_load_ivf_round_trip(tmp_path):
    idx = FaissGalleryIndex(SPACE, "IVF4,Flat", nprobe=2)
    idx.add(make_embeddings(1000, seed=14))
    idx.save(tmp_path)
    loaded = FaissGalleryIndex.load(tmp_path)
    queries = make_embeddings(10, seed=15, prefix="q")
    np.testing.assert_array_equal(idx.search(queries, 5).positions, loaded.search(queries, 5).positions)
    assert loaded.factory == "IVF4,Flat"


def test_load_refuses_other_space(index, tmp_path):
    index.save(tmp_path)
    other = Space("other-fp-bbbb", DIM, True, "other-enc")
    with pytest.raises(SpaceMismatchError, match="other-fp-bbbb") as info:
        FaissGalleryIndex.load(tmp_path, expect_space=other)
    assert "query-fp-aaaa" in str(info.value)


def test_load_without_manifest_fails_clearly(index, tmp_path):
    index.save(tmp_path)
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        FaissGalleryIndex.load(tmp_path)
    with pytest.raises(FileNotFoundError):
        FaissGalleryIndex.load(tmp_path / "nowhere")


def _files(directory):
    """The folder of a saved index's current version."""
    return directory / json.loads((directory / "manifest.json").read_text())["data"]


def test_load_detects_missing_and_corrupted_files(index, tmp_path):
    index.save(tmp_path / "a")
    (_files(tmp_path / "a") / "ids.npy").unlink()
    with pytest.raises(FileNotFoundError, match="ids.npy"):
        FaissGalleryIndex.load(tmp_path / "a")

    index.save(tmp_path / "b")
    path = _files(tmp_path / "b") / "index.faiss"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupted"):
        FaissGalleryIndex.load(tmp_path / "b")

    index.save(tmp_path / "c")
    path = _files(tmp_path / "c") / "uncertainty.npy"
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(ValueError, match="corrupted"):
        FaissGalleryIndex.load(tmp_path / "c")


def test_load_checks_counts(index, tmp_path):
    index.save(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["count"] = 499
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="inconsistent"):
        FaissGalleryIndex.load(tmp_path)


# ---------------------------------------------------------------------------------------------- foreign spaces
def test_refuses_query_of_other_fingerprint(index):
    other = Space("gallery-fp-cccc", DIM, True, "gallery-enc")
    with pytest.raises(SpaceMismatchError) as info:
        index.search(make_embeddings(3, seed=20, space=other), k=5)
    message = str(info.value)
    assert "gallery-fp-cccc" in message and "query-fp-aaaa" in message
    assert "gallery-enc" in message and "query-enc" in message


def test_refuses_query_of_other_dimension(index):
    other = Space("query-fp-aaaa", DIM * 2, True, "query-enc-wide")
    with pytest.raises(SpaceMismatchError, match="dimension 32 != 16") as info:
        index.search(make_embeddings(3, seed=21, space=other), k=5)
    assert "query-enc-wide" in str(info.value) and "query-enc" in str(info.value)
    with pytest.raises(SpaceMismatchError, match="dimension"):
        index.search(np.ones((2, DIM * 2), np.float32) / np.sqrt(DIM * 2), k=5, space=SPACE)


def test_refuses_unnormalised_queries(index):
    raw = np.random.default_rng(22).standard_normal((4, DIM)).astype(np.float32) * 3
    with pytest.raises(SpaceMismatchError, match="not unit length") as info:
        index.search(raw, k=5, space=SPACE)
    assert "query-fp-aaaa" in str(info.value)
    # Embeddings whose vectors were changed after construction are re-checked
    queries = make_embeddings(4, seed=23, prefix="q")
    queries.vectors *= 2
    with pytest.raises(SpaceMismatchError, match="not unit length"):
        index.search(queries, k=5)
    # a space that claims not to be normalised is another space
    unnormalised = Space("query-fp-aaaa", DIM, False, "query-enc-raw")
    with pytest.raises(SpaceMismatchError, match="normalised"):
        index.search(raw, k=5, space=unnormalised)


def test_bare_array_without_space_is_refused(index):
    vectors = make_embeddings(3, seed=24).vectors
    with pytest.raises(TypeError, match="Embeddings") as info:
        index.search(vectors, k=5)
    assert "space=" in str(info.value) and "query-fp-aaaa" in str(info.value)
    assert isinstance(info.value, SpaceMismatchError) and isinstance(info.value, QuerySpaceError)
    # with the space it is accepted and gives the same result as Embeddings
    np.testing.assert_array_equal(
        index.search(vectors, k=5, space=SPACE).positions,
        index.search(Embeddings(vectors, ["a", "b", "c"], SPACE), k=5).positions,
    )


def test_adding_embeddings_of_other_space_is_refused(index):
    other = Space("gallery-fp-cccc", DIM, True, "gallery-enc")
    with pytest.raises(SpaceMismatchError, match="gallery-fp-cccc"):
        index.add(make_embeddings(5, seed=25, space=other, prefix="x"))
    with pytest.raises(TypeError, match="Embeddings"):
        index.add(np.zeros((2, DIM), np.float32))
    assert len(index) == 500


def test_duplicate_ids_are_refused(index, gallery):
    with pytest.raises(ValueError, match="already in the gallery"):
        index.add(gallery.take(np.arange(3)))
    dup = Embeddings(gallery.vectors[:2], ["new", "new"], SPACE)
    with pytest.raises(ValueError, match="more than once"):
        index.add(dup)
    assert len(index) == 500


def test_uncertainty_length_checked(gallery):
    idx = FaissGalleryIndex(SPACE)
    with pytest.raises(ValueError, match="uncertainty"):
        idx.add(gallery, np.zeros(3))


def test_from_faiss_wraps_same_object(gallery, queries):
    import faiss

    raw = faiss.IndexFlatIP(DIM)
    raw.add(gallery.vectors)
    wrapped = FaissGalleryIndex.from_faiss(raw, SPACE, ids=gallery.ids)
    assert wrapped.faiss_index is raw and wrapped.metric == "ip"
    _, positions = raw.search(queries.vectors, 7)
    np.testing.assert_array_equal(wrapped.search(queries, 7).positions, positions)
