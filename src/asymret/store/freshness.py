"""What keeps a store folder honest about its images and its own bytes.

- **Stamps**: each shard's marker records, per image id, what its pixels were when embedded
  (:meth:`asymret.data.dataset.ImageSource.stamps`: the file's size and modification time, and with
  ``change_detection="content"`` a hash of its bytes).  An image edited or replaced under the same name no longer
  matches: the store re-embeds it and keeps every other vector.  Images held in memory have no stamps (their
  pixels are fixed by the dataset fingerprint).
- **Checksums**: each shard's ``.npy`` has its sha256 in its marker and in the folder's manifest, checked on every
  read: a corrupted shard is one error naming the file, never vectors read silently.

Folders written before stamps and checksums existed are *adopted* by the next extraction (their markers gain the
stamps of the files as they are now, and the checksum of the shard as it is), so their embeddings stay usable.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..data.dataset import ImageDataset

__all__ = ["CHANGE_DETECTION", "CorruptStoreError", "StaleEmbeddingsError", "current_stamps", "changed", "read_marker",
           "read_shard", "shard_checksum"]

#: how the store notices an edited image: ``stat`` (size + modification time, one ``stat`` per image per read) or
#: ``content`` (a hash of every image's bytes, read on every check: also catches edits that keep size and time)
CHANGE_DETECTION = ("stat", "content")
#: hex digits of the checksums kept (collisions are not the threat here: flipped or truncated bytes are)
CHECKSUM_DIGITS = 32

#: per stamp kind, image id → stamp (what a marker's ``stamps`` holds)
Stamps = dict[str, dict[str, str]]


class CorruptStoreError(ValueError):
    """A store file whose bytes are not what was written (a checksum mismatch, an unreadable marker or shard)."""


class StaleEmbeddingsError(ValueError):
    """Stored embeddings of images that have changed since they were embedded (edited or replaced files)."""


def check_change_detection(value: str) -> str:
    if value not in CHANGE_DETECTION:
        raise ValueError(f"change detection must be one of {', '.join(CHANGE_DETECTION)}, not {value!r}")
    return value


def current_stamps(dataset: ImageDataset, rows: Sequence[int] | np.ndarray, change_detection: str = "stat") -> Stamps | None:
    """What the images of ``rows`` are now, per kind (``stat`` always; ``content`` too when it is the mode), keyed
    by id; ``None`` for a source whose pixels cannot change (an array in memory)."""
    stat = dataset.stamps(rows)
    if stat is None:
        return None
    ids = dataset.ids[np.asarray(rows, dtype=np.int64)].tolist()
    stamps: Stamps = {"stat": dict(zip(ids, stat))}
    if change_detection == "content":
        stamps["content"] = dict(zip(ids, dataset.stamps(rows, content=True) or []))
    return stamps


def changed(recorded: Mapping[str, Any] | None, now: Stamps, ids: Sequence[str], change_detection: str = "stat") -> list[str] | None:
    """Those of ``ids`` whose images differ from what a marker ``recorded`` (in the mode's kind; an id the marker has
    no stamp of counts as changed); ``None`` when the marker holds no stamps at all (a folder from before them)."""
    if recorded is None:
        return None
    kind = "content" if change_detection == "content" else "stat"
    held, current = recorded.get(kind, {}), now[kind]
    return [item for item in ids if held.get(item) != current.get(item)]


def shard_checksum(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()[:CHECKSUM_DIGITS]


def read_marker(path: Path) -> dict[str, Any]:
    """A shard's marker (its ids, failures, stamps, checksum), or :class:`CorruptStoreError` naming it."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptStoreError(f"{path} cannot be read ({type(error).__name__}: {error}): delete it and its .npy and run "
                                "`asymret embed` again to recompute that shard") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("ids"), list) or not isinstance(meta.get("failed"), list):
        raise CorruptStoreError(f"{path} is not a shard marker (no ids/failed lists): delete it and its .npy and run "
                                "`asymret embed` again to recompute that shard")
    return meta


def read_shard(path: Path, checksum: str | None) -> np.ndarray:
    """A shard's vectors, its bytes checked against ``checksum`` first (``None``: a folder from before checksums)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CorruptStoreError(f"{path} cannot be read ({error.strerror or error}): run `asymret embed` again to "
                                "recompute that shard") from None
    if checksum is not None and shard_checksum(data) != checksum:
        raise CorruptStoreError(f"{path} is corrupted: its sha256 is not the {checksum} recorded when it was written; delete "
                                "it and run `asymret embed` again to recompute that shard")
    try:
        vectors = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise CorruptStoreError(f"{path} is not a readable array ({error}): delete it and run `asymret embed` again "
                                "to recompute that shard") from None
    if vectors.ndim != 2 or vectors.dtype != np.float32:
        raise CorruptStoreError(f"{path} holds {vectors.dtype} {vectors.shape}, not float32 vectors: delete it and run "
                                "`asymret embed` again to recompute that shard")
    return vectors
