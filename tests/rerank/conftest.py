"""Shared by the re-ranker tests: a briefly trained encoder's global embeddings and local descriptors."""
from __future__ import annotations

import pytest

from asymret.encoders import create_encoder
from asymret.rerank import LocalSpec, stored_local
from asymret.store import EmbeddingStore


@pytest.fixture(scope="session")
def sides(tmp_path_factory, tiny_dataset):
    """Global embeddings and local descriptors of the tiny dataset under a briefly trained convnet."""
    from asymret.encoders import train_encoder
    from asymret.training import TrainConfig

    train_set, test_set = tiny_dataset.select(split="train"), tiny_dataset.select(split="test")
    encoder = create_encoder("convnet-s", embedding_dim=16, input_size=28, name="tiny", seed=0)
    train_encoder(encoder, train_set, TrainConfig(epochs=2, batch_size=32, lr=3e-3, seed=0))
    store = EmbeddingStore(tmp_path_factory.mktemp("store"))
    spec = LocalSpec(budget=12)
    return {split: (store.get(encoder, data), stored_local(store, encoder, data, spec))
            for split, data in (("train", train_set), ("test", test_set))}
