"""Fashion-MNIST from its four official gzip IDX files, held in memory as one uint8 array."""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ._common import DatasetFormatError, require_file
from .dataset import ArraySource, ImageDataset

DEFAULT_FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FASHION_MNIST_FILES = {
    ("train", "images"): "train-images-idx3-ubyte.gz",
    ("train", "labels"): "train-labels-idx1-ubyte.gz",
    ("test", "images"): "t10k-images-idx3-ubyte.gz",
    ("test", "labels"): "t10k-labels-idx1-ubyte.gz",
}
IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
_INSTALL_HINT = "install it with `apt-get install dataset-fashion-mnist` or pass root=<folder with the 4 .gz files>"


def read_idx(path: str | os.PathLike, expected_magic: int) -> np.ndarray:
    """The uint8 array stored in a (gzip-compressed if the name ends in ``.gz``) IDX file.

    Checks the magic number (2051 for images, 2049 for labels) and that the payload size matches the
    dimensions in the header (16-byte header for 3-D images, 8-byte for 1-D labels).
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                data = handle.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetFormatError(f"{path}: cannot read/decompress IDX file: {error}") from error
    if len(data) < 4:
        raise DatasetFormatError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    (magic,) = struct.unpack(">I", data[:4])
    if magic != expected_magic:
        raise DatasetFormatError(f"{path}: IDX magic number is {magic}, expected {expected_magic}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetFormatError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape, dtype=np.int64))
    if len(data) - header != expected:
        raise DatasetFormatError(
            f"{path}: IDX payload has {len(data) - header} bytes, header shape {tuple(shape)} needs {expected}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load_fashion_mnist(root: str | os.PathLike = DEFAULT_FASHION_MNIST_ROOT) -> ImageDataset:
    """Fashion-MNIST (70,000 28x28 grayscale images, 10 classes) as one in-memory dataset.

    Reads ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` from ``root``.  Splits: ``"train"`` (60,000
    rows, ids ``train/000000``...) and ``"test"`` (10,000 rows, ids ``test/000000``...); keys are row numbers
    of the concatenated array.  Retrieval protocol: every test image is a query against the rest of the test
    set, so test rows are both query and gallery; train rows are neither.  Nothing is cached on disk.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Fashion-MNIST: missing folder {root}; {_INSTALL_HINT}")
    images, labels, splits, ids = [], [], [], []
    for split in ("train", "test"):
        image_path = require_file(root / FASHION_MNIST_FILES[(split, "images")], "Fashion-MNIST", _INSTALL_HINT)
        label_path = require_file(root / FASHION_MNIST_FILES[(split, "labels")], "Fashion-MNIST", _INSTALL_HINT)
        split_images = read_idx(image_path, IDX_IMAGES_MAGIC)
        split_labels = read_idx(label_path, IDX_LABELS_MAGIC)
        if len(split_images) != len(split_labels):
            raise DatasetFormatError(
                f"Fashion-MNIST {split}: {image_path.name} has {len(split_images)} images but "
                f"{label_path.name} has {len(split_labels)} labels"
            )
        if len(split_labels) and int(split_labels.max()) >= len(FASHION_MNIST_CLASSES):
            raise DatasetFormatError(f"{label_path}: label {int(split_labels.max())} outside 0..9")
        images.append(split_images)
        labels.append(split_labels)
        splits.append(np.full(len(split_labels), split))
        ids.extend(f"{split}/{i:06d}" for i in range(len(split_labels)))
    if images[0].shape[1:] != images[1].shape[1:]:
        raise DatasetFormatError(f"Fashion-MNIST: train images {images[0].shape[1:]} and test images "
                                 f"{images[1].shape[1:]} differ in size")
    all_images = np.concatenate(images)
    all_splits = np.concatenate(splits)
    is_test = all_splits == "test"
    return ImageDataset(
        name="fashion-mnist",
        source=ArraySource(all_images, origin=f"fashion-mnist:{root.resolve()}"),
        ids=np.asarray(ids),
        keys=np.arange(len(all_images), dtype=np.int64),
        labels=np.concatenate(labels).astype(np.int64),
        splits=all_splits,
        is_query=is_test,
        is_gallery=is_test,
        class_names=list(FASHION_MNIST_CLASSES),
    )
