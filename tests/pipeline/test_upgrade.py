"""Query-model upgrade without re-embedding the gallery: no gallery model runs, the index moves to the new space."""
from __future__ import annotations

import numpy as np
import pytest

from asymret.compat.transform import CMCETransform
from asymret.core.manifest import SpaceMismatchError
from asymret.encoders import create_encoder, train_encoder
from asymret.encoders.encoder import Encoder
from asymret.eval.metrics import evaluate
from asymret.gallery import CMCEEnsemble
from asymret.index import FaissGalleryIndex
from asymret.pipeline.upgrade import gallery_from_store, upgrade_query
from asymret.store import EmbeddingStore
from asymret.training import TrainConfig

PSI_TRAIN = TrainConfig(epochs=15, batch_size=64, lr=5e-3, seed=0)


@pytest.fixture(scope="module")
def setup(tiny_dataset, tmp_path_factory):
    """Two gallery models and query v1 with ψ's and an index; query v2 trained longer; everything in one store."""
    train, test = tiny_dataset.select(split="train"), tiny_dataset.select(split="test")
    store = EmbeddingStore(tmp_path_factory.mktemp("store"))
    gallery_models = [create_encoder(arch, embedding_dim=16, name=f"g-{arch}", seed=i) for i, arch in enumerate(["convnet-s", "convnet-m"])]
    for model in gallery_models:
        train_encoder(model, train, TrainConfig(epochs=2, batch_size=64, seed=1))
    query_v1 = create_encoder("convnet-xs", embedding_dim=16, name="query-v1", seed=3)
    train_encoder(query_v1, train, TrainConfig(epochs=1, batch_size=64, seed=3))
    query_v2 = create_encoder("convnet-xs", embedding_dim=16, name="query-v2", seed=4)
    train_encoder(query_v2, train, TrainConfig(epochs=6, batch_size=64, seed=4))
    transforms = []
    for model in gallery_models:
        psi = CMCETransform(kind="mlp", hidden_dim=32, losses={"similarity": 1.0, "dual-ce": 0.1}, head=query_v1.classifier,
                            train=PSI_TRAIN, name=f"ψ[{model.name}]")
        psi.fit(store.get(model, train), store.get(query_v1, train))
        store.get(model, test)
        transforms.append(psi)
    return {"train": train, "test": test, "store": store, "gallery_models": gallery_models, "v1": query_v1, "v2": query_v2,
            "transforms": transforms, "dir": tmp_path_factory.mktemp("out")}


def test_upgrade_runs_no_gallery_model(setup, monkeypatch):
    calls = []
    original_extract = EmbeddingStore.extract

    def recording_extract(self, encoder, dataset, *args, **kwargs):
        calls.append(encoder.name)
        return original_extract(self, encoder, dataset, *args, **kwargs)

    def refusing(method):
        def wrapper(self, *args, **kwargs):
            if self.name.startswith("g-"):
                raise AssertionError(f"gallery model {self.name} ran a forward pass")
            return method(self, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(EmbeddingStore, "extract", recording_extract)
    monkeypatch.setattr(Encoder, "forward", refusing(Encoder.forward))
    monkeypatch.setattr(Encoder, "pooled", refusing(Encoder.pooled))
    # the ψ's as a user has them: loaded from disk
    for i, psi in enumerate(setup["transforms"]):
        psi.save(setup["dir"] / f"psi{i}")
    loaded = [CMCETransform.load(setup["dir"] / f"psi{i}") for i in range(2)]
    report = upgrade_query(setup["store"], loaded, setup["v2"], setup["train"], setup["test"],
                           transforms_out=setup["dir"] / "psi-v2", index_out=setup["dir"] / "index-v2")
    assert all(not name.startswith("g-") for name in calls)  # only the new query model was embedded
    assert report.index.space.fingerprint == setup["v2"].space().fingerprint
    assert len(report.index) == len(setup["test"])
    assert (setup["dir"] / "index-v2" / "manifest.json").is_file() and (setup["dir"] / "psi-v2" / "1" / "transform.pt").is_file()
    assert set(report.seconds) >= {"fit_transforms", "build_index", "total"}
    # each refitted ψ kept its settings and now maps into v2's space
    for old, new in zip(loaded, report.transforms):
        assert new.config()["losses"] == old.config()["losses"] and new.hidden_dim == old.hidden_dim
        assert new.target_space.fingerprint == setup["v2"].space().fingerprint


def test_upgraded_index_serves_v2_and_refuses_v1(setup):
    store, test = setup["store"], setup["test"]
    report = upgrade_query(store, setup["transforms"], setup["v2"], setup["train"], test)
    v2_queries = store.get(setup["v2"], test)
    labels = dict(zip(test.ids.tolist(), test.labels.tolist()))
    upgraded = evaluate(v2_queries, index=report.index, gallery_labels=labels, ks=(1,))
    # the same gallery built the slow way (gallery models re-run through the store's get) gives the same index
    slow_vectors, slow_unc = CMCEEnsemble(report.transforms).transform([store.get(m, test) for m in setup["gallery_models"]])
    np.testing.assert_allclose(report.index.faiss_index.reconstruct_n(0, len(report.index)), slow_vectors.vectors, atol=1e-6)
    np.testing.assert_allclose(report.index.uncertainty, slow_unc, atol=1e-6)
    assert upgraded["recall@1"] > 0.4  # 4 classes: chance is ~0.25
    with pytest.raises(SpaceMismatchError):
        report.index.search(store.get(setup["v1"], test), k=1)


def test_dropping_a_gallery_model_reads_the_other_from_the_store(setup):
    store, test, models, transforms = setup["store"], setup["test"], setup["gallery_models"], setup["transforms"]
    one = transforms[:1]
    vectors, uncertainty, space = gallery_from_store(store, one, test)
    assert uncertainty is None and space.provenance == CMCEEnsemble(one).space.provenance
    # the kept model's stored embeddings through its ψ, image by image — not the dropped model's
    kept = one[0].transform(store.get(models[0], test))
    np.testing.assert_array_equal(vectors.ids, test.ids)
    np.testing.assert_allclose(vectors.vectors, kept.vectors, atol=1e-6)
    dropped = transforms[1].transform(store.get(models[1], test))
    assert np.abs(vectors.vectors - dropped.vectors).max() > 0.1
    index = FaissGalleryIndex(space)
    index.add(vectors)
    assert len(index) == len(test)
    np.testing.assert_allclose(index.faiss_index.reconstruct_n(0, len(index)), kept.vectors, atol=1e-6)


def test_missing_stored_embeddings_are_named(setup, tiny_dataset):
    other = tiny_dataset.select(split="test").sample(10, seed=1)
    with pytest.raises(FileNotFoundError, match="embed it first"):
        gallery_from_store(setup["store"], setup["transforms"], other)
