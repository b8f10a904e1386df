"""Supervised embedding training for encoders (normalised softmax from pytorch-metric-learning).

Two regimes, one loop (:func:`asymret.training.train`):
- full training: images → backbone → neck, with augmentation (``augmentation=``: a preset of
  :mod:`asymret.data.augment` or a config) and optionally class-balanced batches (``TrainConfig.m_per_class``);
- ``freeze_backbone=True``: the backbone's pooled features are extracted once (through the embedding store when
  one is given, so they are cached and resumable) and only the neck and the classifier are trained.  This is how
  a pretrained ImageNet backbone (EfficientNet-Lite) becomes a gallery model on 2 CPU cores.
- ``tail_blocks=n``: partial fine-tuning. The backbone's frozen prefix runs once over ``cached_views`` views of
  every image (the image itself and augmented copies) and its activations are kept; the last ``n`` blocks, the
  head convolution and the neck are trained on them, each epoch drawing one view per image.  Fine-tuning a
  pretrained model this way costs a few prefix passes plus training a small tail.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Protocol

import torch
from torch import nn
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses

from ..core.device import autocast, module_device, on_device, resolve_precision, to_device
from ..core.space import Embeddings
from ..data.dataset import ImageDataset
from ..data.augment import AugmentConfig, augment_batch, augment_config
from ..data.batches import load_tensors
from ..training import TrainConfig, TrainHistory, epoch_batches, seeded, train
from .encoder import Encoder
from .heads import CosineClassifier

class PooledFeatureSource(Protocol):
    """Where a frozen backbone's pooled features come from (the embedding store is one: it caches and resumes).
    A protocol, so that encoders never import the store, which sits above them in the flow."""

    def get(self, encoder: Encoder, dataset: ImageDataset, output: str = "embedding") -> Embeddings: ...


def train_encoder(
    encoder: Encoder,
    dataset: ImageDataset,
    config: TrainConfig,
    freeze_backbone: bool = False,
    store: PooledFeatureSource | None = None,
    temperature: float = 0.05,
    use_augmentation: bool = True,
    augmentation: str | AugmentConfig = "light",
    tail_blocks: int = 0,
    cached_views: int = 2,
    center: bool = False,
    label_smoothing: float = 0.0,
) -> TrainHistory:
    """Train ``encoder`` (in place) with a normalised-softmax loss on ``dataset``'s labels.

    Afterwards ``encoder.classifier`` holds the learned class weights (a :class:`CosineClassifier`).  With
    ``center`` the embedding is then centred on the training images' mean embedding (no augmentation) and
    renormalised, and the class weights with it — see :class:`Encoder`.  ``label_smoothing`` > 0 smooths the
    normalised softmax's targets (few images per class: the classifier stops pushing every image to its class
    weight alone).

    ``config.device``: the encoder, the loss (its class weights) and the training data go there for the training
    and come back afterwards (the encoder is returned where it was); images are decoded by ``config.workers``
    threads and augmented on the CPU (seeded as on a CPU run), each batch then copied to the device.
    """
    if len(dataset) == 0:
        raise ValueError("cannot train on an empty dataset")
    if tail_blocks and freeze_backbone:
        raise ValueError("freeze_backbone trains the neck only; tail_blocks fine-tunes the backbone's last blocks — pick one")
    if tail_blocks and not hasattr(encoder.backbone, "tail_modules"):
        raise ValueError(f"backbone {encoder.config.get('arch')!r} cannot be partly fine-tuned (tail_blocks); "
                         "use freeze_backbone or full training")
    if cached_views < 1:
        raise ValueError(f"cached_views must be ≥ 1 (got {cached_views})")
    encoder.config.pop("center", None)  # trained (again) uncentred; the centre is measured afterwards
    aug = augment_config(augmentation if use_augmentation else "none")
    augmenting = aug.enabled and not freeze_backbone  # cached frozen features cannot be augmented
    num_classes = int(dataset.labels.max()) + 1
    with seeded(config.seed):  # the class weights' initialisation
        softmax = pml_losses.NormalizedSoftmaxLoss(num_classes=num_classes, embedding_size=encoder.embedding_dim, temperature=temperature)
    loss_fn = softmax if not label_smoothing else _SmoothedNormalizedSoftmax(softmax, label_smoothing)
    device = config.torch_device()
    resolve_precision(config.precision, device)  # a precision the device lacks: refused before any work
    with on_device(encoder, loss_fn, device=device):
        history, labels, training_embeddings = _train_on_device(encoder, dataset, config, loss_fn, device, freeze_backbone, store,
                                                                tail_blocks, cached_views, aug, augmenting)
        if center:
            _center(encoder, training_embeddings, loss_fn, labels, config)
    encoder.classifier = CosineClassifier.from_normalized_softmax(softmax).frozen()
    encoder.config["training"] = {
        **config.to_dict(), "dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint(),
        "freeze_backbone": freeze_backbone, "loss": "normalized-softmax", "temperature": temperature,
        **({"label_smoothing": label_smoothing} if label_smoothing else {}),
        "augmentation": aug.to_dict() if augmenting else None,
        **({"tail_blocks": tail_blocks, "cached_views": cached_views} if tail_blocks else {}),
        **({"centered": True} if center else {}),
    }
    return history


def _train_on_device(encoder: Encoder, dataset: ImageDataset, config: TrainConfig, loss_fn: nn.Module, device: torch.device,
                     freeze_backbone: bool, store: PooledFeatureSource | None, tail_blocks: int, cached_views: int,
                     aug: AugmentConfig, augmenting: bool):
    """The training of :func:`train_encoder` with the encoder and the loss on ``device``: (history, labels on the
    device, a function giving the training images' embeddings on the device)."""
    if freeze_backbone:
        if store is not None:
            pooled = store.get(encoder, dataset, output="pooled")
            features = torch.from_numpy(pooled.vectors).to(device)
            labels = torch.as_tensor(pooled.labels).to(device)
        else:
            images, labels, _ = load_tensors(dataset, encoder.preprocess, workers=config.workers)
            labels = labels.to(device)
            with torch.no_grad(), autocast(device, config.precision):
                features = torch.cat([encoder.pooled(to_device(images[i : i + 256], device)).float() for i in range(0, len(images), 256)])
        encoder.backbone.requires_grad_(False)
        encoder.neck.requires_grad_(True)  # a previously trained encoder was left with requires_grad=False
        trainable = [encoder.neck]

        def compute_loss(rows: torch.Tensor) -> torch.Tensor:
            rows = rows.to(device)
            return loss_fn(encoder.embed_pooled(features[rows]), labels[rows])

        batches = epoch_batches(labels.cpu().numpy(), config)

        def training_embeddings() -> torch.Tensor:
            return encoder.embed_pooled(features)
    elif tail_blocks:
        prefix = cached_prefix_activations(encoder, dataset, tail_blocks, cached_views, aug, workers=config.workers,
                                           precision=config.precision)
        labels = torch.as_tensor(dataset.labels, dtype=torch.long, device=device)
        encoder.requires_grad_(False)
        tail = nn.ModuleList(encoder.backbone.tail_modules(tail_blocks))
        tail.requires_grad_(True)
        encoder.neck.requires_grad_(True)
        trainable = [tail, encoder.neck]
        view_generator = torch.Generator().manual_seed(config.seed + 2)

        def compute_loss(rows: torch.Tensor) -> torch.Tensor:
            views = torch.randint(0, cached_views, (len(rows),), generator=view_generator)
            x = to_device(prefix[views, rows], device).float()  # the cache stays on the CPU; a batch travels
            return loss_fn(encoder.embed_pooled(encoder.pool(encoder.backbone.forward_tail(x, tail_blocks))), labels[rows.to(device)])

        batches = epoch_batches(labels.cpu().numpy(), config)

        def training_embeddings() -> torch.Tensor:  # view 0: the images as they are
            return torch.cat([encoder.embed_pooled(encoder.pool(encoder.backbone.forward_tail(to_device(prefix[0, i:i + 256], device).float(),
                                                                                              tail_blocks)))
                              for i in range(0, prefix.shape[1], 256)])
    else:
        images, labels, _ = load_tensors(dataset, encoder.preprocess, workers=config.workers)
        labels = labels.to(device)
        encoder.requires_grad_(True)
        trainable = [encoder]
        aug_generator = torch.Generator().manual_seed(config.seed + 1)

        def compute_loss(rows: torch.Tensor) -> torch.Tensor:
            x = images[rows]
            if augmenting:  # on the CPU with the CPU generator: the same views on every device
                x = augment_batch(x, aug, aug_generator)
            return loss_fn(encoder(to_device(x, device)), labels[rows.to(device)])

        batches = epoch_batches(labels.cpu().numpy(), config)

        def training_embeddings() -> torch.Tensor:
            return torch.cat([encoder(to_device(images[i:i + 256], device)) for i in range(0, len(images), 256)])

    params = [p for module in trainable for p in module.parameters()] + list(loss_fn.parameters())
    history = train(params, compute_loss, batches, config, modules=trainable, description=f"train {encoder.name}")
    # keep BN of a frozen backbone in eval mode; the loop switched only the trainable modules
    encoder.requires_grad_(False)
    encoder.eval()
    return history, labels, training_embeddings


class _SmoothedNormalizedSoftmax(nn.Module):
    """pytorch-metric-learning's normalised softmax (its class weights ``W``, its temperature) with smoothed targets."""

    def __init__(self, softmax: nn.Module, label_smoothing: float) -> None:
        super().__init__()
        self.softmax, self.label_smoothing = softmax, float(label_smoothing)

    @property
    def W(self) -> nn.Parameter:  # noqa: N802 - pytorch-metric-learning's name
        return self.softmax.W

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = F.normalize(embeddings, dim=1) @ F.normalize(self.softmax.W, dim=0) / self.softmax.temperature
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)


def _center(encoder: Encoder, training_embeddings, loss_fn: nn.Module, labels: torch.Tensor, config: TrainConfig) -> None:
    """Centre ``encoder``'s space on its mean training embedding, then refit the class weights (only them) on the
    centred training embeddings: they start centred like the embeddings, and a few epochs settle them."""
    from dataclasses import replace

    with torch.no_grad():
        embeddings = training_embeddings()
        mean = embeddings.mean(dim=0)
        centred = F.normalize(embeddings - mean, dim=1)
        weight = loss_fn.W  # (dim, classes)
        weight.copy_(F.normalize(F.normalize(weight, dim=0) - mean[:, None], dim=0))
    encoder.config["center"] = [float(v) for v in mean]
    head_config = replace(config, epochs=min(config.epochs, 5), warmup_epochs=0.0)
    device = centred.device
    train([weight], lambda rows: loss_fn(centred[rows.to(device)], labels[rows.to(device)]), epoch_batches(labels.cpu().numpy(), head_config), head_config,
          modules=[], description=f"centre {encoder.name}: refit class weights")


class ActivationMemo:
    """Tensors kept by key within a byte budget, the least recently used dropped first; a tensor larger than the
    whole budget is not kept."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = int(budget_bytes)
        self._entries: OrderedDict[str, torch.Tensor] = OrderedDict()

    def get(self, key: str) -> torch.Tensor | None:
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        return None

    def put(self, key: str, value: torch.Tensor) -> None:
        self._entries.pop(key, None)
        size = value.numel() * value.element_size()
        while self._entries and self.nbytes() + size > self.budget_bytes:
            self._entries.popitem(last=False)
        if size <= self.budget_bytes:
            self._entries[key] = value

    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self._entries.values())

    def keys(self) -> list[str]:
        return list(self._entries)

    def clear(self) -> None:
        self._entries.clear()


def _memo_budget_bytes() -> int:
    return int(float(os.environ.get("ASYMRET_PREFIX_MEMO_GB", "4")) * 2**30)


# Prefix activations keyed by everything that decides them — never the seed: a multi-seed experiment fine-tunes the
# same pretrained backbones on the same data once per seed (and its students once more), and the frozen prefix's
# pass is the expensive part. Kept within ASYMRET_PREFIX_MEMO_GB (default 4 GiB of float16 on the CPU), so a
# pretrained preset's four prefixes are computed once per process, not per seed and per student (a FIFO of three
# entries used to evict each before it was needed again).
_PREFIX_MEMO = ActivationMemo(_memo_budget_bytes())


@torch.no_grad()
def cached_prefix_activations(encoder: Encoder, dataset: ImageDataset, tail_blocks: int, views: int,
                              augmentation: AugmentConfig, batch_size: int = 128, workers: int | None = 0,
                              precision: str = "fp32") -> torch.Tensor:
    """(views, N, C, h, w) float16 activations of the backbone's frozen prefix, on the CPU: view 0 is each image as
    it is, the others augmented copies (seeded, so the same data gives the same views).  The prefix runs on the
    device the encoder is on, under ``precision``'s autocast (the memo is keyed by it)."""
    from ..core.manifest import stable_hash
    from ..core.progress import progress_bar

    key = stable_hash({"prefix": _prefix_fingerprint(encoder, tail_blocks), "data": dataset.fingerprint(), "tail": tail_blocks,
                       "views": views, "augmentation": augmentation.to_dict(),
                       **({"precision": precision} if precision != "fp32" else {})})
    remembered = _PREFIX_MEMO.get(key)
    if remembered is not None:
        return remembered
    images, _, _ = load_tensors(dataset, encoder.preprocess, workers=workers)
    backbone = encoder.backbone.eval()
    device = module_device(encoder)
    generator = torch.Generator().manual_seed(0)
    chunks: list[list[torch.Tensor]] = [[] for _ in range(views)]
    with progress_bar(len(images), f"cache {encoder.name}'s frozen prefix × {views} views") as advance:
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            for view in range(views):
                x = batch if view == 0 or not augmentation.enabled else augment_batch(batch, augmentation, generator)
                with autocast(device, precision):
                    chunks[view].append(backbone.forward_prefix(to_device(x, device), tail_blocks).to(torch.float16).cpu())
            advance(len(batch))
    activations = torch.stack([torch.cat(c) for c in chunks])
    _PREFIX_MEMO.put(key, activations)
    return activations


def _prefix_fingerprint(encoder: Encoder, tail_blocks: int) -> str:
    """Hash of what decides the frozen prefix's activations: the preprocessing and every backbone weight outside
    the tail — so a student whose tail was fine-tuned (or a query model copied as a student) shares the cache."""
    from ..core.manifest import hash_arrays, stable_hash

    tail = {id(t) for module in encoder.backbone.tail_modules(tail_blocks) for t in module.state_dict(keep_vars=True).values()}
    prefix = [t for t in encoder.backbone.state_dict(keep_vars=True).values() if id(t) not in tail]
    return stable_hash({"arch": encoder.config.get("arch"), "preprocess": encoder.preprocess.config(),
                        "weights": hash_arrays([t.detach() for t in prefix])})
