"""CMCE transformations ψ: fitting, output space, space checks, persistence, losses."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from asymret.compat.transform import CMCETransform, TransformationNet, build_cmce_loss
from asymret.encoders.heads import CosineClassifier
from asymret.core.manifest import SpaceMismatchError
from asymret.core.space import Embeddings, Space, l2_normalize
from asymret.training import TrainConfig

Q_DIM, G_DIM, N, CLASSES = 12, 16, 384, 4
QUERY_SPACE = Space("q" * 16, Q_DIM, True, "query-model")
GALLERY_SPACE = Space("g" * 16, G_DIM, True, "gallery-model")


def synthetic_pair(seed: int = 0, n: int = N, noise: float = 0.05, gallery_space: Space = GALLERY_SPACE):
    """Query embeddings with class structure, and gallery embeddings = a random isometry of them + noise.

    Returns (gallery, query) Embeddings over the same ids (gallery rows in a shuffled order).
    """
    rng = np.random.default_rng(seed)
    centres = l2_normalize(rng.normal(size=(CLASSES, Q_DIM)))
    basis, _ = np.linalg.qr(rng.normal(size=(gallery_space.dim, gallery_space.dim)))
    rotation = basis[:Q_DIM]  # (Q_DIM, G_DIM) with orthonormal rows: an isometric embedding
    labels = np.arange(n) % CLASSES
    query = l2_normalize(centres[labels] + 0.6 * rng.normal(size=(n, Q_DIM)) / np.sqrt(Q_DIM))
    gallery = l2_normalize(query @ rotation + noise * rng.normal(size=(n, gallery_space.dim)) / np.sqrt(gallery_space.dim))
    ids = np.array([f"x{i:04d}" for i in range(n)])
    order = rng.permutation(n)
    return (
        Embeddings(gallery[order], ids[order], gallery_space, labels[order]),
        Embeddings(query, ids, QUERY_SPACE, labels),
    )


def mean_cos(a: Embeddings, b: Embeddings) -> float:
    b = b.align(a.ids)
    return float((a.vectors * b.vectors).sum(axis=1).mean())


FAST = TrainConfig(epochs=40, batch_size=64, lr=1e-2, weight_decay=0.0, seed=0)


@pytest.fixture(scope="module")
def fitted_pair():
    gallery, query = synthetic_pair(seed=0)
    psi = CMCETransform(kind="linear", losses={"similarity": 1.0}, train=FAST, name="psi-g")
    psi.fit(gallery, query)
    return psi, gallery, query


def test_fit_maps_gallery_onto_query_and_generalises(fitted_pair):
    psi, gallery, query = fitted_pair
    assert psi.history.epoch_losses[-1] < 0.2 * psi.history.epoch_losses[0]
    out = psi.transform(gallery)
    assert out.ids.tolist() == gallery.ids.tolist()
    np.testing.assert_array_equal(out.labels, gallery.labels)
    assert mean_cos(out, query) > 0.9
    # unseen items of the same spaces (same rotation: same seed's basis, other samples)
    gallery_new, query_new = synthetic_pair(seed=0, n=N + 64)
    fresh = gallery_new.align(np.array([f"x{i:04d}" for i in range(N, N + 64)]))
    assert mean_cos(psi.transform(fresh), query_new) > 0.9
    # before fitting there is no alignment at all: a fresh random net is far from the query vectors
    torch.manual_seed(0)
    random_net = TransformationNet(G_DIM, Q_DIM, "linear").eval()
    with torch.no_grad():
        random_out = random_net(torch.from_numpy(gallery.vectors)).numpy()
    assert float((random_out * query.align(gallery.ids).vectors).sum(axis=1).mean()) < 0.5


def test_output_lives_in_the_query_space_and_names_psi(fitted_pair):
    psi, gallery, query = fitted_pair
    out = psi.transform(gallery)
    assert out.space.fingerprint == QUERY_SPACE.fingerprint and out.space.dim == Q_DIM and out.space.normalized
    QUERY_SPACE.check_compatible(out.space)  # searchable with query-model embeddings
    assert out.space.provenance == (("psi-g", psi.fingerprint()),)
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1.0, atol=1e-5)


def test_transform_refuses_another_space(fitted_pair):
    psi, gallery, query = fitted_pair
    with pytest.raises(SpaceMismatchError):
        psi.transform(query)  # query-space vectors (wrong fingerprint and dim)
    other = Embeddings(gallery.vectors, gallery.ids, Space("o" * 16, G_DIM, True, "other-gallery-model"))
    with pytest.raises(SpaceMismatchError, match="fingerprint"):
        psi.transform(other)


def test_save_load_round_trip(tmp_path, fitted_pair):
    psi, gallery, _ = fitted_pair
    psi.save(tmp_path / "psi")
    loaded = CMCETransform.load(tmp_path / "psi")
    assert loaded.fingerprint() == psi.fingerprint()
    assert loaded.source_space == psi.source_space and loaded.target_space == psi.target_space
    a, b = psi.transform(gallery), loaded.transform(gallery)
    np.testing.assert_array_equal(a.vectors, b.vectors)
    assert a.space == b.space


def test_tampered_transform_is_refused(tmp_path, fitted_pair):
    psi, _, _ = fitted_pair
    psi.save(tmp_path / "psi")
    payload = torch.load(tmp_path / "psi" / "transform.pt", weights_only=False)
    key = next(iter(payload["state_dict"]))
    payload["state_dict"][key] = payload["state_dict"][key] + 0.01
    torch.save(payload, tmp_path / "psi" / "transform.pt")
    with pytest.raises(ValueError, match="fingerprint"):
        CMCETransform.load(tmp_path / "psi")


def test_unfitted_transform_raises():
    psi = CMCETransform()
    with pytest.raises(RuntimeError, match="not fitted"):
        psi.transform(synthetic_pair(n=8)[0])


@pytest.mark.parametrize("kind", ["linear", "mlp", "residual"])
def test_every_kind_fits(kind):
    gallery, query = synthetic_pair(seed=1, n=256)
    config = TrainConfig(epochs=30, batch_size=64, lr=1e-2, weight_decay=0.0, seed=0)
    psi = CMCETransform(kind=kind, hidden_dim=32, losses={"similarity": 1.0}, train=config, name=kind)
    out = psi.fit_transform(gallery, query)
    assert out.vectors.shape == (256, Q_DIM)
    assert psi.history.epoch_losses[-1] < 0.5 * psi.history.epoch_losses[0]
    assert mean_cos(out, query) > 0.85
    if kind == "residual":
        assert psi.net.skip is not None
    with pytest.raises(ValueError, match="unknown transformation kind"):
        TransformationNet(4, 4, "conv")


def test_fit_is_deterministic():
    gallery, query = synthetic_pair(seed=2, n=128)
    config = TrainConfig(epochs=3, batch_size=32, lr=1e-2, seed=4)
    a = CMCETransform(kind="mlp", hidden_dim=16, losses={"similarity": 1.0}, train=config).fit(gallery, query)
    b = CMCETransform(kind="mlp", hidden_dim=16, losses={"similarity": 1.0}, train=config).fit(gallery, query)
    assert a.fingerprint() == b.fingerprint()


# ------------------------------------------------------------------------------------------ losses with a head
def test_build_cmce_loss_needs_a_head_for_kl_and_dual_ce():
    for name in ("kl", "dual-ce"):
        with pytest.raises(ValueError, match="shared head"):
            build_cmce_loss({"similarity": 1.0, name: 1.0}, head=None)
    with pytest.raises(ValueError, match="unknown CMCE loss"):
        build_cmce_loss({"triplet": 1.0}, head=None)
    head = CosineClassifier(CLASSES, Q_DIM)
    loss = build_cmce_loss({"similarity": 1.0, "kl": 0.5, "dual-ce": 2.0}, head=head)
    assert loss.uses_labels and loss.weights == {"similarity": 1.0, "kl": 0.5, "dual-ce": 2.0}
    # the head is a frozen copy: training ψ never changes the query model's classifier
    assert all(not p.requires_grad for p in loss.parameters())
    assert loss.losses["kl"].head is not head


def test_fit_with_shared_head_losses_keeps_the_head(fitted_pair):
    gallery, query = synthetic_pair(seed=3, n=256)
    head = CosineClassifier(CLASSES, Q_DIM, temperature=0.1)
    with torch.no_grad():  # the query model's classifier: its class centres
        centres = np.stack([query.vectors[query.labels == c].mean(axis=0) for c in range(CLASSES)])
        head.weight.copy_(torch.from_numpy(centres))
    before = head.weight.detach().clone()
    config = TrainConfig(epochs=20, batch_size=64, lr=1e-2, weight_decay=0.0, seed=0)
    psi = CMCETransform(kind="linear", losses={"similarity": 1.0, "kl": 1.0, "dual-ce": 1.0}, head=head, train=config)
    out = psi.fit_transform(gallery, query)
    assert torch.equal(head.weight, before)
    assert mean_cos(out, query) > 0.8
    with torch.no_grad():
        predicted = head(torch.from_numpy(out.vectors)).argmax(dim=1).numpy()
    assert (predicted == out.labels).mean() > 0.8
    # a head of another dimension than the query space is refused
    with pytest.raises(SpaceMismatchError):
        CMCETransform(head=CosineClassifier(CLASSES, Q_DIM + 1), train=config).fit(gallery, query)


def test_dual_ce_without_labels_is_refused():
    gallery, query = synthetic_pair(seed=4, n=64)
    gallery, query = (Embeddings(e.vectors, e.ids, e.space) for e in (gallery, query))
    psi = CMCETransform(losses={"dual-ce": 1.0}, head=CosineClassifier(CLASSES, Q_DIM), train=FAST)
    with pytest.raises(ValueError, match="labels"):
        psi.fit(gallery, query)


def test_explicit_labels_follow_the_gallery_rows():
    """``labels=`` are given in the gallery's row order; fit must keep them attached to the right ids."""
    gallery, query = synthetic_pair(seed=5, n=256)
    labels = gallery.labels.copy()
    gallery, query = (Embeddings(e.vectors, e.ids, e.space) for e in (gallery, query))  # no labels attached
    head = CosineClassifier(CLASSES, Q_DIM, temperature=0.1)
    with torch.no_grad():
        q = query.align(gallery.ids).vectors
        head.weight.copy_(torch.from_numpy(np.stack([q[labels == c].mean(axis=0) for c in range(CLASSES)])))
    config = TrainConfig(epochs=25, batch_size=64, lr=1e-2, weight_decay=0.0, seed=0)
    psi = CMCETransform(kind="linear", losses={"dual-ce": 1.0}, head=head, train=config).fit(gallery, query, labels=labels)
    with torch.no_grad():
        predicted = head(torch.from_numpy(psi.transform(gallery).vectors)).argmax(dim=1).numpy()
    assert (predicted == labels).mean() > 0.9


def test_fit_refuses_mismatched_ids_and_non_embeddings():
    gallery, query = synthetic_pair(seed=6, n=64)
    renamed = Embeddings(query.vectors, np.array([f"other{i}" for i in range(64)]), query.space, query.labels)
    with pytest.raises(ValueError, match="same images"):
        CMCETransform(losses={"similarity": 1.0}, train=FAST).fit(gallery, renamed)
    with pytest.raises(TypeError):
        CMCETransform(losses={"similarity": 1.0}, train=FAST).fit(gallery.vectors, query.vectors)


def test_fit_uses_only_common_ids():
    gallery, query = synthetic_pair(seed=7, n=128)
    partial_query = query.take(np.arange(100))  # 100 of the 128 images have query embeddings
    config = TrainConfig(epochs=30, batch_size=50, lr=1e-2, weight_decay=0.0, seed=0)
    psi = CMCETransform(kind="linear", losses={"similarity": 1.0}, train=config).fit(gallery, partial_query)
    assert mean_cos(psi.transform(gallery.align(partial_query.ids)), partial_query) > 0.85


# ------------------------------------------------------------------------------ settings, head, random state
def test_a_loaded_psi_keeps_its_head_and_can_be_refitted_with_dual_ce(tmp_path):
    gallery, query = synthetic_pair(seed=5)  # labels attached
    head = CosineClassifier(CLASSES, Q_DIM)
    psi = CMCETransform(kind="linear", losses={"similarity": 1.0, "dual-ce": 0.5}, head=head, train=FAST, name="with-head")
    psi.fit(gallery, query)
    psi.save(tmp_path / "psi")
    loaded = CMCETransform.load(tmp_path / "psi")
    assert loaded.head is not None
    torch.testing.assert_close(loaded.head.weight, head.weight)
    assert loaded.loss_weights == {"similarity": 1.0, "dual-ce": 0.5}
    # refitting needs the head (dual-ce): it must work on the loaded ψ and give the same weights as the original fit
    refit = CMCETransform(loaded.settings, head=loaded.head, name="refit", train=loaded.train_config).fit(gallery, query)
    torch.testing.assert_close(refit.net.state_dict()["body.weight"], psi.net.state_dict()["body.weight"])


def test_fit_leaves_the_callers_random_streams_alone():
    gallery, query = synthetic_pair(seed=6)
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    CMCETransform(kind="mlp", hidden_dim=8, losses={"similarity": 1.0}, train=TrainConfig(epochs=2, seed=9)).fit(gallery, query)
    torch.testing.assert_close(torch.rand(3), expected)


def test_psi_config_is_one_place_for_the_settings():
    from asymret.compat.transform import PsiConfig

    config = PsiConfig.from_dict({"kind": "linear", "epochs": 3, "lr": 0.01})
    psi = CMCETransform(config, seed=4)
    assert (psi.kind, psi.train_config.epochs, psi.train_config.lr, psi.train_config.seed) == ("linear", 3, 0.01, 4)
    assert psi.loss_weights == {"similarity": 1.0}  # no head: no head-based term
    assert CMCETransform(config, head=CosineClassifier(CLASSES, Q_DIM)).loss_weights == {"similarity": 1.0, "dual-ce": 0.1}
    with pytest.raises(ValueError, match="unknown ψ setting"):
        PsiConfig.from_dict({"kindd": "mlp"})
