"""Retrieval metrics: Recall@K, Precision@1, MAP@R, risk–coverage curves and TAR@FAR.

One retrieval path: every number is computed from the rankings that a ranker's ``search`` returns — a
:class:`~asymret.index.base.GalleryIndexBase` (exact, FAISS approximate, Milvus) or a re-ranked index
(:class:`~asymret.rerank.search.RerankedIndex`).
:func:`evaluate` (the entry point) measures what a user gets from *that* index — or from an exact index over the
gallery embeddings given; :func:`retrieval_metrics` is the same measurement on raw vectors (no space check), and
:func:`ranking_metrics` turns relevance rankings into numbers (a pure function).

Conventions:

* Similarity is the inner product (vectors are expected to be L2-normalised, so it is the cosine).
* The exact ranker orders gallery items by decreasing score, ties broken by the lower gallery position.
* Self-exclusion: when query and gallery ids are given, a gallery item whose id equals the query's id is never
  retrieved for that query and does not count towards its R (the standard "every test image is a query
  against all other test images" protocol, where the same image sits on both sides, possibly embedded by two
  different models).  The ranker is asked for enough extra results to drop them.
* Recall@K / Precision@1 are averaged over *all* queries (a query with no same-label gallery item scores 0);
  MAP@R is averaged over the queries with R > 0 only, the others are counted in
  ``num_queries_without_positives``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np

from ..core.space import Embeddings, Space

if TYPE_CHECKING:  # pragma: no cover
    from ..index.base import GalleryIndexBase

__all__ = [
    "ranking_metrics",
    "evaluate",
    "retrieval_metrics",
    "risk_coverage",
    "tar_at_far",
    "ranked_neighbors",
]

#: queries searched per call, to bound the memory of a deep search
_QUERY_CHUNK = 4096
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


def _anonymous_index(gallery: np.ndarray) -> tuple["GalleryIndexBase", Space]:
    """An exact index over raw vectors, positions as ids (duplicate ids are the caller's business)."""
    from ..index.exact import ExactIndex

    space = Space("raw-vectors", int(gallery.shape[1]), normalized=False, name="vectors passed in")
    index = ExactIndex(space)
    index.add(Embeddings(gallery, np.arange(len(gallery)).astype(str), space))
    return index, space


def _search_excluding_self(
    index: "GalleryIndexBase",
    query_vectors: np.ndarray,
    space: Space,
    depth: int,
    q_code: np.ndarray,
    g_code: np.ndarray,
    search_kwargs: Mapping[str, Any],
) -> np.ndarray:
    """Gallery positions (nq, depth) from ``index.search``, same-id items removed (asking for that many more)."""
    n_self = _excluded_per_query(q_code, g_code)
    fetch = depth + (int(n_self.max()) if len(n_self) else 0)
    out = np.full((len(query_vectors), depth), -1, dtype=np.int64)
    if depth == 0 or len(index) == 0:
        return out
    fetch = min(fetch, len(index))
    for start in range(0, len(query_vectors), _QUERY_CHUNK):
        stop = min(len(query_vectors), start + _QUERY_CHUNK)
        positions = index.search(query_vectors[start:stop], k=fetch, space=space, **search_kwargs).positions
        is_self = (positions >= 0) & (g_code[np.maximum(positions, 0)] == q_code[start:stop, None])
        positions = np.where(is_self, -1, positions)
        # drop the removed entries, keeping rank order (found results first)
        order = np.argsort(positions < 0, axis=1, kind="stable")
        positions = np.take_along_axis(positions, order, axis=1)[:, :depth]
        out[start:stop, : positions.shape[1]] = positions
    return out


def ranking_metrics(relevant: np.ndarray, n_positives: np.ndarray, ks: Iterable[int] = (1, 2, 4, 8)) -> dict[str, float]:
    """Recall@K, Precision@1 and MAP@R from rankings: a pure function, no search.

    Args:
        relevant: bool (nq, depth), True where the query's i-th result has the query's label (False for a
            missing result).  ``depth`` must reach max(ks) and every query's R for exact values.
        n_positives: (nq,) R, the number of relevant gallery items each query could have found.
        ks: the K of Recall@K.

    Returns ``recall@K`` (fraction of all queries with a relevant item in the top K), ``precision@1``,
    ``map@r`` (Musgrave et al. 2020: ``AP@R = 1/R * sum_{i<=R} P@i * rel_i`` averaged over queries with R > 0,
    NaN if none), ``num_queries`` and ``num_queries_without_positives``.  An empty query set gives NaN metrics.
    """
    ks = _normalise_ks(ks)
    relevant = np.asarray(relevant, dtype=bool)
    r = np.asarray(n_positives, dtype=np.int64).reshape(-1)
    nq = len(r)
    if relevant.ndim != 2 or len(relevant) != nq:
        raise ValueError(f"relevant must be (num_queries, depth) for {nq} queries, got shape {relevant.shape}")
    result: dict[str, float] = {}
    if nq == 0:
        result.update({f"recall@{k}": float("nan") for k in ks})
        result.update({"precision@1": float("nan"), "map@r": float("nan"), "num_queries": 0, "num_queries_without_positives": 0})
        return result
    depth = relevant.shape[1]
    first_hit = np.where(relevant.any(axis=1), relevant.argmax(axis=1), depth)
    for k in ks:
        result[f"recall@{k}"] = float((first_hit < k).mean())
    result["precision@1"] = float((first_hit == 0).mean())
    ranks = np.arange(1, depth + 1)
    within_r = relevant & (ranks[None, :] <= r[:, None])
    precision = np.cumsum(within_r, axis=1) / ranks[None, :]
    ap = (precision * within_r).sum(axis=1)
    valid = r > 0
    result["map@r"] = float((ap[valid] / r[valid]).mean()) if valid.any() else float("nan")
    result["num_queries"] = nq
    result["num_queries_without_positives"] = int(nq - valid.sum())
    return result


def _evaluate_ranker(
    index: "GalleryIndexBase",
    query_vectors: np.ndarray,
    space: Space,
    q_lab: np.ndarray,
    g_lab: np.ndarray,
    q_code: np.ndarray,
    g_code: np.ndarray,
    n_labels: int,
    ks: tuple[int, ...],
    search_kwargs: Mapping[str, Any],
) -> dict[str, float]:
    """Search ``index`` deep enough for Recall@max(K) and every query's R, then :func:`ranking_metrics`."""
    kept = ~index.rejected_mask(search_kwargs.get("reject_fraction"), search_kwargs.get("reject_threshold"), search_kwargs.get("exclude"))
    r = _positives_per_query(q_lab, g_lab[kept], q_code, g_code[kept], n_labels)
    depth = max(max(ks), int(r.max()) if len(r) else 0)
    positions = _search_excluding_self(index, query_vectors, space, depth, q_code, g_code, search_kwargs)
    labels = np.where(positions >= 0, g_lab[np.maximum(positions, 0)] if len(g_lab) else _NO_LABEL, _NO_LABEL)
    return ranking_metrics(labels == q_lab[:, None], r, ks)


def _class_metrics(
    index: "GalleryIndexBase",
    queries: Embeddings,
    gallery_labels: Mapping[str, int] | np.ndarray | Sequence[int],
    ks: Iterable[int] = (1, 2, 4, 8),
    reject_fraction: float | None = None,
    reject_threshold: float | None = None,
    exclude_same_id: bool = True,
    exclude: np.ndarray | None = None,
) -> dict[str, float]:
    """Recall@K, Precision@1 and MAP@R of ``queries`` searched in ``index`` — what a user of that index gets.

    The rankings are the index's own ``search`` results (an approximate index is scored as approximate), with
    the same rejection a user would ask for.  ``gallery_labels`` gives each gallery item's label: a mapping
    id → label, or an array aligned with ``index.ids``.  With ``exclude_same_id`` a gallery item with the
    query's id is not retrieved for it (the every-image-against-the-rest protocol).  ``exclude`` (bool per
    gallery position) removes further items, e.g. a random rejection as a reference.
    """
    if not isinstance(queries, Embeddings):
        raise TypeError(f"queries must be asymret.core.space.Embeddings (with labels), got {type(queries).__name__}")
    if queries.labels is None:
        raise ValueError("evaluation needs the query embeddings' labels")
    ks = _normalise_ks(ks)
    g_ids = np.asarray(index.ids).astype(str)
    if isinstance(gallery_labels, Mapping):
        try:
            g_labels = np.array([gallery_labels[item] for item in g_ids.tolist()])
        except KeyError as missing:
            raise ValueError(f"gallery_labels has no label for gallery item {missing}") from None
    else:
        g_labels = _as_1d(gallery_labels, len(g_ids), "gallery_labels (aligned with index.ids)")
    q_lab, g_lab, n_labels = _label_codes(queries.labels, g_labels)
    q_code, g_code = _id_codes(queries.ids if exclude_same_id else None, g_ids if exclude_same_id else None, len(queries), len(g_ids))
    kwargs = {"reject_fraction": reject_fraction, "reject_threshold": reject_threshold, "exclude": exclude}
    return _evaluate_ranker(index, queries.vectors, queries.space, q_lab, g_lab, q_code, g_code, n_labels, ks, kwargs)


def _instance_metrics(
    index: "GalleryIndexBase",
    queries: Embeddings,
    ks: Iterable[int] = (1, 10),
    reject_fraction: float | None = None,
    exclude: np.ndarray | None = None,
) -> dict[str, float]:
    """Instance-level recall: is the query's *own image* (the gallery item with its id) in its top K?

    The same measurement as :func:`evaluate` with each image its own class (no self-exclusion): what
    duplicate detection and product or landmark search need, beside class-level recall.  Returns
    ``instance_recall@K`` for each K; queries whose image is not in the (kept) gallery count as misses.
    """
    if not isinstance(queries, Embeddings):
        raise TypeError(f"queries must be asymret.core.space.Embeddings, got {type(queries).__name__}")
    g_ids = np.asarray(index.ids).astype(str)
    codes = {item: code for code, item in enumerate(g_ids.tolist())}
    missing = len(codes)  # ids absent from the gallery get a code no gallery item has
    own = Embeddings(queries.vectors, queries.ids, queries.space,
                     np.array([codes.get(item, missing) for item in queries.ids.tolist()], dtype=np.int64))
    metrics = _class_metrics(index, own, np.arange(len(g_ids)), ks=ks, reject_fraction=reject_fraction,
                             exclude_same_id=False, exclude=exclude)
    return {f"instance_{name}": value for name, value in metrics.items() if name.startswith("recall@")}


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
    """Recall@K, Precision@1 and MAP@R of exact inner-product retrieval of raw ``query`` against ``gallery`` vectors.

    The same measurement as :func:`evaluate`, through an exact index built on the vectors given (no space
    check: for comparing spaces on purpose, e.g. "no compatibility" baselines).  ``query_ids``/``gallery_ids``
    exclude same-id items (duplicates allowed, all excluded); ``gallery_mask`` (bool) keeps only its True items.
    See :func:`ranking_metrics` for the returned values (fractions in [0, 1]).
    """
    ks = _normalise_ks(ks)
    q, g, q_lab, g_lab, q_code, g_code, n_labels = _prepare(
        query_vectors, query_labels, gallery_vectors, gallery_labels, query_ids, gallery_ids
    )
    kept = _mask_indices(gallery_mask, len(g))
    exclude = None
    if kept is not None:
        exclude = np.ones(len(g), dtype=bool)
        exclude[kept] = False
    if len(g) == 0:
        return ranking_metrics(np.zeros((len(q), max(ks)), dtype=bool), np.zeros(len(q), dtype=np.int64), ks)
    index, space = _anonymous_index(g)
    return _evaluate_ranker(index, q, space, q_lab, g_lab, q_code, g_code, n_labels, ks, {"exclude": exclude})


def ranked_neighbors(
    query_vectors: np.ndarray,
    gallery_vectors: np.ndarray,
    depth: int,
    query_ids: np.ndarray | Sequence | None = None,
    gallery_ids: np.ndarray | Sequence | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``depth`` best gallery rows per query by exact inner product (ties: lower row first), same-id excluded.

    Returns ``(indices, scores)``, both (num_queries, depth); entries past the available gallery are ``-1`` / ``-inf``.
    """
    q = _as_vectors(query_vectors, "query_vectors")
    g = _as_vectors(gallery_vectors, "gallery_vectors")
    if len(q) and len(g) and q.shape[1] != g.shape[1]:
        raise ValueError(f"query dimension {q.shape[1]} != gallery dimension {g.shape[1]}")
    depth = int(depth)
    if depth < 0:
        raise ValueError("depth must be >= 0")
    q_code, g_code = _id_codes(query_ids, gallery_ids, len(q), len(g))
    if len(g) == 0 or len(q) == 0:
        return np.full((len(q), depth), -1, dtype=np.int64), np.full((len(q), depth), -np.inf, dtype=np.float32)
    index, space = _anonymous_index(g)
    positions = _search_excluding_self(index, q, space, depth, q_code, g_code, {})
    valid = positions >= 0
    scores = np.where(valid, np.einsum("qd,qkd->qk", q, g[np.maximum(positions, 0)]), -np.inf).astype(np.float32)
    return positions, scores


def evaluate(
    queries: Embeddings,
    gallery: Embeddings | None = None,
    *,
    index: "GalleryIndexBase | None" = None,
    gallery_labels: Mapping[str, int] | np.ndarray | Sequence[int] | None = None,
    ks: Iterable[int] = (1, 2, 4, 8),
    instance_ks: Iterable[int] = (),
    reject_fraction: float | None = None,
    reject_threshold: float | None = None,
    exclude: np.ndarray | None = None,
    exclude_same_id: bool = True,
    instance_queries: Embeddings | None = None,
) -> dict[str, float]:
    """The evaluation entry point: Recall@K, Precision@1 and MAP@R of ``queries`` searched in ``index`` — an exact
    index over ``gallery`` when no index is given — and, with ``instance_ks``, instance recall.

    Gallery labels come from ``gallery`` (embeddings with labels) or ``gallery_labels`` (a mapping id → label, or
    an array aligned with ``index.ids``).  The index checks that ``queries`` are in its space
    (:class:`~asymret.core.manifest.SpaceMismatchError` otherwise).  Instance recall searches ``instance_queries``
    (new views of the images, same ids) when given, else ``queries``.  Raw vectors: :func:`retrieval_metrics`.
    """
    if index is None:
        if gallery is None:
            raise ValueError("evaluate needs the gallery embeddings or an index")
        from ..index.exact import ExactIndex

        index = ExactIndex.from_embeddings(gallery)
    if gallery_labels is None:
        if gallery is None or gallery.labels is None:
            raise ValueError("evaluate needs the gallery's labels: gallery embeddings with labels, or gallery_labels")
        gallery_labels = dict(zip(gallery.ids.tolist(), gallery.labels.tolist()))
    metrics = _class_metrics(index, queries, gallery_labels, ks=ks, reject_fraction=reject_fraction,
                             reject_threshold=reject_threshold, exclude_same_id=exclude_same_id, exclude=exclude)
    if tuple(instance_ks):
        metrics.update(_instance_metrics(index, queries if instance_queries is None else instance_queries, ks=instance_ks,
                                         reject_fraction=reject_fraction, exclude=exclude))
    return metrics


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
    lower index first) and the risk ``1 − Recall@1`` of the queries against the kept gallery is measured by
    searching an exact index with the other items excluded (same self-exclusion and tie rules as
    :func:`retrieval_metrics`).  The baseline keeps the same number of items chosen at random: one seeded
    permutation (``numpy.random.default_rng(random_seed)``) whose prefixes give nested kept sets.

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
    index, space = (_anonymous_index(g) if ng else (None, None))

    def risk_for(kept_rows: np.ndarray) -> tuple[float, int]:
        kept = np.zeros(ng, dtype=bool)
        kept[kept_rows] = True
        active = ~np.isin(q_code, g_code[~kept]) if drop_queries else np.ones(len(q), dtype=bool)
        rows = np.flatnonzero(active)
        if len(rows) == 0:
            return float("nan"), 0
        if index is None or not kept.any():
            return 1.0, len(rows)
        top = _search_excluding_self(index, q[rows], space, 1, q_code[rows], g_code, {"exclude": ~kept})[:, 0]
        hit = (top >= 0) & (g_lab[np.maximum(top, 0)] == q_lab[rows])
        return 1.0 - float(hit.mean()), len(rows)

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
