"""Making an index from a gallery (index/build.py): the argument checks of the gallery assembly, and build_index
from a spec with recall tuning where the backend has a search parameter (the end-to-end runs: tests/test_cli.py)."""
from __future__ import annotations

import numpy as np
import pytest

from asymret.core.space import Embeddings, Space, l2_normalize
from asymret.index import ExactIndex
from asymret.index.build import assemble_gallery, build_index

SPACE = Space("build-space", 8, True, "query-enc")


class _Model:
    name = "stub"

    def space(self) -> Space:
        return SPACE


def test_the_assembly_wants_one_transformation_per_gallery_model():
    with pytest.raises(ValueError, match="2 gallery models but 1 transformations"):
        assemble_gallery(None, None, _Model(), [_Model(), _Model()], [object()])
    with pytest.raises(ValueError, match="an ensemble needs one ψ per gallery model"):
        assemble_gallery(None, None, _Model(), [_Model(), _Model()])


def test_build_index_tunes_what_has_a_search_parameter():
    vectors = l2_normalize(np.random.default_rng(0).standard_normal((400, 8)).astype(np.float32))
    gallery = Embeddings(vectors, np.arange(400).astype(str), SPACE)
    index, tuning = build_index("faiss:IVF8,Flat", gallery, target_recall=0.9)
    assert index.spec == "faiss:IVF8,Flat" and len(index) == 400
    assert tuning["parameter"] == "nprobe" and tuning["reached"] and tuning["recall"] >= 0.9 and tuning["queries"] == 400
    exact, none = build_index("exact", gallery, np.linspace(0, 1, 400), target_recall=0.9)
    assert isinstance(exact, ExactIndex) and none is None
    assert exact.rejected_mask(reject_fraction=0.25).sum() == 100
    flat, untuned = build_index("faiss", gallery)
    assert flat.spec == "faiss:Flat" and untuned is None
