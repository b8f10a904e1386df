"""Small helpers shared by the dataset loaders: existence checks, table parsing, label remapping."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np


class DatasetFormatError(ValueError):
    """A dataset file exists but its content is malformed; the message names the file and the line."""


def require_file(path: str | os.PathLike, what: str, hint: str = "") -> Path:
    """``path`` as a :class:`Path` if it is a file, else a :class:`FileNotFoundError` naming it."""
    path = Path(path)
    if not path.is_file():
        extra = f"; {hint}" if hint else ""
        raise FileNotFoundError(f"{what}: missing file {path}{extra}")
    return path


def require_dir(path: str | os.PathLike, what: str, hint: str = "") -> Path:
    """``path`` as a :class:`Path` if it is a directory, else a :class:`FileNotFoundError` naming it."""
    path = Path(path)
    if not path.is_dir():
        extra = f"; {hint}" if hint else ""
        raise FileNotFoundError(f"{what}: missing folder {path}{extra}")
    return path


def find_root(root: str | os.PathLike, marker: str, subfolders: Sequence[str], what: str) -> Path:
    """The folder holding ``marker``: ``root`` itself or one of ``root/<subfolder>``.

    Lets users point a loader at either the benchmark folder or the folder that contains it.
    """
    root = Path(root).expanduser()
    candidates = [root] + [root / sub for sub in subfolders]
    for candidate in candidates:
        if (candidate / marker).is_file():
            return candidate
    if not root.exists():
        raise FileNotFoundError(f"{what}: dataset root {root} does not exist")
    tried = ", ".join(str(c / marker) for c in candidates)
    raise FileNotFoundError(f"{what}: missing file {marker} (looked for {tried})")


def read_rows(path: Path, fields: int, skip: int = 0) -> Iterator[tuple[int, list[str]]]:
    """``(line_number, fields)`` of each non-blank line of a whitespace-separated text file.

    The last field takes the rest of the line (so it may contain spaces).  Lines with fewer fields raise
    :class:`DatasetFormatError` naming the file and line.  ``skip`` leading lines (headers) are ignored.
    """
    with open(path, "r", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if number <= skip:
                continue
            line = line.strip()
            if not line:
                continue
            parts = line.split(None, fields - 1)
            if len(parts) != fields:
                raise DatasetFormatError(f"{path}:{number}: expected {fields} fields, got {len(parts)}: {line!r}")
            yield number, parts


def parse_int(text: str, path: Path, number: int, column: str) -> int:
    """``int(text)`` or a :class:`DatasetFormatError` naming file, line and column."""
    try:
        return int(text)
    except ValueError:
        raise DatasetFormatError(f"{path}:{number}: {column} must be an integer, got {text!r}") from None


def contiguous_labels(values: Iterable) -> tuple[np.ndarray, list]:
    """Map arbitrary sortable label values to ``0..C-1`` (in sorted order); returns (labels, sorted values)."""
    values = np.asarray(list(values))
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64), []
    unique, inverse = np.unique(values, return_inverse=True)
    return inverse.astype(np.int64).reshape(-1), unique.tolist()


def check_unique(ids: Sequence[str], path: Path, numbers: Sequence[int], what: str) -> None:
    """Raise :class:`DatasetFormatError` naming both lines if an id occurs twice."""
    seen: dict[str, int] = {}
    for item, number in zip(ids, numbers):
        if item in seen:
            raise DatasetFormatError(f"{path}:{number}: duplicate {what} {item!r} (first on line {seen[item]})")
        seen[item] = number
