"""Gallery indexes: vectors of one embedding space, their string ids and per-item uncertainty.

:class:`GalleryIndexBase` is the backend-independent interface (FAISS, exact, Milvus).  It owns the logic
every backend shares: checking that queries and gallery additions live in the index's embedding space, and
deciding which gallery items are rejected for their uncertainty (:func:`asymret.core.uncertainty.rejection_mask`).
The backends: :class:`~asymret.index.faiss_index.FaissGalleryIndex` (alias ``GalleryIndex``, in-process FAISS),
:class:`~asymret.index.exact.ExactIndex` and :class:`~asymret.index.milvus.MilvusGalleryIndex`.

Scores are similarities for ``metric="ip"`` (higher is better) and squared L2 distances for ``metric="l2"``
(lower is better).  Where a query has fewer than ``k`` results the row is padded with id ``''``, position
``-1`` and score ``-inf`` (ip) / ``+inf`` (l2).

What the backends share lives here, once: the space checks, the rejection rule and its cache
(:meth:`GalleryIndexBase.rejected_mask`, :meth:`GalleryIndexBase.kept_bitmap`), the result with ids and padding
(:meth:`GalleryIndexBase._result`) and the folder a saved index is kept in (:meth:`GalleryIndexBase._save_folder`,
:meth:`GalleryIndexBase._open_folder`, :meth:`GalleryIndexBase._check_files`: the files of each version written into
a new ``data-<version>/`` sub-folder with their sizes and hashes in the manifest, the manifest replaced last — a
save that is interrupted at any point leaves the previous index whole and loadable).  Backends are made and loaded by name through
:mod:`asymret.index.backends` (``faiss:IVF256,PQ16``, ``exact``, ``milvus:HNSW``).
"""
from __future__ import annotations

import hashlib
import io
import os
import secrets
import shutil
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Protocol

import numpy as np

from ..core.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    SpaceMismatchError,
    atomic_write_bytes,
    hash_file,
    read_manifest,
    write_manifest,
)
from ..core.space import Embeddings, Space
from ..core.uncertainty import rejection_mask

__all__ = [
    "GalleryIndexBase",
    "SearchResult",
    "QuerySpaceError",
    "SpaceMismatchError",
    "describe_space",
]

#: tolerance on ``| ||v|| - 1 |`` for vectors of an L2-normalised space (same as :class:`Embeddings`).
UNIT_NORM_ATOL = 1e-3
#: the sub-folder of a saved index holding one version's files (named in the manifest's ``data``); an unfinished
#: one is ``.data-<version>.partial`` until all its files are written
DATA_PREFIX = "data-"
PARTIAL_SUFFIX = ".partial"


class QuerySpaceError(SpaceMismatchError, TypeError):
    """A bare array was given as queries without saying which embedding space it lives in.

    It is both a :class:`SpaceMismatchError` and a :class:`TypeError`, so either ``except`` catches it.
    """


def describe_space(space: Space) -> str:
    """One-line description of a space for error messages: name, fingerprint, dim, normalisation."""
    return (
        f"{space.name or '<unnamed>'!s} [fingerprint {space.fingerprint}, dim {space.dim}, "
        f"{'L2-normalised' if space.normalized else 'not normalised'}]"
    )


@dataclass(eq=False)
class SearchResult:
    """Top-k results for ``nq`` queries: ``ids`` (nq, k) str, ``scores`` (nq, k) float32, ``positions`` (nq, k) int64.

    Missing results (fewer than ``k`` kept gallery items) have id ``''``, position ``-1``.  ``query_ids`` are the
    query ids when the queries were given as :class:`Embeddings`; ``n_rejected`` is the number of gallery items
    excluded by uncertainty rejection.
    """

    ids: np.ndarray
    scores: np.ndarray
    positions: np.ndarray
    query_ids: np.ndarray | None = None
    n_rejected: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def k(self) -> int:
        return int(self.ids.shape[1])

    @property
    def found(self) -> np.ndarray:
        """Bool (nq, k): True where a result exists."""
        return self.positions >= 0


class SearchWrapper(Protocol):
    """What ``search(..., rerank=…)`` takes: something that wraps an index in another search, e.g. an
    :class:`asymret.rerank.Reranking` (whose ``over`` gives an :class:`asymret.rerank.RerankedIndex`).  The index
    names no re-ranking type: the re-ranking package sits after it in the data flow."""

    def over(self, index: "GalleryIndexBase", shortlist: int) -> "SearchesLikeAnIndex": ...


class SearchesLikeAnIndex(Protocol):
    """What a :class:`SearchWrapper` gives: a search with the index's arguments (but the wrapping ones)."""

    def search(self, queries: Embeddings | np.ndarray, k: int, reject_fraction: float | None, reject_threshold: float | None,
               space: Space | None, exclude: np.ndarray | None) -> "SearchResult": ...


class GalleryIndexBase(ABC):
    """Interface of a gallery index living in one embedding :class:`Space`.

    Items are numbered by *position* (0..len-1, in insertion order); ``ids[position]`` is the item's string id and
    ``uncertainty[position]`` its uncertainty (higher = less reliable).
    """

    #: the ``kind`` written to the manifest of a saved index
    manifest_kind: ClassVar[str] = "gallery-index"
    #: the backend's name in the registry (:mod:`asymret.index.backends`) and in a saved index's manifest
    backend: ClassVar[str] = ""
    #: how error messages name the backend ("not a FAISS one")
    backend_title: ClassVar[str] = ""

    # ------------------------------------------------------------------ the state every backend keeps
    # Each backend holds its space in ``_space`` and the per-position ids and uncertainty in ``_ids`` and
    # ``_uncertainty`` (numpy arrays, also for a remote backend: rejection is decided from them).
    _space: Space
    _ids: np.ndarray
    _uncertainty: np.ndarray

    @property
    def space(self) -> Space:
        """The embedding space of the gallery (queries must come from the same space)."""
        return self._space

    @property
    def ids(self) -> np.ndarray:
        """String ids (N,) by position."""
        return self._ids

    @property
    def uncertainty(self) -> np.ndarray:
        """Float32 uncertainty (N,) by position."""
        return self._uncertainty

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def metric(self) -> str:
        """``"ip"`` (scores are similarities, higher is better) or ``"l2"`` (squared distances)."""
        return "ip"

    @property
    def spec(self) -> str:
        """The spec string that makes an empty index like this one (:func:`asymret.index.backends.create_index`)."""
        return self.backend

    @property
    def summary(self) -> str:
        """A few words on the backend for a person (e.g. ``FAISS IVF256,PQ16``)."""
        return self.spec

    # ------------------------------------------------------------------ abstract interface
    @abstractmethod
    def add(self, embeddings: Embeddings, uncertainty: np.ndarray | None = None) -> None:
        """Append gallery items (refusing another space or duplicate ids)."""

    def search(
        self,
        queries: Embeddings | np.ndarray,
        k: int = 10,
        reject_fraction: float | None = None,
        reject_threshold: float | None = None,
        space: Space | None = None,
        exclude: np.ndarray | None = None,
        rerank: SearchWrapper | None = None,
        shortlist: int = 100,
    ) -> SearchResult:
        """Top-``k`` gallery items for each query, among the items not rejected for their uncertainty.

        ``exclude`` (bool, one per position) removes further items from every query's results, e.g. the kept
        sets of a risk–coverage curve.  This is the ranker every evaluation goes through
        (:func:`asymret.eval.metrics.evaluate`).

        ``rerank`` (an :class:`asymret.rerank.Reranking`: a re-ranker with the queries' and the gallery items'
        local descriptors) re-ranks each query's global top-``shortlist`` (rejection applied first) and returns
        its first ``k``, scored by the fused score: the same search as
        ``asymret.rerank.RerankedIndex(index, rerank, shortlist).search(...)``, which it hands the search to.
        """
        if rerank is not None:
            return rerank.over(self, shortlist).search(queries, k, reject_fraction, reject_threshold, space, exclude)
        return self._search(queries, k, reject_fraction, reject_threshold, space, exclude)

    @abstractmethod
    def _search(self, queries: Embeddings | np.ndarray, k: int, reject_fraction: float | None, reject_threshold: float | None,
                space: Space | None, exclude: np.ndarray | None) -> SearchResult:
        """The backend's global top-``k`` (see :meth:`search`)."""

    @abstractmethod
    def save(self, directory: str | os.PathLike) -> None:
        """Store the index in ``directory`` (manifest written last)."""

    @classmethod
    @abstractmethod
    def load(cls, directory: str | os.PathLike, expect_space: Space | None = None) -> "GalleryIndexBase":
        """Load an index saved by :meth:`save`; refuse it if ``expect_space`` is given and differs."""

    # ------------------------------------------------------------------ shared logic
    def rejected_mask(
        self, reject_fraction: float | None = None, reject_threshold: float | None = None, exclude: np.ndarray | None = None
    ) -> np.ndarray:
        """Bool mask (N,) of the gallery items rejected for their uncertainty (True = rejected).

        ``reject_fraction=f`` rejects the ``floor(f * N)`` items with the highest uncertainty (ties broken by
        position: the earlier item is rejected first); ``reject_threshold=t`` rejects every item with
        uncertainty ``> t``.  Given both, an item is rejected if either rule rejects it.  ``exclude`` (bool per
        position) is rejected too.
        """
        rejected = self._memoised(("mask", reject_fraction, reject_threshold),
                                  lambda: rejection_mask(self.uncertainty, reject_fraction, reject_threshold))
        if exclude is not None:
            exclude = np.asarray(exclude)
            if exclude.dtype != bool or exclude.shape != (len(self),):
                raise ValueError(f"exclude must be a bool array with one entry per gallery item ({len(self)}), got {exclude.dtype} {exclude.shape}")
            rejected = rejected | exclude
        return rejected

    def kept_bitmap(self, reject_fraction: float | None = None, reject_threshold: float | None = None,
                    exclude: np.ndarray | None = None) -> np.ndarray:
        """Little-endian bitmap (uint8, one bit per position) of the items :meth:`rejected_mask` keeps."""
        if exclude is not None:  # a caller's mask: not cached
            return np.packbits(~self.rejected_mask(reject_fraction, reject_threshold, exclude), bitorder="little")
        return self._memoised(("bitmap", reject_fraction, reject_threshold),
                              lambda: np.packbits(~self.rejected_mask(reject_fraction, reject_threshold), bitorder="little"),
                              read_only=False)  # FAISS reads it through a raw pointer

    def _memoised(self, key: tuple[Any, ...], compute: Callable[[], np.ndarray], read_only: bool = True) -> np.ndarray:
        """The one rejection cache: what a rule gives is kept for the next search with the same rule (a service asks
        once per request; the fraction rule sorts every item's uncertainty).  Adding items changes the length and
        so the key."""
        key = (*key, len(self))
        memo = self.__dict__.setdefault("_rejection_memo", {})
        value = memo.get(key)
        if value is None:
            value = compute()
            if read_only:
                value.flags.writeable = False  # shared by every caller of the same rule
            if len(memo) >= 8:
                memo.clear()
            memo[key] = value
        return value

    @property
    def _missing_score(self) -> float:
        return -np.inf if self.metric == "ip" else np.inf

    def _result(self, scores: np.ndarray, positions: np.ndarray, query_ids: np.ndarray | None = None, n_rejected: int = 0,
                k: int | None = None) -> SearchResult:
        """The one result builder: positions (-1 = none) → ids (``''`` where none), the missing score where none,
        rows padded to ``k`` columns."""
        positions = np.asarray(positions, dtype=np.int64)
        scores = np.asarray(scores, dtype=np.float32)
        if k is not None and positions.shape[1] < k:
            pad = ((0, 0), (0, k - positions.shape[1]))
            positions = np.pad(positions, pad, constant_values=-1)
            scores = np.pad(scores, pad, constant_values=self._missing_score)
        missing = positions < 0
        if missing.any():
            scores = scores.copy()
            scores[missing] = self._missing_score
        if len(self._ids):
            ids = self._ids[np.where(missing, 0, positions)]
            ids[missing] = ""
        else:
            ids = np.full(positions.shape, "", dtype="<U1")
        return SearchResult(ids=ids, scores=scores, positions=positions, query_ids=query_ids, n_rejected=n_rejected)

    # ------------------------------------------------------------------ the saved folder (every backend)
    def _manifest_fields(self) -> dict[str, Any]:
        """What every saved index's manifest says about it (a backend adds its own fields)."""
        return {
            "backend": self.backend,
            "space": self._space.to_dict(),
            "query_space_fingerprint": self._space.fingerprint,
            "provenance": [list(item) for item in self._space.provenance],
            "metric": self.metric,
            "count": len(self),
            "dim": int(self._space.dim),
            "normalized": bool(self._space.normalized),
        }

    def _save_folder(self, directory: str | os.PathLike, fields: Mapping[str, Any] | None = None,
                     arrays: Mapping[str, np.ndarray] | None = None, blobs: Mapping[str, Any] | None = None,
                     prepare: Callable[[], None] | None = None) -> Path:
        """The one way an index is kept, never destroying the version already there: ``blobs`` (raw bytes) and
        ``arrays`` (``.npy``) written into a new ``data-<version>/`` sub-folder (built as ``.data-<version>.partial``
        and renamed when complete), each with its size and sha256 in the manifest; then the manifest — the common
        fields, ``fields``, the files and their folder — replaced atomically: the one moment the new version takes
        over.  A crash before it leaves the previous manifest naming the previous files, untouched; after it, the new
        version.  Only then are the previous version's files removed.  ``prepare`` runs first (e.g. a remote
        backend's flush).  One writer per folder at a time."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        previous = _previous_files(directory)
        if prepare is not None:
            prepare()
        files: dict[str, dict[str, Any]] = {}
        version = None
        if blobs or arrays:
            version = f"{DATA_PREFIX}{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"
            staging = directory / f".{version}{PARTIAL_SUFFIX}"
            staging.mkdir()
            try:
                for name, data in (blobs or {}).items():
                    files[name] = _write_file(staging / name, memoryview(data))
                for name, array in (arrays or {}).items():
                    buffer = io.BytesIO()
                    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
                    files[name] = _write_file(staging / name, buffer.getbuffer())
                os.rename(staging, directory / version)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        manifest = {**self._manifest_fields(), **(fields or {})}
        if files:
            manifest["files"] = files
            manifest["data"] = version
        write_manifest(directory, kind=self.manifest_kind, fields=manifest)  # the commit
        _remove_superseded(directory, previous, keep=version)
        return directory

    @staticmethod
    def _files_folder(directory: Path, manifest: Mapping[str, Any]) -> Path:
        """Where a saved index's files are: its version's ``data-…`` sub-folder, or the folder itself (older saves)."""
        data = manifest.get("data")
        if data is None:
            return directory
        if not isinstance(data, str) or not data.startswith(DATA_PREFIX) or "/" in data or "\\" in data or data in (".", ".."):
            raise ValueError(f"{directory / MANIFEST_NAME} is malformed: data folder {data!r}")
        return directory / data

    @classmethod
    def _open_folder(cls, directory: str | os.PathLike, expect_space: Space | None = None) -> tuple[Path, dict[str, Any], Space]:
        """A saved index's folder, manifest and space: refused unless it is this backend's, of this format, and (with
        ``expect_space``) in that space.  A manifest without ``backend`` is a FAISS one (the first format)."""
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"gallery index directory {directory} does not exist")
        manifest = read_manifest(directory, kind=cls.manifest_kind)
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{directory}: unsupported format_version {manifest.get('format_version')} (expected {FORMAT_VERSION})")
        backend = manifest.get("backend", "faiss")
        if backend != cls.backend:
            raise ValueError(f"{directory} holds a {backend!r} gallery index, not a{'n' if cls.backend_title[:1] in 'aeiou' else ''} "
                             f"{cls.backend_title} one")
        try:
            space = Space.from_dict(manifest["space"])
            count, dim = int(manifest["count"]), int(manifest["dim"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{directory / MANIFEST_NAME} is incomplete or malformed: {error!r}") from None
        if expect_space is not None:
            try:
                expect_space.check_compatible(space, what="stored gallery index")
            except SpaceMismatchError as error:
                raise SpaceMismatchError(
                    f"{error} -- stored index {directory} is in space {describe_space(space)}; "
                    f"expected {describe_space(expect_space)}"
                ) from None
        if dim != space.dim:
            raise ValueError(f"{directory}: manifest dim {dim} != space dim {space.dim}")
        if count < 0:
            raise ValueError(f"{directory / MANIFEST_NAME} is malformed: count {count}")
        return directory, manifest, space

    @classmethod
    def _check_files(cls, directory: Path, manifest: Mapping[str, Any], names: tuple[str, ...], verify_hashes: bool = True) -> Path:
        """Each of ``names`` is there, of the size and (``verify_hashes``) sha256 the manifest lists; returns the folder
        they are in (:meth:`_files_folder`)."""
        files = manifest.get("files", {})
        folder = cls._files_folder(directory, manifest)
        for name in names:
            path = folder / name
            if not path.is_file():
                raise FileNotFoundError(f"gallery index {directory} is missing {name} (listed in its manifest)")
            info = files.get(name, {})
            size = path.stat().st_size
            if "bytes" in info and size != int(info["bytes"]):
                raise ValueError(f"{path} is corrupted: {size} bytes, manifest says {info['bytes']}")
            if verify_hashes and "sha256" in info:
                digest = hash_file(path, length=len(info["sha256"]))
                if digest != info["sha256"]:
                    raise ValueError(f"{path} is corrupted: sha256 {digest} != {info['sha256']} in the manifest")
        return folder

    @staticmethod
    def _validate_k(k: int) -> int:
        if isinstance(k, bool) or int(k) != k or int(k) < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        return int(k)

    def _check_same_space(self, other: Space, what: str) -> None:
        """:meth:`Space.check_compatible` with a message that names both spaces."""
        try:
            self.space.check_compatible(other, what=what)
        except SpaceMismatchError as error:
            raise SpaceMismatchError(
                f"{error} -- {what} space: {describe_space(other)}; gallery index space: {describe_space(self.space)}"
            ) from None

    def _validate_queries(self, queries: Embeddings | np.ndarray, space: Space | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Float32 C-contiguous query vectors (nq, d) checked against the index space, and the query ids (or None)."""
        if isinstance(queries, Embeddings):
            self._check_same_space(queries.space, "queries")
            if space is not None and space != queries.space:
                self._check_same_space(space, "queries (space= argument)")
            query_space, vectors, query_ids = queries.space, queries.vectors, queries.ids
        elif isinstance(queries, np.ndarray) or hasattr(queries, "__array__"):
            if space is None:
                raise QuerySpaceError(
                    "queries given as a bare array do not say which embedding space they live in; wrap them in "
                    "asymret.core.space.Embeddings(vectors, ids, space) or pass search(..., space=<Space of the queries>). "
                    f"The gallery index space is {describe_space(self.space)}"
                )
            if not isinstance(space, Space):
                raise TypeError(f"space= must be an asymret.core.space.Space, got {type(space).__name__}")
            self._check_same_space(space, "queries")
            query_space, vectors, query_ids = space, np.asarray(queries), None
            if vectors.ndim == 1:
                vectors = vectors[None, :]
        else:
            raise TypeError(
                f"queries must be asymret.core.space.Embeddings or a numpy array (with space=), got {type(queries).__name__}"
            )
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.space.dim:
            raise SpaceMismatchError(
                f"query vectors have shape {vectors.shape}, but the gallery index space {describe_space(self.space)} "
                f"has dimension {self.space.dim} (query space: {describe_space(query_space)})"
            )
        if len(vectors):
            if not np.isfinite(vectors).all():
                raise ValueError(f"{int((~np.isfinite(vectors)).any(axis=1).sum())} query vectors contain NaN or inf")
            if self.space.normalized:
                norms = np.linalg.norm(vectors, axis=1)
                off = np.abs(norms - 1.0) > UNIT_NORM_ATOL
                if off.any():
                    raise SpaceMismatchError(
                        f"{int(off.sum())} of {len(vectors)} query vectors are not unit length (norms from "
                        f"{norms.min():.4g} to {norms.max():.4g}), but the gallery index space "
                        f"{describe_space(self.space)} is L2-normalised (query space: {describe_space(query_space)}); "
                        "normalise the queries (asymret.core.space.l2_normalize) with the encoder that produced this space"
                    )
        return vectors, query_ids

    def _validate_additions(self, embeddings: Embeddings, uncertainty: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Checked (vectors float32 (n, d), ids str (n,), uncertainty float32 (n,)) for :meth:`add`."""
        if not isinstance(embeddings, Embeddings):
            raise TypeError(
                f"add() takes asymret.core.space.Embeddings (vectors + ids + space), got {type(embeddings).__name__}"
            )
        self._check_same_space(embeddings.space, "gallery embeddings to add")
        vectors = np.ascontiguousarray(embeddings.vectors, dtype=np.float32)
        ids = np.asarray(embeddings.ids).astype(str)
        n = len(ids)
        if vectors.shape != (n, self.space.dim):
            raise SpaceMismatchError(f"vectors {vectors.shape} do not match {n} ids of dimension {self.space.dim}")
        if n and not np.isfinite(vectors).all():
            raise ValueError(f"{int((~np.isfinite(vectors)).any(axis=1).sum())} gallery vectors contain NaN or inf")
        if n and self.space.normalized:
            norms = np.linalg.norm(vectors, axis=1)
            off = np.abs(norms - 1.0) > UNIT_NORM_ATOL
            if off.any():
                raise SpaceMismatchError(
                    f"{int(off.sum())} of {n} gallery vectors are not unit length, but the index space "
                    f"{describe_space(self.space)} is L2-normalised"
                )
        if uncertainty is None:
            unc = np.zeros(n, dtype=np.float32)
        else:
            unc = np.asarray(uncertainty, dtype=np.float32).reshape(-1)
            if unc.shape != (n,):
                raise ValueError(f"uncertainty has {unc.size} values for {n} gallery items")
            if np.isnan(unc).any():
                raise ValueError(f"uncertainty contains {int(np.isnan(unc).sum())} NaN values")
        unique, counts = np.unique(ids, return_counts=True)
        if len(unique) != n:
            dup = unique[counts > 1]
            raise ValueError(f"{len(dup)} ids occur more than once in the added embeddings, e.g. {dup[:5].tolist()}")
        if len(self) and n:
            clash = np.isin(ids, self.ids)
            if clash.any():
                raise ValueError(
                    f"{int(clash.sum())} ids are already in the gallery index, e.g. {ids[clash][:5].tolist()}; "
                    "duplicate ids are refused (remove/update is not supported)"
                )
        return vectors, ids, unc


def _previous_files(directory: Path) -> tuple[str | None, list[str]]:
    """The version a folder holds now: its data sub-folder and, for an older save, its files at the top; nothing when
    there is no readable manifest."""
    try:
        manifest = read_manifest(directory, kind=GalleryIndexBase.manifest_kind)  # only an index's own files are removed
    except (FileNotFoundError, ValueError, OSError):
        return None, []
    data = manifest.get("data")
    names = [] if data else [name for name in manifest.get("files", {}) if "/" not in name and name != MANIFEST_NAME]
    return (data if isinstance(data, str) and data.startswith(DATA_PREFIX) else None), names


def _remove_superseded(directory: Path, previous: tuple[str | None, list[str]], keep: str | None) -> None:
    """After the commit: the previous version's files, and sub-folders of saves that never finished (best effort: a
    file left behind costs space, never correctness)."""
    data, names = previous
    if data and data != keep:
        shutil.rmtree(directory / data, ignore_errors=True)
    for name in names:
        (directory / name).unlink(missing_ok=True)
    for leftover in directory.glob(f".{DATA_PREFIX}*{PARTIAL_SUFFIX}"):
        shutil.rmtree(leftover, ignore_errors=True)


def _write_file(path: Path, data: memoryview) -> dict[str, Any]:
    """Write ``data`` atomically; its size and the sha256 :func:`asymret.core.manifest.hash_file` gives the file."""
    atomic_write_bytes(path, data)
    return {"bytes": int(data.nbytes), "sha256": hashlib.sha256(data).hexdigest()[:16]}
