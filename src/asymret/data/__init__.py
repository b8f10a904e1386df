"""Datasets: one abstraction (:class:`ImageDataset`) and loaders for folders, CSV manifests and benchmarks."""
from .dataset import ArraySource, FileSource, ImageDataset, ImageLoadError, ImageSource
from .loaders import (
    DATASET_LOADERS,
    DatasetFormatError,
    load_cars196,
    load_csv_manifest,
    load_cub200,
    load_dataset,
    load_fashion_mnist,
    load_glyphs,
    load_image_folder,
    load_inshop,
    load_sop,
    read_idx,
)

__all__ = [
    "ArraySource",
    "FileSource",
    "ImageDataset",
    "ImageLoadError",
    "ImageSource",
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
