"""One entry point for every dataset loader: ``load_dataset(kind, root, **kwargs)``."""
from __future__ import annotations

import os
from typing import Any, Callable

from ..core.registry import Registry
from ._common import DatasetFormatError
from .benchmarks import load_cars196, load_cub200, load_inshop, load_sop
from .dataset import ImageDataset
from .fashion_mnist import DEFAULT_FASHION_MNIST_ROOT, load_fashion_mnist, read_idx
from .folder import load_csv_manifest, load_image_folder
from .glyphs import load_glyphs
from .icons import load_icons

__all__ = [
    "DATASET_LOADERS",
    "DatasetFormatError",
    "load_cars196",
    "load_csv_manifest",
    "load_cub200",
    "load_dataset",
    "load_fashion_mnist",
    "load_glyphs",
    "load_image_folder",
    "load_inshop",
    "load_sop",
    "read_idx",
]


def _csv(root: str | os.PathLike, image_root: str | os.PathLike | None = None, name: str | None = None,
         check_files: bool = False) -> ImageDataset:
    """``root`` is the CSV file; ``image_root`` (optional) the folder its paths are relative to."""
    return load_csv_manifest(root, root=image_root, name=name, check_files=check_files)


#: kind → loader(root, **kwargs).  For ``"csv"`` the root is the CSV file (images: ``image_root=``).
DATASET_LOADERS: Registry[Callable[..., ImageDataset]] = Registry("dataset kind")
DATASET_LOADERS.register("folder", load_image_folder, aliases=("imagefolder", "image-folder"))
DATASET_LOADERS.register("csv", _csv, aliases=("manifest",))
DATASET_LOADERS.register("fashion-mnist", load_fashion_mnist, aliases=("fashionmnist", "fmnist"),
                         default_root=DEFAULT_FASHION_MNIST_ROOT)
DATASET_LOADERS.register("cub200", load_cub200, aliases=("cub", "cub-200", "cub-200-2011"))
DATASET_LOADERS.register("cars196", load_cars196, aliases=("cars", "cars-196"))
DATASET_LOADERS.register("sop", load_sop, aliases=("stanford-online-products",))
DATASET_LOADERS.register("inshop", load_inshop, aliases=("in-shop",))
DATASET_LOADERS.register("glyphs", load_glyphs, aliases=("cjk-glyphs",), default_root=None, builds_itself=True)
DATASET_LOADERS.register("icons", load_icons, aliases=("icon-themes", "freedesktop-icons"), default_root=None,
                         builds_itself=True)


def canonical_kind(kind: str) -> str:
    """The registry key for ``kind`` (case-insensitive, ``_`` = ``-``, common aliases); ValueError if unknown."""
    return DATASET_LOADERS.key(kind)


def load_dataset(kind: str, root: str | os.PathLike | None = None, **kwargs: Any) -> ImageDataset:
    """Load a dataset of the given ``kind`` (one of :data:`DATASET_LOADERS`) from ``root``.

    ``root`` is the dataset folder, except for ``"csv"`` where it is the CSV file (pass ``image_root=`` for the
    images' folder).  It may be omitted only for ``"fashion-mnist"`` (default
    ``/usr/share/datasets/fashion-mnist``).  Extra keyword arguments go to the loader.
    """
    key = canonical_kind(kind)
    if root is None and not DATASET_LOADERS.meta[key].get("builds_itself"):
        root = DATASET_LOADERS.meta[key].get("default_root")
        if root is None:
            what = "the CSV file" if key == "csv" else "the dataset folder"
            raise ValueError(f"dataset kind {key!r} needs root= ({what})")
    try:
        return DATASET_LOADERS.create(key, root=root, **kwargs)
    except TypeError as error:
        raise ValueError(str(error)) from None
