"""Shared tiny datasets for the core-module tests (encoders, store, compatibility, gallery).

- ``tiny_dataset``: 200 class-structured 28×28 grey images (4 classes: horizontal stripes, vertical stripes,
  diagonal stripes, one bright blob) in an :class:`ArraySource`, with a train split (160) and a test split (40,
  with query/gallery roles).  A tiny CNN learns the classes in a few epochs.
- ``image_dir_dataset``: a small folder of PNGs of mixed sizes (grey and RGB) plus one corrupt ``.png``, as a
  :class:`FileSource` dataset.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from asymret.data.dataset import ArraySource, FileSource, ImageDataset

os.environ.setdefault("ASYMRET_NO_PROGRESS", "1")

# The models here are tiny: one intra-op thread is faster than two fighting over a shared CPU, and results do not
# depend on the machine's core count.
torch.set_num_threads(int(os.environ.get("ASYMRET_TEST_THREADS", "1")))

@pytest.fixture(autouse=True)
def _package_logger_restored():
    """The package logger as it was before the test: a CLI test's ``setup_logging`` gives it a handler of its own and stops
    it propagating, which would hide its warnings from ``caplog`` in every test after (which ones pass would depend on
    the order tests run in)."""
    logger = logging.getLogger("asymret")
    propagate, level, handlers = logger.propagate, logger.level, list(logger.handlers)
    yield
    logger.propagate, logger.handlers[:] = propagate, handlers
    logger.setLevel(level)


TINY_CLASSES = 4
TINY_PER_CLASS = 50
TINY_ORIGIN = "tests:tiny-synthetic-v1"
CORRUPT_NAME = "broken.png"


def make_tiny_arrays(seed: int = 0, per_class: int = TINY_PER_CLASS, size: int = 28) -> dict[str, np.ndarray]:
    """Images, labels, ids, keys, splits and roles of the tiny dataset (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    images, labels = [], []
    for k in range(per_class):
        for c in range(TINY_CLASSES):
            phase = rng.uniform(0, 2 * np.pi)
            period = rng.uniform(5.0, 8.0)
            if c == 0:
                pattern = np.sin(2 * np.pi * yy / period + phase) > 0
            elif c == 1:
                pattern = np.sin(2 * np.pi * xx / period + phase) > 0
            elif c == 2:
                pattern = np.sin(2 * np.pi * (xx + yy) / (period * 1.4) + phase) > 0
            else:
                cy, cx = rng.uniform(8, size - 8, size=2)
                pattern = (yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(20, 50)
            pixels = 40 + 170 * pattern.astype(np.float32) + rng.normal(0, 25, size=(size, size))
            images.append(np.clip(pixels, 0, 255).astype(np.uint8))
            labels.append(c)
    n = len(images)
    labels = np.asarray(labels, dtype=np.int64)
    splits = np.where(np.arange(n) < int(0.8 * n), "train", "test")
    test_rows = np.flatnonzero(splits == "test")
    is_query = np.zeros(n, dtype=bool)
    is_query[test_rows[::4]] = True
    is_gallery = (splits == "test") & ~is_query
    return {
        "images": np.stack(images),
        "labels": labels,
        "ids": np.array([f"img{i:04d}" for i in range(n)]),
        "keys": np.arange(n),
        "splits": splits,
        "is_query": is_query,
        "is_gallery": is_gallery,
    }


def dataset_from_arrays(arrays: dict[str, np.ndarray], name: str = "tiny") -> ImageDataset:
    return ImageDataset(
        name=name,
        source=ArraySource(arrays["images"], origin=TINY_ORIGIN),
        ids=arrays["ids"],
        keys=arrays["keys"],
        labels=arrays["labels"],
        splits=arrays["splits"],
        is_query=arrays["is_query"],
        is_gallery=arrays["is_gallery"],
    )


@pytest.fixture(scope="session")
def tiny_arrays() -> dict[str, np.ndarray]:
    return make_tiny_arrays()


@pytest.fixture(scope="session")
def tiny_dataset(tiny_arrays) -> ImageDataset:
    """Shared by every test: treat as read-only (``subset``/``select`` give new views)."""
    return dataset_from_arrays(tiny_arrays)


@pytest.fixture(scope="session")
def tiny_train(tiny_dataset) -> ImageDataset:
    return tiny_dataset.select(split="train")


def write_png_folder(root: Path, count: int = 7, seed: int = 3) -> list[str]:
    """``count`` small PNGs (mixed sizes, grey and RGB) and one garbage ``broken.png``; returns sorted relpaths."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(count):
        h, w = (20 + 3 * k, 28 - k) if k % 2 else (28, 28)
        shape = (h, w) if k % 3 == 0 else (h, w, 3)
        pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
        name = f"img{k:02d}.png"
        Image.fromarray(pixels).save(root / name)
        names.append(name)
    (root / CORRUPT_NAME).write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png \x00\x01\x02" * 3)
    names.append(CORRUPT_NAME)
    return sorted(names)


@pytest.fixture
def image_dir_dataset(tmp_path) -> ImageDataset:
    root = tmp_path / "pngs"
    names = write_png_folder(root)
    n = len(names)
    return ImageDataset(
        name="pngs",
        source=FileSource(root, mode="L"),
        ids=[Path(name).stem for name in names],
        keys=names,
        labels=np.arange(n) % 2,
        splits=["test"] * n,
        is_query=np.zeros(n, dtype=bool),
        is_gallery=np.ones(n, dtype=bool),
    )


@pytest.fixture
def png_folder_writer():
    """:func:`write_png_folder` for tests that need their own folder (conftest cannot be imported: importlib mode)."""
    return write_png_folder
