"""What goes into a gallery index, and making one: the gallery's vectors in the query model's space (the query
model's own, one gallery model already in that space, or a CMCE ensemble of gallery models through their ψ — from
the store, with or without the gallery models), then an index of any backend from its spec string, its search
parameter tuned for a target recall if asked — what ``asymret build-index`` runs."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..compat.transform import CMCETransform
from ..core.space import Embeddings, Space
from ..data.dataset import ImageDataset
from ..encoders.encoder import Encoder
from ..encoders.onnx import OnnxEncoder
from ..gallery.ensemble import CMCEEnsemble
from ..store.embeddings import EmbeddingStore
from ..store.query import query_embeddings
from .backends import IndexSpec, create_index
from .base import GalleryIndexBase

__all__ = ["assemble_gallery", "build_index", "gallery_from_store"]


def assemble_gallery(
    store: EmbeddingStore,
    data: ImageDataset,
    query_model: Encoder | OnnxEncoder,
    gallery_models: Sequence[Encoder] = (),
    transforms: Sequence[CMCETransform] = (),
) -> tuple[Embeddings, np.ndarray | None, Space]:
    """The gallery ``data`` as vectors of ``query_model``'s space, their uncertainty (None unless an ensemble) and
    that space.

    No gallery model and no ψ: the query model embeds the gallery itself (the symmetric setting).  One gallery
    model without ψ: it must embed into the query space already (e.g. the gallery model a query model was
    compatibility-trained against).  Gallery models with one ψ each: the CMCE ensemble of their mapped embeddings.
    ψ's alone: the gallery models' embeddings are read from the store (adding or dropping a gallery model
    re-embeds nothing).  Any space other than the query model's is refused.
    """
    query_space = query_model.space()
    if gallery_models and transforms and len(gallery_models) != len(transforms):
        raise ValueError(f"{len(gallery_models)} gallery models but {len(transforms)} transformations: one ψ per gallery model")
    if len(gallery_models) > 1 and not transforms:
        raise ValueError("several gallery models without transformations: an ensemble needs one ψ per gallery model")
    uncertainty = None
    if gallery_models and not transforms:  # one model alone: it must already embed into the query space
        single = gallery_models[0]
        single.space().check_compatible(query_space, f"{single.name}'s embeddings (no transformation given)")
        gallery, space = store.get(single, data), single.space()
    elif gallery_models:  # one ψ per gallery model: the CMCE ensemble of their mapped embeddings
        ensemble = CMCEEnsemble(list(transforms))
        ensemble.space.check_compatible(query_space, "the query model's embeddings")
        gallery, uncertainty = ensemble.transform([store.get(model, data) for model in gallery_models])
        space = ensemble.space
    elif transforms:  # no forward pass: each ψ names its source space, the store holds that space's embeddings
        gallery, uncertainty, space = gallery_from_store(store, transforms, data)
        space.check_compatible(query_space, "the query model's embeddings")
    else:
        gallery, space = query_embeddings(store, query_model, data), query_space
    return gallery, uncertainty, space


def gallery_from_store(
    store: EmbeddingStore, transforms: Sequence[CMCETransform], data: ImageDataset
) -> tuple[Embeddings, np.ndarray | None, Space]:
    """The CMCE gallery of ``data``'s images from the stored embeddings of each ψ's source model — no gallery model
    runs, none is needed (a query-model upgrade, adding or dropping one gallery model).

    Returns the ensemble embeddings, their uncertainty (None for one ψ) and the ensemble's space.  Raises
    ``FileNotFoundError`` naming what to embed when a ψ's source embeddings are not in the store.
    """
    ensemble = CMCEEnsemble(list(transforms))
    stored = [store.find(psi.source_space.fingerprint, data) for psi in ensemble.transforms]
    vectors, uncertainty = ensemble.transform(stored)
    return vectors, uncertainty, ensemble.space


def build_index(spec: str | IndexSpec, gallery: Embeddings, uncertainty: np.ndarray | None = None,
                target_recall: float | None = None, **options: Any) -> tuple[GalleryIndexBase, dict[str, Any] | None]:
    """An index of ``spec`` (e.g. ``faiss:IVF256,PQ16``, ``exact``, ``milvus:HNSW``; ``options`` are the backend's
    own, see :func:`asymret.index.backends.create_index`) holding ``gallery``; with ``target_recall``, its search
    parameter tuned on gallery vectors (:func:`asymret.index.tuning.tune_on_gallery`: ``None`` where there is
    nothing to tune).  Returns the index and the tuning's choice."""
    if len(gallery) == 0:  # an index of nothing answers every query with nothing, and its metrics are NaN
        raise ValueError("the gallery holds no images to index (every image unreadable, or none in the gallery role): "
                         "refusing to build an index of 0 items")
    index = create_index(spec, gallery.space, **options)
    index.add(gallery, uncertainty)
    tuning = None
    if target_recall is not None:
        from .tuning import tune_on_gallery

        tuning = tune_on_gallery(index, gallery, target_recall)
    return index, tuning
