"""Fingerprints, manifests and atomic writes shared by every stored artifact.

A *fingerprint* is a short stable hash of whatever decides an embedding space (architecture, weights,
preprocessing, transformation).  Every artifact on disk (encoder checkpoint, embedding set, transformation,
index) carries a JSON manifest that names its fingerprints, so that artifacts from different spaces are never
combined silently.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


class SpaceMismatchError(ValueError):
    """Raised when artifacts or embeddings from different embedding spaces are combined."""


class CheckpointError(ValueError):
    """A torch checkpoint that cannot be loaded: truncated or not a checkpoint, or refused because it holds code."""


def stable_hash(obj: Any, length: int = 16) -> str:
    """SHA-256 of a JSON-serialisable object with sorted keys, truncated to ``length`` hex digits."""
    payload = json.dumps(obj, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:length]


def hash_arrays(arrays: Iterable[np.ndarray | Any], length: int = 16) -> str:
    """Hash of the raw bytes of a sequence of arrays/tensors (e.g. a state_dict's values)."""
    digest = hashlib.sha256()
    for array in arrays:
        if hasattr(array, "detach"):
            array = array.detach().cpu().numpy()
        array = np.ascontiguousarray(array)
        digest.update(str(array.dtype).encode())
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:length]


def hash_file(path: str | os.PathLike, length: int = 16, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()[:length]


def library_versions() -> dict[str, str]:
    """Versions recorded in every manifest, for provenance (read from package metadata: imports nothing)."""
    from importlib import metadata

    from .version import __version__

    versions = {"python": platform.python_version(), "numpy": np.__version__, "asymret": __version__}
    for name in ("torch", "faiss-cpu", "timm"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # pragma: no cover - optional package
            pass
    return versions


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: errors of a write that the disk (not the program) refused: a message names the file and says what happened
_STORAGE_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                   errno.EROFS: "the file system is read-only", errno.EFBIG: "file too large for the file system"}


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one, never half.

    A full disk (or quota, or read-only file system) raises an ``OSError`` whose message names ``path`` and how many
    bytes it needed, the half-written temporary file removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise _storage_error(error, path, data) from error
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 minus the umask).
        os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(error, OSError):
            raise _storage_error(error, path, data) from error
        raise


def _storage_error(error: OSError, path: Path, data: bytes) -> OSError:
    """``error`` with a message naming the file being written (the OS names none, or only the temporary file)."""
    reason = _STORAGE_ERRNOS.get(error.errno or 0)
    if reason is None:
        if str(path) in str(error):
            return error
        reason = error.strerror or str(error)
    size = memoryview(data).nbytes
    return type(error)(error.errno, f"cannot write {path} ({size:,} bytes): {reason}")


def load_checkpoint(path: str | os.PathLike) -> Any:
    """A torch checkpoint of tensors and plain data (``weights_only``: loading never runs code).

    Raises :class:`CheckpointError` naming the file when it is missing, truncated or not a checkpoint, or when it holds
    anything but tensors and plain data (a pickled function or object: refused, never run)."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing checkpoint {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message advises weights_only=False — running the file's code: never the advice to give
        found = re.search(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) ([\w.]+)", str(error))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(f"{path} is refused: it holds code or objects{what}, not only tensors and plain data — "
                              "loading it could run that code; asymret never loads such a file") from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError, IndexError) as error:
        first = str(error).split(". ")[0].strip() or type(error).__name__
        raise CheckpointError(f"{path} is truncated or not a torch checkpoint ({first}): save it again, or copy it again "
                              "from where it was written") from None


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default).encode("utf-8"))


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def write_manifest(directory: str | os.PathLike, kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``directory/manifest.json`` atomically with the artifact kind, format and library versions."""
    manifest = {"kind": kind, "format_version": FORMAT_VERSION, "versions": library_versions(), **fields}
    atomic_write_json(Path(directory) / MANIFEST_NAME, manifest)
    return manifest


def read_manifest(directory: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST_NAME} in {directory}: not an asymret artifact (or an unfinished one)")
    manifest = json.loads(path.read_text())
    if kind is not None and manifest.get("kind") != kind:
        raise ValueError(f"{directory} holds a {manifest.get('kind')!r} artifact, expected {kind!r}")
    return manifest
