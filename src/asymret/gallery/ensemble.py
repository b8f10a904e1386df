"""The CMCE gallery: mean of the N transformed embeddings, their disagreement as uncertainty, and rejection."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..compat.transform import CMCETransform
from ..core.manifest import SpaceMismatchError
from ..core.space import Embeddings, Space
from ..core.uncertainty import ensemble_mean, pairwise_uncertainty


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
