"""New views of images for instance-level retrieval: deterministic per item, really different, same identity."""
from __future__ import annotations

import numpy as np
import pytest

from asymret.data.augment import ViewSource, camera_views


def test_views_are_deterministic_per_item_and_differ_from_the_original(tiny_dataset):
    views = camera_views(tiny_dataset, "strong", seed=3)
    assert views.ids.tolist() == tiny_dataset.ids.tolist() and views.labels.tolist() == tiny_dataset.labels.tolist()
    assert views.fingerprint() != tiny_dataset.fingerprint()
    assert views.fingerprint() != camera_views(tiny_dataset, "strong", seed=4).fingerprint()
    first = views.load(5)
    assert first.dtype == np.uint8 and first.shape == tiny_dataset.load(5).shape
    assert np.array_equal(first, views.load(5))  # the same view every time, whatever was loaded before
    assert np.array_equal(first, camera_views(tiny_dataset.subset([5, 6]), "strong", seed=3).load(0))  # not order-dependent
    differences = [np.abs(views.load(i).astype(int) - tiny_dataset.load(i).astype(int)).mean() for i in range(10)]
    assert min(differences) > 1.0  # every view changes the image
    assert not np.array_equal(views.load(5), camera_views(tiny_dataset, "strong", seed=4).load(5))


def test_a_view_needs_an_augmentation(tiny_dataset):
    with pytest.raises(ValueError, match="changes the image"):
        ViewSource(tiny_dataset.source, "none")


def test_a_view_bank_holds_the_image_then_fixed_augmented_views(tiny_dataset):
    from asymret.data.augment import view_bank

    bank = view_bank(tiny_dataset, "strong", views=3, seed=0)
    n = len(tiny_dataset)
    assert len(bank) == 3 * n
    assert bank.ids[:n].tolist() == tiny_dataset.ids.tolist()  # view 0 keeps the plain ids: it reuses their embeddings
    assert bank.ids[n + 4] == f"{tiny_dataset.ids[4]}~v1" and bank.ids[2 * n + 4] == f"{tiny_dataset.ids[4]}~v2"
    assert bank.labels.tolist() == tiny_dataset.labels.tolist() * 3
    assert np.array_equal(bank.load(4), tiny_dataset.load(4))
    first, second = bank.load(n + 4), bank.load(2 * n + 4)
    assert first.shape == tiny_dataset.load(4).shape and not np.array_equal(first, second)
    assert np.abs(first.astype(int) - tiny_dataset.load(4).astype(int)).mean() > 1.0
    again = view_bank(tiny_dataset, "strong", views=3, seed=0)
    assert again.fingerprint() == bank.fingerprint() and np.array_equal(again.load(n + 4), first)
    assert view_bank(tiny_dataset, "strong", views=3, seed=1).fingerprint() != bank.fingerprint()
    assert view_bank(tiny_dataset, "strong", views=1) is tiny_dataset
    with pytest.raises(ValueError, match="changes the image"):
        view_bank(tiny_dataset, "none", views=2)
