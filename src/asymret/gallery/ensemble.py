"""The CMCE gallery: mean of the N transformed embeddings, their disagreement as uncertainty, and rejection."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..compat.transform import CMCETransform
from ..manifest import SpaceMismatchError
from ..space import Embeddings, Space, l2_normalize


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


class CMCEEnsemble:
    """N fitted transformations ψ_i (one per gallery model) into one query space."""

    def __init__(self, transforms: Sequence[CMCETransform]) -> None:
        if not transforms:
            raise ValueError("an ensemble needs at least one transformation")
        targets = {t.target_space.fingerprint for t in transforms}
        if len(targets) != 1:
            raise SpaceMismatchError(f"the transformations map into different query spaces: {sorted(targets)}")
        self.transforms = list(transforms)

    @property
    def space(self) -> Space:
        """The query space, naming every ψ_i in its provenance (what an index's manifest records)."""
        first = self.transforms[0].target_space
        provenance = tuple((t.name or t.source_space.name, t.fingerprint()) for t in self.transforms)
        return Space(first.fingerprint, first.dim, True, first.name, provenance)

    def transform_each(self, gallery_sets: Sequence[Embeddings]) -> list[Embeddings]:
        """ψ_i applied to gallery model i's embeddings, aligned on the ids all models have."""
        if len(gallery_sets) != len(self.transforms):
            raise ValueError(f"{len(self.transforms)} transformations but {len(gallery_sets)} gallery embedding sets")
        common = gallery_sets[0].ids
        for other in gallery_sets[1:]:
            common = common[np.isin(common, other.ids)]
        return [psi.transform(emb.align(common)) for psi, emb in zip(self.transforms, gallery_sets)]

    def transform(self, gallery_sets: Sequence[Embeddings]) -> tuple[Embeddings, np.ndarray | None]:
        """The ensemble gallery (mean of the transformed embeddings) and per-item uncertainty (None if N = 1)."""
        transformed = self.transform_each(gallery_sets)
        stack = np.stack([t.vectors for t in transformed])
        uncertainty = pairwise_uncertainty(stack) if len(transformed) > 1 else None
        first = transformed[0]
        return Embeddings(ensemble_mean(stack), first.ids, self.space, first.labels), uncertainty
