"""FAISS implementation of the gallery index.

Items are stored at sequential FAISS positions (0..N-1); string ids and uncertainties live in numpy arrays
indexed by position.  Uncertainty rejection builds a bitmap of the kept positions and passes it to FAISS as an
``IDSelectorBitmap`` in the search parameters (``SearchParametersIVF``/``HNSW``/``PQ``/``PreTransform``/
``IndexRefineSearchParameters`` as the index type needs), so that FAISS returns ``k`` results among the kept
items.  For index types that do not support selectors (e.g. ``PQ8``, fast-scan, NSG) the search over-fetches
``k + n_rejected`` results and filters, which returns the same top-k.

Persistence, the result builder and the rejection cache are the base class's
(:class:`~asymret.index.base.GalleryIndexBase`); recall tuning is :mod:`asymret.index.tuning`, the workaround for
pytorch-metric-learning's patch of FAISS's ``search`` is :mod:`asymret.index.faiss_patch`.
"""
from __future__ import annotations

import os
from typing import Any

import faiss
import numpy as np

from ..core.manifest import SpaceMismatchError
from ..core.space import Embeddings, Space
from .base import GalleryIndexBase, SearchResult, describe_space
from .faiss_patch import numpy_search

__all__ = ["FaissGalleryIndex"]

INDEX_FILE = "index.faiss"
IDS_FILE = "ids.npy"
UNCERTAINTY_FILE = "uncertainty.npy"
VECTORS_FILE = "vectors.npy"  # the float vectors of an index with exact re-ranking (memory-mapped when loaded)

_METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
_METRIC_ALIASES = {"ip": "ip", "inner_product": "ip", "cosine": "ip", "l2": "l2", "euclidean": "l2"}


def _metric_name(metric: str | int) -> str:
    if isinstance(metric, (int, np.integer)):
        for name, value in _METRICS.items():
            if value == metric:
                return name
        raise ValueError(f"unsupported FAISS metric type {metric}; use inner product or L2")
    try:
        return _METRIC_ALIASES[str(metric).lower()]
    except KeyError:
        raise ValueError(f"metric must be 'ip' or 'l2', got {metric!r}") from None


class FaissGalleryIndex(GalleryIndexBase):
    """Gallery index on a FAISS index built from a factory string (default exact inner product, ``"Flat"``).

    Trained factories (``"IVF1024,Flat"``, ``"IVF256,PQ16"``, ``"PQ16"``...) are trained on the first batch given
    to :meth:`add` unless :meth:`train` was called.  ``nprobe`` (IVF) and ``ef_search`` (HNSW) set the search-time
    parameters of the underlying index.
    """

    backend = "faiss"
    backend_title = "FAISS"

    def __init__(
        self,
        space: Space,
        factory: str = "Flat",
        metric: str = "ip",
        nprobe: int | None = None,
        ef_search: int | None = None,
        exact_rerank: int = 0,
    ) -> None:
        if not isinstance(space, Space):
            raise TypeError(f"space must be an asymret.core.space.Space, got {type(space).__name__}")
        self._metric = _metric_name(metric)
        try:
            index = faiss.index_factory(int(space.dim), factory, _METRICS[self._metric])
        except RuntimeError as error:
            raise ValueError(f"invalid FAISS factory string {factory!r} for dim {space.dim}: {_faiss_message(error)}") from None
        self._init_state(space, index, factory, np.zeros(0, dtype=str), np.zeros(0, dtype=np.float32))
        self.set_search_parameters(nprobe=nprobe, ef_search=ef_search, exact_rerank=exact_rerank)

    def _init_state(self, space: Space, index: faiss.Index, factory: str, ids: np.ndarray, uncertainty: np.ndarray) -> None:
        self._space = space
        self._index = index
        self._factory = factory
        self._ids = ids
        self._uncertainty = uncertainty
        self._selectors_supported: bool | None = None  # None = not tried yet
        self._is_idmap = isinstance(faiss.downcast_index(index), (faiss.IndexIDMap, faiss.IndexIDMap2))
        # exact re-ranking: the float vectors, kept beside the compressed index (memory-mapped from vectors.npy once
        # saved: on disk, not in RAM) and read only for each query's shortlist of exact_rerank × k candidates
        self._exact_rerank = 0
        self._vectors: np.ndarray | None = None

    @classmethod
    def from_faiss(
        cls,
        index: faiss.Index,
        space: Space,
        ids: np.ndarray | None = None,
        uncertainty: np.ndarray | None = None,
        factory: str = "custom",
    ) -> "FaissGalleryIndex":
        """Wrap an existing, already filled FAISS ``index`` (the same object, not a copy).

        Its vectors must be at sequential positions 0..ntotal-1 in ``space``; ``ids`` default to the positions
        as strings, ``uncertainty`` to zeros.  The metric is taken from the index.
        """
        if not isinstance(space, Space):
            raise TypeError(f"space must be an asymret.core.space.Space, got {type(space).__name__}")
        if index.d != space.dim:
            raise SpaceMismatchError(f"FAISS index has dimension {index.d}, space {describe_space(space)} has {space.dim}")
        n = int(index.ntotal)
        ids = np.arange(n).astype(str) if ids is None else np.asarray(ids).astype(str)
        if ids.shape != (n,):
            raise ValueError(f"{ids.size} ids for a FAISS index holding {n} vectors")
        if len(np.unique(ids)) != n:
            raise ValueError("ids contain duplicates")
        unc = np.zeros(n, dtype=np.float32) if uncertainty is None else np.asarray(uncertainty, dtype=np.float32).reshape(-1)
        if unc.shape != (n,):
            raise ValueError(f"{unc.size} uncertainty values for a FAISS index holding {n} vectors")
        self = cls.__new__(cls)
        self._metric = _metric_name(index.metric_type)
        self._init_state(space, index, factory, ids, unc)
        return self

    # ------------------------------------------------------------------ properties
    @property
    def factory(self) -> str:
        return self._factory

    @property
    def metric(self) -> str:
        return self._metric

    @property
    def spec(self) -> str:
        return f"faiss:{self._factory}"

    @property
    def summary(self) -> str:
        return f"FAISS {self._factory}"

    @property
    def faiss_index(self) -> faiss.Index:
        """The underlying FAISS index (positions 0..N-1)."""
        return self._index

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    def __repr__(self) -> str:
        return (
            f"FaissGalleryIndex({len(self)} items, factory={self._factory!r}, metric={self._metric!r}, "
            f"space={describe_space(self._space)})"
        )

    def set_search_parameters(self, nprobe: int | None = None, ef_search: int | None = None, exact_rerank: int | None = None) -> None:
        """Set IVF ``nprobe`` / HNSW ``efSearch`` on the underlying index and the exact re-ranking depth (each
        ignored when ``None``).  ``exact_rerank=R`` (R ≥ 1) rescores each query's top ``R·k`` from the compressed
        index with the float vectors (kept on disk once saved); it must be chosen before items are added."""
        if exact_rerank is not None:
            exact_rerank = int(exact_rerank)
            if exact_rerank < 0:
                raise ValueError(f"exact_rerank must be ≥ 0, got {exact_rerank}")
            if exact_rerank and self._vectors is None and len(self):
                raise ValueError("exact_rerank needs the float vectors: choose it before adding items")
            if exact_rerank and self._vectors is None:
                self._vectors = np.zeros((0, self._space.dim), np.float32)
            self._exact_rerank = exact_rerank
        space = faiss.ParameterSpace()
        for name, value in (("nprobe", nprobe), ("efSearch", ef_search)):
            if value is None:
                continue
            try:
                space.set_index_parameter(self._index, name, int(value))
            except RuntimeError as error:
                raise ValueError(
                    f"cannot set {name}={value} on a {self._factory!r} index: {_faiss_message(error)}"
                ) from None

    # ------------------------------------------------------------------ building
    def train(self, embeddings: Embeddings) -> None:
        """Train the FAISS index (IVF centroids, PQ codebooks) on ``embeddings`` of the index space."""
        if not isinstance(embeddings, Embeddings):
            raise TypeError(f"train() takes asymret.core.space.Embeddings, got {type(embeddings).__name__}")
        self._check_same_space(embeddings.space, "training embeddings")
        self._train(np.ascontiguousarray(embeddings.vectors, dtype=np.float32))

    def _train(self, vectors: np.ndarray) -> None:
        n = len(vectors)
        ivf = _extract_ivf(self._index)
        if ivf is not None and n < ivf.nlist:
            raise ValueError(
                f"factory {self._factory!r} needs training with at least nlist={ivf.nlist} vectors "
                f"(ideally >= {39 * ivf.nlist}), got {n}; add a larger first batch or call train() on a sample"
            )
        try:
            self._index.train(vectors)
        except RuntimeError as error:
            raise ValueError(
                f"training the {self._factory!r} index on {n} vectors failed (too few vectors?): {_faiss_message(error)}"
            ) from None

    def add(self, embeddings: Embeddings, uncertainty: np.ndarray | None = None) -> None:
        vectors, ids, unc = self._validate_additions(embeddings, uncertainty)
        if not len(ids):
            return
        if not self._index.is_trained:
            self._train(vectors)
        start = int(self._index.ntotal)
        if start != len(self._ids):
            raise RuntimeError(f"FAISS index holds {start} vectors but {len(self._ids)} ids are known")
        if self._is_idmap:
            self._index.add_with_ids(vectors, np.arange(start, start + len(ids), dtype=np.int64))
        else:
            self._index.add(vectors)
        self._ids = np.concatenate([self._ids, ids]) if len(self._ids) else ids.copy()
        self._uncertainty = np.concatenate([self._uncertainty, unc]) if len(self._uncertainty) else unc.copy()
        if self._vectors is not None:
            self._vectors = np.concatenate([np.asarray(self._vectors), vectors])

    # ------------------------------------------------------------------ search
    def _search(
        self,
        queries: Embeddings | np.ndarray,
        k: int = 10,
        reject_fraction: float | None = None,
        reject_threshold: float | None = None,
        space: Space | None = None,
        exclude: np.ndarray | None = None,
    ) -> SearchResult:
        vectors, query_ids = self._validate_queries(queries, space)
        k = self._validate_k(k)
        if self._exact_rerank and len(self):
            depth = min(len(self), k * self._exact_rerank)
            shortlist = self._search_compressed(vectors, depth, reject_fraction, reject_threshold, exclude)
            scores, positions = self._rescore(vectors, shortlist.positions, k)
            return self._result(scores, positions, query_ids, shortlist.n_rejected, k=k)
        result = self._search_compressed(vectors, k, reject_fraction, reject_threshold, exclude)
        result.query_ids = query_ids
        return result

    def _rescore(self, queries: np.ndarray, positions: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of each query's shortlist (rejected items are already out of it), best ``k`` first."""
        found = positions >= 0
        if not found.any():
            return (np.full((len(queries), k), self._missing_score, np.float32), np.full((len(queries), k), -1, np.int64))
        rows = np.sort(np.unique(positions[found]))  # sorted reads: sequential-ish on a memory-mapped file
        table = np.asarray(self._vectors[rows], dtype=np.float32)
        gathered = table[np.searchsorted(rows, np.where(found, positions, rows[0]))]
        exact = np.einsum("qd,qsd->qs", queries, gathered) if self._metric == "ip" else \
            ((gathered - queries[:, None, :]) ** 2).sum(-1)
        exact = np.where(found, exact, -np.inf if self._metric == "ip" else np.inf).astype(np.float32)
        order = np.argsort(-exact if self._metric == "ip" else exact, axis=1, kind="stable")[:, :k]
        scores, positions = np.take_along_axis(exact, order, axis=1), np.take_along_axis(positions, order, axis=1)
        return scores, np.where(np.isfinite(scores), positions, -1)  # the result builder pads to k

    def _search_compressed(self, vectors: np.ndarray, k: int, reject_fraction: float | None, reject_threshold: float | None,
                           exclude: np.ndarray | None) -> SearchResult:
        query_ids = None
        nq, n = len(vectors), len(self)
        rejecting = reject_fraction is not None or reject_threshold is not None or exclude is not None
        rejected = self.rejected_mask(reject_fraction, reject_threshold, exclude) if rejecting else None
        n_rejected = int(rejected.sum()) if rejected is not None else 0

        if nq == 0 or n == 0 or n_rejected == n:
            positions = np.full((nq, k), -1, dtype=np.int64)
            scores = np.full((nq, k), self._missing_score, dtype=np.float32)
        elif n_rejected == 0:
            scores, positions = numpy_search(self._index, vectors, k)
        elif self._is_flat():
            # A selector disables FAISS's BLAS path on flat indexes (measured 7× slower at 1M vectors), so
            # over-fetch a little past the rejected share, keep the first k kept items, and redo exactly
            # (k + n_rejected deep) only the rare queries that came back short.
            scores, positions = self._search_flat_rejecting(vectors, k, rejected, n_rejected)
        else:
            scores, positions = None, None
            if self._selectors_supported is not False:
                try:
                    scores, positions = self._search_with_selector(
                        vectors, k, self.kept_bitmap(reject_fraction, reject_threshold, exclude))
                except RuntimeError:
                    self._selectors_supported = False
                else:
                    found = positions >= 0
                    if rejected[positions[found]].any():  # the index silently ignored the selector
                        self._selectors_supported = False
                        scores, positions = None, None
                    else:
                        self._selectors_supported = True
            if positions is None:
                scores, positions = self._search_overfetch(vectors, k, rejected, n_rejected)
        return self._result(scores, positions, query_ids, n_rejected, k=k)

    def _search_with_selector(self, vectors: np.ndarray, k: int, bitmap: np.ndarray):
        selector = faiss.IDSelectorBitmap(len(self), faiss.swig_ptr(bitmap))
        keepalive: list[Any] = [bitmap, selector]
        params = _search_parameters(self._index, selector, keepalive)
        scores, positions = numpy_search(self._index, vectors, k, params=params)
        del keepalive
        return scores, positions

    def _is_flat(self) -> bool:
        return isinstance(faiss.downcast_index(self._index), faiss.IndexFlat)

    def _search_flat_rejecting(self, vectors: np.ndarray, k: int, rejected: np.ndarray, n_rejected: int):
        kept_share = max(1e-6, 1.0 - n_rejected / len(self))
        fetch = min(len(self), int(np.ceil(2 * k / kept_share)) + 16)
        scores, positions = self._search_overfetch(vectors, k, rejected, n_rejected, fetch=fetch)
        short = (positions < 0).any(axis=1)
        if short.any() and fetch < len(self):
            exact = self._search_overfetch(vectors[short], k, rejected, n_rejected)
            scores[short], positions[short] = exact
        return scores, positions

    def _search_overfetch(self, vectors: np.ndarray, k: int, rejected: np.ndarray, n_rejected: int, fetch: int | None = None):
        """Top-k among kept items by fetching ``fetch`` (default ``k + n_rejected``: exact) results and dropping
        rejected ones; positions stay -1 where fewer than k kept items were fetched."""
        fetch = min(len(self), k + n_rejected) if fetch is None else min(len(self), fetch)
        scores, positions = numpy_search(self._index, vectors, fetch)
        keep = (positions >= 0) & ~rejected[np.where(positions >= 0, positions, 0)]
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # kept results first, rank order preserved
        positions = np.take_along_axis(positions, order, axis=1)
        scores = np.take_along_axis(scores, order, axis=1)
        kept = np.take_along_axis(keep, order, axis=1)
        positions[~kept] = -1
        return scores, positions  # the result builder pads to k

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> None:
        """Write ``index.faiss``, ``ids.npy``, ``uncertainty.npy`` (and ``vectors.npy`` with exact re-ranking) into a new
        version sub-folder of ``directory`` and, last, its ``manifest.json`` (:meth:`GalleryIndexBase._save_folder`: a
        save interrupted at any point leaves the index that was there, whole)."""
        index_bytes = faiss.serialize_index(self._index)  # uint8 numpy array
        arrays = {IDS_FILE: self._ids, UNCERTAINTY_FILE: self._uncertainty}
        if self._exact_rerank:
            arrays[VECTORS_FILE] = np.asarray(self._vectors, dtype=np.float32)
        self._save_folder(directory, fields={
            "factory": self._factory,
            "faiss_index_type": type(faiss.downcast_index(self._index)).__name__,
            "exact_rerank": self._exact_rerank,
            "index_bytes_per_item": int(index_bytes.nbytes) / max(1, len(self)),
            "uncertainty_stats": _stats(self._uncertainty),
        }, arrays=arrays, blobs={INDEX_FILE: index_bytes})

    @classmethod
    def load(
        cls, directory: str | os.PathLike, expect_space: Space | None = None, verify_hashes: bool = True
    ) -> "FaissGalleryIndex":
        """Load an index written by :meth:`save`.

        Raises ``FileNotFoundError`` if the manifest or a file is missing, ``ValueError`` if a file is corrupted
        (size, hash or count mismatch), :class:`SpaceMismatchError` if ``expect_space`` is given and differs.
        """
        directory, manifest, space = cls._open_folder(directory, expect_space)
        count, dim = int(manifest["count"]), int(manifest["dim"])
        try:
            factory, metric = manifest["factory"], _metric_name(manifest["metric"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{directory / 'manifest.json'} is incomplete or malformed: {error!r}") from None
        exact_rerank = int(manifest.get("exact_rerank", 0))
        folder = cls._check_files(directory, manifest, (INDEX_FILE, IDS_FILE, UNCERTAINTY_FILE) + ((VECTORS_FILE,) if exact_rerank else ()),
                                  verify_hashes=verify_hashes)
        try:
            index = faiss.read_index(str(folder / INDEX_FILE))
        except RuntimeError as error:
            raise ValueError(f"{folder / INDEX_FILE} is not a readable FAISS index: {_faiss_message(error)}") from None
        try:
            ids = np.load(folder / IDS_FILE, allow_pickle=False)
            uncertainty = np.load(folder / UNCERTAINTY_FILE, allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise ValueError(f"{folder}: cannot read ids/uncertainty arrays: {error}") from None
        if ids.dtype.kind != "U" or ids.ndim != 1:
            raise ValueError(f"{folder / IDS_FILE} must hold a 1-D string array, got {ids.dtype} {ids.shape}")
        uncertainty = np.asarray(uncertainty, dtype=np.float32)
        counts = {"manifest": count, "index.faiss": int(index.ntotal), "ids.npy": len(ids), "uncertainty.npy": uncertainty.size}
        if len(set(counts.values())) != 1:
            raise ValueError(f"gallery index {directory} is inconsistent: item counts {counts}")
        if index.d != dim:
            raise ValueError(f"{folder / INDEX_FILE} has dimension {index.d}, manifest says {dim}")
        if _metric_name(index.metric_type) != metric:
            raise ValueError(f"{folder / INDEX_FILE} uses metric {_metric_name(index.metric_type)}, manifest says {metric}")

        self = cls.__new__(cls)
        self._metric = metric
        self._init_state(space, index, factory, ids, uncertainty.reshape(-1))
        if exact_rerank:
            vectors = np.load(folder / VECTORS_FILE, mmap_mode="r", allow_pickle=False)  # on disk, paged in per query
            if vectors.shape != (count, dim) or vectors.dtype != np.float32:
                raise ValueError(f"{folder / VECTORS_FILE} holds {vectors.dtype} {vectors.shape}, expected float32 ({count}, {dim})")
            self._vectors, self._exact_rerank = vectors, exact_rerank
        return self


# ---------------------------------------------------------------------- helpers
def _faiss_message(error: BaseException) -> str:
    """The informative last line of a FAISS C++ exception."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line:
            return line.split("Error:", 1)[-1].strip() or line
    return lines[-1] if lines else repr(error)


def _extract_ivf(index: faiss.Index):
    try:
        return faiss.extract_index_ivf(index)
    except (RuntimeError, AttributeError):
        return None


def _search_parameters(index: faiss.Index, selector: faiss.IDSelector, keepalive: list[Any]) -> faiss.SearchParameters:
    """Search parameters carrying ``selector`` for this index type, keeping its own search-time settings."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        params = faiss.SearchParametersPreTransform()
        params.index_params = _search_parameters(index.index, selector, keepalive)
        keepalive.append(params.index_params)
        return params
    if isinstance(index, faiss.IndexRefine):
        params = faiss.IndexRefineSearchParameters()
        params.k_factor = index.k_factor
        params.sel = selector
        params.base_index_params = _search_parameters(index.base_index, selector, keepalive)
        keepalive.append(params.base_index_params)
        return params
    if isinstance(index, faiss.IndexIVF):
        return faiss.SearchParametersIVF(sel=selector, nprobe=int(index.nprobe), max_codes=int(index.max_codes))
    if isinstance(index, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(
            sel=selector,
            efSearch=int(index.hnsw.efSearch),
            check_relative_distance=bool(index.hnsw.check_relative_distance),
            bounded_queue=bool(index.hnsw.search_bounded_queue),
        )
    if isinstance(index, faiss.IndexPQ):
        params = faiss.SearchParametersPQ(sel=selector)
        params.search_type = index.search_type
        params.polysemous_ht = index.polysemous_ht
        return params
    return faiss.SearchParameters(sel=selector)


def _stats(values: np.ndarray) -> dict[str, float] | None:
    if not len(values):
        return None
    return {"min": float(values.min()), "max": float(values.max()), "mean": float(values.mean())}
