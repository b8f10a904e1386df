"""The contract every index backend keeps, one suite parametrised over the registry (issue 21, item 3): made from
its spec string, it finds the same top-k as exact search on a toy, refuses queries, additions and loads of a foreign
space, never returns a rejected item (fraction, threshold, exclude), and comes back from a save unchanged —
through ``load_index``, whichever backend wrote the folder.  Approximate settings (IVF probing a few lists, HNSW,
PQ) have their own tests (test_ann.py, test_milvus.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from asymret.core.manifest import SpaceMismatchError
from asymret.core.space import Embeddings, Space, l2_normalize
from asymret.index import INDEX_BACKENDS, ExactIndex, GalleryIndexBase, create_index, load_index, parse_index_spec

DIM, N = 16, 300
SPACE = Space("contract-space", DIM, True, "query-enc")
OTHER = Space("foreign-space", DIM, True, "gallery-enc")

#: spec → the backend's own options; every backend of the registry appears (checked below)
SPECS = {
    "exact": {},
    "faiss:Flat": {},
    "faiss:IVF4,Flat": {"nprobe": 4},  # every list probed: exact
    "faiss:Flat#rerank": {"exact_rerank": 2},
    "milvus:FLAT": {},
}


def make_index(spec: str, folder) -> GalleryIndexBase:
    options = dict(SPECS[spec])
    if spec.startswith("milvus"):
        pytest.importorskip("pymilvus")
        options.update(uri=str(folder / "milvus.db"), collection="contract")
    return create_index(spec.split("#")[0], SPACE, **options)


def vectors(n: int, seed: int) -> np.ndarray:
    return l2_normalize(np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32))


@pytest.fixture(scope="module")
def toy():
    gallery = Embeddings(vectors(N, 0), np.array([f"g/{i:03d}.png" for i in range(N)]), SPACE)
    uncertainty = np.random.default_rng(1).uniform(0, 1, N).astype(np.float32)
    uncertainty[50:80] = uncertainty[7]  # ties at the fraction rule's boundary
    queries = Embeddings(vectors(25, 2), np.array([f"q{i}" for i in range(25)]), SPACE)
    reference = ExactIndex.from_embeddings(gallery, uncertainty)
    return gallery, uncertainty, queries, reference


@pytest.fixture(scope="module", params=list(SPECS))
def filled(request, toy, tmp_path_factory):
    gallery, uncertainty, _, _ = toy
    index = make_index(request.param, tmp_path_factory.mktemp("contract"))
    index.add(gallery, uncertainty)
    return request.param, index


def test_every_registered_backend_is_under_contract():
    assert {parse_index_spec(spec.split("#")[0]).backend for spec in SPECS} == set(INDEX_BACKENDS)


def test_the_spec_makes_its_backend(filled):
    spec, index = filled
    assert isinstance(index, INDEX_BACKENDS[parse_index_spec(spec.split("#")[0]).backend].index_class())
    assert parse_index_spec(index.spec) == parse_index_spec(spec.split("#")[0])
    assert len(index) == N and index.space == SPACE


@pytest.mark.parametrize("k", [1, 10, N + 5])
def test_same_top_k_as_exact_search(filled, toy, k):
    _, index = filled
    _, _, queries, reference = toy
    got, want = index.search(queries, k=k), reference.search(queries, k=k)
    assert got.ids.shape == got.scores.shape == got.positions.shape == (len(queries), k)
    np.testing.assert_array_equal(got.positions, want.positions)
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
    np.testing.assert_array_equal(got.query_ids, queries.ids)
    if k > N:  # padded: no id, position -1, the worst score
        assert (got.ids[:, N:] == "").all() and (got.positions[:, N:] == -1).all() and np.isneginf(got.scores[:, N:]).all()


@pytest.mark.parametrize("rule", [{"reject_fraction": 0.3}, {"reject_threshold": 0.5},
                                  {"reject_fraction": 0.1, "reject_threshold": 0.8}, {"reject_fraction": 1.0}, {"exclude": "top"}])
def test_rejected_items_are_never_returned(filled, toy, rule):
    _, index = filled
    gallery, _, queries, reference = toy
    if rule.get("exclude") == "top":  # the items each query would find first
        exclude = np.zeros(N, dtype=bool)
        exclude[reference.search(queries, k=3).positions.ravel()] = True
        rule = {"exclude": exclude, "reject_fraction": 0.2}
    rejected = reference.rejected_mask(**rule)
    got, want = index.search(queries, k=20, **rule), reference.search(queries, k=20, **rule)
    found = got.positions >= 0
    assert not rejected[got.positions[found]].any()
    assert not np.isin(got.ids, gallery.ids[rejected]).any()
    assert found.sum(axis=1).tolist() == [min(20, int((~rejected).sum()))] * len(queries)  # still k where k are kept
    np.testing.assert_array_equal(got.positions, want.positions)
    np.testing.assert_array_equal(index.rejected_mask(**rule), rejected)
    assert got.n_rejected == want.n_rejected


def test_foreign_spaces_are_refused(filled, toy, tmp_path):
    _, index = filled
    gallery, uncertainty, queries, _ = toy
    with pytest.raises(SpaceMismatchError, match="foreign-space"):
        index.search(Embeddings(queries.vectors, queries.ids, OTHER), k=5)
    with pytest.raises(SpaceMismatchError):
        index.search(queries.vectors, k=5)  # a bare array says no space
    with pytest.raises(SpaceMismatchError, match="foreign-space"):
        index.add(Embeddings(vectors(3, 9), np.array(["x", "y", "z"]), OTHER))
    assert len(index) == N
    index.save(tmp_path / "saved")
    with pytest.raises(SpaceMismatchError, match="foreign-space"):
        load_index(tmp_path / "saved", expect_space=OTHER)


def test_save_load_round_trip(filled, toy, tmp_path):
    spec, index = filled
    _, _, queries, _ = toy
    index.save(tmp_path / "saved")
    loaded = load_index(tmp_path / "saved", expect_space=SPACE)
    assert type(loaded) is type(index) and loaded.spec == index.spec and loaded.space == SPACE
    np.testing.assert_array_equal(loaded.ids, index.ids)
    np.testing.assert_array_equal(loaded.uncertainty, index.uncertainty)
    for rule in ({}, {"reject_fraction": 0.25}, {"reject_threshold": 0.6}):
        a, b = index.search(queries, k=10, **rule), loaded.search(queries, k=10, **rule)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
    manifest = json.loads((tmp_path / "saved" / "manifest.json").read_text())
    assert manifest["kind"] == "gallery-index" and manifest["backend"] == parse_index_spec(spec.split("#")[0]).backend
    assert manifest["space"] == SPACE.to_dict() and manifest["count"] == N and manifest["dim"] == DIM


# ---------------------------------------------------------------------------------------------- the spec string
def test_spec_strings():
    assert str(parse_index_spec("faiss")) == "faiss:Flat"
    assert str(parse_index_spec("faiss:IVF256,PQ16")) == "faiss:IVF256,PQ16"
    assert str(parse_index_spec(" exact ")) == "exact"
    assert str(parse_index_spec("milvus:hnsw")) == "milvus:HNSW" and str(parse_index_spec("milvus")) == "milvus:FLAT"
    with pytest.raises(ValueError, match="unknown index backend 'annoy'.*exact, faiss, milvus"):
        parse_index_spec("annoy:whatever")
    with pytest.raises(ValueError, match="takes no parameter"):
        parse_index_spec("exact:Flat")
    with pytest.raises(ValueError, match="factory"):
        create_index("faiss:NotAnIndex42", SPACE)
    with pytest.raises(TypeError, match="does not take nprobe"):
        create_index("exact", SPACE, nprobe=4)


# ---------------------------------------------------------------------------------------------- old folders
@pytest.mark.parametrize("spec", ["faiss:Flat", "exact"])
def test_folders_saved_before_the_shared_persistence_still_load(toy, tmp_path, spec):
    """A FAISS folder of the first format (no ``backend`` in its manifest) and an exact folder with only the fields
    it used to write load as they did."""
    gallery, uncertainty, queries, reference = toy
    index = create_index(spec, SPACE)
    index.add(gallery, uncertainty)
    index.save(tmp_path)
    path = tmp_path / "manifest.json"
    manifest = json.loads(path.read_text())
    for saved in (tmp_path / manifest["data"]).iterdir():  # the files at the top, as they were before version folders
        saved.rename(tmp_path / saved.name)
    del manifest["data"]
    if spec == "exact":
        manifest = {key: manifest[key] for key in ("kind", "format_version", "versions", "backend", "space", "count", "dim", "files")}
    else:
        del manifest["backend"]
    path.write_text(json.dumps(manifest))
    loaded = load_index(tmp_path, expect_space=SPACE)
    assert type(loaded) is type(index)
    np.testing.assert_array_equal(loaded.search(queries, k=10).ids, reference.search(queries, k=10).ids)
