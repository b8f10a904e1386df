"""Query-model upgrade without re-embedding the gallery.

The CMCE paper's model-upgrade scenario: the gallery side keeps each gallery model's *raw* embeddings in the
store.  A new query model then needs only new transformations ψ_i, fitted from those stored embeddings to the new
query model's embeddings of the training images, and an index rebuilt from the stored gallery embeddings — no
gallery-model forward pass, not even a gallery model on the machine.  Adding or dropping one gallery model is the
same rebuild with one ψ more or less.

Everything is found through the spaces the artifacts name: a ψ records its source space, the store finds that
space's embeddings (:func:`asymret.index.build.gallery_from_store`).  The new query model may be a torch encoder or
an exported ONNX one: only its embeddings of the training images are needed, unless a ψ's loss needs its classifier.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from ..compat.transform import CMCETransform
from ..core.progress import log
from ..data.dataset import ImageDataset
from ..encoders.encoder import Encoder
from ..encoders.onnx import OnnxEncoder
from ..index.base import GalleryIndexBase
from ..index.build import assemble_gallery, build_index
from ..store.embeddings import EmbeddingStore
from ..store.query import query_embeddings

__all__ = ["UpgradeReport", "refit_transform", "upgrade_query"]

_HEAD_LOSSES = ("kl", "dual-ce")  # the ψ losses that go through the query model's classifier


@dataclass
class UpgradeReport:
    """The new transformations and index, and where the time went (seconds)."""

    transforms: list[CMCETransform]
    index: GalleryIndexBase
    seconds: dict[str, float] = field(default_factory=dict)


def refit_transform(previous: CMCETransform, query_model: Encoder | OnnxEncoder) -> CMCETransform:
    """An unfitted ψ with ``previous``'s settings (kind, size, losses, training) that targets ``query_model``."""
    losses = dict(previous.loss_weights)
    head_losses = [name for name in losses if name in _HEAD_LOSSES]
    if head_losses and isinstance(query_model, OnnxEncoder):  # an export keeps the embedding, not the classifier
        raise ValueError(
            f"ψ {previous.name!r} was fitted with the {', '.join(head_losses)} loss, which needs the query model's "
            f"classifier head, and an exported ONNX model ({query_model.name}) has none: give the torch query model folder"
        )
    if head_losses and query_model.classifier is None:
        raise ValueError(
            f"ψ {previous.name!r} was fitted with the {', '.join(head_losses)} loss, which needs "
            f"the query model's classifier, but {query_model.name} has none (train it with asymret train-encoder)"
        )
    head = query_model.classifier if head_losses and isinstance(query_model, Encoder) else None
    return CMCETransform(replace(previous.settings, losses=losses), head=head, name=previous.name, train=previous.train_config)


def upgrade_query(
    store: EmbeddingStore,
    transforms: Sequence[CMCETransform],
    query_model: Encoder | OnnxEncoder,
    train: ImageDataset,
    gallery: ImageDataset,
    factory: str = "Flat",
    transforms_out: str | os.PathLike | None = None,
    index_out: str | os.PathLike | None = None,
) -> UpgradeReport:
    """Serve ``query_model`` from the same gallery: new ψ_i fitted on stored embeddings, index rebuilt.

    ``transforms`` are the current ψ_i (their settings are reused, their source spaces say which stored
    embeddings to read).  Only ``query_model`` runs — a torch encoder through the store (cached), or an exported
    ONNX one by onnxruntime — on the training images, to fit against; the gallery models' embeddings of ``train``
    and ``gallery`` must be in ``store``.  With ``transforms_out``/``index_out`` the new ψ_i (as
    ``transforms_out/<i>``) and the index are saved, once the index is built (a refusal — e.g. a gallery of 0
    readable images — writes nothing).
    """
    if not transforms:
        raise ValueError("upgrade_query needs the current transformations ψ_i (one per gallery model)")
    refitted = [refit_transform(previous, query_model) for previous in transforms]  # refused before anything runs
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    query_train = query_embeddings(store, query_model, train)
    seconds["embed_training_images_with_query_model"] = time.perf_counter() - start

    t0 = time.perf_counter()
    for previous, psi in zip(transforms, refitted):
        psi.fit(store.find(previous.source_space.fingerprint, train), query_train)
        log.info("refitted %s to %s", psi.name or previous.source_space.name, query_model.name)
    seconds["fit_transforms"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    vectors, uncertainty, _ = assemble_gallery(store, gallery, query_model, transforms=refitted)
    index, _ = build_index(f"faiss:{factory}", vectors, uncertainty)
    seconds["build_index"] = time.perf_counter() - t0
    if transforms_out is not None:
        for i, psi in enumerate(refitted):
            psi.save(Path(transforms_out) / f"{i}")
    if index_out is not None:
        index.save(index_out)
    seconds["total"] = time.perf_counter() - start
    return UpgradeReport(refitted, index, seconds)
