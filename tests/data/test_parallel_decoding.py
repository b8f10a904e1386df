"""Parallel image decoding (data/batches.py): threads give the tensors, rows and failures the main thread gives."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from asymret.data.batches import load_tensors, preprocessed_batches
from asymret.encoders.preprocess import Preprocess


@pytest.mark.parametrize("channels", [1, 3])
def test_threads_decode_the_same_tensors_in_order(image_dir_dataset, channels):
    preprocess = Preprocess(24, channels)
    batches = [range(0, 3), range(3, 7), range(7, len(image_dir_dataset))]
    reference = list(preprocessed_batches(image_dir_dataset, batches, preprocess, workers=0))
    for workers in (1, 3):
        threaded = list(preprocessed_batches(image_dir_dataset, batches, preprocess, workers=workers, ahead=2))
        assert len(threaded) == len(reference)
        for (t_ref, kept_ref, bad_ref), (t, kept, bad) in zip(reference, threaded):
            assert kept == kept_ref and bad == bad_ref
            assert torch.equal(t, t_ref)
    assert sum(len(bad) for _, _, bad in reference) == 1  # the corrupt file, reported once


def test_load_tensors_with_workers(image_dir_dataset):
    preprocess = Preprocess(20, 1)
    images0, labels0, rows0 = load_tensors(image_dir_dataset, preprocess, batch_size=3, workers=0)
    images2, labels2, rows2 = load_tensors(image_dir_dataset, preprocess, batch_size=3, workers=2)
    assert torch.equal(images0, images2) and torch.equal(labels0, labels2)
    np.testing.assert_array_equal(rows0, rows2)


def test_a_consumer_that_stops_early_does_not_hang(image_dir_dataset):
    batches = [[row] for row in range(len(image_dir_dataset))]
    stream = preprocessed_batches(image_dir_dataset, batches, Preprocess(16, 1), workers=2)
    first = next(stream)
    assert len(first[1]) + len(first[2]) == 1  # row 0: read, or reported unreadable
    stream.close()  # the pool shuts down, pending decoding is dropped
