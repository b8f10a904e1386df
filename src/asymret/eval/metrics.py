"""Retrieval metrics: Recall@K, Precision@1, MAP@R, risk–coverage curves and TAR@FAR.

Conventions shared by every function here:

* Similarity is the inner product (vectors are expected to be L2-normalised, so it is the cosine).
* Rankings are deterministic: gallery items are ordered by decreasing score, ties broken by the lower gallery
  index (the position in the arrays passed in, after ``gallery_mask``).  Exact ties that straddle the search
  depth are resolved by an exact numpy re-ranking of the affected queries, so faiss' internal heap order never
  leaks into a result.
* Self-exclusion: when ``query_ids`` and ``gallery_ids`` are given, a gallery item whose id equals the query's id
  is never retrieved for that query and does not count towards its R (the standard "every test image is a query
  against all other test images" protocol, where the same image sits on both sides, possibly embedded by two
  different models).  Duplicate gallery ids are allowed; all of them are excluded.
* Recall@K / Precision@1 are averaged over *all* queries (a query with no same-label gallery item scores 0);
  MAP@R is averaged over the queries with R > 0 only, the others are counted in
  ``num_queries_without_positives``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..space import Embeddings

__all__ = [
    "retrieval_metrics",
    "evaluate_embeddings",
    "risk_coverage",
    "tar_at_far",
    "ranked_neighbors",
    "FAISS_MAX_K",
]

#: Largest search depth sent to faiss; deeper searches use the chunked numpy path.
FAISS_MAX_K = 2048
# Elements (queries x depth or queries x gallery) processed per chunk, to bound memory.
_CHUNK_ELEMENTS = 1 << 23
_NO_LABEL = -1


# --------------------------------------------------------------------------------------------------- helpers
def _as_vectors(vectors: np.ndarray, name: str) -> np.ndarray:
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, d), got shape {array.shape}")
    if array.size and not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _as_1d(values: np.ndarray | Sequence, length: int, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or len(array) != length:
        raise ValueError(f"{name} must be a 1-D array of length {length}, got shape {array.shape}")
    return array


def _id_codes(
    query_ids: np.ndarray | Sequence | None, gallery_ids: np.ndarray | Sequence | None, n_query: int, n_gallery: int
) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes for ids, shared between both sides; without ids the codes never match (-1 vs -2)."""
    if (query_ids is None) != (gallery_ids is None):
        raise ValueError("give both query_ids and gallery_ids (for self-exclusion) or neither")
    if query_ids is None:
        return np.full(n_query, -1, dtype=np.int64), np.full(n_gallery, -2, dtype=np.int64)
    q = _as_1d(query_ids, n_query, "query_ids").astype(str)
    g = _as_1d(gallery_ids, n_gallery, "gallery_ids").astype(str)
    _, inverse = np.unique(np.concatenate([q, g]), return_inverse=True)
    inverse = inverse.astype(np.int64).reshape(-1)
    return inverse[:n_query], inverse[n_query:]


def _excluded_per_query(q_code: np.ndarray, g_code: np.ndarray) -> np.ndarray:
    """Number of gallery items sharing the id of each query."""
    if len(g_code) == 0 or len(q_code) == 0:
        return np.zeros(len(q_code), dtype=np.int64)
    values, counts = np.unique(g_code, return_counts=True)
    pos = np.clip(np.searchsorted(values, q_code), 0, len(values) - 1)
    return np.where(values[pos] == q_code, counts[pos], 0).astype(np.int64)


def _label_codes(query_labels: np.ndarray, gallery_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    _, inverse = np.unique(np.concatenate([query_labels, gallery_labels]), return_inverse=True)
    inverse = inverse.astype(np.int64).reshape(-1)
    n_labels = int(inverse.max()) + 1 if len(inverse) else 0
    return inverse[: len(query_labels)], inverse[len(query_labels):], n_labels


def _positives_per_query(
    q_lab: np.ndarray, g_lab: np.ndarray, q_code: np.ndarray, g_code: np.ndarray, n_labels: int
) -> np.ndarray:
    """R: same-label gallery items per query, minus same-label items excluded by the id rule."""
    if len(q_lab) == 0:
        return np.zeros(0, dtype=np.int64)
    per_label = np.bincount(g_lab, minlength=max(n_labels, 1))
    r = per_label[q_lab].astype(np.int64)
    if len(g_code) and (q_code >= 0).any():
        g_key = g_code * max(n_labels, 1) + g_lab
        q_key = q_code * max(n_labels, 1) + q_lab
        values, counts = np.unique(g_key, return_counts=True)
        pos = np.clip(np.searchsorted(values, q_key), 0, len(values) - 1)
        r -= np.where(values[pos] == q_key, counts[pos], 0)
    return r


def _exclusion_pairs(q_code: np.ndarray, g_code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query row, gallery row) pairs with equal id codes, without building a (nq, ng) matrix."""
    order = np.argsort(g_code, kind="stable")
    sorted_codes = g_code[order]
    lo = np.searchsorted(sorted_codes, q_code, side="left")
    hi = np.searchsorted(sorted_codes, q_code, side="right")
    counts = hi - lo
    rows = np.repeat(np.arange(len(q_code)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    cols = order[np.repeat(lo, counts) + offsets]
    return rows, cols


def _sort_rows(scores: np.ndarray, indices: np.ndarray, *first_keys: np.ndarray) -> np.ndarray:
    """Per-row permutation sorting by (*first_keys, -score, index)."""
    keys = (indices, -scores.astype(np.float64)) + tuple(reversed(first_keys))
    return np.lexsort(keys, axis=1)


def _exact_topk_numpy(
    queries: np.ndarray, gallery: np.ndarray, depth: int, q_code: np.ndarray, g_code: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``depth`` by chunked matmul; ties broken by lower gallery index; excluded items removed.

    Returns ``(indices, scores)`` of shape (nq, depth); missing entries (gallery too small) are -1 / -inf.
    """
    nq, ng = len(queries), len(gallery)
    out_idx = np.full((nq, depth), -1, dtype=np.int64)
    out_score = np.full((nq, depth), -np.inf, dtype=np.float32)
    if nq == 0 or ng == 0 or depth == 0:
        return out_idx, out_score
    kth = min(depth, ng)
    chunk = max(1, _CHUNK_ELEMENTS // ng)
    for start in range(0, nq, chunk):
        stop = min(nq, start + chunk)
        sims = queries[start:stop] @ gallery.T  # (c, ng) float32
        ex_rows, ex_cols = _exclusion_pairs(q_code[start:stop], g_code)
        sims[ex_rows, ex_cols] = -np.inf
        # threshold = kth largest value; take everything above it and the lowest-index items equal to it.
        thresh = np.partition(sims, ng - kth, axis=1)[:, ng - kth]
        selected = sims > thresh[:, None]
        equal = sims == thresh[:, None]
        missing = kth - selected.sum(axis=1)
        tied = np.flatnonzero(equal.sum(axis=1) > missing)  # more items equal to the threshold than places
        if len(tied):
            equal[tied] &= np.cumsum(equal[tied], axis=1) <= missing[tied, None]
        selected |= equal
        rows, cols = np.nonzero(selected)  # row-major: exactly kth per row, ascending index
        cols = cols.reshape(stop - start, kth)
        vals = sims[rows, cols.reshape(-1)].reshape(stop - start, kth)
        order = np.argsort(-vals, axis=1, kind="stable")  # stable: equal scores keep ascending index
        cols = np.take_along_axis(cols, order, axis=1)
        vals = np.take_along_axis(vals, order, axis=1)
        cols[~np.isfinite(vals)] = -1
        out_idx[start:stop, :kth] = cols
        out_score[start:stop, :kth] = vals
    return out_idx, out_score


def ranked_neighbors(
    query_vectors: np.ndarray,
    gallery_vectors: np.ndarray,
    depth: int,
    query_ids: np.ndarray | Sequence | None = None,
    gallery_ids: np.ndarray | Sequence | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``depth`` best gallery items per query by inner product, deterministic and with self-exclusion.

    Returns ``(indices, scores)``, both (num_queries, depth): gallery row indices sorted by decreasing score
    (ties: lower index first) and their scores.  Entries beyond the available gallery are ``-1`` / ``-inf``.
    Uses faiss ``IndexFlatIP`` (exact) when the search depth is at most :data:`FAISS_MAX_K`, a chunked numpy
    matmul otherwise.
    """
    q = _as_vectors(query_vectors, "query_vectors")
    g = _as_vectors(gallery_vectors, "gallery_vectors")
    if len(q) and len(g) and q.shape[1] != g.shape[1]:
        raise ValueError(f"query dimension {q.shape[1]} != gallery dimension {g.shape[1]}")
    q_code, g_code = _id_codes(query_ids, gallery_ids, len(q), len(g))
    return _ranked(q, g, int(depth), q_code, g_code)


def _ranked(
    q: np.ndarray, g: np.ndarray, depth: int, q_code: np.ndarray, g_code: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    nq, ng = len(q), len(g)
    if depth < 0:
        raise ValueError("depth must be >= 0")
    if nq == 0 or ng == 0 or depth == 0:
        return np.full((nq, depth), -1, dtype=np.int64), np.full((nq, depth), -np.inf, dtype=np.float32)
    n_excl = _excluded_per_query(q_code, g_code)
    # one extra result to detect ties at the cut-off
    search_k = min(depth + int(n_excl.max()) + 1, ng)
    if search_k > FAISS_MAX_K:
        return _exact_topk_numpy(q, g, depth, q_code, g_code)

    import faiss  # local import: keeps `import asymret.eval` light

    index = faiss.IndexFlatIP(g.shape[1])
    index.add(g)
    out_idx = np.full((nq, depth), -1, dtype=np.int64)
    out_score = np.full((nq, depth), -np.inf, dtype=np.float32)
    exhaustive = search_k >= ng
    keep = min(depth, search_k)
    chunk = max(1, _CHUNK_ELEMENTS // search_k)
    for start in range(0, nq, chunk):
        stop = min(nq, start + chunk)
        scores, idx = index.search(q[start:stop], search_k)
        idx = idx.astype(np.int64)
        scores_all_min = scores.min(axis=1)
        excluded = (idx < 0) | (g_code[np.maximum(idx, 0)] == q_code[start:stop, None])
        # faiss returns scores in decreasing order but ties in arbitrary order: put excluded items last
        # (stable), and fully re-sort the rows that contain ties (or, defensively, any misordering).
        order = np.argsort(excluded, axis=1, kind="stable")
        messy = np.flatnonzero((scores[:, 1:] >= scores[:, :-1]).any(axis=1))
        if len(messy):
            order[messy] = _sort_rows(scores[messy], idx[messy], excluded[messy])
        idx = np.take_along_axis(idx, order, axis=1)[:, :keep]
        scores = np.take_along_axis(scores, order, axis=1)[:, :keep]
        excluded = np.take_along_axis(excluded, order, axis=1)[:, :keep]
        idx[excluded] = -1
        scores[excluded] = -np.inf
        out_idx[start:stop, :keep] = idx
        out_score[start:stop, :keep] = scores
        if not exhaustive:
            # An unretrieved item can score as high as the lowest retrieved one (the extra result): if that
            # equals the last kept score, a tie straddles the cut-off and faiss' pick among the tied items is
            # arbitrary -> re-rank those queries exactly.
            floor = scores_all_min
            unsafe = np.flatnonzero(out_score[start:stop, keep - 1] <= floor)
            if len(unsafe):
                rows = start + unsafe
                exact_idx, exact_score = _exact_topk_numpy(q[rows], g, depth, q_code[rows], g_code)
                out_idx[rows] = exact_idx
                out_score[rows] = exact_score
    return out_idx, out_score


# --------------------------------------------------------------------------------------------- retrieval
def _normalise_ks(ks: Iterable[int]) -> tuple[int, ...]:
    values = sorted({int(k) for k in ks})
    if not values or values[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks!r}")
    return tuple(values)


def _prepare(
    query_vectors: np.ndarray,
    query_labels: np.ndarray | Sequence,
    gallery_vectors: np.ndarray,
    gallery_labels: np.ndarray | Sequence,
    query_ids: np.ndarray | Sequence | None,
    gallery_ids: np.ndarray | Sequence | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Validate inputs; return vectors, label codes, id codes and the number of labels."""
    q = _as_vectors(query_vectors, "query_vectors")
    g = _as_vectors(gallery_vectors, "gallery_vectors")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query dimension {q.shape[1]} != gallery dimension {g.shape[1]}")
    ql = _as_1d(query_labels, len(q), "query_labels")
    gl = _as_1d(gallery_labels, len(g), "gallery_labels")
    q_lab, g_lab, n_labels = _label_codes(ql, gl)
    q_code, g_code = _id_codes(query_ids, gallery_ids, len(q), len(g))
    return q, g, q_lab, g_lab, q_code, g_code, n_labels


def _mask_indices(gallery_mask: np.ndarray | Sequence | None, n_gallery: int) -> np.ndarray | None:
    if gallery_mask is None:
        return None
    mask = _as_1d(gallery_mask, n_gallery, "gallery_mask")
    if mask.dtype != bool:
        raise ValueError(f"gallery_mask must be boolean, got dtype {mask.dtype}")
    return np.flatnonzero(mask)


def retrieval_metrics(
    query_vectors: np.ndarray,
    query_labels: np.ndarray | Sequence,
    gallery_vectors: np.ndarray,
    gallery_labels: np.ndarray | Sequence,
    ks: Iterable[int] = (1, 2, 4, 8),
    query_ids: np.ndarray | Sequence | None = None,
    gallery_ids: np.ndarray | Sequence | None = None,
    gallery_mask: np.ndarray | Sequence | None = None,
) -> dict[str, float]:
    """Recall@K, Precision@1 and MAP@R of inner-product retrieval of ``query`` against ``gallery``.

    Args:
        query_vectors: (Nq, d) float array, L2-normalised.
        query_labels: (Nq,) class labels.
        gallery_vectors: (Ng, d) float array, L2-normalised (may come from another model than the queries).
        gallery_labels: (Ng,) class labels.
        ks: the K of Recall@K.
        query_ids, gallery_ids: item ids; a gallery item with the query's id is excluded for that query.
        gallery_mask: (Ng,) bool; ``False`` items are removed from the gallery (e.g. rejected as unreliable).

    Returns:
        ``recall@K`` for each K (fraction of all queries with at least one same-label item in the top K),
        ``precision@1`` (fraction of queries whose first result has their label; equal to ``recall@1``),
        ``map@r`` (MAP@R of Musgrave et al. 2020, "A Metric Learning Reality Check": for a query with R
        same-label gallery items, ``AP@R = 1/R * sum_{i<=R} P@i * rel_i``; averaged over queries with R > 0;
        NaN if there are none), ``num_queries`` and ``num_queries_without_positives`` (R = 0).
        Metric values are fractions in [0, 1].  An empty query set gives NaN metrics.
    """
    ks = _normalise_ks(ks)
    q, g, q_lab, g_lab, q_code, g_code, n_labels = _prepare(
        query_vectors, query_labels, gallery_vectors, gallery_labels, query_ids, gallery_ids
    )
    kept = _mask_indices(gallery_mask, len(g))
    if kept is not None:
        g, g_lab, g_code = g[kept], g_lab[kept], g_code[kept]
    return _metrics_from_codes(q, g, q_lab, g_lab, q_code, g_code, n_labels, ks)


def _metrics_from_codes(
    q: np.ndarray,
    g: np.ndarray,
    q_lab: np.ndarray,
    g_lab: np.ndarray,
    q_code: np.ndarray,
    g_code: np.ndarray,
    n_labels: int,
    ks: tuple[int, ...],
) -> dict[str, float]:
    nq = len(q)
    r = _positives_per_query(q_lab, g_lab, q_code, g_code, n_labels)
    with_positives = r > 0
    result: dict[str, float] = {}
    if nq == 0:
        for k in ks:
            result[f"recall@{k}"] = float("nan")
        result.update({"precision@1": float("nan"), "map@r": float("nan"), "num_queries": 0,
                       "num_queries_without_positives": 0})
        return result

    depth = max(max(ks), int(r.max()) if nq else 0)
    hits_at_k = np.zeros(len(ks), dtype=np.int64)
    top1_hits = 0
    ap_sum = 0.0
    chunk = max(1, _CHUNK_ELEMENTS // max(depth, 1))
    ks_arr = np.asarray(ks)
    for start in range(0, nq, chunk):
        stop = min(nq, start + chunk)
        idx, _ = _ranked(q[start:stop], g, depth, q_code[start:stop], g_code)
        labels = np.where(idx >= 0, g_lab[np.maximum(idx, 0)] if len(g) else _NO_LABEL, _NO_LABEL)
        hits = labels == q_lab[start:stop, None]  # (c, depth)
        # recall@K: first hit position < K
        first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1), depth)
        hits_at_k += (first_hit[:, None] < ks_arr[None, :]).sum(axis=0)
        top1_hits += int((first_hit == 0).sum())
        # MAP@R over the top R
        r_chunk = r[start:stop]
        ranks = np.arange(1, depth + 1)
        rel = hits & (ranks[None, :] <= r_chunk[:, None])
        precision = np.cumsum(rel, axis=1) / ranks[None, :]
        ap = (precision * rel).sum(axis=1)
        valid = r_chunk > 0
        ap_sum += float((ap[valid] / r_chunk[valid]).sum())

    for k, count in zip(ks, hits_at_k):
        result[f"recall@{k}"] = float(count) / nq
    # precision@1 is the fraction of queries whose top result is relevant = recall@1
    result["precision@1"] = float(top1_hits) / nq
    n_pos = int(with_positives.sum())
    result["map@r"] = ap_sum / n_pos if n_pos else float("nan")
    result["num_queries"] = nq
    result["num_queries_without_positives"] = nq - n_pos
    return result


def evaluate_embeddings(
    query: "Embeddings",
    gallery: "Embeddings",
    ks: Iterable[int] = (1, 2, 4, 8),
    gallery_mask: np.ndarray | None = None,
    exclude_same_id: bool = True,
) -> dict[str, float]:
    """:func:`retrieval_metrics` on :class:`~asymret.space.Embeddings`, after checking both are in one space.

    Raises :class:`~asymret.manifest.SpaceMismatchError` if the gallery is not in the query's embedding space
    (e.g. an asymmetric gallery that was not made compatible), and ``ValueError`` if labels are missing.
    """
    query.space.check_compatible(gallery.space, "gallery embeddings")
    if query.labels is None or gallery.labels is None:
        raise ValueError("evaluation needs labels on both the query and the gallery embeddings")
    return retrieval_metrics(
        query.vectors,
        query.labels,
        gallery.vectors,
        gallery.labels,
        ks=ks,
        query_ids=query.ids if exclude_same_id else None,
        gallery_ids=gallery.ids if exclude_same_id else None,
        gallery_mask=gallery_mask,
    )


# ------------------------------------------------------------------------------------------ risk-coverage
def risk_coverage(
    query_vectors: np.ndarray,
    query_labels: np.ndarray | Sequence,
    gallery_vectors: np.ndarray,
    gallery_labels: np.ndarray | Sequence,
    uncertainty: np.ndarray | Sequence,
    coverages: np.ndarray | Sequence[float] = np.linspace(0.5, 1.0, 11),
    query_ids: np.ndarray | Sequence | None = None,
    gallery_ids: np.ndarray | Sequence | None = None,
    random_seed: int = 0,
    drop_queries: bool = False,
) -> dict[str, np.ndarray]:
    """Risk (1 − Recall@1) after rejecting gallery items, by uncertainty and at random.

    For each coverage ``c`` the ``round(c * Ng)`` gallery items with the lowest ``uncertainty`` are kept (ties:
    lower index first) and the risk ``1 − Recall@1`` of the queries against the kept gallery is computed exactly
    as :func:`retrieval_metrics` would (same self-exclusion and tie rules).  The baseline keeps the same number
    of items chosen at random: one seeded permutation (``numpy.random.default_rng(random_seed)``) whose prefixes
    give nested kept sets across coverages.

    With ``drop_queries=True`` (needs ids) a query whose id is among the rejected gallery items is dropped too —
    in the standard protocol the query and gallery sets are the same images, so rejecting an image removes it
    from both sides.  Otherwise all queries are kept; a query whose positives were all rejected counts as a miss.

    Returns a dict of arrays (one entry per coverage): ``coverage`` (as requested), ``kept_fraction`` (actual
    fraction kept), ``risk_uncertainty``, ``risk_random``, ``num_queries_uncertainty``, ``num_queries_random``.
    Risk is NaN when no query is left.
    """
    q, g, q_lab, g_lab, q_code, g_code, _ = _prepare(
        query_vectors, query_labels, gallery_vectors, gallery_labels, query_ids, gallery_ids
    )
    ng = len(g)
    unc = _as_1d(uncertainty, ng, "uncertainty").astype(np.float64)
    if not np.isfinite(unc).all():
        raise ValueError("uncertainty contains NaN or infinite values")
    if drop_queries and query_ids is None:
        raise ValueError("drop_queries=True needs query_ids and gallery_ids")
    cov = np.asarray(coverages, dtype=np.float64).reshape(-1)
    if ((cov < 0) | (cov > 1)).any():
        raise ValueError("coverages must lie in [0, 1]")
    n_keep = np.rint(cov * ng).astype(np.int64)

    # Rank once against the whole gallery; the best kept item is the first kept one in that ranking.  Queries
    # whose pre-ranking holds no kept item (and is not exhaustive) are re-searched against the kept subset.
    depth = min(ng, 64)
    ranked, _ = _ranked(q, g, depth, q_code, g_code)
    exhaustive = (ng - _excluded_per_query(q_code, g_code)) <= depth

    def risk_for(kept_rows: np.ndarray) -> tuple[float, int]:
        kept = np.zeros(ng, dtype=bool)
        kept[kept_rows] = True
        if drop_queries:
            active = ~np.isin(q_code, g_code[~kept])
        else:
            active = np.ones(len(q), dtype=bool)
        n_active = int(active.sum())
        if n_active == 0:
            return float("nan"), 0
        rows = np.flatnonzero(active)
        cand = ranked[rows]
        usable = (cand >= 0) & kept[np.maximum(cand, 0)] if ng else np.zeros_like(cand, dtype=bool)
        has = usable.any(axis=1)
        top = np.where(has, cand[np.arange(len(rows)), usable.argmax(axis=1)], -1) if depth else np.full(len(rows), -1)
        todo = np.flatnonzero(~has & ~exhaustive[rows])
        if len(todo) and len(kept_rows):
            sub = np.flatnonzero(kept)
            sub_rows = rows[todo]
            best, _ = _ranked(q[sub_rows], g[sub], 1, q_code[sub_rows], g_code[sub])
            top[todo] = np.where(best[:, 0] >= 0, sub[np.maximum(best[:, 0], 0)], -1)
        hit = (top >= 0) & (g_lab[np.maximum(top, 0)] == q_lab[rows]) if ng else np.zeros(len(rows), dtype=bool)
        return 1.0 - float(hit.mean()), n_active

    order_unc = np.argsort(unc, kind="stable")
    order_rand = np.random.default_rng(random_seed).permutation(ng)
    risk_u, risk_r, nq_u, nq_r = [], [], [], []
    for n in n_keep:
        risk, count = risk_for(order_unc[:n])
        risk_u.append(risk)
        nq_u.append(count)
        risk, count = risk_for(order_rand[:n])
        risk_r.append(risk)
        nq_r.append(count)
    return {
        "coverage": cov,
        "kept_fraction": n_keep / ng if ng else np.zeros_like(cov),
        "risk_uncertainty": np.asarray(risk_u, dtype=np.float64),
        "risk_random": np.asarray(risk_r, dtype=np.float64),
        "num_queries_uncertainty": np.asarray(nq_u, dtype=np.int64),
        "num_queries_random": np.asarray(nq_r, dtype=np.int64),
    }


# ------------------------------------------------------------------------------------------- verification
def tar_at_far(
    scores: np.ndarray | Sequence[float],
    is_match: np.ndarray | Sequence[bool],
    fars: Iterable[float] = (1e-4, 1e-3, 1e-2),
) -> dict[str, float]:
    """True accept rate at fixed false accept rates (verification: a pair is accepted if its score >= threshold).

    ``TAR@FAR=f`` is the largest true positive rate over thresholds whose false positive rate is <= f, computed
    from :func:`sklearn.metrics.roc_curve` (``drop_intermediate=False``).  Returns ``tar@far={f:g}`` and the
    matching ``threshold@far={f:g}`` (``inf`` when only the reject-all threshold qualifies) for each f.
    """
    from sklearn.metrics import roc_curve

    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(is_match).reshape(-1).astype(bool)
    if len(s) != len(y):
        raise ValueError(f"scores ({len(s)}) and is_match ({len(y)}) differ in length")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    if y.all() or not y.any():
        raise ValueError("tar_at_far needs both matching and non-matching pairs")
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    result: dict[str, float] = {}
    for far in fars:
        far = float(far)
        ok = np.flatnonzero(fpr <= far + 1e-12)  # fpr[0] == 0, so never empty
        best = ok[np.argmax(tpr[ok])]
        result[f"tar@far={far:g}"] = float(tpr[best])
        result[f"threshold@far={far:g}"] = float(thresholds[best])
    return result
