"""Mapping one model's local descriptors into another's space — ψ for local descriptors.

In asymret's asymmetric case the database keeps a gallery model's descriptors while the query side has only the
light query model's: two spaces that no matcher can compare.  Both models look at the same training images, and
where their feature maps share a grid, a position of an image is described by both: those pairs fit a linear map
(ridge regression, scikit-learn) from the gallery model's descriptor to the query model's.  Mapped descriptors
live in the *query model's* descriptor space (as ψ's outputs live in the query space), so a codec fitted there
and a training-free matcher (MaxSim) accept them.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..core.manifest import SpaceMismatchError, atomic_save_npy, hash_arrays, read_manifest, write_manifest
from ..core.space import Space, l2_normalize
from .local import LocalDescriptors

__all__ = ["DescriptorMap"]


def _position_keys(xy: np.ndarray) -> np.ndarray:
    grid = np.round(xy * 10_000).astype(np.int64)  # normalised centres of one grid are equal to float precision
    return grid[..., 0] * 100_003 + grid[..., 1]


class DescriptorMap:
    """Ridge regression from a source model's local descriptors to a target model's, fitted on the positions of
    the same training images that both models kept (their (x, y) centres coincide)."""

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = float(alpha)
        self.coef_: np.ndarray | None = None
        self.intercept_: np.ndarray | None = None
        self.source_space: Space | None = None
        self.target_space: Space | None = None
        self.pairs_: int = 0

    def fit(self, source: LocalDescriptors, target: LocalDescriptors) -> "DescriptorMap":
        from sklearn.linear_model import Ridge

        target = target.align(source.ids)
        xs, ys = [], []
        src_keys, tgt_keys = _position_keys(source.xy), _position_keys(target.xy)
        for i in range(len(source)):
            src_valid, tgt_valid = np.flatnonzero(source.valid[i]), np.flatnonzero(target.valid[i])
            common, src_at, tgt_at = np.intersect1d(src_keys[i, src_valid], tgt_keys[i, tgt_valid], return_indices=True)
            if len(common):
                xs.append(source.vectors[i, src_valid[src_at]])
                ys.append(target.vectors[i, tgt_valid[tgt_at]])
        if not xs:
            raise ValueError("the two models kept no common positions on the training images (do their feature maps share "
                             "a grid? choose layers of the same stride and input size)")
        x, y = l2_normalize(np.concatenate(xs), dtype=None), l2_normalize(np.concatenate(ys), dtype=None)
        if len(x) < 2 * x.shape[1]:
            raise ValueError(f"only {len(x)} aligned descriptor pairs: too few to fit a {x.shape[1]}→{y.shape[1]} map")
        ridge = Ridge(alpha=self.alpha).fit(x, y)
        self.coef_, self.intercept_ = ridge.coef_.astype(np.float32), ridge.intercept_.astype(np.float32)
        self.source_space, self.target_space, self.pairs_ = source.space, target.space, len(x)
        return self

    def transform(self, source: LocalDescriptors) -> LocalDescriptors:
        """``source``'s descriptors mapped (unit norm) into the target model's descriptor space; positions, weights
        and validity kept."""
        if self.coef_ is None:
            raise RuntimeError("the descriptor map is not fitted")
        if source.space.fingerprint != self.source_space.fingerprint:
            raise SpaceMismatchError(f"descriptors from {source.space.name or source.space.fingerprint} given to a map fitted on "
                                     f"{self.source_space.name or self.source_space.fingerprint}")
        n, k, c = source.vectors.shape
        mapped = l2_normalize(l2_normalize(source.vectors.reshape(-1, c), dtype=None) @ self.coef_.T + self.intercept_, dtype=None)
        mapped = mapped.reshape(n, k, -1)
        mapped = np.where(source.valid[..., None], mapped, 0.0).astype(np.float32)
        return LocalDescriptors(mapped, source.xy, source.weights, source.valid, source.ids, self.target_space, source.labels)

    def save(self, directory: str | os.PathLike) -> Path:
        """Plain arrays (``.npy``, loaded without pickle) and a manifest with both spaces."""
        if self.coef_ is None:
            raise RuntimeError("an unfitted descriptor map cannot be saved")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_save_npy(directory / "coef.npy", self.coef_)
        atomic_save_npy(directory / "intercept.npy", self.intercept_)
        write_manifest(directory, "descriptor-map", {"alpha": self.alpha, "pairs": self.pairs_, "arrays": hash_arrays([self.coef_, self.intercept_]),
                                                     "source_space": self.source_space.to_dict(), "target_space": self.target_space.to_dict()})
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "DescriptorMap":
        directory = Path(directory)
        manifest = read_manifest(directory, kind="descriptor-map")
        mapping = cls(manifest["alpha"])
        mapping.coef_ = np.load(directory / "coef.npy", allow_pickle=False)
        mapping.intercept_ = np.load(directory / "intercept.npy", allow_pickle=False)
        if hash_arrays([mapping.coef_, mapping.intercept_]) != manifest["arrays"]:
            raise ValueError(f"{directory}: the map's arrays do not match its manifest (corrupt or edited)")
        mapping.source_space, mapping.target_space = Space.from_dict(manifest["source_space"]), Space.from_dict(manifest["target_space"])
        mapping.pairs_ = int(manifest["pairs"])
        return mapping
