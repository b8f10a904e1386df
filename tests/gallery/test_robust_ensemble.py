"""The robust ensemble: member weights, and members chosen on validation so a failing ψ gets no weight."""
from __future__ import annotations

import numpy as np
import pytest

from asymret.compat.transform import CMCETransform
from asymret.core.space import Embeddings, Space, l2_normalize
from asymret.core.uncertainty import pairwise_uncertainty
from asymret.gallery.ensemble import CMCEEnsemble, select_members

QUERY = Space("q" * 16, 8, True, "query-model")
N = 120
LABELS = np.arange(N) % 12


def _query_vectors() -> np.ndarray:
    """Query embeddings of N images in 12 classes: a class centre plus a little noise per image."""
    rng = np.random.default_rng(7)
    centres = l2_normalize(rng.normal(size=(12, 8)))
    return l2_normalize(centres[LABELS] + 0.15 * rng.normal(size=(N, 8)))


def _member(seed: int, carries_over: bool) -> tuple[CMCETransform, Embeddings]:
    """A gallery model whose ψ (closed-form Procrustes) maps onto the query space — or, for a failing member, a
    gallery model whose embeddings are unrelated to the images (its ψ maps noise)."""
    rng = np.random.default_rng(seed)
    query = _query_vectors()
    rotation, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    vectors = query @ rotation if carries_over else l2_normalize(rng.normal(size=(N, 8)))
    ids = np.array([f"img{i:03d}" for i in range(N)])
    gallery = Embeddings(l2_normalize(vectors), ids, Space(f"g{seed:015d}", 8, True, f"gallery-{seed}"), LABELS)
    psi = CMCETransform(kind="procrustes", name=f"psi-{seed}").fit(gallery, Embeddings(query, ids, QUERY))
    return psi, gallery


def _recall_at_1(gallery: Embeddings) -> float:
    """R@1 of the query embeddings against ``gallery`` (self excluded): the toy's validation score."""
    queries = _query_vectors()
    scores = queries @ gallery.vectors.T
    np.fill_diagonal(scores, -np.inf)
    return float(np.mean(LABELS[scores.argmax(axis=1)] == LABELS))


def test_weights_are_a_weighted_mean_and_a_zero_weight_member_is_not_counted():
    (p1, g1), (p2, g2), (p3, g3) = _member(1, True), _member(2, True), _member(3, False)
    ensemble = CMCEEnsemble([p1, p2, p3], weights=[3.0, 1.0, 0.0])
    gallery, uncertainty = ensemble.transform([g1, g2, g3])
    t1, t2 = p1.transform(g1).vectors, p2.transform(g2).vectors
    np.testing.assert_allclose(gallery.vectors, l2_normalize(0.75 * t1 + 0.25 * t2), atol=1e-6)
    np.testing.assert_allclose(uncertainty, pairwise_uncertainty(np.stack([t1, t2])), atol=1e-6)  # p3 not counted
    assert ensemble.members == [0, 1]
    assert [name for name, _ in ensemble.space.provenance] == ["psi-1 (weight 0.75)", "psi-2 (weight 0.25)"]


def test_a_member_that_fails_on_validation_gets_no_weight():
    members = [_member(1, True), _member(2, False), _member(3, True)]
    psis, galleries = [m[0] for m in members], [m[1] for m in members]
    plain = _recall_at_1(CMCEEnsemble(psis).transform(galleries)[0])
    robust, scores = select_members(psis, lambda candidate: _recall_at_1(candidate.transform(galleries)[0]))
    assert robust.members == [0, 2] and robust.weights[1] == 0.0
    assert len(scores) == 7 and scores["psi-1+psi-3"] == max(scores.values())
    gallery, uncertainty = robust.transform(galleries)
    best_single = max(_recall_at_1(p.transform(g)) for p, g in zip(psis, galleries))
    assert _recall_at_1(gallery) >= best_single > plain  # the failing member dragged the plain mean down
    assert uncertainty is not None and uncertainty.shape == (N,)


def test_a_single_chosen_member_has_no_uncertainty_and_ties_go_to_the_larger_subset():
    psis, galleries = zip(*[_member(1, True), _member(2, False)])
    robust, _ = select_members(list(psis), lambda c: _recall_at_1(c.transform(list(galleries))[0]))
    assert robust.members == [0]
    assert robust.transform(list(galleries))[1] is None
    tied, _ = select_members(list(psis), lambda candidate: 1.0)
    assert tied.members == [0, 1]


@pytest.mark.parametrize("weights", [[1.0], [0.0, 0.0], [1.0, -1.0], [1.0, float("nan")]])
def test_bad_weights_are_refused(weights):
    psis = [_member(1, True)[0], _member(2, True)[0]]
    with pytest.raises(ValueError, match="ensemble weights"):
        CMCEEnsemble(psis, weights=weights)


def test_procrustes_recovers_a_rotation_and_survives_save_load(tmp_path):
    psi, gallery = _member(5, True)
    mapped = psi.transform(gallery)
    np.testing.assert_allclose(mapped.vectors, _query_vectors(), atol=1e-5)
    psi.save(tmp_path / "psi")
    loaded = CMCETransform.load(tmp_path / "psi")
    np.testing.assert_allclose(loaded.transform(gallery).vectors, mapped.vectors, atol=1e-7)
    weight = psi.net.body.weight.detach().numpy()
    np.testing.assert_allclose(weight @ weight.T, np.eye(8), atol=1e-5)  # orthogonal: it cannot memorise classes


def test_the_query_model_itself_is_a_member_the_selection_falls_back_to():
    """When every ψ fails on validation, the robust ensemble with the query model as a candidate keeps only it:
    the gallery is the query model's own embeddings (the symmetric search), vector for vector."""
    from asymret.compat.transform import QuerySelf

    ids = np.array([f"img{i:03d}" for i in range(N)])
    own = Embeddings(_query_vectors(), ids, QUERY, LABELS)
    failing = [_member(2, False), _member(3, False)]
    members = [QuerySelf(QUERY), *(m[0] for m in failing)]
    galleries = [own, *(m[1] for m in failing)]
    robust, scores = select_members(members, lambda c: _recall_at_1(c.transform(galleries)[0]))
    assert robust.members == [0]
    gallery, uncertainty = robust.transform(galleries)
    np.testing.assert_allclose(gallery.vectors, own.vectors, atol=1e-6)
    assert uncertainty is None and gallery.space.fingerprint == QUERY.fingerprint
    # with a ψ that carries over, mixing it in is chosen when it scores at least as well
    good = _member(1, True)
    mixed, _ = select_members([QuerySelf(QUERY), good[0]], lambda c: _recall_at_1(c.transform([own, good[1]])[0]))
    assert mixed.members == [0, 1]
    with pytest.raises(Exception, match="query-model|space"):
        QuerySelf(QUERY).transform(good[1])  # the gallery model's own embeddings are not the query space
