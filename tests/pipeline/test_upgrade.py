"""Query-model upgrade without re-embedding the gallery: no gallery model runs, the index moves to the new space; the
new query model may be an exported ONNX one (same top-k as its torch original); a gallery of 0 images is refused."""
from __future__ import annotations

import numpy as np
import pytest

from asymret.compat.transform import CMCETransform
from asymret.core.manifest import SpaceMismatchError
from asymret.data import load_dataset
from asymret.encoders import create_encoder, train_encoder
from asymret.encoders.encoder import Encoder
from asymret.encoders.onnx import export_onnx, load_query_model
from asymret.eval.metrics import evaluate
from asymret.gallery import CMCEEnsemble
from asymret.index import FaissGalleryIndex
from asymret.index.build import assemble_gallery, gallery_from_store
from asymret.pipeline.upgrade import upgrade_query
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
    # build-index's assembly from ψ's alone is this gallery, for the query model the ψ's map into and no other
    assembled, _, _ = assemble_gallery(store, test, setup["v1"], transforms=one)
    np.testing.assert_array_equal(assembled.vectors, vectors.vectors)
    with pytest.raises(SpaceMismatchError):
        assemble_gallery(store, test, setup["v2"], transforms=one)
    index = FaissGalleryIndex(space)
    index.add(vectors)
    assert len(index) == len(test)
    np.testing.assert_allclose(index.faiss_index.reconstruct_n(0, len(index)), kept.vectors, atol=1e-6)


def test_missing_stored_embeddings_are_named(setup, tiny_dataset):
    other = tiny_dataset.select(split="test").sample(10, seed=1)
    with pytest.raises(FileNotFoundError, match="embed it first"):
        gallery_from_store(setup["store"], setup["transforms"], other)


def _procrustes_transforms(setup) -> list[CMCETransform]:
    """ψ's from each gallery model to query v1 without a head loss (an ONNX query model has no classifier), in closed
    form: the same embeddings give the same ψ, nearly the same embeddings a ψ within float tolerance."""
    store, train = setup["store"], setup["train"]
    return [CMCETransform(kind="procrustes", losses={"similarity": 1.0}, name=f"ψ[{model.name}]").fit(
        store.get(model, train), store.get(setup["v1"], train)) for model in setup["gallery_models"]]


def _assert_same_top_k(got, expected, atol: float = 1e-4) -> None:
    """The same ids in the same order with scores within ``atol``; ids may differ only where two scores are equal
    within ``atol`` (a near-tie, in the row or with the item just past the k-th)."""
    np.testing.assert_allclose(got.scores, expected.scores, atol=atol)
    for row, (ids, scores) in enumerate(zip(expected.ids, expected.scores)):
        for j in np.flatnonzero(got.ids[row] != ids):
            tied = np.sum(np.abs(scores - scores[j]) < atol) > 1 or j == len(ids) - 1
            assert tied, f"query {row}: result {j} is {got.ids[row][j]!r} instead of {ids[j]!r} (scores {scores})"


def test_an_exported_onnx_query_model_upgrades_to_the_same_top_k_as_its_torch_original(setup, tmp_path):
    store, test = setup["store"], setup["test"]
    images = [image[..., None] if image.ndim == 2 else image for image in (test.load(i) for i in range(8))]
    export_onnx(setup["v2"], tmp_path / "v2-onnx", verify_images=images)
    exported = load_query_model(tmp_path / "v2-onnx")
    transforms = _procrustes_transforms(setup)
    by_torch = upgrade_query(store, transforms, setup["v2"], setup["train"], test)
    by_onnx = upgrade_query(store, transforms, exported, setup["train"], test, transforms_out=tmp_path / "psi", index_out=tmp_path / "idx")
    assert by_onnx.index.space.fingerprint == by_torch.index.space.fingerprint == setup["v2"].space().fingerprint
    # the same gallery vectors (the ψ's fitted on the ONNX model's embeddings of the training images) ...
    n = len(by_torch.index)
    assert len(by_onnx.index) == n == len(test)
    np.testing.assert_allclose(by_onnx.index.faiss_index.reconstruct_n(0, n), by_torch.index.faiss_index.reconstruct_n(0, n), atol=1e-4)
    np.testing.assert_allclose(by_onnx.index.uncertainty, by_torch.index.uncertainty, atol=1e-4)
    # ... and so the same top-k for the same queries
    queries = store.get(setup["v2"], test)
    _assert_same_top_k(by_onnx.index.search(queries, k=5), by_torch.index.search(queries, k=5))
    assert (tmp_path / "idx" / "manifest.json").is_file() and (tmp_path / "psi" / "1" / "transform.pt").is_file()


def test_an_onnx_query_model_is_refused_where_a_psi_needs_the_classifier_head(setup, tmp_path):
    export_onnx(setup["v2"], tmp_path / "v2-onnx")
    exported = load_query_model(tmp_path / "v2-onnx")
    with pytest.raises(ValueError, match=r"dual-ce loss, which needs the query model's classifier head, and an exported ONNX"):
        upgrade_query(setup["store"], setup["transforms"], exported, setup["train"], setup["test"], index_out=tmp_path / "idx")
    assert not (tmp_path / "idx").exists()


def test_a_gallery_of_0_readable_images_is_refused_and_nothing_is_written(setup, tmp_path):
    """Every gallery image unreadable: the stored gallery embeddings hold 0 vectors, the upgrade refuses the index."""
    folder = tmp_path / "broken" / "cls"
    folder.mkdir(parents=True)
    for i in range(3):
        (folder / f"{i}.png").write_bytes(b"not a png")
    unreadable = load_dataset("folder", str(tmp_path / "broken"))
    for model in setup["gallery_models"]:
        assert len(setup["store"].get(model, unreadable)) == 0  # embedded (nothing readable), so found in the store
    with pytest.raises(ValueError, match="refusing to build an index of 0 items"):
        upgrade_query(setup["store"], setup["transforms"], setup["v2"], setup["train"], unreadable,
                      transforms_out=tmp_path / "psi", index_out=tmp_path / "idx")
    assert not (tmp_path / "psi").exists() and not (tmp_path / "idx").exists()
