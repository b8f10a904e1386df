"""The Milvus backend on Milvus Lite (a local file, started by pymilvus in-process): the same top-k as the FAISS flat
index, rejection as a filter equal to the one rejection rule, ids round-trip, the space checked on every search,
idempotent re-runs of an interrupted build, in-place rebuilds that cannot lose the old index
(test_milvus_rebuild.py)."""
from __future__ import annotations

import importlib

import numpy as np
import pytest

from asymret.core.manifest import SpaceMismatchError
from asymret.core.space import Embeddings, Space, l2_normalize
from asymret.index import GalleryIndex, MilvusGalleryIndex, load_index

DIM = 16
SPACE = Space("milvus-test-space", DIM, True, "query-enc")
OTHER = Space("another-space-fp", DIM, True, "other-enc")
N = 600


def vectors(n: int, seed: int) -> np.ndarray:
    return l2_normalize(np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32))


@pytest.fixture(scope="module")
def data():
    ids = np.array([f"img/{i:04d} é ü.jpg" if i % 7 == 0 else f"g{i}" for i in range(N)])  # ids with /, spaces, unicode
    uncertainty = np.random.default_rng(1).uniform(0, 1, N).astype(np.float32)
    uncertainty[100:140] = uncertainty[3]  # ties at the rejection boundary: broken by position, as the rule says
    gallery = Embeddings(vectors(N, 0), ids, SPACE)
    queries = Embeddings(vectors(40, 2), np.arange(40).astype(str), SPACE)
    faiss_index = GalleryIndex(SPACE)
    faiss_index.add(gallery, uncertainty)
    return gallery, uncertainty, queries, faiss_index


@pytest.fixture(scope="module")
def saved(tmp_path_factory, data):
    gallery, uncertainty, _, _ = data
    folder = tmp_path_factory.mktemp("milvus-index")
    index = MilvusGalleryIndex(SPACE, folder / "milvus.db")
    index.add(gallery, uncertainty)
    index.save(folder)
    return folder


@pytest.mark.parametrize("rejection", [{}, {"reject_fraction": 0.25}, {"reject_threshold": 0.5},
                                       {"reject_fraction": 0.1, "reject_threshold": 0.7}])
def test_same_top_k_as_faiss_flat_with_rejection_done_as_a_filter(saved, data, rejection):
    _, _, queries, faiss_index = data
    milvus = load_index(saved, expect_space=SPACE)
    assert isinstance(milvus, MilvusGalleryIndex)
    expected, got = faiss_index.search(queries, k=10, **rejection), milvus.search(queries, k=10, **rejection)
    np.testing.assert_array_equal(got.ids, expected.ids)
    np.testing.assert_array_equal(got.positions, expected.positions)
    np.testing.assert_allclose(got.scores, expected.scores, atol=1e-5)
    assert got.n_rejected == expected.n_rejected
    if "reject_fraction" in rejection:  # the tie block straddles the boundary: the filter matches the rule exactly
        expression, rejected = milvus.kept_filter(**rejection)
        assert "uncertainty ==" in expression
        np.testing.assert_array_equal(rejected, faiss_index.rejected_mask(**rejection))


def test_exclude_mask_and_ids_round_trip(saved, data):
    gallery, uncertainty, queries, faiss_index = data
    milvus = load_index(saved)
    np.testing.assert_array_equal(milvus.ids, gallery.ids)
    np.testing.assert_array_equal(milvus.uncertainty, uncertainty)
    exclude = np.zeros(N, dtype=bool)
    exclude[faiss_index.search(queries, k=3).positions.ravel()] = True
    np.testing.assert_array_equal(milvus.search(queries, k=5, exclude=exclude).ids, faiss_index.search(queries, k=5, exclude=exclude).ids)


def test_foreign_queries_and_a_collection_replaced_in_another_space_are_refused(tmp_path, data):
    gallery, uncertainty, queries, _ = data
    index = MilvusGalleryIndex(SPACE, tmp_path / "milvus.db", collection="swapped")
    index.add(gallery, uncertainty)
    index.save(tmp_path)
    with pytest.raises(SpaceMismatchError):
        index.search(Embeddings(queries.vectors, queries.ids, OTHER), k=3)
    with pytest.raises(SpaceMismatchError):
        load_index(tmp_path, expect_space=OTHER)
    opened = load_index(tmp_path)
    # the folder rebuilt in place in another space: the folder now refuses the old space, and a client that opened
    # the old index is refused too (its collection, superseded, is dropped), never answered from the new collection
    rebuilt = MilvusGalleryIndex(OTHER, tmp_path / "milvus.db", collection="swapped")
    rebuilt.add(Embeddings(gallery.vectors, gallery.ids, OTHER), uncertainty)
    rebuilt.save(tmp_path)
    with pytest.raises(SpaceMismatchError):
        load_index(tmp_path, expect_space=SPACE)
    with pytest.raises(FileNotFoundError, match="no longer exists"):
        opened.search(queries, k=3)
    # a collection replaced under its very name by one in another space (outside asymret, under a running client):
    # the next search is refused
    reopened = load_index(tmp_path, expect_space=OTHER)
    impostor = MilvusGalleryIndex(SPACE, tmp_path / "milvus.db", collection=reopened.collection, _create=False)
    impostor._milvus.drop_collection(reopened.collection)
    impostor._create_collection()
    impostor.add(gallery, uncertainty)
    with pytest.raises(SpaceMismatchError, match="now holds space"):
        reopened.search(Embeddings(queries.vectors, queries.ids, OTHER), k=3)


def test_an_interrupted_build_run_again_leaves_no_duplicate_rows(tmp_path, data, monkeypatch):
    gallery, uncertainty, queries, faiss_index = data
    crashed = MilvusGalleryIndex(SPACE, tmp_path / "milvus.db")
    crashed.add(gallery.take(np.arange(250)), uncertainty[:250])  # killed before save(): no manifest
    assert not (tmp_path / "manifest.json").exists()
    rerun = MilvusGalleryIndex(SPACE, tmp_path / "milvus.db")
    real_upsert = rerun._milvus.upsert

    def retried(collection, rows):  # every batch sent twice (a client retry after a timeout)
        real_upsert(collection, rows)
        return real_upsert(collection, rows)

    monkeypatch.setattr(rerun._milvus, "upsert", retried)
    rerun.add(gallery, uncertainty)
    rerun.save(tmp_path)  # checks the stored row count equals the items added
    assert rerun._count() == N
    np.testing.assert_array_equal(load_index(tmp_path).search(queries, k=10).ids, faiss_index.search(queries, k=10).ids)


def test_a_folder_whose_collection_lost_rows_is_refused(tmp_path, data):
    gallery, uncertainty, _, _ = data
    index = MilvusGalleryIndex(SPACE, tmp_path / "milvus.db")
    index.add(gallery, uncertainty)
    index.save(tmp_path)
    index._milvus.delete(index.collection, filter="pos < 5")
    index._milvus.flush(index.collection)
    with pytest.raises(ValueError, match="incomplete or was changed"):
        load_index(tmp_path)


# IVF_FLAT is not tested: on Milvus Lite its recall with nprobe = nlist was not stable between identical runs
@pytest.mark.parametrize("index_type, search_params", [("HNSW", {"ef": 64})])
def test_approximate_milvus_indexes_keep_rejection_and_find_the_exact_neighbours(tmp_path, data, index_type, search_params):
    # pytorch-metric-learning (asymret's compatibility losses) patches FAISS's search for torch tensors; Milvus Lite
    # runs FAISS in this process with search parameters: both must work in one process, whatever ran before
    importlib.import_module("pytorch_metric_learning.utils.inference")

    gallery, uncertainty, queries, faiss_index = data
    index = MilvusGalleryIndex(SPACE, tmp_path / "milvus.db", index_type=index_type, search_params=search_params,
                               )
    index.add(gallery, uncertainty)
    index.save(tmp_path)
    loaded = load_index(tmp_path)
    assert loaded.index_type == index_type and loaded.search_params == search_params
    got, expected = loaded.search(queries, k=10, reject_fraction=0.3), faiss_index.search(queries, k=10, reject_fraction=0.3)
    rejected = faiss_index.rejected_mask(reject_fraction=0.3)
    assert not rejected[got.positions[got.positions >= 0]].any()
    found = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.positions.tolist(), expected.positions.tolist())])
    assert found >= 0.95  # 600 items, generous search parameters: (almost) exact
