"""Query-model upgrade without re-embedding the gallery, and galleries rebuilt from stored embeddings.

The CMCE paper's model-upgrade scenario: the gallery side keeps each gallery model's *raw* embeddings in the
store.  A new query model then needs only new transformations ψ_i, fitted from those stored embeddings to the new
query model's embeddings of the training images, and an index rebuilt from the stored gallery embeddings — no
gallery-model forward pass, not even a gallery model on the machine.  Adding or dropping one gallery model is the
same rebuild with one ψ more or less.

Everything is found through the spaces the artifacts name: a ψ records its source space, the store finds that
space's embeddings (:meth:`~asymret.store.embeddings.EmbeddingStore.find`).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from ..compat.transform import CMCETransform
from ..core.progress import log
from ..core.space import Embeddings, Space
from ..data.dataset import ImageDataset
from ..encoders.encoder import Encoder
from ..gallery.ensemble import CMCEEnsemble
from ..index.base import GalleryIndexBase
from ..store.embeddings import EmbeddingStore

__all__ = ["UpgradeReport", "gallery_from_store", "refit_transform", "upgrade_query"]


@dataclass
class UpgradeReport:
    """The new transformations and index, and where the time went (seconds)."""

    transforms: list[CMCETransform]
    index: GalleryIndexBase
    seconds: dict[str, float] = field(default_factory=dict)


def gallery_from_store(
    store: EmbeddingStore, transforms: Sequence[CMCETransform], gallery: ImageDataset
) -> tuple[Embeddings, np.ndarray | None, Space]:
    """The CMCE gallery of ``gallery``'s images from the stored embeddings of each ψ's source model.

    Returns the ensemble embeddings, their uncertainty (None for one ψ) and the index space.
    """
    ensemble = CMCEEnsemble(list(transforms))
    stored = [store.find(psi.source_space.fingerprint, gallery) for psi in ensemble.transforms]
    vectors, uncertainty = ensemble.transform(stored)
    return vectors, uncertainty, ensemble.space


def refit_transform(previous: CMCETransform, query_model: Encoder) -> CMCETransform:
    """An unfitted ψ with ``previous``'s settings (kind, size, losses, training) that targets ``query_model``."""
    losses = dict(previous.loss_weights)
    needs_head = any(name in losses for name in ("kl", "dual-ce"))
    if needs_head and query_model.classifier is None:
        raise ValueError(
            f"ψ {previous.name!r} was fitted with the {', '.join(n for n in losses if n != 'similarity')} loss, which needs "
            f"the query model's classifier, but {query_model.name} has none (train it with asymret train-encoder)"
        )
    return CMCETransform(replace(previous.settings, losses=losses), head=query_model.classifier if needs_head else None,
                         name=previous.name, train=previous.train_config)


def upgrade_query(
    store: EmbeddingStore,
    transforms: Sequence[CMCETransform],
    query_model: Encoder,
    train: ImageDataset,
    gallery: ImageDataset,
    factory: str = "Flat",
    transforms_out: str | os.PathLike | None = None,
    index_out: str | os.PathLike | None = None,
) -> UpgradeReport:
    """Serve ``query_model`` from the same gallery: new ψ_i fitted on stored embeddings, index rebuilt.

    ``transforms`` are the current ψ_i (their settings are reused, their source spaces say which stored
    embeddings to read).  Only ``query_model`` runs (on the training images, to fit against); the gallery models'
    embeddings of ``train`` and ``gallery`` must be in ``store``.  With ``transforms_out``/``index_out`` the new
    ψ_i (as ``transforms_out/<i>``) and the index are saved.
    """
    from ..index.faiss_index import FaissGalleryIndex

    if not transforms:
        raise ValueError("upgrade_query needs the current transformations ψ_i (one per gallery model)")
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    query_train = store.get(query_model, train)
    seconds["embed_training_images_with_query_model"] = time.perf_counter() - start

    refitted = []
    t0 = time.perf_counter()
    for i, previous in enumerate(transforms):
        psi = refit_transform(previous, query_model)
        psi.fit(store.find(previous.source_space.fingerprint, train), query_train)
        if transforms_out is not None:
            psi.save(Path(transforms_out) / f"{i}")
        refitted.append(psi)
        log.info("refitted %s to %s", psi.name or previous.source_space.name, query_model.name)
    seconds["fit_transforms"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    vectors, uncertainty, space = gallery_from_store(store, refitted, gallery)
    space.check_compatible(query_model.space(), "the upgraded query model's embeddings")
    index = FaissGalleryIndex(space, factory=factory)
    index.add(vectors, uncertainty)
    if index_out is not None:
        index.save(index_out)
    seconds["build_index"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - start
    return UpgradeReport(refitted, index, seconds)
