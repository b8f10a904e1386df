"""Tests for asymret.eval.metrics against brute-force references and pytorch-metric-learning."""
from __future__ import annotations

import math

import numpy as np
import pytest

from asymret.eval import metrics as M
from asymret.index import exact as exact_module
from asymret.eval.metrics import (
    evaluate,
    ranked_neighbors,
    retrieval_metrics,
    risk_coverage,
    tar_at_far,
)

KS = (1, 2, 4, 8)


# ------------------------------------------------------------------------------------------ references
def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_force(q, ql, g, gl, ks=KS, qids=None, gids=None, mask=None):
    """Pure python/numpy reference: one query at a time, full sort by (-score, gallery index)."""
    q = np.asarray(q, np.float64)
    g = np.asarray(g, np.float64)
    recall = {k: 0 for k in ks}
    p1 = 0
    aps = []
    for i in range(len(q)):
        cands = [
            j
            for j in range(len(g))
            if (mask is None or mask[j]) and (qids is None or str(gids[j]) != str(qids[i]))
        ]
        scored = sorted(cands, key=lambda j: (-float(q[i] @ g[j]), j))
        rel = [int(gl[j] == ql[i]) for j in scored]
        for k in ks:
            recall[k] += int(any(rel[:k]))
        p1 += rel[0] if rel else 0
        r = sum(rel)
        if r:
            correct = 0
            total = 0.0
            for pos in range(r):
                if rel[pos]:
                    correct += 1
                    total += correct / (pos + 1)
            aps.append(total / r)
    n = len(q)
    out = {f"recall@{k}": recall[k] / n for k in ks}
    out["precision@1"] = p1 / n
    out["map@r"] = float(np.mean(aps)) if aps else float("nan")
    out["num_queries"] = n
    out["num_queries_without_positives"] = n - len(aps)
    return out


def assert_same_metrics(got, want):
    assert set(got) == set(want)
    for key, value in want.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(value, abs=1e-9), key


def random_case(seed, nq=40, ng=60, d=8, n_labels=6):
    rng = np.random.default_rng(seed)
    q = _unit(rng.standard_normal((nq, d)))
    g = _unit(rng.standard_normal((ng, d)))
    ql = rng.integers(0, n_labels, nq)
    gl = rng.integers(0, n_labels, ng)
    return rng, q, ql, g, gl


# ------------------------------------------------------------------------------- brute-force agreement
@pytest.mark.parametrize("seed", range(5))
def test_asymmetric_no_ids_matches_brute_force(seed):
    _, q, ql, g, gl = random_case(seed)
    assert_same_metrics(retrieval_metrics(q, ql, g, gl, ks=KS), brute_force(q, ql, g, gl))


@pytest.mark.parametrize("seed", range(5))
def test_self_exclusion_same_images_two_models(seed):
    """Query set == gallery set (same ids), embedded by two different 'models'."""
    rng = np.random.default_rng(100 + seed)
    n, d = 50, 6
    labels = rng.integers(0, 5, n)
    base = rng.standard_normal((n, d))
    q = _unit(base + 0.3 * rng.standard_normal((n, d)))
    g = _unit(base + 0.3 * rng.standard_normal((n, d)))
    ids = np.array([f"img{i}" for i in range(n)])
    got = retrieval_metrics(q, labels, g, labels, ks=KS, query_ids=ids, gallery_ids=ids)
    assert_same_metrics(got, brute_force(q, labels, g, labels, qids=ids, gids=ids))
    # without exclusion the image itself (very similar embedding) would dominate the top-1
    leaky = retrieval_metrics(q, labels, g, labels, ks=(1,))
    assert leaky["recall@1"] > got["recall@1"]


@pytest.mark.parametrize("seed", range(5))
def test_partial_id_overlap_and_gallery_mask(seed):
    rng, q, ql, g, gl = random_case(200 + seed, nq=30, ng=70)
    gids = rng.permutation(70)
    qids = np.concatenate([gids[:20], np.arange(1000, 1010)])  # 20 queries also in the gallery
    rng.shuffle(qids)
    mask = rng.random(70) < 0.7
    got = retrieval_metrics(q, ql, g, gl, ks=(1, 3, 5), query_ids=qids, gallery_ids=gids, gallery_mask=mask)
    want = brute_force(q, ql, g, gl, ks=(1, 3, 5), qids=qids, gids=gids, mask=mask)
    assert_same_metrics(got, want)


@pytest.mark.parametrize("seed", range(3))
def test_duplicate_gallery_ids_all_excluded(seed):
    rng, q, ql, g, gl = random_case(300 + seed, nq=10, ng=30)
    gids = np.repeat(np.arange(10), 3)  # three gallery views per id
    qids = np.arange(10)
    got = retrieval_metrics(q, ql, g, gl, query_ids=qids, gallery_ids=gids)
    assert_same_metrics(got, brute_force(q, ql, g, gl, qids=qids, gids=gids))


def test_queries_without_positives_are_skipped_for_map_only():
    rng, q, ql, g, gl = random_case(7, nq=20, ng=30, n_labels=4)
    ql = ql.copy()
    ql[:5] = 99  # label absent from the gallery
    got = retrieval_metrics(q, ql, g, gl)
    want = brute_force(q, ql, g, gl)
    assert_same_metrics(got, want)
    assert got["num_queries_without_positives"] >= 5
    assert got["num_queries"] == 20


def test_empty_gallery_after_mask():
    _, q, ql, g, gl = random_case(8, nq=5, ng=10)
    got = retrieval_metrics(q, ql, g, gl, gallery_mask=np.zeros(10, dtype=bool))
    assert got["recall@1"] == 0.0 and got["recall@8"] == 0.0
    assert math.isnan(got["map@r"])
    assert got["num_queries_without_positives"] == 5


def test_small_gallery_fewer_items_than_k():
    _, q, ql, g, gl = random_case(9, nq=12, ng=5, n_labels=3)
    assert_same_metrics(retrieval_metrics(q, ql, g, gl, ks=KS), brute_force(q, ql, g, gl))


def test_chunked_search_gives_the_same_metrics(monkeypatch):
    """Large R (Fashion-MNIST-like), searched in many small query and gallery chunks: same numbers."""
    rng, q, ql, g, gl = random_case(10, nq=40, ng=200, n_labels=2)
    ids = np.arange(200)
    qids = ids[:40]
    want = brute_force(q, ql, g, gl, qids=qids, gids=ids)
    fast = retrieval_metrics(q, ql, g, gl, query_ids=qids, gallery_ids=ids)
    monkeypatch.setattr(M, "_QUERY_CHUNK", 7)  # several search calls
    monkeypatch.setattr(exact_module, "CHUNK_ELEMENTS", 1000)  # several matmul chunks inside each
    slow = retrieval_metrics(q, ql, g, gl, query_ids=qids, gallery_ids=ids)
    assert_same_metrics(fast, want)
    assert_same_metrics(slow, want)


# ------------------------------------------------------------------------------------------------ ties
def _tied_case(seed):
    """Vectors on a coarse grid: inner products are exact in float32, so ties are exact and frequent."""
    rng = np.random.default_rng(seed)
    q = rng.integers(-2, 3, (25, 4)).astype(np.float32) / 4
    g = rng.integers(-2, 3, (80, 4)).astype(np.float32) / 4
    return q, g


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("depth", [1, 5, 17, 79, 90])
def test_ties_broken_by_lower_index(monkeypatch, seed, chunked, depth):
    q, g = _tied_case(seed)
    qids = np.arange(25)
    gids = np.arange(80)
    if chunked:
        monkeypatch.setattr(exact_module, "CHUNK_ELEMENTS", 100)
    idx, scores = ranked_neighbors(q, g, depth, query_ids=qids, gallery_ids=gids)
    assert idx.shape == (25, depth)
    for i in range(25):
        cands = [j for j in range(80) if j != i]
        want = sorted(cands, key=lambda j: (-float(q[i] @ g[j]), j))[:depth]
        want = want + [-1] * (depth - len(want))
        assert idx[i].tolist() == want
        valid = idx[i] >= 0
        np.testing.assert_allclose(scores[i][valid], g[idx[i][valid]] @ q[i], atol=1e-6)


def test_deterministic_metrics_with_ties():
    q, g = _tied_case(0)
    rng = np.random.default_rng(0)
    ql, gl = rng.integers(0, 3, 25), rng.integers(0, 3, 80)
    got = retrieval_metrics(q, ql, g, gl, query_ids=np.arange(25), gallery_ids=np.arange(80))
    want = brute_force(q, ql, g, gl, qids=np.arange(25), gids=np.arange(80))
    assert_same_metrics(got, want)


# ------------------------------------------------------------------------------------------ hand cases
def _angles(degrees):
    rad = np.deg2rad(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


def test_hand_computed_map_at_r():
    # gallery at 10..50 degrees; query A at 0 degrees ranks them 10,20,30,40,50; query B at 90 degrees the reverse.
    g = _angles([10, 20, 30, 40, 50])
    gl = np.array([0, 1, 0, 0, 1])
    q = _angles([0, 90])
    ql = np.array([0, 1])
    got = retrieval_metrics(q, ql, g, gl, ks=(1, 2))
    # A: labels in order 0,1,0,0,1, R=3 -> AP = (1/1 + 2/3) / 3 = 5/9
    # B: labels in order 1,0,0,1,0, R=2 -> AP = (1/1) / 2 = 1/2
    assert got["map@r"] == pytest.approx((5 / 9 + 1 / 2) / 2)
    assert got["recall@1"] == 1.0 and got["precision@1"] == 1.0 and got["recall@2"] == 1.0
    # excluding the 10-degree item from query A (same id) -> A ranks 20,30,40,50: labels 1,0,0,1, R=2 -> AP=1/4
    got = retrieval_metrics(q, ql, g, gl, ks=(1, 2), query_ids=["a", "b"], gallery_ids=["a", "x", "y", "z", "w"])
    assert got["map@r"] == pytest.approx((1 / 4 + 1 / 2) / 2)
    assert got["recall@1"] == 0.5 and got["recall@2"] == 1.0


def test_tar_at_far_hand_case():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    is_match = [1, 0, 1, 1, 0]
    out = tar_at_far(scores, is_match, fars=(0.1, 0.5, 1.0))
    # accept >= 0.9: TAR 1/3, FAR 0; accept >= 0.6: TAR 1, FAR 1/2
    assert out["tar@far=0.1"] == pytest.approx(1 / 3)
    assert out["threshold@far=0.1"] == pytest.approx(0.9)
    assert out["tar@far=0.5"] == pytest.approx(1.0)
    assert out["threshold@far=0.5"] == pytest.approx(0.6)
    assert out["tar@far=1"] == pytest.approx(1.0)
    # default fars on a case where even the strictest threshold leaks a false accept
    out = tar_at_far([0.9, 0.8], [0, 1])
    assert out["tar@far=0.0001"] == 0.0
    with pytest.raises(ValueError):
        tar_at_far([0.1, 0.2], [1, 1])


# -------------------------------------------------------------------------- pytorch-metric-learning
def _clustered(seed, n, d=16, n_labels=8, noise=1.2):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_labels, d))
    labels = np.tile(np.arange(n_labels), n // n_labels)  # every label >= 2 items: no lone queries
    rng.shuffle(labels)
    return rng, centers, labels


@pytest.mark.parametrize("seed", range(2))
def test_agrees_with_pytorch_metric_learning(seed):
    torch = pytest.importorskip("torch")
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    calc = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r"), k="max_bin_count", device=torch.device("cpu")
    )
    rng, centers, labels = _clustered(seed, 160)
    x = _unit(centers[labels] + 1.2 * rng.standard_normal((160, centers.shape[1])))

    # symmetric, query set == gallery set: pml's ref_includes_query=True <-> our id-based self-exclusion
    pml = calc.get_accuracy(x, labels, x, labels, ref_includes_query=True)
    ids = np.arange(160)
    ours = retrieval_metrics(x, labels, x, labels, query_ids=ids, gallery_ids=ids)
    assert ours["recall@1"] == pytest.approx(pml["precision_at_1"], abs=1e-6)
    assert ours["precision@1"] == pytest.approx(pml["precision_at_1"], abs=1e-6)
    assert ours["map@r"] == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-6)

    # asymmetric, disjoint query and gallery images from "two models"
    y = _unit(centers[labels] + 1.2 * rng.standard_normal((160, centers.shape[1])))
    pml = calc.get_accuracy(x[:80], labels[:80], y[80:], labels[80:], ref_includes_query=False)
    ours = retrieval_metrics(x[:80], labels[:80], y[80:], labels[80:])
    assert ours["recall@1"] == pytest.approx(pml["precision_at_1"], abs=1e-6)
    assert ours["map@r"] == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-6)


# ------------------------------------------------------------------------------------------ risk-coverage
def _risk_reference(q, ql, g, gl, keep_rows, qids=None, gids=None, drop_queries=False):
    mask = np.zeros(len(g), dtype=bool)
    mask[keep_rows] = True
    rows = np.arange(len(q))
    if drop_queries:
        rejected = {str(x) for x in np.asarray(gids)[~mask]}
        rows = np.array([i for i in rows if str(qids[i]) not in rejected], dtype=int)
    if len(rows) == 0:
        return float("nan")
    sub_qids = None if qids is None else np.asarray(qids)[rows]
    ref = brute_force(q[rows], ql[rows], g, gl, ks=(1,), qids=sub_qids, gids=gids, mask=mask)
    return 1.0 - ref["recall@1"]


@pytest.mark.parametrize("drop_queries", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_risk_coverage_matches_reference(seed, drop_queries):
    rng = np.random.default_rng(500 + seed)
    n, d = 60, 5
    labels = rng.integers(0, 4, n)
    base = rng.standard_normal((n, d))
    q = _unit(base + 0.5 * rng.standard_normal((n, d)))
    g = _unit(base + 0.5 * rng.standard_normal((n, d)))
    ids = np.arange(n).astype(str)
    unc = rng.random(n)
    cov = np.array([0.0, 0.3, 0.5, 0.75, 1.0])
    out = risk_coverage(q, labels, g, labels, unc, coverages=cov, query_ids=ids, gallery_ids=ids,
                        random_seed=seed, drop_queries=drop_queries)
    perm = np.random.default_rng(seed).permutation(n)
    order = np.argsort(unc, kind="stable")
    for c_i, c in enumerate(cov):
        n_keep = int(round(c * n))
        want_u = _risk_reference(q, labels, g, labels, order[:n_keep], ids, ids, drop_queries)
        want_r = _risk_reference(q, labels, g, labels, perm[:n_keep], ids, ids, drop_queries)
        for got, want in ((out["risk_uncertainty"][c_i], want_u), (out["risk_random"][c_i], want_r)):
            if math.isnan(want):
                assert math.isnan(got)
            else:
                assert got == pytest.approx(want, abs=1e-12)
    np.testing.assert_allclose(out["coverage"], cov)
    assert out["risk_uncertainty"][-1] == out["risk_random"][-1]  # full coverage: identical galleries
    if drop_queries:
        assert out["num_queries_uncertainty"].tolist() == [int(round(c * n)) for c in cov]


def test_risk_coverage_exact_when_prefix_ranking_has_no_kept_item():
    """Uncertainty aligned with geometry: the nearest 64 items of many queries are all rejected."""
    rng = np.random.default_rng(11)
    n = 300
    g = _unit(rng.standard_normal((n, 3)))
    q = _unit(rng.standard_normal((80, 3)))
    ql, gl = rng.integers(0, 3, 80), rng.integers(0, 3, n)
    unc = -g[:, 0]  # keep the items pointing to +x
    cov = np.array([0.05, 0.1, 0.5])
    idx, _ = ranked_neighbors(q, g, 64)
    order = np.argsort(unc, kind="stable")
    kept = np.zeros(n, dtype=bool)
    kept[order[:15]] = True
    assert (~kept[idx].any(axis=1)).sum() > 0  # the fallback path is exercised
    out = risk_coverage(q, ql, g, gl, unc, coverages=cov)
    for c_i, c in enumerate(cov):
        want = _risk_reference(q, ql, g, gl, order[: int(round(c * n))])
        assert out["risk_uncertainty"][c_i] == pytest.approx(want, abs=1e-12)


# ----------------------------------------------------------------------------------- validation & API
def test_input_validation():
    _, q, ql, g, gl = random_case(12, nq=4, ng=6)
    with pytest.raises(ValueError, match="give both query_ids and gallery_ids"):
        retrieval_metrics(q, ql, g, gl, query_ids=np.arange(4))  # gallery ids missing
    with pytest.raises(ValueError, match=r"query_labels must be a 1-D array of length 4, got shape \(3,\)"):
        retrieval_metrics(q, ql[:3], g, gl)
    with pytest.raises(ValueError, match="query dimension 8 != gallery dimension 3"):
        retrieval_metrics(q, ql, g[:, :3], gl)
    with pytest.raises(ValueError, match="gallery_mask must be boolean"):
        retrieval_metrics(q, ql, g, gl, gallery_mask=np.ones(6, dtype=int))
    with pytest.raises(ValueError, match="ks must be positive integers"):
        retrieval_metrics(q, ql, g, gl, ks=(0,))
    with pytest.raises(ValueError, match="drop_queries=True needs query_ids and gallery_ids"):
        risk_coverage(q, ql, g, gl, np.zeros(6), drop_queries=True)


def test_evaluate_checks_space():
    from asymret.core.manifest import SpaceMismatchError
    from asymret.core.space import Embeddings, Space

    _, q, ql, g, gl = random_case(13, nq=10, ng=10)
    ids = np.arange(10)
    space_a = Space("a" * 16, q.shape[1], name="A")
    space_b = Space("b" * 16, q.shape[1], name="B")
    query = Embeddings(q, ids, space_a, ql)
    gallery = Embeddings(g, ids, space_a, gl)
    got = evaluate(query, gallery)
    assert_same_metrics(got, brute_force(q, ql, g, gl, qids=ids, gids=ids))
    with pytest.raises(SpaceMismatchError):
        evaluate(query, Embeddings(g, ids, space_b, gl))
