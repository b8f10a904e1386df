"""A gallery index in Milvus (pymilvus ``MilvusClient``): Milvus Lite (a local file) or a Milvus server — the
``uri`` is the only difference.

One collection per index: primary key ``pos`` (the item's position, as in every asymret index), ``item`` (its
string id), ``uncertainty`` (stored as a double so the rejection boundary is expressed exactly) and ``vector``.
The embedding space is stored with the collection (a collection property) and checked on **every** search, so a
collection replaced or rebuilt in another space under a running client is refused like a foreign query.

Rejection runs in Milvus as a filter expression equivalent to :func:`asymret.core.uncertainty.rejection_mask`
(the fraction rule's boundary item ``(u*, p*)``: kept = ``uncertainty < u*`` or ``uncertainty == u* and pos >
p*``; the threshold rule: ``uncertainty <= t``; ``exclude``: ``pos not in [...]``).  Rows are written with
*upsert* on ``pos``, so a retried batch leaves no duplicate rows.

A build never touches the collection an index already saved uses (issue 23, item 7): each new index writes into
a collection of its own, the given name plus a version (``asymret_gallery_v20261204153000a1b2c3d4``), and
:meth:`MilvusGalleryIndex.save` names it in the folder's manifest, replaced atomically — the one moment the new
version takes over.  Only then is the collection the previous manifest named dropped (and, in a Milvus Lite file
inside the folder, the collections of builds that never reached their manifest).  A crash at any point before
leaves the previous manifest naming the previous, untouched collection.  The saved index folder holds only a
manifest naming the uri, the collection and the space (plus the Milvus Lite file when the uri points into the
folder).
"""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..core.manifest import read_manifest
from ..core.space import Embeddings, Space
from .base import GalleryIndexBase, SearchResult, SpaceMismatchError, describe_space

__all__ = ["MilvusGalleryIndex", "LITE_FILE"]

#: the Milvus Lite database file's name inside an index folder (the default uri of ``build-index --backend milvus``)
LITE_FILE = "milvus.db"
SPACE_PROPERTY = "asymret.space"
FORMAT_VERSION = 1
#: rows per insert call (Milvus caps a request's size; 64-d float vectors: ≈ 2.5 MB per call)
BATCH = 10_000
_INDEX_TYPES = {"FLAT": {}, "IVF_FLAT": {"nlist": 1024}, "HNSW": {"M": 16, "efConstruction": 200}}
#: a build's collection: the given name, ``_v``, a UTC time and 8 hex digits (Milvus names: letters, digits, ``_``)
_VERSION = r"_v\d{14}[0-9a-f]{8}"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,200}")
_log = logging.getLogger(__name__)


def _client(uri: str):
    from pymilvus import MilvusClient

    return MilvusClient(uri)


class MilvusGalleryIndex(GalleryIndexBase):
    """Gallery items in a Milvus collection; queries checked against the space stored with it.

    ``uri``: a local ``.db`` file (Milvus Lite, started in-process by pymilvus) or ``http://host:19530`` (a
    server or cluster).  ``index_type``: ``FLAT`` (exact), ``IVF_FLAT`` or ``HNSW`` (with ``index_params`` and
    ``search_params`` such as ``{"nprobe": 32}`` / ``{"ef": 64}``).  Creating one makes a new collection named
    ``collection`` plus a version (:attr:`collection`; :attr:`name` is the name given): an index saved under
    that name before stays whole until this one's :meth:`save` replaces it.
    """

    backend = "milvus"
    backend_title = "Milvus"

    def __init__(self, space: Space, uri: str | os.PathLike, collection: str = "asymret_gallery", index_type: str = "FLAT",
                 index_params: dict[str, Any] | None = None, search_params: dict[str, Any] | None = None, _create: bool = True) -> None:
        if not isinstance(space, Space):
            raise TypeError(f"space must be an asymret.core.space.Space, got {type(space).__name__}")
        if index_type not in _INDEX_TYPES:
            raise ValueError(f"index_type must be one of {', '.join(_INDEX_TYPES)}, not {index_type!r}")
        if _create and (not isinstance(collection, str) or not _NAME.fullmatch(collection)):
            raise ValueError(f"a Milvus collection name is a letter or _ then letters, digits or _ (at most 201), not {collection!r}")
        # ``name``: what the caller calls it; ``collection``: this build's own, versioned (a loaded index: the saved one)
        self._space, self.uri, self.name = space, str(uri), collection
        self.collection = f"{collection}_v{time.strftime('%Y%m%d%H%M%S', time.gmtime())}{secrets.token_hex(4)}" if _create else collection
        self.index_type = index_type
        self.index_params = {**_INDEX_TYPES[index_type], **(index_params or {})}
        self.search_params = dict(search_params or {})
        self._ids = np.zeros(0, dtype=str)
        self._uncertainty = np.zeros(0, dtype=np.float32)
        if self.uri.endswith(".db"):
            Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
        self._milvus = _client(self.uri)
        if _create:
            self._create_collection()

    # ------------------------------------------------------------------ the collection
    def _create_collection(self) -> None:
        from pymilvus import DataType

        schema = self._milvus.create_schema(auto_id=False, enable_dynamic_field=False, description="asymret gallery index")
        schema.add_field("pos", DataType.INT64, is_primary=True)
        schema.add_field("item", DataType.VARCHAR, max_length=1024)
        schema.add_field("uncertainty", DataType.DOUBLE)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=int(self._space.dim))
        index_params = self._milvus.prepare_index_params()
        index_params.add_index("vector", index_type=self.index_type, metric_type="IP", params=self.index_params)
        self._milvus.create_collection(self.collection, schema=schema, index_params=index_params,
                                       properties={SPACE_PROPERTY: json.dumps(self._space.to_dict(), sort_keys=True)})

    def _stored_space(self) -> Space:
        from pymilvus.exceptions import MilvusException

        try:
            properties = self._milvus.describe_collection(self.collection).get("properties", {})
        except MilvusException:
            if self._milvus.has_collection(self.collection):
                raise
            raise FileNotFoundError(f"Milvus collection {self.collection!r} at {self.uri} no longer exists (the index was "
                                    "rebuilt in its folder, which drops the superseded collection, or removed): load it again") from None
        if SPACE_PROPERTY not in properties:
            raise SpaceMismatchError(f"Milvus collection {self.collection!r} at {self.uri} does not name its embedding space")
        return Space.from_dict(json.loads(properties[SPACE_PROPERTY]))

    # ------------------------------------------------------------------ interface
    @property
    def spec(self) -> str:
        return f"milvus:{self.index_type}"

    @property
    def summary(self) -> str:
        return f"Milvus {'Lite' if self.uri.endswith('.db') else self.uri}, {self.index_type} collection {self.collection}"

    def __repr__(self) -> str:
        return f"MilvusGalleryIndex({len(self)} items, {self.index_type}, {self.collection!r} at {self.uri}, space {self._space.fingerprint})"

    def add(self, embeddings: Embeddings, uncertainty: np.ndarray | None = None) -> None:
        vectors, ids, unc = self._validate_additions(embeddings, uncertainty)
        start = len(self)
        for offset in range(0, len(ids), BATCH):
            rows = [{"pos": start + offset + i, "item": item, "uncertainty": float(u), "vector": vector}
                    for i, (item, u, vector) in enumerate(zip(ids[offset:offset + BATCH].tolist(), unc[offset:offset + BATCH].tolist(),
                                                              vectors[offset:offset + BATCH].tolist()))]
            self._milvus.upsert(self.collection, rows)  # upsert on pos: a retried batch never duplicates rows
        self._ids = np.concatenate([self._ids, ids]) if len(self._ids) else ids.copy()
        self._uncertainty = np.concatenate([self._uncertainty, unc]) if len(self._uncertainty) else unc.copy()

    def kept_filter(self, reject_fraction: float | None = None, reject_threshold: float | None = None,
                    exclude: np.ndarray | None = None) -> tuple[str, np.ndarray]:
        """The Milvus filter expression keeping exactly the items :meth:`rejected_mask` keeps ('' = all), and that
        mask."""
        rejected = self.rejected_mask(reject_fraction, reject_threshold, exclude)  # validates the arguments
        parts = []
        by_fraction = self.rejected_mask(reject_fraction) if reject_fraction is not None else None  # memoised
        if by_fraction is not None and by_fraction.any():
            # the last item the fraction rule rejects: the lowest uncertainty, and among equal ones the latest position
            lowest = self._uncertainty[by_fraction].min()
            boundary = int(np.flatnonzero(by_fraction & (self._uncertainty == lowest))[-1])
            value = repr(float(self._uncertainty[boundary]))  # the float32 value, exactly, as the stored double
            parts.append(f"(uncertainty < {value} or (uncertainty == {value} and pos > {boundary}))")
        if reject_threshold is not None:
            parts.append(f"uncertainty <= {float(reject_threshold)!r}")
        if exclude is not None and np.asarray(exclude).any():
            parts.append(f"pos not in {np.flatnonzero(exclude).tolist()}")
        return " and ".join(parts), rejected

    def _search(self, queries: Embeddings | np.ndarray, k: int, reject_fraction: float | None, reject_threshold: float | None,
                space: Space | None, exclude: np.ndarray | None) -> SearchResult:
        vectors, query_ids = self._validate_queries(queries, space)
        k = self._validate_k(k)
        stored = self._stored_space()  # every search: the collection may have been replaced under this client
        if stored.fingerprint != self._space.fingerprint:
            raise SpaceMismatchError(f"Milvus collection {self.collection!r} now holds space {describe_space(stored)}, "
                                     f"this index was opened for {describe_space(self._space)}")
        expression, rejected = self.kept_filter(reject_fraction, reject_threshold, exclude)
        if self.uri.endswith(".db"):  # Milvus Lite searches with FAISS in this process
            from .faiss_patch import restore_search_params

            restore_search_params()
        nq = len(vectors)
        positions = np.full((nq, k), -1, dtype=np.int64)
        scores = np.full((nq, k), -np.inf, dtype=np.float32)
        if nq and len(self) and not rejected.all():
            hits = self._milvus.search(self.collection, data=vectors.tolist(), limit=min(k, len(self)), filter=expression,
                                       output_fields=["pos"], search_params={"metric_type": "IP", "params": self.search_params})
            for row, found in enumerate(hits):
                for column, hit in enumerate(found[:k]):
                    positions[row, column] = int(hit["pos"] if "pos" in hit else hit["id"])
                    scores[row, column] = float(hit["distance"])
        if rejected[positions[positions >= 0]].any():  # the filter and rejection_mask must agree: never serve a rejected item
            raise RuntimeError("Milvus returned an item the rejection rule drops: the filter expression is wrong")
        return self._result(scores, positions, query_ids, int(rejected.sum()))

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> None:
        """Flush the collection and write the folder's manifest (last) naming uri, collection and space."""
        directory = Path(directory)

        def flush() -> None:
            self._milvus.flush(self.collection)
            stored = self._count()
            if stored != len(self):
                raise RuntimeError(f"Milvus collection {self.collection!r} holds {stored} rows, the index added {len(self)}")

        uri, inside = self.uri, False
        try:  # a Milvus Lite file inside the folder is stored relative to it: the folder can move
            if uri.endswith(".db"):
                uri, inside = str(Path(self.uri).resolve().relative_to(directory.resolve())), True
        except ValueError:
            pass
        superseded = self._saved_collection(directory)
        self._save_folder(directory, fields={
            "format_version_milvus": FORMAT_VERSION, "uri": uri, "collection": self.collection, "name": self.name,
            "index_type": self.index_type, "index_params": self.index_params, "search_params": self.search_params,
        }, prepare=flush)  # the manifest's replacement: from here on the folder names this collection
        stale = {superseded} - {None, self.collection}
        if inside:  # a Milvus Lite file in the folder is the folder's: builds that never got here go too
            stale |= {name for name in self._milvus.list_collections()
                      if re.fullmatch(_NAME.pattern + _VERSION, name) and name != self.collection}
        for name in sorted(stale):
            self._drop(name)

    def _saved_collection(self, directory: Path) -> str | None:
        """The collection the index saved in ``directory`` now uses, if it is in this index's Milvus (then this save
        supersedes it)."""
        try:
            manifest = read_manifest(directory, kind=self.manifest_kind)
        except (FileNotFoundError, ValueError, OSError):
            return None
        uri, collection = manifest.get("uri"), manifest.get("collection")
        if manifest.get("backend") != self.backend or not isinstance(uri, str) or not isinstance(collection, str):
            return None
        if uri.endswith(".db") and self.uri.endswith(".db"):
            same = Path(directory, uri).resolve() == Path(self.uri).resolve()  # an absolute uri stays itself
        else:
            same = uri == self.uri
        return collection if same else None

    def _drop(self, name: str) -> None:
        """Drop a superseded collection (best effort: one left behind costs space, never correctness)."""
        from pymilvus.exceptions import MilvusException

        try:
            self._milvus.drop_collection(name)
        except MilvusException as error:
            _log.warning("could not drop the superseded Milvus collection %r at %s: %s", name, self.uri, error)

    def _count(self) -> int:
        result = self._milvus.query(self.collection, filter="", output_fields=["count(*)"])
        return int(result[0]["count(*)"])

    @classmethod
    def load(cls, directory: str | os.PathLike, expect_space: Space | None = None) -> "MilvusGalleryIndex":
        directory, manifest, space = cls._open_folder(directory, expect_space)
        uri = manifest["uri"]
        if uri.endswith(".db") and not os.path.isabs(uri):
            uri = str(directory / uri)
            if not Path(uri).exists():
                raise FileNotFoundError(f"gallery index {directory} is missing its Milvus Lite file {manifest['uri']}")
        self = cls(space, uri, manifest["collection"], manifest["index_type"], manifest.get("index_params"),
                   manifest.get("search_params"), _create=False)
        self.name = str(manifest.get("name", self.collection))  # saves before versioned collections: one name
        if not self._milvus.has_collection(self.collection):
            raise FileNotFoundError(f"Milvus at {uri} has no collection {self.collection!r} (named by {directory})")
        stored = self._stored_space()
        if stored.fingerprint != space.fingerprint:
            raise SpaceMismatchError(f"Milvus collection {self.collection!r} holds space {describe_space(stored)}, "
                                     f"the index folder {directory} names {describe_space(space)}")
        self._milvus.load_collection(self.collection)
        rows = self._read_rows()
        if len(rows["pos"]) != int(manifest["count"]) or not np.array_equal(rows["pos"], np.arange(len(rows["pos"]))):
            raise ValueError(f"Milvus collection {self.collection!r} holds {len(rows['pos'])} rows at positions that are not "
                             f"0..{int(manifest['count']) - 1}: the index named by {directory} is incomplete or was changed")
        self._ids, self._uncertainty = rows["item"].astype(str), rows["uncertainty"].astype(np.float32)
        return self

    def _read_rows(self) -> dict[str, np.ndarray]:
        logging.getLogger("pymilvus").setLevel(logging.ERROR)  # Milvus Lite has no server timestamp: pymilvus warns, harmlessly
        iterator = self._milvus.query_iterator(self.collection, batch_size=BATCH, filter="", output_fields=["pos", "item", "uncertainty"])
        rows: list[dict[str, Any]] = []
        while True:
            batch = iterator.next()
            if not batch:
                break
            rows.extend(batch)
        iterator.close()
        rows.sort(key=lambda row: row["pos"])
        return {"pos": np.array([r["pos"] for r in rows], dtype=np.int64), "item": np.array([r["item"] for r in rows], dtype=str),
                "uncertainty": np.array([r["uncertainty"] for r in rows], dtype=np.float64)}
