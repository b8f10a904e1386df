"""Compact local descriptors: a projection to a small dimension, stored as float16 or binarised (ITQ, then sign).

A re-ranker's memory is its database side: every gallery image keeps ``budget`` descriptors.  The codec is a
learned mapping with fit/transform like ψ, fitted on training-image descriptors:

- ``binary=False``: L2-normalise, PCA to ``dim`` (FAISS ``PCAMatrix``), L2-normalise, store float16 —
  ``2·dim`` bytes per descriptor;
- ``binary=True``: L2-normalise, PCA to ``dim`` and an ITQ rotation (FAISS ``ITQTransform``: the rotation that
  makes the signs lose least), then the sign — ``dim / 8`` bytes per descriptor (128 bits = 16 B; 50 database
  descriptors = 800 B per image, AMES's budget).

:meth:`DescriptorCodec.bytes_per_image` is the exact account of what the database side stores per image: the
descriptors, plus their metadata (x, y quantised to one byte each, the detector weight as float16) and one byte
for the count.  Saved with FAISS's own binary format (no pickle) and a manifest naming the source space.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ..core.manifest import SpaceMismatchError, atomic_write_bytes, read_manifest, stable_hash, write_manifest
from ..core.space import Space, l2_normalize
from .local import LocalDescriptors

__all__ = ["DescriptorCodec", "EncodedDescriptors"]

#: metadata bytes stored per descriptor beside it (x, y: uint8 each; detector weight: float16)
METADATA_BYTES = 4


def _serialise(transform: faiss.VectorTransform) -> np.ndarray:
    writer = faiss.VectorIOWriter()
    faiss.write_VectorTransform(transform, writer)
    return faiss.vector_to_array(writer.data)


def _deserialise(data: np.ndarray) -> faiss.VectorTransform:
    reader = faiss.VectorIOReader()
    faiss.copy_array_to_vector(np.ascontiguousarray(data, dtype=np.uint8), reader.data)
    return faiss.read_VectorTransform(reader)


class EncodedDescriptors:
    """A database side as stored: ``codes`` (N, k, dim/8) uint8 packed signs or (N, k, dim) float16, plus metadata."""

    def __init__(self, codes: np.ndarray, xy: np.ndarray, weights: np.ndarray, valid: np.ndarray, ids: np.ndarray,
                 codec: "DescriptorCodec", labels: np.ndarray | None = None) -> None:
        self.codes, self.ids, self.codec, self.labels = codes, np.asarray(ids).astype(str), codec, labels
        self.xy = np.round(np.clip(xy, 0.0, 1.0) * 255).astype(np.uint8)
        self.weights = weights.astype(np.float16)
        self.valid = valid.astype(bool)

    def __len__(self) -> int:
        return len(self.ids)

    def nbytes_per_image(self) -> float:
        """Bytes actually held per image (arrays' sizes over the image count): the codec's account, measured."""
        total = self.codes.nbytes + self.xy.nbytes + self.weights.nbytes + len(self)  # + one count byte per image
        return total / max(1, len(self))

    def decode(self) -> np.ndarray:
        """(N, k, dim) float32 descriptors as the re-ranker sees them: unit-norm floats, or ±1/√dim from the bits."""
        return self.codec.decode(self.codes)


class DescriptorCodec:
    """PCA (and ITQ + sign with ``binary``) of L2-normalised local descriptors; fit on training descriptors."""

    def __init__(self, dim: int = 128, binary: bool = False, seed: int = 0) -> None:
        if dim < 8 or (binary and dim % 8):
            raise ValueError(f"dim must be ≥ 8 (and a multiple of 8 when binary), got {dim}")
        self.dim, self.binary, self.seed = int(dim), bool(binary), int(seed)
        self.transform: faiss.VectorTransform | None = None
        self.source_space: Space | None = None

    # ------------------------------------------------------------------ fit / transform
    def fit(self, descriptors: LocalDescriptors, sample: int = 100_000) -> "DescriptorCodec":
        """Fit on up to ``sample`` valid descriptors of the training images."""
        x = l2_normalize(descriptors.training_sample(sample, seed=self.seed), dtype=None)
        if x.shape[1] < self.dim:
            raise ValueError(f"cannot project {x.shape[1]}-d descriptors to {self.dim} dimensions: choose dim ≤ {x.shape[1]}")
        if len(x) < 2 * self.dim:
            raise ValueError(f"{len(x)} training descriptors are too few to fit a {self.dim}-d projection")
        if self.binary:
            self.transform = faiss.ITQTransform(x.shape[1], self.dim, True)
            self.transform.itq.seed = self.seed  # ITQ starts from a random rotation: seeded, the fit is reproducible
        else:
            self.transform = faiss.PCAMatrix(x.shape[1], self.dim)
        self.transform.train(x)
        self.source_space = descriptors.space
        return self

    def _check(self, descriptors: LocalDescriptors) -> None:
        if self.transform is None or self.source_space is None:
            raise RuntimeError("the codec is not fitted: call fit() on training descriptors first")
        if descriptors.space.fingerprint != self.source_space.fingerprint:
            raise SpaceMismatchError(f"descriptors of {descriptors.space.name or descriptors.space.fingerprint} given to a codec "
                                     f"fitted on {self.source_space.name or self.source_space.fingerprint}")

    def project(self, descriptors: LocalDescriptors) -> np.ndarray:
        """(N, k, dim) float32: the projected descriptors before storage (unit-norm; for binary, the rotated values
        whose signs are stored — what a re-ranker trained with a smooth relaxation of the sign sees)."""
        self._check(descriptors)
        n, k, c = descriptors.vectors.shape
        flat = self.transform.apply(np.ascontiguousarray(l2_normalize(descriptors.vectors.reshape(-1, c), dtype=None), dtype=np.float32))
        out = flat.reshape(n, k, self.dim)
        return out if self.binary else l2_normalize(out, dtype=None).astype(np.float32)

    def encode(self, descriptors: LocalDescriptors) -> EncodedDescriptors:
        """The database side as stored: packed sign bits or float16, with the metadata; invalid rows zeroed."""
        projected = self.project(descriptors)
        projected[~descriptors.valid] = 0.0
        codes = np.packbits(projected > 0, axis=-1) if self.binary else projected.astype(np.float16)
        return EncodedDescriptors(codes, descriptors.xy, descriptors.weights, descriptors.valid, descriptors.ids, self, descriptors.labels)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        if self.binary:
            bits = np.unpackbits(codes, axis=-1, count=self.dim).astype(np.float32)
            return (2.0 * bits - 1.0) / np.sqrt(self.dim)
        return codes.astype(np.float32)

    # ------------------------------------------------------------------ accounting and identity
    @property
    def bytes_per_descriptor(self) -> int:
        return self.dim // 8 if self.binary else 2 * self.dim

    def bytes_per_image(self, budget: int, metadata: bool = True) -> int:
        """What the database side stores per image for ``budget`` descriptors (metadata and count byte included
        unless ``metadata=False``)."""
        return budget * (self.bytes_per_descriptor + (METADATA_BYTES if metadata else 0)) + (1 if metadata else 0)

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "binary": self.binary, "seed": self.seed}

    def fingerprint(self) -> str:
        if self.transform is None:
            raise RuntimeError("an unfitted codec has no fingerprint")
        return stable_hash({"config": self.config(), "source": self.source_space.fingerprint,
                            "transform": stable_hash(_serialise(self.transform).tobytes().hex())})

    def save(self, directory: str | os.PathLike) -> Path:
        if self.transform is None or self.source_space is None:
            raise RuntimeError("an unfitted codec cannot be saved")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        data = _serialise(self.transform)

        atomic_write_bytes(directory / "codec.faiss", data.tobytes())
        write_manifest(directory, "descriptor-codec", {"config": self.config(), "source_space": self.source_space.to_dict(),
                                                       "fingerprint": self.fingerprint(),
                                                       "bytes_per_descriptor": self.bytes_per_descriptor})
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "DescriptorCodec":
        directory = Path(directory)
        manifest = read_manifest(directory, kind="descriptor-codec")
        codec = cls(**manifest["config"])
        raw = np.frombuffer((directory / "codec.faiss").read_bytes(), dtype=np.uint8)
        codec.transform = _deserialise(raw)
        codec.source_space = Space.from_dict(manifest["source_space"])
        if codec.fingerprint() != manifest["fingerprint"]:
            raise ValueError(f"{directory}: the codec file does not match its manifest (corrupt or edited)")
        return codec
