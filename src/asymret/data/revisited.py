"""Revisited Oxford / Paris (ROxford5k, RParis6k) in the official revisitop layout.

Layout (``root`` = revisitop's ``data/datasets`` folder, or the dataset folder itself)::

    <root>/<name>/gnd_<name>.pkl     dict: imlist, qimlist, gnd
    <root>/<name>/jpg/<image>.jpg    every image of imlist and qimlist

``imlist`` are the database image names and ``qimlist`` the query image names (without ``.jpg``); ``gnd`` holds
one dict per query: ``easy``, ``hard``, ``junk`` (0-based indices into ``imlist``) and ``bbx``
(``[x1, y1, x2, y2]``, pixels).  The protocol: queries are cropped to their ``bbx`` before any processing and are
not part of the database (a query's full image may be a database image; the ground truth says how it counts).

This does not fit :func:`asymret.data.load_dataset` (one dataset, label-defined positives): positives here are
per-query lists, so :func:`load_revisited` returns the database, the queries and the ground truth together.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ._common import DatasetFormatError, find_root, require_dir
from .dataset import CroppedSource, FileSource, ImageDataset
from .safe_pickle import safe_load_pickle

__all__ = [
    "REVISITED_DATASETS",
    "RevisitedBenchmark",
    "RevisitedGroundTruth",
    "RevisitedQuery",
    "load_revisited",
]

REVISITED_DATASETS = ("roxford5k", "rparis6k")
IMAGE_EXTENSION = ".jpg"  # revisitop's ext and qext for both datasets


@dataclass(frozen=True)
class RevisitedQuery:
    """Ground truth of one query: database indices (int64, 0-based) and the query's crop box (or None)."""

    easy: np.ndarray
    hard: np.ndarray
    junk: np.ndarray
    bbx: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class RevisitedGroundTruth:
    """Per-query ground truth of a revisited dataset; ``num_database`` (None = unknown) bounds every index."""

    queries: tuple[RevisitedQuery, ...]
    num_database: int | None
    imlist: tuple[str, ...] = ()
    qimlist: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.queries)

    @classmethod
    def from_gnd(
        cls,
        gnd: Sequence[Mapping[str, Any]],
        num_database: int | None,
        imlist: Sequence[str] = (),
        qimlist: Sequence[str] = (),
        require_bbx: bool = False,
        source: str = "gnd",
    ) -> "RevisitedGroundTruth":
        """Validate revisitop-shaped ``gnd`` (one dict per query) into typed arrays.

        Errors are :class:`DatasetFormatError` naming ``source`` and the query.
        """
        if isinstance(gnd, (str, bytes, Mapping)) or not isinstance(gnd, Sequence):
            raise DatasetFormatError(f"{source}: gnd must be a list with one dict per query, got {type(gnd).__name__}")
        queries = []
        for number, entry in enumerate(gnd):
            where = f"{source}: gnd[{number}]"
            if not isinstance(entry, Mapping):
                raise DatasetFormatError(f"{where} must be a dict, got {type(entry).__name__}")
            lists = {field: _index_array(entry.get(field, ()), num_database, f"{where}['{field}']")
                     for field in ("easy", "hard", "junk")}
            if "bbx" in entry and entry["bbx"] is not None:
                bbx = _box(entry["bbx"], f"{where}['bbx']")
            elif require_bbx:
                raise DatasetFormatError(f"{where} has no 'bbx' (the protocol crops every query to it)")
            else:
                bbx = None
            queries.append(RevisitedQuery(bbx=bbx, **lists))
        return cls(queries=tuple(queries), num_database=None if num_database is None else int(num_database), imlist=tuple(imlist), qimlist=tuple(qimlist))


@dataclass(frozen=True)
class RevisitedBenchmark:
    """A loaded revisited dataset: the database (gallery role), the cropped queries (query role), the ground truth.

    Row ``i`` of ``database`` is ``imlist[i]`` (the index the ground truth uses); row ``j`` of ``queries`` is
    ``qimlist[j]`` = ``ground_truth.queries[j]``.
    """

    name: str
    database: ImageDataset
    queries: ImageDataset
    ground_truth: RevisitedGroundTruth


def _index_array(values: Any, num_database: int | None, what: str) -> np.ndarray:
    array = np.asarray(values).reshape(-1) if np.ndim(values) else np.asarray(values).reshape(1)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.dtype.kind not in "iuf" or (array.dtype.kind == "f" and not np.all(array == np.round(array))):
        raise DatasetFormatError(f"{what} must hold integer image indices, got {array[:5].tolist()}")
    indices = array.astype(np.int64)
    upper = np.iinfo(np.int64).max if num_database is None else num_database
    bad = indices[(indices < 0) | (indices >= upper)]
    if len(bad):
        raise DatasetFormatError(f"{what}: index {bad[0]} outside the database (0..{upper - 1})")
    return indices


def _box(values: Any, what: str) -> tuple[float, float, float, float]:
    try:
        box = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise DatasetFormatError(f"{what} must be 4 numbers [x1, y1, x2, y2], got {values!r}") from None
    if box.shape != (4,) or not np.isfinite(box).all():
        raise DatasetFormatError(f"{what} must be 4 finite numbers [x1, y1, x2, y2], got {box.tolist()}")
    x1, y1, x2, y2 = box.tolist()
    if x2 <= x1 or y2 <= y1:
        raise DatasetFormatError(f"{what} = {box.tolist()} is empty (needs x2 > x1 and y2 > y1)")
    return (x1, y1, x2, y2)


def _names(values: Any, what: str) -> list[str]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise DatasetFormatError(f"{what} must be a list of image names, got {type(values).__name__}")
    names = [v.decode("utf-8") if isinstance(v, bytes) else v for v in list(values)]
    bad = [v for v in names if not isinstance(v, str) or not v]
    if bad:
        raise DatasetFormatError(f"{what} must hold non-empty image names, got {bad[0]!r}")
    return names


def load_revisited(root: str | os.PathLike, name: str = "roxford5k") -> RevisitedBenchmark:
    """Load ROxford5k or RParis6k from revisitop's layout (see the module doc); the pickle is loaded safely.

    ``root`` is the folder holding ``<name>/`` (revisitop's ``data/datasets``) or ``<name>/`` itself.  The
    database has ids = ``imlist`` names, keys ``<name>.jpg``, labels -1, split ``"test"`` and only the gallery
    role.  The queries have ids ``query/<qimlist name>`` (never equal to a database id, so id-based
    self-exclusion cannot drop a database image), only the query role, and load cropped to their ``bbx``.
    """
    key = str(name).strip().lower()
    if key not in REVISITED_DATASETS:
        raise ValueError(f"unknown revisited dataset {name!r}; known: {', '.join(REVISITED_DATASETS)}")
    what = f"revisited {key}"
    folder = find_root(root, f"gnd_{key}.pkl", [key], what)
    gnd_path = folder / f"gnd_{key}.pkl"
    image_dir = require_dir(folder / "jpg", what)

    cfg = safe_load_pickle(gnd_path)
    if not isinstance(cfg, Mapping):
        raise DatasetFormatError(f"{gnd_path}: expected a dict with imlist, qimlist, gnd; got {type(cfg).__name__}")
    missing = [field for field in ("imlist", "qimlist", "gnd") if field not in cfg]
    if missing:
        raise DatasetFormatError(f"{gnd_path}: missing key(s) {', '.join(missing)} (has {sorted(map(str, cfg))})")
    imlist = _names(cfg["imlist"], f"{gnd_path}: imlist")
    qimlist = _names(cfg["qimlist"], f"{gnd_path}: qimlist")
    if len(set(imlist)) != len(imlist):
        raise DatasetFormatError(f"{gnd_path}: imlist names are not unique")
    if len(set(qimlist)) != len(qimlist):
        raise DatasetFormatError(f"{gnd_path}: qimlist names are not unique")
    gnd = cfg["gnd"]
    if isinstance(gnd, Sequence) and len(gnd) != len(qimlist):
        raise DatasetFormatError(f"{gnd_path}: gnd has {len(gnd)} entries for {len(qimlist)} queries")
    truth = RevisitedGroundTruth.from_gnd(gnd, len(imlist), imlist, qimlist, require_bbx=True, source=str(gnd_path))

    files = FileSource(image_dir)
    n_db, n_q = len(imlist), len(qimlist)
    database = ImageDataset(
        name=key,
        source=files,
        ids=np.asarray(imlist),
        keys=np.asarray([n + IMAGE_EXTENSION for n in imlist]),
        labels=np.full(n_db, -1),
        splits=np.full(n_db, "test"),
        is_query=np.zeros(n_db, dtype=bool),
        is_gallery=np.ones(n_db, dtype=bool),
    )
    crops = [(n + IMAGE_EXTENSION, q.bbx) for n, q in zip(qimlist, truth.queries)]
    queries = ImageDataset(
        name=f"{key}/query",
        source=CroppedSource(files, crops),
        ids=np.asarray([f"query/{n}" for n in qimlist]),
        keys=np.arange(n_q),  # row numbers into the crop table
        labels=np.full(n_q, -1),
        splits=np.full(n_q, "test"),
        is_query=np.ones(n_q, dtype=bool),
        is_gallery=np.zeros(n_q, dtype=bool),
    )
    return RevisitedBenchmark(name=key, database=database, queries=queries, ground_truth=truth)
