"""Metric-learning retrieval benchmarks in their official on-disk layouts.

- CUB-200-2011 (``images.txt``, ``image_class_labels.txt``, ``classes.txt``, ``images/``)
- Cars196 (``cars_annos.mat`` + ``car_ims/``)
- Stanford Online Products (``Ebay_train.txt``, ``Ebay_test.txt``)
- In-Shop Clothes Retrieval (``list_eval_partition.txt`` + ``img/``)

All follow the usual zero-shot protocol: train and test classes are disjoint, and in the test split every
image is a query against all other test images (In-Shop instead has explicit query and gallery sets).
Item ids are the image paths as written in the benchmark's files, which are stable across machines.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._common import (
    DatasetFormatError,
    check_unique,
    contiguous_labels,
    find_root,
    parse_int,
    read_rows,
    require_dir,
    require_file,
)
from .dataset import FileSource, ImageDataset


def _class_split(class_ids: np.ndarray, train_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(splits, is_test) for the class-disjoint protocol: class ids ``<= train_classes`` train, others test."""
    is_test = class_ids > train_classes
    return np.where(is_test, "test", "train"), is_test


# ---------------------------------------------------------------------------------------------- CUB-200-2011
def load_cub200(root: str | os.PathLike, train_classes: int = 100) -> ImageDataset:
    """CUB-200-2011 birds (11,788 images, 200 classes) from the official ``CUB_200_2011`` folder.

    ``root`` may be the ``CUB_200_2011`` folder itself or its parent.  Reads ``images.txt``
    (``<image_id> <relpath>``), ``image_class_labels.txt`` (``<image_id> <class_id>``, 1-based) and, if present,
    ``classes.txt`` (``<class_id> <name>``); images are ``images/<relpath>``.  Labels are ``class_id - 1``.
    Protocol: classes ``1..train_classes`` (default 100) are split ``"train"``, the rest ``"test"``; test images
    are query and gallery.  Ids and keys are the relpaths from ``images.txt``.
    """
    what = "CUB-200-2011"
    root = find_root(root, "images.txt", ["CUB_200_2011"], what)
    images_txt = root / "images.txt"
    labels_txt = require_file(root / "image_class_labels.txt", what)
    image_dir = require_dir(root / "images", what)

    image_ids, paths, numbers = [], [], []
    for number, (image_id, relpath) in read_rows(images_txt, 2):
        image_ids.append(parse_int(image_id, images_txt, number, "image_id"))
        paths.append(relpath)
        numbers.append(number)
    if not image_ids:
        raise DatasetFormatError(f"{images_txt}: no images listed")
    check_unique([str(i) for i in image_ids], images_txt, numbers, "image_id")
    check_unique(paths, images_txt, numbers, "image path")

    class_of: dict[int, int] = {}
    for number, (image_id, class_id) in read_rows(labels_txt, 2):
        key = parse_int(image_id, labels_txt, number, "image_id")
        value = parse_int(class_id, labels_txt, number, "class_id")
        if value < 1:
            raise DatasetFormatError(f"{labels_txt}:{number}: class_id must be >= 1, got {value}")
        if key in class_of:
            raise DatasetFormatError(f"{labels_txt}:{number}: duplicate image_id {key}")
        class_of[key] = value
    missing = [(i, n) for i, n in zip(image_ids, numbers) if i not in class_of]
    if missing:
        image_id, number = missing[0]
        raise DatasetFormatError(
            f"{labels_txt}: no class for image_id {image_id} ({images_txt}:{number}); "
            f"{len(missing)} image(s) without a class"
        )
    class_ids = np.asarray([class_of[i] for i in image_ids], dtype=np.int64)

    names: dict[int, str] = {}
    classes_txt = root / "classes.txt"
    if classes_txt.is_file():
        for number, (class_id, class_name) in read_rows(classes_txt, 2):
            names[parse_int(class_id, classes_txt, number, "class_id")] = class_name
    else:  # fall back on the image folder names ("001.Black_footed_Albatross/...")
        for class_id, relpath in zip(class_ids.tolist(), paths):
            names.setdefault(class_id, relpath.split("/")[0])
    num_classes = max(int(class_ids.max()), max(names, default=0))
    class_names = [names.get(c, str(c)) for c in range(1, num_classes + 1)]

    splits, is_test = _class_split(class_ids, train_classes)
    return ImageDataset(
        name="cub200",
        source=FileSource(image_dir),
        ids=np.asarray(paths),
        keys=np.asarray(paths),
        labels=class_ids - 1,
        splits=splits,
        is_query=is_test,
        is_gallery=is_test,
        class_names=class_names,
    )


# ---------------------------------------------------------------------------------------------- Cars196
def _mat_text(value) -> str:
    """A MATLAB string as loaded by scipy (str, or a 0-d/1-element array of str)."""
    array = np.asarray(value)
    return str(array.item() if array.size == 1 else "".join(array.ravel().tolist()))


def load_cars196(root: str | os.PathLike, train_classes: int = 98) -> ImageDataset:
    """Stanford Cars196 (16,185 images, 196 classes) from ``cars_annos.mat`` and ``car_ims/``.

    ``cars_annos.mat`` holds a struct array ``annotations`` with fields ``relative_im_path``
    (``car_ims/000001.jpg``, relative to ``root``), ``class`` (1..196) and ``test`` (the original
    classification split, ignored here), and optionally a cell array ``class_names``.  Labels are ``class - 1``.
    Protocol: classes ``1..train_classes`` (default 98) are split ``"train"``, the rest ``"test"``; test images
    are query and gallery.  Ids and keys are the ``relative_im_path`` values.
    """
    import scipy.io

    what = "Cars196"
    root = find_root(root, "cars_annos.mat", [], what)
    mat_path = root / "cars_annos.mat"
    try:
        mat = scipy.io.loadmat(mat_path, squeeze_me=True, struct_as_record=True)
    except Exception as error:  # scipy raises ValueError/TypeError/OSError variants for bad files
        raise DatasetFormatError(f"{mat_path}: cannot read MATLAB file: {error}") from error
    if "annotations" not in mat:
        raise DatasetFormatError(f"{mat_path}: no 'annotations' variable (has {sorted(k for k in mat if not k.startswith('__'))})")
    annotations = np.atleast_1d(mat["annotations"])
    fields = annotations.dtype.names or ()
    missing = [f for f in ("relative_im_path", "class") if f not in fields]
    if missing:
        raise DatasetFormatError(f"{mat_path}: 'annotations' lacks field(s) {', '.join(missing)} (has {', '.join(fields)})")
    if len(annotations) == 0:
        raise DatasetFormatError(f"{mat_path}: 'annotations' is empty")

    paths = [_mat_text(p) for p in annotations["relative_im_path"]]
    try:
        class_ids = np.asarray([int(np.asarray(c).item()) for c in annotations["class"]], dtype=np.int64)
    except (ValueError, TypeError) as error:
        raise DatasetFormatError(f"{mat_path}: annotations.class must hold integers: {error}") from error
    bad = np.flatnonzero(class_ids < 1)
    if len(bad):
        raise DatasetFormatError(f"{mat_path}: annotations({bad[0] + 1}).class is {class_ids[bad[0]]}, must be >= 1")
    check_unique(paths, mat_path, list(range(1, len(paths) + 1)), "relative_im_path (annotation index)")

    num_classes = int(class_ids.max())
    class_names = [str(c) for c in range(1, num_classes + 1)]
    if "class_names" in mat:
        names = [_mat_text(n) for n in np.atleast_1d(mat["class_names"])]
        class_names = names + class_names[len(names):]

    splits, is_test = _class_split(class_ids, train_classes)
    return ImageDataset(
        name="cars196",
        source=FileSource(root),
        ids=np.asarray(paths),
        keys=np.asarray(paths),
        labels=class_ids - 1,
        splits=splits,
        is_query=is_test,
        is_gallery=is_test,
        class_names=class_names,
    )


# ---------------------------------------------------------------------------------------------- SOP
SOP_HEADER = ["image_id", "class_id", "super_class_id", "path"]


def _check_header(path: Path, expected: list[str], line_number: int, line: str) -> None:
    if line.split() != expected:
        raise DatasetFormatError(f"{path}:{line_number}: expected header {' '.join(expected)!r}, got {line.strip()!r}")


def load_sop(root: str | os.PathLike) -> ImageDataset:
    """Stanford Online Products (120,053 images, 22,634 products) from ``Ebay_train.txt``/``Ebay_test.txt``.

    ``root`` may be the ``Stanford_Online_Products`` folder or its parent.  Each file has the header
    ``image_id class_id super_class_id path``; paths are relative to ``root``.  Splits are the files' (train
    and test products are disjoint); labels are the class ids remapped to ``0..C-1`` over both files in sorted
    order (``class_names`` holds the original class ids as strings).  Test images are query and gallery.
    """
    what = "Stanford Online Products"
    root = find_root(root, "Ebay_train.txt", ["Stanford_Online_Products"], what)
    paths, class_ids, splits, numbers, files = [], [], [], [], []
    for split, filename in (("train", "Ebay_train.txt"), ("test", "Ebay_test.txt")):
        path = require_file(root / filename, what)
        with open(path, "r", encoding="utf-8") as handle:
            _check_header(path, SOP_HEADER, 1, handle.readline())
        count = 0
        for number, (_, class_id, _, relpath) in read_rows(path, 4, skip=1):
            class_ids.append(parse_int(class_id, path, number, "class_id"))
            paths.append(relpath)
            splits.append(split)
            numbers.append(number)
            files.append(path)
            count += 1
        if count == 0:
            raise DatasetFormatError(f"{path}: no images listed")
    seen: dict[str, int] = {}
    for i, relpath in enumerate(paths):
        if relpath in seen:
            first = seen[relpath]
            raise DatasetFormatError(
                f"{files[i]}:{numbers[i]}: duplicate path {relpath!r} (first at {files[first]}:{numbers[first]})"
            )
        seen[relpath] = i

    labels, unique = contiguous_labels(class_ids)
    split_array = np.asarray(splits)
    is_test = split_array == "test"
    return ImageDataset(
        name="sop",
        source=FileSource(root),
        ids=np.asarray(paths),
        keys=np.asarray(paths),
        labels=labels,
        splits=split_array,
        is_query=is_test,
        is_gallery=is_test,
        class_names=[str(c) for c in unique],
    )


# ---------------------------------------------------------------------------------------------- In-Shop
INSHOP_HEADER = ["image_name", "item_id", "evaluation_status"]
INSHOP_STATUSES = ("train", "query", "gallery")


def load_inshop(root: str | os.PathLike) -> ImageDataset:
    """In-Shop Clothes Retrieval (52,712 images, 7,982 items) from ``list_eval_partition.txt``.

    The file's line 1 is the image count, line 2 the header ``image_name item_id evaluation_status``, then one
    row per image with status ``train``, ``query`` or ``gallery``.  ``root`` may hold the file directly or in
    ``Eval/``; images (``img/...`` paths) are looked up under the folder holding the partition file, its parent,
    or their ``Img/`` sub-folder, whichever contains the paths' top folder.  Split ``"train"`` for train rows and
    ``"test"`` for query and gallery rows (``is_query``/``is_gallery`` from the status).  Labels are item ids
    remapped to ``0..C-1`` in sorted order (``class_names`` holds the item ids).
    """
    what = "In-Shop"
    root = Path(root).expanduser()
    base = find_root(root, "list_eval_partition.txt", ["Eval", "In-shop Clothes Retrieval Benchmark/Eval"], what)
    partition = base / "list_eval_partition.txt"

    with open(partition, "r", encoding="utf-8") as handle:
        first = handle.readline()
        second = handle.readline()
    expected_count = parse_int(first.strip(), partition, 1, "image count")
    _check_header(partition, INSHOP_HEADER, 2, second)

    paths, items, statuses, numbers = [], [], [], []
    for number, (image_name, item_id, status) in read_rows(partition, 3, skip=2):
        if status not in INSHOP_STATUSES:
            raise DatasetFormatError(
                f"{partition}:{number}: evaluation_status must be one of {', '.join(INSHOP_STATUSES)}, got {status!r}"
            )
        paths.append(image_name)
        items.append(item_id)
        statuses.append(status)
        numbers.append(number)
    if len(paths) != expected_count:
        raise DatasetFormatError(f"{partition}: line 1 announces {expected_count} images but {len(paths)} are listed")
    if not paths:
        raise DatasetFormatError(f"{partition}: no images listed")
    check_unique(paths, partition, numbers, "image_name")

    top = paths[0].split("/")[0]
    candidates = [base, base.parent, base / "Img", base.parent / "Img"]
    image_root = next((c for c in candidates if (c / top).exists()), None)
    if image_root is None:
        raise FileNotFoundError(
            f"{what}: missing image folder {top!r} (looked in {', '.join(str(c) for c in candidates)})"
        )

    status_array = np.asarray(statuses)
    labels, unique = contiguous_labels(items)
    return ImageDataset(
        name="inshop",
        source=FileSource(image_root),
        ids=np.asarray(paths),
        keys=np.asarray(paths),
        labels=labels,
        splits=np.where(status_array == "train", "train", "test"),
        is_query=status_array == "query",
        is_gallery=status_array == "gallery",
        class_names=[str(u) for u in unique],
    )
