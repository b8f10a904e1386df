"""A served index on loopback: a tiny query encoder, two index versions of different galleries, a live server.

- ``service_files``: the encoder folder (an untrained convnet-xs, 16-d — the service's behaviour, not accuracy, is
  tested), index A over the tiny test split's gallery, index B over its train split (other ids), and an index of a
  *foreign* space (another encoder) — every one with per-item uncertainty.
- ``make_live_server``: an application under a real uvicorn on 127.0.0.1 (a free port), in a thread.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from asymret.core.space import Embeddings
from asymret.encoders import create_encoder
from asymret.index import GalleryIndex
from asymret.service.server import BackgroundServer

@dataclass
class ServiceFiles:
    encoder: Path
    index_a: Path
    index_b: Path
    foreign_index: Path
    gallery: object  # ImageDataset of index A's items
    everything: object  # the whole tiny dataset (thumbnails for both versions)
    ids_a: set
    ids_b: set


def build_index(encoder, dataset, directory: Path, seed: int) -> set:
    vectors = encoder.embed_images([dataset.load(i) for i in range(len(dataset))])
    uncertainty = np.random.default_rng(seed).uniform(0.1, 1.0, len(dataset)).astype(np.float32)
    index = GalleryIndex(encoder.space())
    index.add(Embeddings(vectors, dataset.ids, encoder.space()), uncertainty)
    index.save(directory)
    return set(dataset.ids.tolist())


@pytest.fixture(scope="session")
def service_files(tmp_path_factory, tiny_dataset) -> ServiceFiles:
    root = tmp_path_factory.mktemp("service")
    encoder = create_encoder("convnet-xs", embedding_dim=16, input_size=28, seed=0)
    encoder.save(root / "query")
    gallery = tiny_dataset.select(split="test", role="gallery")
    ids_a = build_index(encoder, gallery, root / "index-a", seed=1)
    ids_b = build_index(encoder, tiny_dataset.select(split="train"), root / "index-b", seed=2)
    other = create_encoder("convnet-xs", embedding_dim=16, input_size=28, seed=1)
    build_index(other, gallery, root / "index-foreign", seed=3)
    return ServiceFiles(root / "query", root / "index-a", root / "index-b", root / "index-foreign", gallery, tiny_dataset, ids_a, ids_b)


@pytest.fixture
def make_live_server():
    servers = []

    def start(app) -> BackgroundServer:
        servers.append(BackgroundServer(app))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()
