"""A served index on loopback: a tiny query encoder, two index versions of different galleries, a live server.

- ``service_files``: the encoder folder (an untrained convnet-xs, 16-d — the service's behaviour, not accuracy, is
  tested), index A over the tiny test split's gallery, index B over its train split (other ids), and an index of a
  *foreign* space (another encoder) — every one with per-item uncertainty.
- ``live_server``: ``asymret serve``'s application under a real uvicorn on 127.0.0.1 (a free port), in a thread.
"""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from asymret.core.space import Embeddings
from asymret.encoders import create_encoder
from asymret.index import GalleryIndex

pytest.importorskip("fastapi", reason="the 'serve' extra (scripts/setup.sh installs it)")


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


class LiveServer:
    def __init__(self, app) -> None:
        import uvicorn

        with socket.socket() as probe:  # a free loopback port
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def make_live_server():
    servers = []

    def start(app) -> LiveServer:
        servers.append(LiveServer(app))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()
