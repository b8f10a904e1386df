"""Generic loaders: a class-per-sub-folder image tree and a CSV manifest."""
from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np

from ._common import DatasetFormatError, contiguous_labels, require_dir, require_file
from .dataset import FileSource, ImageDataset

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
)
SPLIT_BY_OPTIONS = (None, "class_half")


def _list_images(folder: Path, extensions: tuple[str, ...]) -> list[str]:
    """Image files under ``folder`` (recursive, hidden entries skipped), as sorted POSIX paths relative to it."""
    found = []
    for current, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in filenames:
            if not filename.startswith(".") and filename.lower().endswith(extensions):
                found.append((Path(current) / filename).relative_to(folder).as_posix())
    return sorted(found)


def load_image_folder(
    root: str | os.PathLike,
    split: str = "test",
    split_by: str | None = None,
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
    name: str | None = None,
) -> ImageDataset:
    """Images in a class-per-sub-folder tree: ``root/<class>/**/<image>``.

    Class names are the sub-folder names, sorted, giving labels ``0..C-1`` (sub-folders without images are
    skipped with a warning).  Item ids and keys are paths relative to ``root`` (``"<class>/<file>"``).

    - ``split_by=None`` (default): every image gets split ``split`` and is both query and gallery.
    - ``split_by="class_half"``: like the CUB/Cars metric-learning protocol, the first ``C // 2`` classes (in
      sorted order) are split ``"train"`` and the rest ``"test"``; only test images are query and gallery.
    """
    if split_by not in SPLIT_BY_OPTIONS:
        raise ValueError(f"split_by must be one of {SPLIT_BY_OPTIONS}, not {split_by!r}")
    root = require_dir(Path(root).expanduser(), "image folder")
    extensions = tuple(e.lower() for e in extensions)
    class_dirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise FileNotFoundError(f"image folder {root}: no class sub-folders (expected {root}/<class>/<image>)")
    loose = [p.name for p in root.iterdir() if p.is_file() and p.name.lower().endswith(extensions)]
    if loose:
        log.warning("image folder %s: ignoring %d images outside class sub-folders", root, len(loose))

    class_names: list[str] = []
    keys: list[str] = []
    labels: list[int] = []
    for class_name in class_dirs:
        files = _list_images(root / class_name, extensions)
        if not files:
            log.warning("image folder %s: class folder %r has no images; skipped", root, class_name)
            continue
        label = len(class_names)
        class_names.append(class_name)
        keys.extend(f"{class_name}/{f}" for f in files)
        labels.extend([label] * len(files))
    if not keys:
        raise FileNotFoundError(
            f"image folder {root}: no images with extensions {', '.join(extensions)} in its class sub-folders"
        )

    label_array = np.asarray(labels, dtype=np.int64)
    if split_by == "class_half":
        if len(class_names) < 2:
            raise ValueError(f"image folder {root}: split_by='class_half' needs at least 2 classes")
        is_test = label_array >= len(class_names) // 2
        splits = np.where(is_test, "test", "train")
    else:
        is_test = np.ones(len(keys), dtype=bool)
        splits = np.full(len(keys), split)
    return ImageDataset(
        name=name or root.name,
        source=FileSource(root),
        ids=np.asarray(keys),
        keys=np.asarray(keys),
        labels=label_array,
        splits=splits,
        is_query=is_test,
        is_gallery=is_test,
        class_names=class_names,
    )


_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}
CSV_REQUIRED_COLUMNS = ("path", "label", "split", "is_query", "is_gallery")


def _parse_bool(text: str, csv_path: Path, number: int, column: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise DatasetFormatError(f"{csv_path}:{number}: {column} must be 1/0/true/false, got {text!r}")


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def load_csv_manifest(
    csv_path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    name: str | None = None,
    check_files: bool = False,
) -> ImageDataset:
    """A dataset described by a CSV file with header ``path,label,split,is_query,is_gallery[,id]``.

    - ``path``: image path, relative to ``root`` if given, else to the CSV's folder (absolute paths allowed).
    - ``label``: if every non-empty label is an integer the integers are used as is (``-1`` = unknown);
      otherwise labels are class names mapped to ``0..C-1`` in sorted order (``class_names`` set).
      An empty label means unknown (``-1``).
    - ``split``: any non-empty name (e.g. ``train``/``test``).
    - ``is_query`` / ``is_gallery``: ``1``/``0``/``true``/``false`` (also yes/no).
    - ``id`` (optional): unique item id; defaults to ``path``.

    Extra columns are ignored.  Malformed rows raise :class:`DatasetFormatError` naming the line;
    ``check_files=True`` additionally checks that every image file exists.
    """
    csv_path = require_file(Path(csv_path).expanduser(), "CSV manifest")
    image_root = Path(root).expanduser() if root is not None else csv_path.parent
    if root is not None:
        require_dir(image_root, f"CSV manifest {csv_path}: image root")

    with open(csv_path, "r", encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if not header:
            raise DatasetFormatError(f"{csv_path}: empty file; expected header {','.join(CSV_REQUIRED_COLUMNS)}")
        reader.fieldnames = header
        missing = [c for c in CSV_REQUIRED_COLUMNS if c not in header]
        if missing:
            raise DatasetFormatError(
                f"{csv_path}:1: header is missing column(s) {', '.join(missing)} "
                f"(required: {','.join(CSV_REQUIRED_COLUMNS)}; optional: id); got {','.join(header)}"
            )
        has_id = "id" in header
        rows = []
        for record in reader:
            number = reader.line_num
            if None in record:
                raise DatasetFormatError(f"{csv_path}:{number}: more fields than header columns")
            values = {k: (v or "").strip() for k, v in record.items()}
            if not any(values.values()):
                continue
            for column in CSV_REQUIRED_COLUMNS:
                if record.get(column) is None:
                    raise DatasetFormatError(f"{csv_path}:{number}: missing field {column!r}")
            if not values["path"]:
                raise DatasetFormatError(f"{csv_path}:{number}: empty path")
            if not values["split"]:
                raise DatasetFormatError(f"{csv_path}:{number}: empty split")
            item_id = values["id"] if has_id else values["path"]
            if not item_id:
                raise DatasetFormatError(f"{csv_path}:{number}: empty id")
            rows.append(
                (
                    number,
                    item_id,
                    values["path"],
                    values["label"],
                    values["split"],
                    _parse_bool(values["is_query"], csv_path, number, "is_query"),
                    _parse_bool(values["is_gallery"], csv_path, number, "is_gallery"),
                )
            )
    if not rows:
        raise DatasetFormatError(f"{csv_path}: no rows after the header")

    seen: dict[str, int] = {}
    for number, item_id, *_ in rows:
        if item_id in seen:
            what = "id" if has_id else "path (add an id column to list an image twice)"
            raise DatasetFormatError(f"{csv_path}:{number}: duplicate {what} {item_id!r} (first on line {seen[item_id]})")
        seen[item_id] = number

    raw_labels = [r[3] for r in rows]
    known = [label for label in raw_labels if label]
    class_names: list[str] | None = None
    if all(_is_int(label) for label in known):
        labels = np.asarray([int(label) if label else -1 for label in raw_labels], dtype=np.int64)
        bad = np.flatnonzero(labels < -1)
        if len(bad):
            raise DatasetFormatError(f"{csv_path}:{rows[bad[0]][0]}: integer labels must be >= 0 (or -1 = unknown)")
    else:
        mapped, class_names = contiguous_labels(known)
        labels = np.full(len(rows), -1, dtype=np.int64)
        labels[[i for i, label in enumerate(raw_labels) if label]] = mapped
        class_names = [str(c) for c in class_names]

    if check_files:
        for number, _, path, *_ in rows:
            if not (image_root / path).is_file():
                raise FileNotFoundError(f"{csv_path}:{number}: missing image file {image_root / path}")

    return ImageDataset(
        name=name or csv_path.stem,
        source=FileSource(image_root),
        ids=np.asarray([r[1] for r in rows]),
        keys=np.asarray([r[2] for r in rows]),
        labels=labels,
        splits=np.asarray([r[4] for r in rows]),
        is_query=np.asarray([r[5] for r in rows], dtype=bool),
        is_gallery=np.asarray([r[6] for r in rows], dtype=bool),
        class_names=class_names,
    )
