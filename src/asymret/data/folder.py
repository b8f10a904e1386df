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
SPLIT_BY_OPTIONS = ("auto", "folders", "class_half", "none")
SPLIT_FOLDER_NAMES = ("train", "val", "validation", "test", "query", "gallery")


class _Walk:
    """One load's walk through an image tree, following symlinks but never a loop: each real folder is entered once
    and each real file listed once (the first path in sorted order), whatever links lead to them again.  What it
    skipped — link loops, further paths to a file already listed, broken links — is kept to be said once."""

    def __init__(self, root: Path, extensions: tuple[str, ...]) -> None:
        self.root = root
        self.extensions = extensions
        self.seen_folders: set[tuple[int, int]] = {_identity(root)}  # a link back to the root is a loop too
        self.seen_files: set[tuple[int, int]] = set()
        self.loops: list[str] = []
        self.duplicates: list[str] = []
        self.broken: list[str] = []

    def enter(self, folder: Path) -> bool:
        """Whether ``folder`` is a real folder not entered yet (and it is entered now); a loop is noted."""
        identity = _identity(folder)
        if identity in self.seen_folders:
            self.loops.append(self._name(folder))
            return False
        self.seen_folders.add(identity)
        return True

    def images(self, folder: Path) -> list[str]:
        """Image files under ``folder`` (recursive, hidden entries skipped), as sorted POSIX paths relative to it."""
        found = []
        # a top-down walk with sorted folders: which path of a file reached twice is kept does not depend on the OS
        for current, dirnames, filenames in os.walk(folder, followlinks=True):
            here = Path(current)
            dirnames[:] = [d for d in sorted(dirnames) if not d.startswith(".") and self.enter(here / d)]
            for filename in sorted(filenames):
                if filename.startswith(".") or not filename.lower().endswith(self.extensions):
                    continue
                path = here / filename
                try:
                    identity = _identity(path)
                except OSError:  # a link to nothing
                    self.broken.append(self._name(path))
                    continue
                if identity in self.seen_files:
                    self.duplicates.append(self._name(path))
                    continue
                self.seen_files.add(identity)
                found.append(path.relative_to(folder).as_posix())
        return sorted(found)

    def report(self) -> None:
        """Say what was skipped, one warning per kind, with examples."""
        for items, what in ((self.loops, "symlinked folders already walked (link loops or second paths)"),
                            (self.duplicates, "further paths to image files already listed (symlinks or hard links)"),
                            (self.broken, "broken symlinks")):
            if items:
                log.warning("image folder %s: skipped %d %s: %s", self.root, len(items), what, _examples(items))

    def _name(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


def _identity(path: Path) -> tuple[int, int]:
    """What a path is on disk (device, inode), through symlinks: two paths to one real file or folder share it."""
    info = path.stat()
    return info.st_dev, info.st_ino


def _examples(items: list[str], count: int = 3) -> str:
    return ", ".join(items[:count]) + (f" and {len(items) - count} more" if len(items) > count else "")


def _class_folders(folder: Path, walk: _Walk) -> list[str]:
    """The class sub-folders of ``folder``, claimed in ``walk`` (a second path to one already claimed is skipped)."""
    loose = [p.name for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(walk.extensions)]
    if loose:
        log.warning("image folder %s: ignoring %d images outside class sub-folders", folder, len(loose))
    class_dirs = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise FileNotFoundError(f"image folder {folder}: no class sub-folders (expected {folder}/<class>/<image>)")
    return [name for name in class_dirs if walk.enter(folder / name)]


def _class_files(folder: Path, class_dirs: list[str], walk: _Walk) -> dict[str, list[str]]:
    """Class sub-folder name → its image files (relative to ``folder``); empty class folders warned about, skipped."""
    found: dict[str, list[str]] = {}
    for class_dir in class_dirs:
        files = walk.images(folder / class_dir)
        if files:
            found[class_dir] = [f"{class_dir}/{f}" for f in files]
        else:
            log.warning("image folder %s: class folder %r has no images; skipped", folder, class_dir)
    return found


def _split_folders(root: Path) -> list[str]:
    """The split sub-folders (``train``, ``test``, ``val``…) of ``root`` when it is laid out by split, else []."""
    names = {p.name.lower(): p.name for p in root.iterdir() if p.is_dir()}
    splits = [names[n] for n in SPLIT_FOLDER_NAMES if n in names]
    # a split layout needs a test (or validation) side next to train; a lone class called "train" is a class
    return splits if len(splits) >= 2 and any(n.lower() != "train" for n in splits) else []


def load_image_folder(
    root: str | os.PathLike,
    split: str = "test",
    split_by: str | None = "auto",
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
    name: str | None = None,
) -> ImageDataset:
    """Images in a class-per-sub-folder tree, optionally under split folders.

    Layouts (``split_by``):

    - ``"folders"``: ``root/<split>/<class>/**/<image>`` with split folders such as ``train/`` and ``test/``
      (also ``val``/``validation``/``query``/``gallery``).  Labels are shared by class *name* across splits, so
      an open-set layout (other classes under ``test/``) and a closed-set one both work.  Ids are
      ``"<split>/<class>/<file>"``; the images outside ``train`` are the queries and the gallery.
    - ``"class_half"`` (the CUB/Cars metric-learning protocol on a flat tree ``root/<class>/…``): the first
      ``C // 2`` classes in sorted order are split ``"train"``, the rest ``"test"``; only test images are query
      and gallery.
    - ``"none"`` (or ``None``): a flat tree; every image gets split ``split`` and is both query and gallery.
    - ``"auto"`` (default): ``"folders"`` when ``root`` has split folders (``train/`` beside ``test/``…),
      else ``"none"``.

    Class names are sorted, giving labels ``0..C-1``; item keys are paths relative to ``root``.  Symlinks are followed,
    loops never: each real folder is walked once and each real file listed once (its first path in sorted order);
    what was skipped — link loops, second paths to a file, broken links — is logged as a warning.
    """
    split_by = "none" if split_by is None else str(split_by).strip().lower().replace("-", "_")
    if split_by not in SPLIT_BY_OPTIONS:
        raise ValueError(f"split_by must be one of {', '.join(SPLIT_BY_OPTIONS)}, not {split_by!r}")
    root = require_dir(Path(root).expanduser(), "image folder")
    extensions = tuple(e.lower() for e in extensions)
    split_dirs = _split_folders(root)
    if split_by == "auto":
        split_by = "folders" if split_dirs else "none"
    if split_by == "folders" and not split_dirs:
        raise FileNotFoundError(f"image folder {root}: no split sub-folders (expected {root}/train/<class>/… and {root}/test/<class>/…)")

    # (split, key) per image, class name per image
    entries: list[tuple[str, str, str]] = []
    walk = _Walk(root, extensions)
    # every split and class folder is claimed before any is walked: a link from one class into another is then the
    # duplicate, never the class folder itself
    if split_by == "folders":
        tops = [(split_dir.lower(), root / split_dir, f"{split_dir}/") for split_dir in split_dirs if walk.enter(root / split_dir)]
    else:
        tops = [(split, root, "")]
    claimed = [(name, folder, prefix, _class_folders(folder, walk)) for name, folder, prefix in tops]
    for split_name, folder, prefix, class_dirs in claimed:
        for class_name, files in _class_files(folder, class_dirs, walk).items():
            entries += [(split_name, f"{prefix}{f}", class_name) for f in files]
    walk.report()
    if not entries:
        raise FileNotFoundError(
            f"image folder {root}: no images with extensions {', '.join(extensions)} in class sub-folders "
            f"(expected {root}/<class>/<image> or {root}/train/<class>/<image>)"
        )
    class_names = sorted({class_name for _, _, class_name in entries})
    label_of = {class_name: label for label, class_name in enumerate(class_names)}
    keys = np.asarray([key for _, key, _ in entries])
    labels = np.asarray([label_of[class_name] for _, _, class_name in entries], dtype=np.int64)
    splits = np.asarray([s for s, _, _ in entries])
    if split_by == "class_half":
        if len(class_names) < 2:
            raise ValueError(f"image folder {root}: split_by='class_half' needs at least 2 classes")
        splits = np.where(labels >= len(class_names) // 2, "test", "train")
    searched = splits != "train" if split_by in ("folders", "class_half") else np.ones(len(keys), dtype=bool)
    return ImageDataset(
        name=name or root.name,
        source=FileSource(root),
        ids=keys,
        keys=keys,
        labels=labels,
        splits=splits,
        is_query=searched,
        is_gallery=searched.copy(),
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
