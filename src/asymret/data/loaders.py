"""One entry point for every dataset loader: ``load_dataset(kind, root, **kwargs)``."""
from __future__ import annotations

import os
from typing import Any, Callable

from ._common import DatasetFormatError
from .benchmarks import load_cars196, load_cub200, load_inshop, load_sop
from .dataset import ImageDataset
from .fashion_mnist import DEFAULT_FASHION_MNIST_ROOT, load_fashion_mnist, read_idx
from .folder import load_csv_manifest, load_image_folder

__all__ = [
    "DATASET_LOADERS",
    "DatasetFormatError",
    "load_cars196",
    "load_csv_manifest",
    "load_cub200",
    "load_dataset",
    "load_fashion_mnist",
    "load_image_folder",
    "load_inshop",
    "load_sop",
    "read_idx",
]


def _csv(root: str | os.PathLike, image_root: str | os.PathLike | None = None, **kwargs: Any) -> ImageDataset:
    """``root`` is the CSV file; ``image_root`` (optional) the folder its paths are relative to."""
    return load_csv_manifest(root, root=image_root, **kwargs)


#: kind -> loader(root, **kwargs).  For ``"csv"`` the root is the CSV file (images: ``image_root=``).
DATASET_LOADERS: dict[str, Callable[..., ImageDataset]] = {
    "folder": load_image_folder,
    "csv": _csv,
    "fashion-mnist": load_fashion_mnist,
    "cub200": load_cub200,
    "cars196": load_cars196,
    "sop": load_sop,
    "inshop": load_inshop,
}

_ALIASES = {
    "imagefolder": "folder",
    "image-folder": "folder",
    "manifest": "csv",
    "fashion-mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "cub": "cub200",
    "cub-200": "cub200",
    "cub-200-2011": "cub200",
    "cars": "cars196",
    "cars-196": "cars196",
    "stanford-online-products": "sop",
    "in-shop": "inshop",
}

_DEFAULT_ROOTS = {"fashion-mnist": DEFAULT_FASHION_MNIST_ROOT}


def canonical_kind(kind: str) -> str:
    """The registry key for ``kind`` (case-insensitive, ``_`` = ``-``, common aliases); ValueError if unknown."""
    key = kind.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in DATASET_LOADERS:
        raise ValueError(f"unknown dataset kind {kind!r}; known kinds: {', '.join(DATASET_LOADERS)}")
    return key


def load_dataset(kind: str, root: str | os.PathLike | None = None, **kwargs: Any) -> ImageDataset:
    """Load a dataset of the given ``kind`` (one of :data:`DATASET_LOADERS`) from ``root``.

    ``root`` is the dataset folder, except for ``"csv"`` where it is the CSV file (pass ``image_root=`` for the
    images' folder).  It may be omitted only for ``"fashion-mnist"`` (default
    ``/usr/share/datasets/fashion-mnist``).  Extra keyword arguments go to the loader.
    """
    key = canonical_kind(kind)
    if root is None:
        if key not in _DEFAULT_ROOTS:
            what = "the CSV file" if key == "csv" else "the dataset folder"
            raise ValueError(f"dataset kind {key!r} needs root= ({what})")
        root = _DEFAULT_ROOTS[key]
    return DATASET_LOADERS[key](root, **kwargs)
