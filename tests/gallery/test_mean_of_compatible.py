"""Gallery models trained into the query space (BCT's direction) combine without ψ: their mean, their spread."""
from __future__ import annotations

import numpy as np
import pytest

from asymret.core.manifest import SpaceMismatchError
from asymret.core.space import Embeddings, Space, l2_normalize
from asymret.core.uncertainty import pairwise_uncertainty
from asymret.gallery.ensemble import mean_of_compatible

QUERY = Space("q" * 16, 4, True, "query-model")


def _embedded(seed: int, ids: list[str], space: Space = QUERY) -> Embeddings:
    rng = np.random.default_rng(seed)
    return Embeddings(l2_normalize(rng.normal(size=(len(ids), 4)).astype(np.float32)), np.array(ids), space,
                      np.arange(len(ids)) % 2)


def test_the_mean_is_over_the_ids_every_member_has_and_the_spread_is_the_uncertainty():
    a = _embedded(1, ["x", "y", "z"])
    b = _embedded(2, ["z", "x", "w"])  # another order, one id the first lacks
    gallery, uncertainty = mean_of_compatible([("a", a), ("b", b)])
    assert gallery.ids.tolist() == ["x", "z"]
    stack = np.stack([a.align(gallery.ids).vectors, b.align(gallery.ids).vectors])
    np.testing.assert_allclose(gallery.vectors, l2_normalize(stack.mean(axis=0)), atol=1e-6)
    np.testing.assert_allclose(uncertainty, pairwise_uncertainty(stack), atol=1e-6)
    assert gallery.space.fingerprint == QUERY.fingerprint and [n for n, _ in gallery.space.provenance] == ["a", "b"]


def test_one_member_has_no_uncertainty_and_a_foreign_space_is_refused():
    a = _embedded(1, ["x", "y"])
    gallery, uncertainty = mean_of_compatible([("a", a)])
    assert uncertainty is None
    np.testing.assert_allclose(gallery.vectors, a.vectors, atol=1e-6)
    foreign = _embedded(3, ["x", "y"], Space("g" * 16, 4, True, "gallery-model"))
    with pytest.raises(SpaceMismatchError):
        mean_of_compatible([("a", a), ("foreign", foreign)])
    with pytest.raises(ValueError, match="at least one member"):
        mean_of_compatible([])
