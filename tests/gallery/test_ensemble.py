"""The CMCE gallery ensemble: mean, pairwise uncertainty, rejection, and CMCEEnsemble over fitted ψ_i."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from asymret.compat.transform import CMCETransform
from asymret.core.uncertainty import ensemble_mean, pairwise_uncertainty, rejection_mask
from asymret.gallery.ensemble import CMCEEnsemble
from asymret.core.manifest import SpaceMismatchError
from asymret.core.space import Embeddings, Space, l2_normalize
from asymret.training import TrainConfig


def unit_stack(n_models: int, m: int = 7, d: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([l2_normalize(rng.normal(size=(m, d))) for _ in range(n_models)])


# ------------------------------------------------------------------------------------------ mean / uncertainty
@pytest.mark.parametrize("n_models", [2, 3, 4])
def test_ensemble_mean_against_loops(n_models):
    stack = unit_stack(n_models, seed=n_models)
    out = ensemble_mean(stack)
    assert out.shape == (7, 5) and out.dtype == np.float32
    for item in range(7):
        total = [sum(float(stack[k, item, c]) for k in range(n_models)) for c in range(5)]
        norm = math.sqrt(sum(v * v for v in total))
        np.testing.assert_allclose(out[item], [v / norm for v in total], atol=1e-6)


@pytest.mark.parametrize("n_models", [2, 3, 4])
def test_pairwise_uncertainty_against_loops(n_models):
    stack = unit_stack(n_models, seed=10 + n_models)
    out = pairwise_uncertainty(stack)
    assert out.shape == (7,)
    for item in range(7):
        distances = [
            math.sqrt(sum((float(stack[i, item, c]) - float(stack[j, item, c])) ** 2 for c in range(5)))
            for i, j in itertools.combinations(range(n_models), 2)
        ]
        assert out[item] == pytest.approx(sum(distances) / len(distances), abs=1e-6)


def test_uncertainty_is_zero_when_models_agree_and_grows_with_disagreement():
    same = np.repeat(unit_stack(1, m=6)[None, 0], 3, axis=0)
    np.testing.assert_allclose(pairwise_uncertainty(same), 0.0, atol=1e-7)
    np.testing.assert_allclose(ensemble_mean(same), same[0], atol=1e-6)
    opposite = np.stack([same[0], -same[0]])
    np.testing.assert_allclose(pairwise_uncertainty(opposite), 2.0, atol=1e-6)  # antipodal unit vectors
    with pytest.raises(ValueError, match="at least two"):
        pairwise_uncertainty(same[:1])


# ------------------------------------------------------------------------------------------ rejection
def test_rejection_by_fraction_rejects_exactly_the_most_uncertain():
    rng = np.random.default_rng(0)
    uncertainty = rng.permutation(np.linspace(0.0, 1.0, 50))
    for fraction in (0.0, 0.1, 0.25, 0.5, 0.98):
        mask = rejection_mask(uncertainty, fraction=fraction)
        count = round(fraction * 50)
        assert mask.sum() == count
        if count:
            assert uncertainty[mask].min() > uncertainty[~mask].max()
    for bad in (-0.1, 1.5):  # 1.0 rejects everything, like the index
        with pytest.raises(ValueError):
            rejection_mask(uncertainty, fraction=bad)


def test_rejection_ties_still_give_the_exact_count():
    uncertainty = np.array([0.5, 0.9, 0.5, 0.5, 0.1, 0.5])
    mask = rejection_mask(uncertainty, fraction=0.5)  # 3 of 6: the 0.9 and the first two 0.5s
    assert mask.tolist() == [True, True, True, False, False, False]


def test_rejection_by_threshold_and_both():
    uncertainty = np.array([0.1, 0.7, 0.3, 0.9, 0.5])
    assert rejection_mask(uncertainty, threshold=0.4).tolist() == [False, True, False, True, True]
    assert rejection_mask(uncertainty, threshold=0.5).tolist() == [False, True, False, True, False]  # strictly above
    assert rejection_mask(uncertainty).tolist() == [False] * 5
    both = rejection_mask(uncertainty, fraction=0.2, threshold=0.6)  # most uncertain one ∪ those above 0.6
    assert both.tolist() == [False, True, False, True, False]


# ------------------------------------------------------------------------------------------ CMCEEnsemble
Q_SPACE = Space("q" * 16, 8, True, "query-model")


def _gallery_model(seed: int, dim: int, n: int = 160, query_space: Space = Q_SPACE):
    """A gallery model's embeddings = a random isometric embedding of the query embeddings, plus a fitted ψ."""
    rng = np.random.default_rng(seed)
    query = l2_normalize(np.random.default_rng(99).normal(size=(n, query_space.dim)))
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    gallery_vectors = l2_normalize(query @ basis[: query_space.dim] + 0.05 * rng.normal(size=(n, dim)) / np.sqrt(dim))
    ids = np.array([f"item{i:03d}" for i in range(n)])
    space = Space(f"gallery{seed:09d}", dim, True, f"gallery-{seed}")
    gallery = Embeddings(gallery_vectors, ids, space, labels=np.arange(n) % 3)
    psi = CMCETransform(kind="linear", losses={"similarity": 1.0}, name=f"psi-{seed}",
                        train=TrainConfig(epochs=15, batch_size=40, lr=2e-2, weight_decay=0.0, seed=seed))
    psi.fit(gallery, Embeddings(query, ids, query_space))
    return psi, gallery


@pytest.fixture(scope="module")
def two_models():
    return _gallery_model(1, 12), _gallery_model(2, 10)


def test_ensemble_transform_is_the_mean_of_the_individual_transforms(two_models):
    (psi1, g1), (psi2, g2) = two_models
    ensemble = CMCEEnsemble([psi1, psi2])
    gallery, uncertainty = ensemble.transform([g1, g2])
    t1, t2 = psi1.transform(g1), psi2.transform(g2)
    expected = l2_normalize((t1.vectors + t2.vectors) / 2)
    np.testing.assert_allclose(gallery.vectors, expected, atol=1e-6)
    np.testing.assert_allclose(uncertainty, np.linalg.norm(t1.vectors - t2.vectors, axis=1), atol=1e-5)
    assert gallery.ids.tolist() == g1.ids.tolist()
    np.testing.assert_array_equal(gallery.labels, g1.labels)
    # the ensemble gallery is searchable in the query space and names both ψ
    Q_SPACE.check_compatible(gallery.space)
    assert gallery.space.provenance == (("psi-1", psi1.fingerprint()), ("psi-2", psi2.fingerprint()))
    # both ψ learned the same target, so they agree far better than random unit vectors would (≈ √2)
    assert float(uncertainty.mean()) < 0.5


def test_ensemble_aligns_ids_when_gallery_sets_come_in_different_orders(two_models):
    (psi1, g1), (psi2, g2) = two_models
    rng = np.random.default_rng(5)
    g2_shuffled = g2.take(rng.permutation(len(g2))[: len(g2) - 10])  # another order, and 10 items missing
    gallery, uncertainty = CMCEEnsemble([psi1, psi2]).transform([g1, g2_shuffled])
    missing = set(g2.ids.tolist()) - set(g2_shuffled.ids.tolist())
    assert gallery.ids.tolist() == [i for i in g1.ids.tolist() if i not in missing]
    keep = gallery.ids
    expected = l2_normalize((psi1.transform(g1.align(keep)).vectors + psi2.transform(g2.align(keep)).vectors) / 2)
    np.testing.assert_allclose(gallery.vectors, expected, atol=1e-6)
    assert len(uncertainty) == len(keep)


def test_single_model_ensemble_has_no_uncertainty(two_models):
    (psi1, g1), _ = two_models
    gallery, uncertainty = CMCEEnsemble([psi1]).transform([g1])
    assert uncertainty is None
    np.testing.assert_allclose(gallery.vectors, psi1.transform(g1).vectors, atol=1e-6)


def test_ensemble_checks_spaces_and_counts(two_models):
    (psi1, g1), (psi2, g2) = two_models
    ensemble = CMCEEnsemble([psi1, psi2])
    with pytest.raises(SpaceMismatchError):
        ensemble.transform([g2, g1])  # gallery sets swapped: ψ1 gets gallery model 2's embeddings
    with pytest.raises(ValueError, match="2 transformations but 1"):
        ensemble.transform([g1])
    with pytest.raises(ValueError):
        CMCEEnsemble([])
    other_query = Space("o" * 16, 8, True, "another-query-model")
    psi3, _ = _gallery_model(3, 9, n=60, query_space=other_query)
    with pytest.raises(SpaceMismatchError, match="different query spaces"):
        CMCEEnsemble([psi1, psi3])


def test_rejecting_a_fraction_without_an_uncertainty_signal_is_refused():
    """A single-model gallery has no uncertainty: a fraction would drop arbitrary items, so it is an error."""
    with pytest.raises(ValueError, match="same uncertainty"):
        rejection_mask(np.zeros(20, np.float32), fraction=0.1)
    assert not rejection_mask(np.zeros(20, np.float32), threshold=0.5).any()  # a threshold is still well defined
