"""The experiment as data: seeds from names, one cache, a strict config."""
from __future__ import annotations

import pytest

from asymret.compat.config import PsiConfig
from asymret.core.seeds import derive_seed
from asymret.encoders import create_encoder
from asymret.pipeline import PROFILES, ExperimentConfig
from asymret.pipeline.cache import ArtifactCache


def test_derive_seed_is_stable_and_name_keyed():
    assert derive_seed(0, "gallery:lite0") == derive_seed(0, "gallery:lite0")
    assert derive_seed(0, "gallery:lite0") != derive_seed(0, "gallery:convnet-m")
    assert derive_seed(0, "gallery:lite0") != derive_seed(1, "gallery:lite0")
    assert derive_seed(0, "a", "b") != derive_seed(0, "ab")
    assert all(0 <= derive_seed(s, "x") < 2**31 for s in range(50))


def test_a_models_seed_does_not_depend_on_its_position():
    config = PROFILES["tiny"]
    reordered = ExperimentConfig.from_dict({**config.to_dict(), "gallery": [g.__dict__ for g in reversed(config.gallery)]})
    assert [g.name for g in reordered.gallery] == [g.name for g in reversed(config.gallery)]
    # the recipe of a model (what the cache keys) depends on its name and the run's seed, not its index
    assert derive_seed(0, config.gallery[1].name) == derive_seed(0, reordered.gallery[0].name)


def test_cache_builds_once_and_rebuilds_on_a_new_recipe(tmp_path):
    cache = ArtifactCache(tmp_path)
    builds = []

    def build():
        builds.append(1)
        return create_encoder("convnet-xs", embedding_dim=8, name="m", seed=len(builds))

    first, _ = cache.get_or_build("encoder", "seed0/m", {"epochs": 1}, build)
    again, _ = cache.get_or_build("encoder", "seed0/m", {"epochs": 1}, build)
    assert len(builds) == 1 and again.fingerprint() == first.fingerprint()
    changed, _ = cache.get_or_build("encoder", "seed0/m", {"epochs": 2}, build)
    assert len(builds) == 2 and changed.fingerprint() != first.fingerprint()
    # the variant lives beside the first recipe: neither evicts the other
    back, _ = cache.get_or_build("encoder", "seed0/m", {"epochs": 1}, build)
    variant, _ = cache.get_or_build("encoder", "seed0/m", {"epochs": 2}, build)
    assert len(builds) == 2 and back.fingerprint() == first.fingerprint() and variant.fingerprint() == changed.fingerprint()
    assert cache.directory("encoder", "seed0/m").is_dir() and len(list((tmp_path / "encoder" / "seed0").iterdir())) == 2
    with pytest.raises(ValueError, match="unknown artifact kind"):
        cache.get_or_build("index", "x", {}, build)


def test_config_from_dict_round_trip_and_refuses_unknown_keys():
    config = PROFILES["default"]
    assert ExperimentConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown experiment setting.*train_sise"):
        ExperimentConfig.from_dict({"train_sise": 10})
    with pytest.raises(ValueError, match="unknown model"):
        ExperimentConfig.from_dict({"query": {"name": "q", "arch": "convnet-xs", "epochs": 1, "epoch": 2}})
    with pytest.raises(ValueError, match="unknown ψ setting"):
        ExperimentConfig.from_dict({"psi": {"hidden": 3}})
    assert ExperimentConfig.from_dict({"psi": {"hidden_dim": 3}}).psi == PsiConfig(hidden_dim=3)


def test_instance_recall_from_new_views_of_the_images(tmp_path, tiny_dataset):
    """With ``instance_view`` the instance queries are new views (harder than the image itself); class-level
    metrics are unchanged, and the protocol says which was measured."""
    import dataclasses

    from asymret.pipeline import Experiment, ModelSpec

    test = tiny_dataset.splits == "test"  # every test image a query against all of them
    tiny_dataset = dataclasses.replace(tiny_dataset, is_query=test, is_gallery=test)
    config = dataclasses.replace(PROFILES["tiny"], train_size=None, test_size=None, seeds=(0,), instance_ks=(1,),
                                 query=ModelSpec("query:convnet-xs", "convnet-xs", epochs=2))
    same = Experiment(config, tiny_dataset, tmp_path)
    views = Experiment(dataclasses.replace(config, instance_view="strong"), tiny_dataset, tmp_path)
    query, _ = same.train_model(config.query, 0)
    gallery = same.store.get(query, same.test_gallery)
    on_itself, on_views = same.measure_query_model(query, gallery), views.measure_query_model(query, gallery)
    assert on_itself["recall@1"] == on_views["recall@1"]  # class level: the same queries
    assert on_itself["instance_recall@1"] == 1.0  # the image itself finds its own copy
    assert on_views["instance_recall@1"] < on_itself["instance_recall@1"]
    assert "new 'strong' view" in views.instance_protocol() and "itself" in same.instance_protocol()
    # a symmetric row carries the model's own instance recall from the new views (the ceiling for the asymmetric
    # rows); without new views the query *is* the image, so the row has none
    from asymret.eval.report import RowRecorder

    queries = same.store.get(query, same.test_queries)
    rows_views, rows_same = {}, {}
    views._record_symmetric(RowRecorder(rows_views), query, queries, gallery, 0.0)
    same._record_symmetric(RowRecorder(rows_same), query, queries, gallery, 0.0)
    (row_views,), (row_same,) = rows_views.values(), rows_same.values()
    assert row_views.metrics["instance_recall@1"] == [on_views["instance_recall@1"]]
    assert row_views.metrics["recall@1"] == row_same.metrics["recall@1"] == [on_itself["recall@1"]]
    assert "instance_recall@1" not in row_same.metrics


def test_validation_classes_are_held_out_of_training(tmp_path, tiny_dataset):
    import dataclasses

    from asymret.pipeline import Experiment

    config = dataclasses.replace(PROFILES["tiny"], train_size=None, validation_classes=1)
    experiment = Experiment(config, tiny_dataset, tmp_path)
    held_out = set(experiment.validation.labels.tolist())
    assert len(held_out) == 1 and not held_out & set(experiment.train.labels.tolist())
    assert len(experiment.train) + len(experiment.validation) == int((tiny_dataset.splits == "train").sum())
    assert experiment.validation.fingerprint() == Experiment(config, tiny_dataset, tmp_path).validation.fingerprint()
    assert Experiment(PROFILES["tiny"], tiny_dataset, tmp_path).validation is None
    with pytest.raises(ValueError, match="leaves no training class"):
        Experiment(dataclasses.replace(config, validation_classes=4), tiny_dataset, tmp_path)


def test_a_recipe_leaves_out_settings_at_their_default():
    """A setting added later (at a default that keeps the old behaviour) must not invalidate cached models."""
    from asymret.pipeline import ModelSpec
    from asymret.pipeline.cache import recipe_of

    spec = ModelSpec("query:convnet-xs", "convnet-xs", epochs=8)
    assert recipe_of(spec) == {"name": "query:convnet-xs", "arch": "convnet-xs", "epochs": 8}
    assert recipe_of(ModelSpec("q", "convnet-xs", epochs=8, tail_blocks=2))["tail_blocks"] == 2
    assert recipe_of(PsiConfig()) == {} and recipe_of(PsiConfig(epochs=5)) == {"epochs": 5}


def test_transductive_psi_is_label_free_fits_the_indexed_gallery_and_adds_rows(tmp_path, tiny_dataset):
    """``transductive_psi``: ψ's fitted with the similarity loss alone on the training images plus the indexed
    gallery; they match the query model's embeddings of that gallery better than ψ's fitted on training images."""
    import dataclasses

    import numpy as np

    from asymret.pipeline import Experiment, ModelSpec

    config = dataclasses.replace(PROFILES["tiny"], train_size=None, test_size=None, seeds=(0,), transductive_psi=True,
                                 transductive_kd=True, query=ModelSpec("query:convnet-xs", "convnet-xs", epochs=2),
                                 gallery=(ModelSpec("gallery:convnet-s", "convnet-s", epochs=2),))
    experiment = Experiment(config, tiny_dataset, tmp_path)
    models = experiment.models(0)
    query, gallery_model = models.query, models.gallery_models[0]
    plain = experiment.fit_psi(gallery_model, query, 0)
    transductive = experiment.fit_psi(gallery_model, query, 0, unlabelled=experiment.test_gallery)
    assert transductive.loss_weights == {"similarity": 1.0} and transductive is not plain
    g_test = experiment.store.get(gallery_model, experiment.test_gallery)
    q_test = experiment.store.get(query, experiment.test_gallery).align(g_test.ids)

    def mean_cos(psi):
        return float(np.mean(np.sum(psi.transform(g_test).vectors * q_test.vectors, axis=1)))

    assert mean_cos(transductive) > mean_cos(plain)
    # the protocol that holds: the label-free ψ sees the held-out gallery, never a held-out query
    assert not set(experiment.heldout_queries.ids) & set(experiment.heldout_gallery.ids)
    assert set(experiment.heldout_queries.ids) | set(experiment.heldout_gallery.ids) == set(experiment.test.ids)
    rows, _ = experiment.run(tmp_path / "out")
    settings = [row.setting for row in rows]
    heldout = [s for s in settings if s.startswith("held-out queries")]
    assert any(s.endswith("CMCE ensemble, transductive") for s in heldout)
    assert any("CMCE single ψ, transductive" in s for s in heldout)
    assert any(s.endswith(": CMCE ensemble") for s in heldout)  # the usual ψ's under the same protocol, beside them
    assert not any(s.startswith("CMCE ensemble, transductive") for s in settings)  # the optimistic rows are gone
    # the KD student too, distilled also on the indexed gallery (label-free), beside the usual one, same protocol
    kd_rows = {s: row for s, row in zip(settings, rows) if s.startswith("held-out queries") and "KD baseline" in s}
    assert len(kd_rows) == 2 and any(s.endswith("distilled also on the indexed gallery → gallery:convnet-s") for s in kd_rows)
    assert sorted(row.query_model.endswith("+unlabelled") for row in kd_rows.values()) == [False, True]


def test_the_held_out_split_never_shares_an_image_and_keeps_every_class_on_both_sides():
    import numpy as np

    from asymret.data.dataset import ArraySource, ImageDataset
    from asymret.pipeline.artifacts import heldout_split

    labels = np.repeat(np.arange(7), [10, 10, 4, 3, 2, 1, 10])
    n = len(labels)
    test = ImageDataset("toy", ArraySource(np.zeros((n, 2, 2), np.uint8), "toy"), np.arange(n).astype(str), np.arange(n), labels,
                        np.array(["test"] * n), np.ones(n, bool), np.ones(n, bool))
    queries, gallery = heldout_split(test, 0.5, seed=3)
    assert not set(queries.ids) & set(gallery.ids) and len(queries) + len(gallery) == n
    for label, count in zip(*np.unique(labels, return_counts=True)):
        q, g = int((queries.labels == label).sum()), int((gallery.labels == label).sum())
        assert g >= 1 and (q == 0 if count == 1 else q >= 1)
    assert int((queries.labels == 0).sum()) == 5
    again, _ = heldout_split(test, 0.5, seed=3)
    assert again.ids.tolist() == queries.ids.tolist()
    with pytest.raises(ValueError, match="transductive_query_fraction"):
        heldout_split(test, 1.0, seed=3)


def test_the_execution_settings_reach_every_training_and_the_store_but_no_recipe(tmp_path, tiny_dataset, monkeypatch):
    """``Experiment(device=…, precision=…, workers=…)`` (what ``asymret run/demo/compare --device`` pass): every
    training config and ψ computes there and the store extracts there, while the cache key of what is built stays
    the same (a model trained on one device is reused on another)."""
    import dataclasses

    import asymret.pipeline.artifacts as artifacts
    from asymret.pipeline import Experiment, ModelSpec

    config = dataclasses.replace(PROFILES["tiny"], train_size=None, test_size=None, seeds=(0,),
                                 query=ModelSpec("query:convnet-xs", "convnet-xs", epochs=1))
    seen = {}
    real_train = artifacts.train_encoder

    def spy(encoder, data, train_cfg, **kwargs):
        seen["train"] = train_cfg
        return real_train(encoder, data, train_cfg, **kwargs)

    monkeypatch.setattr(artifacts, "train_encoder", spy)
    on_cpu = Experiment(config, tiny_dataset, tmp_path, device="cpu", precision="bf16", workers=0)
    assert on_cpu.store.precision == "bf16" and on_cpu.store.device.type == "cpu"
    query, _ = on_cpu.train_model(config.query, 0)
    assert (seen["train"].device, seen["train"].precision, seen["train"].workers) == ("cpu", "bf16", 0)
    psi = on_cpu.fit_psi(query, query, 0)
    assert psi.device == "cpu" and psi.train_config.precision == "bf16"
    seen.clear()
    again, _ = Experiment(config, tiny_dataset, tmp_path).train_model(config.query, 0)  # default execution: the cache
    assert "train" not in seen and again.fingerprint() == query.fingerprint()


def test_distillation_also_regresses_unlabelled_images_of_the_indexed_gallery(tmp_path, tiny_dataset, monkeypatch):
    """``train_kd(unlabelled=)``: the student trains on the training images and, with label −1 (regression only, see
    the loss's own test), on the indexed gallery, each image against the teacher's own embedding of it; the result
    is a different cached model, reproducible from its seed; methods needing a label for every image refuse."""
    import dataclasses

    import numpy as np

    from asymret.compat import query_train
    from asymret.pipeline import Experiment, ModelSpec

    config = dataclasses.replace(PROFILES["tiny"], train_size=None, test_size=None, seeds=(0,), kd_epochs=3,
                                 kd_method="distill-metric", query=ModelSpec("query:convnet-xs", "convnet-xs", epochs=1),
                                 gallery=(ModelSpec("gallery:convnet-s", "convnet-s", epochs=2),))
    seen = {}
    real = query_train.train_query_model

    def spy(query, dataset, teacher_side, loss, config, **kwargs):
        seen["data"], seen["targets"] = dataset, teacher_side
        return real(query, dataset, teacher_side, loss, config, **kwargs)

    monkeypatch.setattr(query_train, "train_query_model", spy)
    experiment = Experiment(config, tiny_dataset, tmp_path / "a")
    teacher = experiment.models(0).gallery_models[0]
    gallery_part = experiment.heldout_gallery
    plain, _ = experiment.train_kd(teacher, 0)
    assert len(seen["data"]) == len(experiment.train) and (seen["data"].labels >= 0).all()
    with_gallery, _ = experiment.train_kd(teacher, 0, unlabelled=gallery_part)
    data, targets = seen["data"], seen["targets"]
    assert with_gallery.name == plain.name + "+unlabelled"
    assert with_gallery.config["compat_training"]["dataset_fingerprint"] == data.fingerprint() != plain.config["compat_training"]["dataset_fingerprint"]
    assert len(data) == len(experiment.train) + len(gallery_part)
    unlabelled_rows = data.labels == -1
    assert unlabelled_rows.sum() == len(gallery_part)
    np.testing.assert_array_equal(data.labels[~unlabelled_rows], experiment.train.labels)
    # each unlabelled image is regressed onto the teacher's embedding of that very image
    gallery_targets = targets.align(data.ids[unlabelled_rows]).vectors
    np.testing.assert_allclose(gallery_targets, experiment.store.get(teacher, gallery_part).align(gallery_part.ids).vectors, atol=1e-6)
    # reproducible from the seed (the loss's own class weights included): a fresh workdir trains the same student
    again, _ = Experiment(config, tiny_dataset, tmp_path / "b").train_kd(teacher, 0, unlabelled=gallery_part)
    np.testing.assert_array_equal(experiment.store.get(with_gallery, gallery_part).vectors,
                                  experiment.store.get(again, gallery_part).vectors)
    with pytest.raises(ValueError, match="needs a label for every image"):
        experiment.train_compatible("bct", teacher, 0, unlabelled=gallery_part)
