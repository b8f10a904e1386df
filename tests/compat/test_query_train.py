"""Query-model compatibility training: cached-teacher KD, space checks, online teacher with coupled augmentation."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from asymret.compat.losses import SimilarityLoss, create_loss
from asymret.compat.query_train import train_compatible_query, train_query_model
from asymret.encoders import create_encoder, train_encoder
from asymret.core.manifest import SpaceMismatchError
from asymret.core.space import Embeddings
from asymret.store.embeddings import EmbeddingStore
from asymret.training import TrainConfig

DIM = 16


@pytest.fixture(scope="module")
def small_train(tiny_train):
    return tiny_train.subset(np.arange(96))


@pytest.fixture(scope="module")
def trained_teacher(small_train):
    """A gallery model whose embeddings tell the images apart (a random-init net maps them all to ~one vector)."""
    teacher = create_encoder("convnet-s", embedding_dim=DIM, seed=100)
    train_encoder(teacher, small_train, TrainConfig(epochs=4, batch_size=32, lr=3e-3))
    return teacher


@pytest.fixture
def teacher(trained_teacher):
    return copy.deepcopy(trained_teacher)


def _cos_matrix(student, teacher_emb: Embeddings, dataset) -> np.ndarray:
    vectors = student.embed_images([dataset.load(i) for i in range(len(dataset))])
    return vectors @ teacher_emb.align(dataset.ids).vectors.T


def test_kd_against_cached_teacher_embeddings(tmp_path, small_train, teacher):
    teacher_emb = EmbeddingStore(tmp_path).get(teacher, small_train)
    # the cached set may come in any row order: the trainer aligns it by id
    teacher_emb = teacher_emb.take(np.random.default_rng(0).permutation(len(teacher_emb)))
    student = create_encoder("convnet-xs", embedding_dim=DIM, seed=1)
    before = float(np.diag(_cos_matrix(student, teacher_emb, small_train)).mean())
    history = train_query_model(student, small_train, teacher_emb, SimilarityLoss("cos"),
                                TrainConfig(epochs=8, batch_size=32, lr=5e-3), method="distill-cos")
    cos = _cos_matrix(student, teacher_emb, small_train)
    after = float(np.diag(cos).mean())
    assert history.epoch_losses[-1] < 0.2 * history.epoch_losses[0]
    assert before < 0.3 and after > 0.85
    # asymmetric retrieval works: a student embedding's nearest teacher embedding is of its class (chance 1/4),
    # and it is closer to its own image's teacher embedding than to the other images' on average
    labels = small_train.labels
    assert (labels[cos.argmax(axis=1)] == labels).mean() > 0.9
    assert after > cos[~np.eye(len(cos), dtype=bool)].mean() + 0.15
    # the student now embeds into the teacher's space
    assert student.space().fingerprint == teacher.fingerprint() and student.space().dim == DIM
    teacher.space().check_compatible(student.space())
    assert student.config["compat_training"]["online_teacher"] is False
    assert student.config["compat_training"]["augmentation"] is False
    assert not student.training and not any(p.requires_grad for p in student.parameters())


def test_dimension_mismatch_is_refused(small_train, teacher):
    student = create_encoder("convnet-xs", embedding_dim=DIM // 2, seed=1)
    teacher_emb = Embeddings(teacher.embed_images([small_train.load(i) for i in range(8)]), small_train.ids[:8], teacher.space())
    with pytest.raises(SpaceMismatchError, match=f"embedding_dim={DIM}"):
        train_query_model(student, small_train, teacher_emb, SimilarityLoss("cos"), TrainConfig(epochs=1))
    with pytest.raises(SpaceMismatchError):
        train_query_model(student, small_train, teacher, SimilarityLoss("cos"), TrainConfig(epochs=1))


def test_bank_of_another_space_is_refused(small_train, teacher):
    student = create_encoder("convnet-xs", embedding_dim=DIM, seed=1)
    images = [small_train.load(i) for i in range(8)]
    teacher_emb = Embeddings(teacher.embed_images(images), small_train.ids[:8], teacher.space())
    bank = Embeddings(student.embed_images(images), small_train.ids[:8], student.space())
    with pytest.raises(SpaceMismatchError, match="feature bank"):
        train_query_model(student, small_train, teacher_emb, create_loss("csd"), TrainConfig(epochs=1), bank=bank)


def test_online_teacher_at_another_resolution_with_coupled_augmentation(small_train, teacher):
    assert teacher.preprocess.input_size == 28
    student = create_encoder("convnet-xs", embedding_dim=DIM, input_size=14, seed=1)
    teacher_fingerprint = teacher.fingerprint()
    seen: dict[str, list[torch.Tensor]] = {"teacher": [], "student": []}
    hooks = [
        teacher.register_forward_pre_hook(lambda module, args: seen["teacher"].append(args[0].clone())),
        student.register_forward_pre_hook(lambda module, args: seen["student"].append(args[0].clone())),
    ]
    images = [small_train.load(i) for i in range(len(small_train))]
    with torch.no_grad():
        target = teacher(teacher.preprocess(images))
        start = float((student(student.preprocess(images)) * target).sum(dim=1).mean())
    seen["teacher"].clear(), seen["student"].clear()
    try:
        history = train_query_model(student, small_train, teacher, create_loss("raml"),
                                    TrainConfig(epochs=6, batch_size=32, lr=5e-3), method="raml")
    finally:
        for hook in hooks:
            hook.remove()
    assert len(seen["teacher"]) == len(seen["student"]) == 6 * 3
    for x_teacher, x_student in zip(seen["teacher"], seen["student"]):
        assert x_teacher.shape == (32, 1, 28, 28) and x_student.shape == (32, 1, 14, 14)
        # coupled: the student sees the teacher's (augmented) view at its own resolution
        torch.testing.assert_close(x_student, teacher.preprocess.convert(x_teacher, student.preprocess))
    # augmentation is on for an online teacher: some teacher views are not the plain preprocessed images
    plain = teacher.preprocess(images)
    assert any(not any(torch.equal(view, p) for p in plain) for view in seen["teacher"][0][:8])
    assert history.epoch_losses[-1] < history.epoch_losses[0]
    with torch.no_grad():
        end = float((student(student.preprocess(images)) * target).sum(dim=1).mean())
    assert start < 0.3 and end > start + 0.4
    assert teacher.fingerprint() == teacher_fingerprint  # the gallery model is frozen
    assert student.space().fingerprint == teacher_fingerprint
    assert student.config["compat_training"]["online_teacher"] is True
    assert student.config["compat_training"]["augmentation"] is True


def test_train_compatible_query_by_name(tmp_path, small_train, teacher):
    teacher.classifier = None  # as if saved without its classifier
    student = create_encoder("convnet-xs", embedding_dim=DIM, seed=1)
    store = EmbeddingStore(tmp_path)
    history = train_compatible_query("distill_cos", student, small_train, teacher,
                                     TrainConfig(epochs=2, batch_size=32, lr=5e-3), store=store)
    assert len(history.epoch_losses) == 2
    assert (store.directory(teacher, small_train) / "manifest.json").is_file()  # teacher embeddings cached
    assert student.config["compat_training"]["method"] == "distill-cos"
    with pytest.raises(ValueError, match="unknown compatibility method"):
        train_compatible_query("magic", student, small_train, teacher, TrainConfig(epochs=1), store=store)
    with pytest.raises(ValueError, match="classifier"):
        train_compatible_query("bct", student, small_train, teacher, TrainConfig(epochs=1), store=store)
