"""Datasets of different sources as one (labelled training images beside unlabelled ones)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from asymret.data import ArraySource, ImageDataset, concat_datasets
from asymret.data.augment import view_bank


def _array_dataset(name: str, images: np.ndarray, label: int) -> ImageDataset:
    n = len(images)
    return ImageDataset(name=name, source=ArraySource(images, origin=name), ids=[f"{name}/{i}" for i in range(n)],
                        keys=np.arange(n), labels=np.full(n, label), splits=["train"] * n, is_query=np.zeros(n, bool),
                        is_gallery=np.zeros(n, bool))


def test_concatenated_rows_load_their_own_pixels_whatever_the_source(tiny_dataset):
    rng = np.random.default_rng(0)
    other = _array_dataset("other", rng.integers(0, 256, (5, *tiny_dataset.load(0).shape), dtype=np.uint8), label=-1)
    first = tiny_dataset.subset(np.arange(7))
    both = concat_datasets([first, other])
    assert len(both) == 12 and both.ids.tolist() == first.ids.tolist() + other.ids.tolist()
    assert both.labels.tolist() == first.labels.tolist() + [-1] * 5
    for row in range(12):
        source, index = (first, row) if row < 7 else (other, row - 7)
        assert np.array_equal(both.load(row), source.load(index))
    # a bank of views over the concatenation reads through both sources too (keys "<view>|<part>|<key>")
    bank = view_bank(both, "light", 2)
    assert np.array_equal(bank.load(9), other.load(2)) and not np.array_equal(bank.load(12 + 9), other.load(2))
    # its identity depends on every part; one part alone is that part
    assert both.fingerprint() != concat_datasets([first, dataclasses.replace(other, labels=np.zeros(5))]).fingerprint()
    assert concat_datasets([first]) is first


def test_ids_must_stay_unique_across_parts(tiny_dataset):
    with pytest.raises(ValueError, match="not unique"):
        concat_datasets([tiny_dataset, tiny_dataset])
    with pytest.raises(ValueError, match="at least one"):
        concat_datasets([])
