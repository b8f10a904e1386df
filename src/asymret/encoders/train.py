"""Supervised embedding training for encoders (normalised softmax from pytorch-metric-learning).

Two regimes, one loop (:func:`asymret.training.train`):
- full training: images → backbone → neck, with augmentation (``augmentation=``: a preset of
  :mod:`asymret.data.augment` or a config) and optionally class-balanced batches (``TrainConfig.m_per_class``);
- ``freeze_backbone=True``: the backbone's pooled features are extracted once (through the embedding store when
  one is given, so they are cached and resumable) and only the neck and the classifier are trained.  This is how
  a pretrained ImageNet backbone (EfficientNet-Lite) becomes a gallery model on 2 CPU cores.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from pytorch_metric_learning import losses as pml_losses

from ..data.dataset import ImageDataset
from ..data.augment import AugmentConfig, augment_batch, augment_config
from ..data.batches import load_tensors
from ..training import TrainConfig, TrainHistory, epoch_batches, seeded, train
from .encoder import Encoder
from .heads import CosineClassifier

if TYPE_CHECKING:  # the store sits above encoders in the flow; only its type is named here
    from ..store.embeddings import EmbeddingStore


def train_encoder(
    encoder: Encoder,
    dataset: ImageDataset,
    config: TrainConfig,
    freeze_backbone: bool = False,
    store: EmbeddingStore | None = None,
    temperature: float = 0.05,
    use_augmentation: bool = True,
    augmentation: str | AugmentConfig = "light",
) -> TrainHistory:
    """Train ``encoder`` (in place) with a normalised-softmax loss on ``dataset``'s labels.

    Afterwards ``encoder.classifier`` holds the learned class weights (a :class:`CosineClassifier`).
    """
    if len(dataset) == 0:
        raise ValueError("cannot train on an empty dataset")
    aug = augment_config(augmentation if use_augmentation else "none")
    augmenting = aug.enabled and not freeze_backbone  # cached frozen features cannot be augmented
    num_classes = int(dataset.labels.max()) + 1
    with seeded(config.seed):  # the class weights' initialisation
        loss_fn = pml_losses.NormalizedSoftmaxLoss(num_classes=num_classes, embedding_size=encoder.embedding_dim, temperature=temperature)

    if freeze_backbone:
        if store is not None:
            pooled = store.get(encoder, dataset, output="pooled")
            features = torch.from_numpy(pooled.vectors)
            labels = torch.as_tensor(pooled.labels)
        else:
            images, labels, _ = load_tensors(dataset, encoder.preprocess)
            with torch.no_grad():
                features = torch.cat([encoder.pooled(images[i : i + 256]) for i in range(0, len(images), 256)])
        encoder.backbone.requires_grad_(False)
        encoder.neck.requires_grad_(True)  # a previously trained encoder was left with requires_grad=False
        trainable = [encoder.neck]

        def compute_loss(rows: torch.Tensor) -> torch.Tensor:
            return loss_fn(encoder.embed_pooled(features[rows]), labels[rows])

        batches = epoch_batches(labels.numpy(), config)
    else:
        images, labels, _ = load_tensors(dataset, encoder.preprocess)
        encoder.requires_grad_(True)
        trainable = [encoder]
        aug_generator = torch.Generator().manual_seed(config.seed + 1)

        def compute_loss(rows: torch.Tensor) -> torch.Tensor:
            x = images[rows]
            if augmenting:
                x = augment_batch(x, aug, aug_generator)
            return loss_fn(encoder(x), labels[rows])

        batches = epoch_batches(labels.numpy(), config)

    params = [p for module in trainable for p in module.parameters()] + list(loss_fn.parameters())
    history = train(params, compute_loss, batches, config, modules=trainable, description=f"train {encoder.name}")
    # keep BN of a frozen backbone in eval mode; the loop switched only the trainable modules
    encoder.requires_grad_(False)
    encoder.eval()
    encoder.classifier = CosineClassifier.from_normalized_softmax(loss_fn).frozen()
    encoder.config["training"] = {
        **config.to_dict(), "dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint(),
        "freeze_backbone": freeze_backbone, "loss": "normalized-softmax", "temperature": temperature,
        "augmentation": aug.to_dict() if augmenting else None,
    }
    return history
