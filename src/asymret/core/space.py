"""Embedding spaces and embeddings that know which space they live in.

Every embedding that crosses a module boundary travels as :class:`Embeddings` (vectors + ids + :class:`Space`).
Operations that combine two sets of embeddings (search, evaluation, fitting a transformation) check the spaces
and raise :class:`~asymret.core.space.SpaceMismatchError` instead of computing a meaningless number.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .manifest import SpaceMismatchError

__all__ = ["Space", "Embeddings", "SpaceMismatchError"]


@dataclass(frozen=True)
class Space:
    """An embedding space: who produced the vectors and their shape.

    ``fingerprint`` identifies the space (e.g. the query encoder's fingerprint; a CMCE gallery lives in the
    query space too, so it carries the same fingerprint, and names its transformations in ``provenance``).
    """

    fingerprint: str
    dim: int
    normalized: bool = True
    name: str = ""
    provenance: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["provenance"] = [list(item) for item in self.provenance]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Space":
        return cls(
            fingerprint=data["fingerprint"],
            dim=int(data["dim"]),
            normalized=bool(data.get("normalized", True)),
            name=data.get("name", ""),
            provenance=tuple(tuple(item) for item in data.get("provenance", ())),
        )

    def check_compatible(self, other: "Space", what: str = "embeddings") -> None:
        """Raise :class:`SpaceMismatchError` unless ``other`` is the same space (fingerprint, dim, normalisation)."""
        problems = []
        if other.fingerprint != self.fingerprint:
            problems.append(f"space fingerprint {other.fingerprint} ({other.name or '?'}) != {self.fingerprint} ({self.name or '?'})")
        if other.dim != self.dim:
            problems.append(f"dimension {other.dim} != {self.dim}")
        if other.normalized != self.normalized:
            problems.append(f"normalised={other.normalized} but expected normalised={self.normalized}")
        if problems:
            raise SpaceMismatchError(f"{what} are from another embedding space: " + "; ".join(problems))


@dataclass
class Embeddings:
    """Float32 vectors (N, d) with their item ids, labels (optional) and the space they live in."""

    vectors: np.ndarray
    ids: np.ndarray
    space: Space
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
        self.ids = np.asarray(self.ids).astype(str)
        if self.vectors.ndim != 2 or len(self.vectors) != len(self.ids):
            raise ValueError(f"vectors {self.vectors.shape} and ids ({len(self.ids)}) do not match")
        if self.vectors.shape[1] != self.space.dim:
            raise SpaceMismatchError(f"vectors have dimension {self.vectors.shape[1]}, space {self.space.name!r} has {self.space.dim}")
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64)
            if len(self.labels) != len(self.ids):
                raise ValueError("labels and ids differ in length")
        if len(self.vectors):
            bad = ~np.isfinite(self.vectors).all(axis=1)
            if bad.any():
                raise ValueError(f"{int(bad.sum())} of {len(bad)} vectors of space {self.space.name!r} contain NaN or inf "
                                 f"(e.g. id {str(self.ids[bad][0])!r}): the model or transformation that produced them diverged")
        if self.space.normalized and len(self.vectors):
            norms = np.linalg.norm(self.vectors, axis=1)
            if not np.allclose(norms, 1.0, atol=1e-3):
                raise SpaceMismatchError(
                    f"space {self.space.name!r} is L2-normalised but {(np.abs(norms - 1) > 1e-3).sum()} vectors are not unit length"
                )

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, indices: np.ndarray) -> "Embeddings":
        labels = None if self.labels is None else self.labels[indices]
        return Embeddings(self.vectors[indices], self.ids[indices], self.space, labels)

    def align(self, ids: np.ndarray) -> "Embeddings":
        """Rows reordered to follow ``ids`` (every id must be present)."""
        position = {item: row for row, item in enumerate(self.ids.tolist())}
        try:
            rows = np.array([position[item] for item in np.asarray(ids).astype(str).tolist()], dtype=np.int64)
        except KeyError as missing:
            raise KeyError(f"id {missing} not in embeddings of space {self.space.name!r}") from None
        return self.take(rows)


def l2_normalize(vectors: np.ndarray, eps: float = 1e-12, dtype: np.dtype | type | None = np.float32) -> np.ndarray:
    """``vectors`` scaled to unit length along the last axis (a norm below ``eps`` is taken as ``eps``): rows of an
    (N, d) array, or each descriptor of an (N, k, d) one.  ``dtype``: the array's type first (``None``: as given)."""
    vectors = np.asarray(vectors, dtype=dtype)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), eps)


