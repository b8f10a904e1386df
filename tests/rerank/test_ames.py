"""The AMES-style pair-wise re-ranker and the shortlist it re-ranks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from asymret.core.space import SpaceMismatchError
from asymret.eval.metrics import evaluate
from asymret.eval.rerank import choose_fusion, shortlist_metrics
from asymret.rerank import AMESConfig, AMESReranker, DescriptorCodec, PairSide, PairTransformer, global_shortlist

SMALL = AMESConfig(dim=32, layers=1, heads=2, ffn=64, query_budget=12, database_budget=6, shortlist=12, pairs_per_epoch=1536,
                   epochs=3, batch_size=64, lr=3e-3, seed=0)


def _pairs(b=3, kq=5, kd=4, cq=8, cd=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, kq, cq, generator=g), torch.rand(b, kq, 2, generator=g), torch.ones(b, kq, dtype=torch.bool),
            torch.randn(b, kd, cd, generator=g), torch.rand(b, kd, 2, generator=g), torch.ones(b, kd, dtype=torch.bool))


def test_score_ignores_descriptor_order_and_padding():
    torch.manual_seed(0)
    model = PairTransformer(8, 6, SMALL).eval()
    q, q_xy, q_valid, d, d_xy, d_valid = _pairs()
    with torch.no_grad():
        base = model(q, q_xy, q_valid, d, d_xy, d_valid)
        assert base.shape == (3,)
        perm_d, perm_q = torch.tensor([2, 0, 3, 1]), torch.tensor([4, 1, 0, 3, 2])
        np.testing.assert_allclose(model(q, q_xy, q_valid, d[:, perm_d], d_xy[:, perm_d], d_valid[:, perm_d]), base, atol=1e-5)
        np.testing.assert_allclose(model(q[:, perm_q], q_xy[:, perm_q], q_valid[:, perm_q], d, d_xy, d_valid), base, atol=1e-5)
        # an invalid (padding) descriptor's values do not matter
        d_valid2 = d_valid.clone()
        d_valid2[:, -1] = False
        padded = model(q, q_xy, q_valid, d, d_xy, d_valid2)
        d2 = d.clone()
        d2[:, -1] = 100.0
        np.testing.assert_allclose(model(q, q_xy, q_valid, d2, d_xy, d_valid2), padded, atol=1e-5)
        assert not np.allclose(padded, base)  # ... while a valid one does
        # the score is a function of the pair: another database image changes it
        assert not np.allclose(model(q, q_xy, q_valid, d.flip(0), d_xy.flip(0), d_valid), base)


def test_the_shortlist_measures_like_the_global_evaluation(sides):
    embeddings, _ = sides["test"]
    shortlist = global_shortlist(embeddings, embeddings, depth=len(embeddings) - 1)
    direct = evaluate(embeddings, embeddings, ks=(1, 2))
    measured = shortlist_metrics(shortlist, ks=(1, 2))
    for key in ("recall@1", "recall@2", "map@r"):
        assert measured[key] == pytest.approx(direct[key], abs=1e-9)
    # a perfect re-ranker (logit = same class) with all weight on it puts a positive first wherever one is listed
    perfect = np.where(shortlist.gallery_labels[shortlist.candidates] == shortlist.query_labels[:, None], 10.0, -10.0)
    fusion, table = choose_fusion(shortlist, perfect)
    assert fusion["lambda"] < 1.0 and max(row["recall@1"] for row in table) == pytest.approx(1.0)


def test_ames_learns_pairs_of_unseen_images_and_round_trips(tmp_path, sides):
    (g_train, l_train), (g_test, l_test) = sides["train"], sides["test"]
    train_short = global_shortlist(g_train, g_train, SMALL.shortlist)
    reranker = AMESReranker(SMALL).fit(PairSide.from_local(l_train.align(g_train.ids), SMALL.query_budget),
                                       PairSide.from_local(l_train.align(g_train.ids), SMALL.database_budget), train_short.candidates)
    assert reranker.history.epoch_losses[-1] < reranker.history.epoch_losses[0]
    queries = PairSide.from_local(l_test.align(g_test.ids), SMALL.query_budget)
    database = PairSide.from_local(l_test.align(g_test.ids), SMALL.database_budget)
    test_short = global_shortlist(g_test, g_test, 10)
    logits = reranker.score(queries, database, test_short.candidates)
    same = test_short.gallery_labels[test_short.candidates] == test_short.query_labels[:, None]
    assert logits[same].mean() > logits[~same].mean() + 1.0  # it tells same-class pairs from others on test images
    loaded = AMESReranker.load(reranker.save(tmp_path / "ames"))
    np.testing.assert_allclose(loaded.score(queries, database, test_short.candidates), logits, atol=1e-5)
    codec = DescriptorCodec(dim=16, binary=True).fit(l_train)
    stored_another_way = PairSide.from_local(l_test.align(g_test.ids), SMALL.database_budget, codec=codec)
    with pytest.raises(SpaceMismatchError, match="database descriptors from .*codec stored.* but the re-ranker was trained on"):
        reranker.score(queries, stored_another_way, test_short.candidates)  # a database side stored another way is refused


def test_binarised_database_side_and_a_universal_model(sides):
    (g_train, l_train), (g_test, l_test) = sides["train"], sides["test"]
    codec = DescriptorCodec(dim=16, binary=True).fit(l_train)
    assert codec.bytes_per_image(SMALL.database_budget, metadata=False) == SMALL.database_budget * 2
    universal = AMESConfig(**{**SMALL.__dict__, "universal": True})
    short = global_shortlist(g_train, g_train, universal.shortlist)
    reranker = AMESReranker(universal).fit(PairSide.from_local(l_train.align(g_train.ids), universal.query_budget),
                                           PairSide.from_local(l_train.align(g_train.ids), universal.database_budget, codec=codec),
                                           short.candidates)
    queries = PairSide.from_local(l_test.align(g_test.ids), universal.query_budget)
    test_short = global_shortlist(g_test, g_test, 10)
    same = test_short.gallery_labels[test_short.candidates] == test_short.query_labels[:, None]
    full = PairSide.from_local(l_test.align(g_test.ids), universal.database_budget, codec=codec)
    # the database side is the codec's: every valid value a sign bit, ±1/√16
    np.testing.assert_array_equal(np.abs(full.vectors[full.valid]), np.float32(0.25))
    scores = {}
    for budget in (2, 6):  # any database budget at test time
        database = PairSide.from_local(l_test.align(g_test.ids), budget, codec=codec)
        assert database.vectors.shape[1:] == (budget, 16)
        scores[budget] = reranker.score(queries, database, test_short.candidates)
        # a smaller budget is the first descriptors of the full side (the strongest), not others
        pairs = np.repeat(np.arange(len(test_short.candidates)), test_short.candidates.shape[1])
        with torch.no_grad():
            truncated = reranker._logits(queries, pairs, full, test_short.candidates.reshape(-1), database_budget=budget)
        np.testing.assert_allclose(scores[budget].reshape(-1), truncated.numpy(), atol=1e-5)
    assert not np.allclose(scores[2], scores[6])  # the budget is used: more descriptors, other scores
    for budget, logits in scores.items():  # and at either budget it tells same-class pairs from others
        assert logits[same].mean() > logits[~same].mean() + 1.0, budget


def test_maxsim_matches_sets_of_descriptors_and_the_prior_starts_from_it():
    from asymret.rerank import maxsim

    q, q_xy, q_valid, d, d_xy, d_valid = _pairs(b=2, kq=4, kd=4, cq=6, cd=6)
    same = maxsim(q, q_valid, q, q_valid)
    np.testing.assert_allclose(same, 1.0, atol=1e-6)  # a set against itself: every descriptor finds itself
    base = maxsim(q, q_valid, d, d_valid)
    assert (base < 1.0).all()
    np.testing.assert_allclose(maxsim(q, q_valid, d[:, [3, 1, 0, 2]], d_valid), base, atol=1e-6)  # order-free
    d_valid2 = d_valid.clone()
    d_valid2[:, 0] = False
    masked = maxsim(q, q_valid, d, d_valid2)
    d2 = d.clone()
    d2[:, 0] = q[:, 0]  # an invalid database descriptor cannot be matched, however good
    np.testing.assert_allclose(maxsim(q, q_valid, d2, d_valid2), masked, atol=1e-6)
    prior = AMESConfig(**{**SMALL.__dict__, "maxsim_prior": True})
    torch.manual_seed(0)
    model = PairTransformer(6, 6, prior).eval()
    with torch.no_grad():
        torch.nn.init.zeros_(model.head.weight), torch.nn.init.zeros_(model.head.bias)
        np.testing.assert_allclose(model(q, q_xy, q_valid, d, d_xy, d_valid), 10.0 * (base - 0.5), atol=1e-5)
    with pytest.raises(ValueError, match="one dimension"):
        PairTransformer(6, 8, prior)
