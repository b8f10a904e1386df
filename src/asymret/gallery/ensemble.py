"""The CMCE gallery: mean of the N transformed embeddings, their disagreement as uncertainty, and rejection.

The paper's ensemble is the plain mean of every member.  On classes unseen in training a ψ that does not carry
over drags that mean below its best member (RESULTS §4), so an ensemble can also hold *member weights*, and
:func:`select_members` chooses them on validation classes: the subset of members whose plain mean scores best
there (every single ψ is a candidate, so the choice is never worse than the best member on validation).  A
member with weight 0 is not run, does not move the mean and does not count in the uncertainty.
"""
from __future__ import annotations

from itertools import combinations
from typing import Callable, Sequence

import numpy as np

from ..compat.transform import CMCETransform
from ..core.manifest import SpaceMismatchError
from ..core.space import Embeddings, Space
from ..core.uncertainty import ensemble_mean, pairwise_uncertainty

__all__ = ["CMCEEnsemble", "select_members", "mean_of_compatible"]


class CMCEEnsemble:
    """N fitted transformations ψ_i (one per gallery model) into one query space, optionally weighted."""

    def __init__(self, transforms: Sequence[CMCETransform], weights: Sequence[float] | None = None) -> None:
        if not transforms:
            raise ValueError("an ensemble needs at least one transformation")
        targets = {t.target_space.fingerprint for t in transforms}
        if len(targets) != 1:
            raise SpaceMismatchError(f"the transformations map into different query spaces: {sorted(targets)}")
        self.transforms = list(transforms)
        if weights is None:
            self.weights = None
        else:
            values = np.asarray(weights, dtype=np.float64)
            if len(values) != len(self.transforms) or np.any(values < 0) or not np.all(np.isfinite(values)) or values.sum() <= 0:
                raise ValueError(f"ensemble weights must be {len(self.transforms)} finite values ≥ 0, not all 0 (got {list(weights)})")
            self.weights = (values / values.sum()).tolist()

    @property
    def members(self) -> list[int]:
        """Positions of the members that count (weight > 0)."""
        return [i for i in range(len(self.transforms)) if self.weights is None or self.weights[i] > 0]

    @property
    def space(self) -> Space:
        """The query space, naming every counted ψ_i (and its weight, when weighted) in its provenance (what an
        index's manifest records)."""
        first = self.transforms[0].target_space
        provenance = tuple((self._member_name(i), self.transforms[i].fingerprint()) for i in self.members)
        return Space(first.fingerprint, first.dim, True, first.name, provenance)

    def _member_name(self, i: int) -> str:
        psi = self.transforms[i]
        name = psi.name or psi.source_space.name
        return name if self.weights is None else f"{name} (weight {self.weights[i]:.3g})"

    def transform_each(self, gallery_sets: Sequence[Embeddings]) -> list[Embeddings]:
        """ψ_i applied to gallery model i's embeddings (the counted members only), aligned on the ids all models have."""
        if len(gallery_sets) != len(self.transforms):
            raise ValueError(f"{len(self.transforms)} transformations but {len(gallery_sets)} gallery embedding sets")
        members = self.members
        common = gallery_sets[members[0]].ids
        for i in members[1:]:
            common = common[np.isin(common, gallery_sets[i].ids)]
        return [self.transforms[i].transform(gallery_sets[i].align(common)) for i in members]

    def transform(self, gallery_sets: Sequence[Embeddings]) -> tuple[Embeddings, np.ndarray | None]:
        """The ensemble gallery (weighted mean of the transformed embeddings) and per-item uncertainty (None with
        one counted member)."""
        transformed = self.transform_each(gallery_sets)
        stack = np.stack([t.vectors for t in transformed])
        uncertainty = pairwise_uncertainty(stack) if len(transformed) > 1 else None
        if self.weights is not None:
            weights = np.asarray([self.weights[i] for i in self.members], dtype=np.float32)
            stack = stack * (weights / weights.mean())[:, None, None]  # the mean of the scaled stack is the weighted mean
        first = transformed[0]
        return Embeddings(ensemble_mean(stack), first.ids, self.space, first.labels), uncertainty


def select_members(transforms: Sequence[CMCETransform], score: Callable[[CMCEEnsemble], float]) -> tuple[CMCEEnsemble, dict[str, float]]:
    """The robust ensemble: of every non-empty subset of ``transforms`` (plain mean over the subset), the one that
    ``score`` (e.g. R@1 on validation classes, higher is better) rates best; ties go to the larger subset, then to
    the earlier members.  Returns the ensemble (weights 1 on the chosen members, 0 elsewhere) and every subset's
    score by member names.  2^N − 1 candidates: meant for the few gallery models of an ensemble (N ≤ 10)."""
    n = len(transforms)
    if not 0 < n <= 10:
        raise ValueError(f"select_members takes 1..10 transformations (got {n})")
    scores: dict[str, float] = {}
    best: tuple[float, int] | None = None
    chosen: tuple[int, ...] = ()
    for size in range(n, 0, -1):
        for subset in combinations(range(n), size):
            candidate = CMCEEnsemble(transforms, [1.0 if i in subset else 0.0 for i in range(n)])
            value = float(score(candidate))
            scores["+".join(transforms[i].name or str(i) for i in subset)] = value
            if best is None or value > best[0]:  # strictly better: larger and earlier subsets win ties
                best, chosen = (value, size), subset
    return CMCEEnsemble(transforms, [1.0 if i in chosen else 0.0 for i in range(n)]), scores


def mean_of_compatible(members: Sequence[tuple[str, Embeddings]]) -> tuple[Embeddings, np.ndarray | None]:
    """The ensemble of gallery models that already embed in one query space (each trained into it, BCT's way —
    no ψ): the mean of their embeddings on the ids all have, their disagreement as uncertainty (None for one),
    and the members named in the space's provenance.  Embeddings of different spaces are refused."""
    if not members:
        raise ValueError("an ensemble needs at least one member")
    first = members[0][1].space
    for name, embedded in members[1:]:
        first.check_compatible(embedded.space, what=f"the embeddings of {name}")
    common = members[0][1].ids
    for _, embedded in members[1:]:
        common = common[np.isin(common, embedded.ids)]
    aligned = [embedded.align(common) for _, embedded in members]
    stack = np.stack([a.vectors for a in aligned])
    uncertainty = pairwise_uncertainty(stack) if len(aligned) > 1 else None
    provenance = tuple((name, embedded.space.name or first.fingerprint) for name, embedded in members)
    space = Space(first.fingerprint, first.dim, True, first.name, provenance)
    return Embeddings(ensemble_mean(stack), common, space, aligned[0].labels), uncertainty
