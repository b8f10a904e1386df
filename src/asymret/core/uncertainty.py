"""Uncertainty of a gallery item from its N transformed embeddings, and rejection by uncertainty.

numpy only: the index applies rejection at search time and must not pull in torch or the compatibility code.
"""
from __future__ import annotations

import numpy as np

from .space import l2_normalize

__all__ = ["ensemble_mean", "pairwise_uncertainty", "rejection_mask"]


def ensemble_mean(stack: np.ndarray) -> np.ndarray:
    """(N models, M items, d) L2-normalised embeddings → (M, d) re-normalised mean."""
    return l2_normalize(np.asarray(stack, dtype=np.float32).mean(axis=0))


def pairwise_uncertainty(stack: np.ndarray) -> np.ndarray:
    """Mean Euclidean distance over all model pairs i<j of each item's N embeddings: (N, M, d) → (M,).

    Computed pair by pair so memory stays O(M·d) whatever N is.
    """
    stack = np.asarray(stack, dtype=np.float32)
    n = stack.shape[0]
    if n < 2:
        raise ValueError("uncertainty needs at least two transformed embeddings per item")
    total = np.zeros(stack.shape[1], dtype=np.float64)
    for i in range(n):
        for j in range(i + 1, n):
            diff = stack[i] - stack[j]
            total += np.sqrt(np.einsum("md,md->m", diff, diff))
    return (total / (n * (n - 1) / 2)).astype(np.float32)


def rejection_mask(uncertainty: np.ndarray, fraction: float | None = None, threshold: float | None = None) -> np.ndarray:
    """Bool mask of the items to *reject*: the ``fraction`` most uncertain and/or those above ``threshold``.

    ``fraction=f`` rejects floor(f·M) items, highest uncertainty first, ties in position order.  A fraction is
    refused when every item has the same uncertainty (e.g. a gallery from a single model): it would drop
    arbitrary items.  The one implementation of rejection; indexes use it too.
    """
    uncertainty = np.asarray(uncertainty, dtype=np.float32).reshape(-1)
    n = len(uncertainty)
    rejected = np.zeros(n, dtype=bool)
    if fraction is not None:
        fraction = float(fraction)
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"reject_fraction must be in [0, 1], got {fraction}")
        count = min(n, int(np.floor(fraction * n + 1e-9)))
        if count:
            if np.ptp(uncertainty) == 0:
                raise ValueError("every gallery item has the same uncertainty (a gallery from one model has none): "
                                 "rejecting a fraction would drop arbitrary items; use an ensemble of ≥ 2 gallery models")
            rejected[np.argsort(-uncertainty, kind="stable")[:count]] = True
    if threshold is not None:
        threshold = float(threshold)
        if np.isnan(threshold):
            raise ValueError("reject_threshold is NaN")
        rejected |= uncertainty > threshold
    return rejected
