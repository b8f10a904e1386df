"""One trainer for "frozen gallery model(s) → trainable query model"; a compatibility method is just its loss.

The teacher (the frozen gallery side) is either
- cached :class:`~asymret.space.Embeddings` of the training images (from the embedding store): fast, the default
  for distillation, BCT, AML, CSD, ROP; or
- an :class:`~asymret.encoders.Encoder` run online on the *same augmented view* as the student, each at its own
  resolution (coupled augmentation, as RAML needs).
Neighbourhood losses get a ``bank``: frozen gallery-space embeddings (e.g. of the training set).
"""
from __future__ import annotations

import numpy as np
import torch

from ..data.dataset import ImageDataset
from ..encoders.encoder import Encoder
from ..encoders.train import augment, load_tensors
from ..manifest import SpaceMismatchError
from ..space import Embeddings
from ..training import TrainConfig, TrainHistory, batch_indices, train
from .losses.base import CompatLoss


def train_query_model(
    query: Encoder,
    dataset: ImageDataset,
    teacher: Embeddings | Encoder,
    loss: CompatLoss,
    config: TrainConfig,
    bank: Embeddings | None = None,
    use_augmentation: bool | None = None,
    method: str = "",
) -> TrainHistory:
    """Train ``query`` (in place) so that its embeddings land in the teacher's space under ``loss``.

    ``use_augmentation`` defaults to True for an online teacher (coupled augmentation) and False for cached
    teacher embeddings (which were computed on un-augmented images).
    """
    online = isinstance(teacher, Encoder)
    teacher_space = teacher.space() if online else teacher.space
    if teacher_space.dim != query.embedding_dim:
        raise SpaceMismatchError(
            f"query model {query.name} embeds in {query.embedding_dim}-d but the gallery model's space is {teacher_space.dim}-d: "
            "compatibility training needs equal dimensions (create the query encoder with embedding_dim="
            f"{teacher_space.dim})"
        )
    if bank is not None:
        teacher_space.check_compatible(bank.space, what="the feature bank")
    if use_augmentation is None:
        use_augmentation = online
    images, labels, rows = load_tensors(dataset, teacher.preprocess if online else query.preprocess)
    bank_tensor = None if bank is None else torch.from_numpy(bank.vectors)
    if online:
        teacher.eval().requires_grad_(False)
        teacher_vectors = None
    else:
        teacher_vectors = torch.from_numpy(teacher.align(dataset.ids[rows]).vectors)
    generator = torch.Generator().manual_seed(config.seed + 1)
    query.requires_grad_(True)

    def compute_loss(batch_rows: torch.Tensor) -> torch.Tensor:
        x = images[batch_rows]
        if use_augmentation:
            x = augment(x, generator)
        if online:
            with torch.no_grad():
                target = teacher(x)
            x = teacher.preprocess.convert(x, query.preprocess)
        else:
            target = teacher_vectors[batch_rows]
        return loss(query(x), target, labels[batch_rows] if loss.uses_labels else None, bank_tensor)

    params = list(query.parameters()) + [p for p in loss.parameters() if p.requires_grad]
    history = train(params, compute_loss, lambda epoch, gen: batch_indices(len(images), config.batch_size, gen), config,
                    modules=[query, loss], description=f"train {query.name} ({method or type(loss).__name__})")
    query.requires_grad_(False)
    query.eval()
    query.config["compat_training"] = {
        **config.to_dict(), "method": method or type(loss).__name__, "teacher_space": teacher_space.to_dict(),
        "dataset_fingerprint": dataset.fingerprint(), "online_teacher": online, "augmentation": bool(use_augmentation),
    }
    return history
