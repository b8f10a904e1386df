"""Local descriptors as the re-rankers take them: unpacked from the store's rows, budgets, alignment, samples.

Extraction (which layer, which positions, the row layout) is the encoders' business
(:mod:`asymret.encoders.local`); the store keeps the rows like embeddings.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from ..core.space import Embeddings, Space
from ..encoders.local import META_FIELDS, LocalSpec

__all__ = ["LocalDescriptors", "stored_local"]


@dataclass
class LocalDescriptors:
    """Local descriptors of N images: ``vectors`` (N, k, C) float32, ``xy`` (N, k, 2), ``weights`` (N, k),
    ``valid`` (N, k) bool, the images' ``ids`` (and ``labels``), and the space they were extracted in."""

    vectors: np.ndarray
    xy: np.ndarray
    weights: np.ndarray
    valid: np.ndarray
    ids: np.ndarray
    space: Space
    labels: np.ndarray | None = None

    @classmethod
    def from_embeddings(cls, rows: Embeddings, spec: LocalSpec) -> "LocalDescriptors":
        """Unpack the store's flat rows (see :func:`local_descriptors`)."""
        n, width = rows.vectors.shape
        if width % spec.budget:
            raise ValueError(f"rows of width {width} are not {spec.budget} descriptors ({rows.space.name})")
        per = rows.vectors.reshape(n, spec.budget, width // spec.budget)
        meta = len(META_FIELDS)
        return cls(np.ascontiguousarray(per[:, :, meta:]), np.ascontiguousarray(per[:, :, :2]), per[:, :, 2].copy(),
                   per[:, :, 3] > 0.5, rows.ids, rows.space, rows.labels)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def channels(self) -> int:
        return int(self.vectors.shape[2])

    def take(self, budget: int) -> "LocalDescriptors":
        """The first ``budget`` descriptors of every image (they are sorted by detector weight): a smaller budget,
        e.g. the database side of an asymmetric re-ranker."""
        if budget > self.vectors.shape[1]:
            raise ValueError(f"cannot take {budget} descriptors: only {self.vectors.shape[1]} were extracted")
        return LocalDescriptors(self.vectors[:, :budget], self.xy[:, :budget], self.weights[:, :budget], self.valid[:, :budget],
                                self.ids, self.space, self.labels)

    def align(self, ids: np.ndarray) -> "LocalDescriptors":
        """These descriptors reordered to ``ids``."""
        row_of = {item: row for row, item in enumerate(self.ids.tolist())}
        rows = np.array([row_of[item] for item in np.asarray(ids).astype(str).tolist()], dtype=np.int64)
        return LocalDescriptors(self.vectors[rows], self.xy[rows], self.weights[rows], self.valid[rows], self.ids[rows], self.space,
                                None if self.labels is None else self.labels[rows])

    def training_sample(self, count: int, seed: int = 0) -> np.ndarray:
        """Up to ``count`` valid descriptors (rows of C) drawn at random: what a codec is fitted on."""
        pool = self.vectors[self.valid]
        if len(pool) > count:
            pool = pool[np.random.default_rng(seed).choice(len(pool), size=count, replace=False)]
        return np.ascontiguousarray(pool, dtype=np.float32)


def stored_local(store, encoder: nn.Module, dataset, spec: LocalSpec) -> LocalDescriptors:
    """``dataset``'s local descriptors under ``encoder`` and ``spec`` from an :class:`~asymret.store.EmbeddingStore`
    (extracted first where missing: sharded and resumable like embeddings)."""
    return LocalDescriptors.from_embeddings(store.get(encoder, dataset, spec.output), spec)
