"""The Revisited Oxford/Paris evaluation protocol (Radenović et al., CVPR 2018), as the revisitop toolkit computes it.

Three protocols from the same per-query lists (``easy``, ``hard``, ``junk``):

=========  ==================  ===================
protocol   positives           ignored
=========  ==================  ===================
easy       easy                junk + hard
medium     easy + hard         junk
hard       hard                junk + easy
=========  ==================  ===================

* Ignored images are *removed* from the ranking, not counted as errors: a positive's 0-based position drops by
  the number of ignored images ranked above it.
* AP is revisitop's trapezoidal one: for the j-th retrieved positive (0-based) at position r,
  ``p0 = 1 if r == 0 else j / r``, ``p1 = (j + 1) / (r + 1)`` and AP += ``(p0 + p1) / 2 / #positives``.  Positives
  missing from a truncated ranking add nothing.  (Not scikit-learn's ``average_precision_score``.)
* P@k with revisitop's cut-off: with 1-based positions, ``kq = min(position of the last retrieved positive, k)``
  and ``P@k = #(positives at positions <= kq) / kq``, so a query with fewer than k positives, all ranked first,
  scores 1.  A truncated ranking holding no positive scores 0 (revisitop would fail on it).
* A query without any positive under a protocol gets NaN AP and P@k and is left out of that protocol's means.

Values are fractions in [0, 1] (revisitop prints them ×100).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..data.revisited import RevisitedGroundTruth, RevisitedQuery
from .metrics import ranked_neighbors

__all__ = [
    "PROTOCOLS",
    "ProtocolScores",
    "RevisitedScores",
    "protocol_sets",
    "trapezoidal_average_precision",
    "revisited_metrics",
    "evaluate_revisited",
]

PROTOCOLS = ("easy", "medium", "hard")
DEFAULT_KS = (1, 5, 10)


@dataclass(frozen=True)
class ProtocolScores:
    """One protocol's results: means over queries with a positive, per-query values (NaN = no positive)."""

    mean_average_precision: float
    mean_precision_at_k: dict[int, float]
    average_precision: np.ndarray  # (num_queries,)
    precision_at_k: np.ndarray  # (num_queries, len(ks)), columns in the order of ks
    num_queries_without_positives: int


@dataclass(frozen=True)
class RevisitedScores:
    easy: ProtocolScores
    medium: ProtocolScores
    hard: ProtocolScores
    ks: tuple[int, ...]

    def as_dict(self) -> dict[str, float]:
        """Flat ``map_<protocol>``, ``mp@<k>_<protocol>``, ``num_queries_without_positives_<protocol>``."""
        result: dict[str, float] = {}
        for protocol in PROTOCOLS:
            scores: ProtocolScores = getattr(self, protocol)
            result[f"map_{protocol}"] = scores.mean_average_precision
            for k in self.ks:
                result[f"mp@{k}_{protocol}"] = scores.mean_precision_at_k[k]
            result[f"num_queries_without_positives_{protocol}"] = scores.num_queries_without_positives
        result["num_queries"] = len(self.easy.average_precision)
        return result


def protocol_sets(query: RevisitedQuery, protocol: str) -> tuple[np.ndarray, np.ndarray]:
    """``(positives, ignored)`` database indices of ``query`` under ``protocol`` (sorted, unique)."""
    if protocol == "easy":
        positives, ignored = query.easy, np.concatenate([query.junk, query.hard])
    elif protocol == "medium":
        positives, ignored = np.concatenate([query.easy, query.hard]), query.junk
    elif protocol == "hard":
        positives, ignored = query.hard, np.concatenate([query.junk, query.easy])
    else:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
    return np.unique(positives).astype(np.int64), np.unique(ignored).astype(np.int64)


def trapezoidal_average_precision(positions: np.ndarray, num_positives: int) -> float:
    """revisitop's ``compute_ap``: ``positions`` = sorted 0-based positions of the retrieved positives (junk removed)."""
    positions = np.asarray(positions, dtype=np.float64)
    if num_positives <= 0:
        raise ValueError("num_positives must be >= 1")
    j = np.arange(len(positions), dtype=np.float64)
    precision_before = np.where(positions == 0, 1.0, j / np.maximum(positions, 1.0))
    precision_at = (j + 1.0) / (positions + 1.0)
    return float(((precision_before + precision_at) / 2.0).sum() / num_positives)


def _as_ground_truth(ground_truth: RevisitedGroundTruth | Sequence[Mapping[str, Any]]) -> RevisitedGroundTruth:
    if isinstance(ground_truth, RevisitedGroundTruth):
        return ground_truth
    return RevisitedGroundTruth.from_gnd(ground_truth, num_database=None)


def _normalise_ks(ks: Iterable[int]) -> tuple[int, ...]:
    values = tuple(int(k) for k in ks)
    if not values or min(values) < 1 or len(set(values)) != len(values):
        raise ValueError(f"ks must be distinct positive integers, got {tuple(ks)!r}")
    return values


def _check_ranks(ranks: np.ndarray | Sequence, truth: RevisitedGroundTruth) -> np.ndarray:
    array = np.asarray(ranks)
    if array.ndim != 2:
        raise ValueError(f"ranks must be a 2-D array (num_queries, depth), got shape {array.shape}")
    if array.shape[0] != len(truth):
        hint = " (revisitop's ranks are (database, queries): pass ranks.T)" if array.shape[1] == len(truth) else ""
        raise ValueError(f"ranks has {array.shape[0]} rows for {len(truth)} queries{hint}")
    if array.size and array.dtype.kind not in "iu":
        raise ValueError(f"ranks must hold integer database indices, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if array.size:
        if array.min() < 0:
            raise ValueError("ranks hold a negative index (padding from a search shallower than the database?)")
        if truth.num_database is not None and array.max() >= truth.num_database:
            raise ValueError(f"ranks hold index {array.max()} outside the database (0..{truth.num_database - 1})")
        ordered = np.sort(array, axis=1)
        repeated = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
        if len(repeated):
            raise ValueError(f"ranks row {repeated[0]} lists a database image twice")
    return array


def _score_protocol(ranks: np.ndarray, truth: RevisitedGroundTruth, protocol: str, ks: tuple[int, ...]) -> ProtocolScores:
    nq = len(truth)
    aps = np.full(nq, np.nan)
    precisions = np.full((nq, len(ks)), np.nan)
    for i, query in enumerate(truth.queries):
        positives, ignored = protocol_sets(query, protocol)
        if len(positives) == 0:
            continue  # no positive: excluded from the means, as revisitop does
        row = ranks[i]
        positive_positions = np.flatnonzero(np.isin(row, positives))
        ignored_positions = np.flatnonzero(np.isin(row, ignored))
        # remove ignored images: each positive moves up by the ignored images ranked strictly above it
        positions = positive_positions - np.searchsorted(ignored_positions, positive_positions, side="left")
        aps[i] = trapezoidal_average_precision(positions, len(positives))
        one_based = positions + 1
        for c, k in enumerate(ks):
            if len(one_based) == 0:
                precisions[i, c] = 0.0
                continue
            cutoff = min(int(one_based.max()), k)
            precisions[i, c] = np.count_nonzero(one_based <= cutoff) / cutoff
    evaluated = ~np.isnan(aps)
    n_eval = int(evaluated.sum())
    mean_ap = float(aps[evaluated].mean()) if n_eval else float("nan")
    mean_p = {k: float(precisions[evaluated, c].mean()) if n_eval else float("nan") for c, k in enumerate(ks)}
    return ProtocolScores(mean_ap, mean_p, aps, precisions, nq - n_eval)


def revisited_metrics(
    ranks: np.ndarray | Sequence[Sequence[int]],
    ground_truth: RevisitedGroundTruth | Sequence[Mapping[str, Any]],
    ks: Iterable[int] = DEFAULT_KS,
) -> RevisitedScores:
    """Easy / Medium / Hard mAP and mP@k of a ranking.

    Args:
        ranks: (num_queries, depth) database indices per query, best first (the transpose of revisitop's
            ``ranks``).  ``depth`` may be shorter than the database; each row must not repeat an index.
        ground_truth: a :class:`RevisitedGroundTruth` or revisitop's ``gnd`` list (dicts with easy/hard/junk).
        ks: the k of mP@k.
    """
    truth = _as_ground_truth(ground_truth)
    ks = _normalise_ks(ks)
    array = _check_ranks(ranks, truth)
    scores = {protocol: _score_protocol(array, truth, protocol, ks) for protocol in PROTOCOLS}
    return RevisitedScores(ks=ks, **scores)


def evaluate_revisited(
    query_vectors: np.ndarray,
    db_vectors: np.ndarray,
    ground_truth: RevisitedGroundTruth | Sequence[Mapping[str, Any]],
    ks: Iterable[int] = DEFAULT_KS,
) -> RevisitedScores:
    """Rank the whole database by inner product (ties: lower index first) and score it with :func:`revisited_metrics`.

    Row ``j`` of ``query_vectors`` must be query ``j`` of the ground truth and row ``i`` of ``db_vectors``
    database image ``i`` (``imlist[i]``); the two may come from different models (asymmetric retrieval).
    """
    truth = _as_ground_truth(ground_truth)
    if len(query_vectors) != len(truth):
        raise ValueError(f"{len(query_vectors)} query vectors for {len(truth)} queries in the ground truth")
    if truth.num_database is not None and len(db_vectors) != truth.num_database:
        raise ValueError(f"{len(db_vectors)} database vectors for a database of {truth.num_database} images")
    ranks, _ = ranked_neighbors(query_vectors, db_vectors, depth=len(db_vectors))
    return revisited_metrics(ranks, truth, ks)
