"""The LOCORE-style list-wise re-ranker: its windows, its list-wise dependence, training and persistence."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from asymret.core.space import SpaceMismatchError
from asymret.eval.rerank import choose_fusion, shortlist_metrics
from asymret.rerank import (AMESConfig, DescriptorCodec, ListTransformer, LOCOREConfig, LOCOREReranker, PairSide,
                            PairTransformer, Shortlist, global_shortlist, load_reranker, sliding_windows)

SMALL = LOCOREConfig(dim=32, layers=1, heads=2, ffn=64, query_budget=8, database_budget=4, window=60, stride=20,
                     lists_per_epoch=160, epochs=6, batch_size=8, lr=3e-3, seed=0)


def test_sliding_windows_cover_every_candidate_from_the_end_to_the_start():
    assert sliding_windows(400, 100, 50) == [300, 250, 200, 150, 100, 50, 0]  # LOCORE's published setting
    assert sliding_windows(130, 100, 50) == [30, 0]  # the last window moved back to end at the shortlist's end
    assert sliding_windows(20, 20, 10) == [0] and sliding_windows(7, 20, 10) == [0]
    for depth, window, stride in ((400, 100, 50), (130, 100, 50), (57, 10, 7), (11, 4, 4)):
        starts = sliding_windows(depth, window, stride)
        assert starts == sorted(starts, reverse=True) and starts[-1] == 0
        covered = np.zeros(depth, dtype=bool)
        for start in starts:
            assert start + window <= depth
            covered[start : start + window] = True
        assert covered.all()
    with pytest.raises(ValueError, match="stride"):
        LOCOREConfig(window=4, stride=5)


class _Recording(LOCOREReranker):
    """Scores each candidate by its gallery row (row 0 best) and records the windows it is asked to score."""

    def __init__(self, window: int, stride: int) -> None:
        super().__init__(LOCOREConfig(window=window, stride=stride))
        self.fusion = {"lambda": 0.0, "gamma": 1.0}
        self.seen: list[np.ndarray] = []

    def score(self, queries, database, candidates):
        self.seen.append(candidates.copy())
        return -candidates.astype(np.float32)


def test_rerank_applies_the_windows_in_order_and_a_late_candidate_climbs_to_the_top():
    depth = 13
    candidates = np.array([[5, 7, 9, 11, 2, 3, 4, 6, 8, 10, 12, 1, 0]])  # the best row (0) listed last
    shortlist = Shortlist(np.array(["q"]), candidates, np.linspace(1.0, 0.5, depth, dtype=np.float32)[None],
                          np.array([0]), np.zeros(13, dtype=np.int64), np.array([1]))
    reranker = _Recording(window=4, stride=3)
    order, fused = reranker.rerank(None, None, shortlist)
    starts = sliding_windows(depth, 4, 3)
    assert starts == [9, 6, 3, 0] and len(reranker.seen) == len(starts)
    assert set(reranker.seen[0][0].tolist()) == set(candidates[0, 9:13].tolist())  # the first window is the shortlist's end
    seen = np.concatenate([window[0] for window in reranker.seen])
    assert set(seen.tolist()) == set(candidates[0].tolist())  # every candidate scored at least once
    ranked = candidates[0, order[0]]
    assert ranked[0] == 0  # carried from the last window to the front in one end-to-start pass
    assert sorted(order[0].tolist()) == list(range(depth))  # a permutation of the shortlist
    assert fused.shape == shortlist.scores.shape


def _lists(b=2, w=5, kq=6, kd=3, c=8, g=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return dict(q_global=torch.randn(b, g, generator=gen), q=torch.randn(b, kq, c, generator=gen), q_xy=torch.rand(b, kq, 2, generator=gen),
                q_valid=torch.ones(b, kq, dtype=torch.bool), c_global=torch.randn(b, w, g, generator=gen),
                c=torch.randn(b, w, kd, c, generator=gen), c_xy=torch.rand(b, w, kd, 2, generator=gen),
                c_valid=torch.ones(b, w, kd, dtype=torch.bool), present=torch.ones(b, w, dtype=torch.bool))


def test_a_candidates_score_depends_on_the_other_candidates_in_its_list():
    torch.manual_seed(0)
    model = ListTransformer(8, 8, 4, 4, SMALL).eval()
    x = _lists()
    with torch.no_grad():
        base = model(**x)[..., -1]
        assert model(**x).shape == (2, 5, 3 + 2)
        # list-wise: another candidate changed, candidate 0's score changes
        other = dict(x, c=x["c"].clone(), c_global=x["c_global"].clone())
        other["c"][:, 3] = torch.randn(2, 3, 8)
        other["c_global"][:, 3] = torch.randn(2, 4)
        assert not np.allclose(model(**other)[..., -1][:, 0], base[:, 0], atol=1e-4)
        # the list's order carries no information: permuting the candidates permutes their scores
        perm = torch.tensor([3, 0, 4, 1, 2])
        permuted = {k: (v[:, perm] if k.startswith("c") or k == "present" else v) for k, v in x.items()}
        np.testing.assert_allclose(model(**permuted)[..., -1], base[:, perm], atol=1e-5)
        # an empty slot's contents do not matter
        empty = dict(x, present=x["present"].clone())
        empty["present"][:, 4] = False
        reference = model(**empty)[..., -1][:, :4]
        junk = dict(empty, c=x["c"].clone())
        junk["c"][:, 4] = 100.0
        np.testing.assert_allclose(model(**junk)[..., -1][:, :4], reference, atol=1e-5)
    # while a pair-wise model's score of a pair ignores the rest of the list by construction
    ames = PairTransformer(8, 8, AMESConfig(dim=32, layers=1, heads=2, ffn=64)).eval()
    with torch.no_grad():
        q, qxy, qv = x["q"], x["q_xy"], x["q_valid"]
        pair = ames(q, qxy, qv, x["c"][:, 0], x["c_xy"][:, 0], x["c_valid"][:, 0])
        np.testing.assert_allclose(ames(q, qxy, qv, other["c"][:, 0], x["c_xy"][:, 0], x["c_valid"][:, 0]), pair)


def test_locore_learns_lists_of_unseen_images_and_round_trips(tmp_path, sides):
    (g_train, l_train), (g_test, l_test) = sides["train"], sides["test"]
    train_short = global_shortlist(g_train, g_train, SMALL.window)

    def side(local, embeddings, budget, **kw):
        return PairSide.from_local(local.align(embeddings.ids), budget, embeddings=embeddings, **kw)

    train_q, train_db = side(l_train, g_train, SMALL.query_budget), side(l_train, g_train, SMALL.database_budget)
    reranker = LOCOREReranker(SMALL).fit(train_q, train_db, train_short.candidates)
    reranker.fusion, _ = choose_fusion(*reranker.fusion_logits(train_q, train_db, train_short))
    losses = reranker.history.epoch_losses
    assert losses[-1] < losses[0]
    queries, database = side(l_test, g_test, SMALL.query_budget), side(l_test, g_test, SMALL.database_budget)
    test_short = global_shortlist(g_test, g_test, len(g_test) - 1)
    logits = reranker.score(queries, database, test_short.candidates[:, : SMALL.window])
    same = test_short.gallery_labels[test_short.candidates[:, : SMALL.window]] == test_short.query_labels[:, None]
    assert logits[same].mean() > logits[~same].mean() + 1.0  # it tells same-class candidates from others on test images
    reranker.config = dataclasses.replace(SMALL, window=16, stride=8)  # any window at test: 23, 15, 8, 0 over 39
    order, fused = reranker.rerank(queries, database, test_short)
    assert (np.sort(order, axis=1) == np.arange(test_short.depth)).all()
    assert shortlist_metrics(test_short, order)["map@r"] > shortlist_metrics(test_short)["map@r"]
    loaded = load_reranker(reranker.save(tmp_path / "locore"))
    assert isinstance(loaded, LOCOREReranker)
    np.testing.assert_array_equal(loaded.rerank(queries, database, test_short)[0], order)
    codec = DescriptorCodec(dim=16, binary=True).fit(l_train)
    stored_another_way = side(l_test, g_test, SMALL.database_budget, codec=codec)
    with pytest.raises(SpaceMismatchError, match="database descriptors from .*codec stored.* but the re-ranker was trained on"):
        reranker.score(queries, stored_another_way, test_short.candidates)  # a database side stored another way is refused
    with pytest.raises(ValueError, match="global embeddings"):  # a list-wise model also reads the global embeddings
        reranker.score(queries, PairSide.from_local(l_test.align(g_test.ids), SMALL.database_budget), test_short.candidates)


def test_the_reranker_registry_is_filled_by_the_classes_themselves(tmp_path, monkeypatch):
    from asymret.core.manifest import write_manifest
    from asymret.rerank import RERANKERS, AMESReranker, LearnedReranker, base

    assert RERANKERS == {"ames": AMESReranker, "locore": LOCOREReranker}
    monkeypatch.setattr(base, "RERANKERS", dict(RERANKERS))

    class Variant(AMESReranker):  # inherits AMES's method: loads as AMES
        pass

    class Other(LearnedReranker):
        kind = "other"

    assert base.RERANKERS == {"ames": AMESReranker, "locore": LOCOREReranker, "other": Other}
    write_manifest(tmp_path, "reranker", {"method": "nope"})
    with pytest.raises(ValueError, match="unknown re-ranker method 'nope'; known: ames, locore, other"):
        base.load_reranker(tmp_path)
