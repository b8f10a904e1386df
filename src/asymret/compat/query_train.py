"""One trainer for "frozen gallery model(s) → trainable query model"; a compatibility method is just its loss.

The teacher (the frozen gallery side) is either
- cached :class:`~asymret.core.space.Embeddings` of the training images (from the embedding store): fast, the default
  for distillation, BCT, AML, CSD, ROP; or
- an :class:`~asymret.encoders.Encoder` run online on the *same augmented view* as the student, each at its own
  resolution (coupled augmentation, as RAML needs).
Neighbourhood losses get a ``bank``: frozen gallery-space embeddings (e.g. of the training set).
"""
from __future__ import annotations

import torch

from ..core.device import on_device, resolve_precision, to_device
from ..data.augment import AugmentConfig, augment_batch, augment_config, view_bank
from ..data.batches import load_tensors
from ..data.dataset import ImageDataset
from ..encoders.encoder import Encoder
from ..core.manifest import SpaceMismatchError
from ..core.registry import Registry
from ..core.space import Embeddings
from ..store.embeddings import EmbeddingStore
from ..training import TrainConfig, TrainHistory, epoch_batches, seeded, train
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
    augmentation: str | AugmentConfig = "light",
    tail_blocks: int = 0,
) -> TrainHistory:
    """Train ``query`` (in place) so that its embeddings land in the teacher's space under ``loss``.

    ``use_augmentation`` defaults to True for an online teacher (coupled augmentation) and False for cached
    teacher embeddings (which were computed on un-augmented images; pass a view bank as ``dataset`` for many
    views).  ``tail_blocks`` > 0 (a pretrained student): only the backbone's last blocks and the neck are
    trained, on its frozen prefix's activations computed once for every image of ``dataset``.

    ``config.device``: the query model, the online teacher, the loss (its heads and mappings), the cached teacher
    vectors and the bank go there for the training; the models come back where they were.  Images are decoded by
    ``config.workers`` threads and augmented on the CPU, each batch then copied to the device.
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
    aug = augment_config(augmentation)
    if tail_blocks:
        if online:
            raise ValueError("a partly fine-tuned student (tail_blocks) trains on cached teacher embeddings: pass them, "
                             "with a view bank as the dataset for coupled views")
        return _train_query_tail(query, dataset, teacher, loss, config, bank, method, tail_blocks)
    device = config.torch_device()
    resolve_precision(config.precision, device)
    images, labels, rows = load_tensors(dataset, teacher.preprocess if online else query.preprocess, workers=config.workers)
    with on_device(query, loss, teacher if online else None, device=device):
        labels_on = labels.to(device)
        bank_tensor = None if bank is None else torch.from_numpy(bank.vectors).to(device)
        if online:
            teacher.eval().requires_grad_(False)
            teacher_vectors = None
        else:
            teacher_vectors = torch.from_numpy(teacher.align(dataset.ids[rows]).vectors).to(device)
        generator = torch.Generator().manual_seed(config.seed + 1)
        query.requires_grad_(True)

        def compute_loss(batch_rows: torch.Tensor) -> torch.Tensor:
            x = images[batch_rows]
            if use_augmentation:  # on the CPU with the CPU generator: the same views on every device
                x = augment_batch(x, aug, generator)
            x = to_device(x, device)
            on = batch_rows.to(device)
            if online:
                with torch.no_grad():
                    target = teacher(x)
                x = teacher.preprocess.convert(x, query.preprocess)
            else:
                target = teacher_vectors[on]
            return loss(query(x), target, labels_on[on] if loss.uses_labels else None, bank_tensor)

        params = list(query.parameters()) + [p for p in loss.parameters() if p.requires_grad]
        history = train(params, compute_loss, epoch_batches(labels.numpy(), config), config,
                        modules=[query, loss], description=f"train {query.name} ({method or type(loss).__name__})")
    _finish(query, config, method or type(loss).__name__, teacher_space, dataset, online_teacher=online, augmentation=bool(use_augmentation))
    return history


def _finish(query: Encoder, config: TrainConfig, method: str, teacher_space, dataset: ImageDataset, **record) -> None:
    query.requires_grad_(False)
    query.eval()
    query.config["compat_training"] = {**config.to_dict(), "method": method, "teacher_space": teacher_space.to_dict(),
                                       "dataset_fingerprint": dataset.fingerprint(), **record}


def _train_query_tail(query: Encoder, dataset: ImageDataset, teacher: Embeddings, loss: CompatLoss, config: TrainConfig,
                      bank: Embeddings | None, method: str, tail_blocks: int) -> TrainHistory:
    """The student's tail and neck trained on its frozen prefix's activations of every image of ``dataset``."""
    from torch import nn

    from ..encoders.train import cached_prefix_activations

    if not hasattr(query.backbone, "tail_modules"):
        raise ValueError(f"backbone {query.config.get('arch')!r} cannot be partly fine-tuned (tail_blocks)")
    device = config.torch_device()
    resolve_precision(config.precision, device)
    with on_device(query, loss, device=device):
        prefix = cached_prefix_activations(query, dataset, tail_blocks, views=1, augmentation=augment_config("none"),
                                           workers=config.workers, precision=config.precision)[0]  # on the CPU
        labels = torch.as_tensor(dataset.labels, dtype=torch.long, device=device)
        teacher_vectors = torch.from_numpy(teacher.align(dataset.ids).vectors).to(device)
        bank_tensor = None if bank is None else torch.from_numpy(bank.vectors).to(device)
        query.requires_grad_(False)
        tail = nn.ModuleList(query.backbone.tail_modules(tail_blocks))
        tail.requires_grad_(True)
        query.neck.requires_grad_(True)

        def compute_loss(rows: torch.Tensor) -> torch.Tensor:
            x = to_device(prefix[rows], device).float()
            on = rows.to(device)
            student = query.embed_pooled(query.pool(query.backbone.forward_tail(x, tail_blocks)))
            return loss(student, teacher_vectors[on], labels[on] if loss.uses_labels else None, bank_tensor)

        params = [p for module in (tail, query.neck) for p in module.parameters()] + [p for p in loss.parameters() if p.requires_grad]
        history = train(params, compute_loss, epoch_batches(labels.cpu().numpy(), config), config, modules=[tail, query.neck, loss],
                        description=f"train {query.name} ({method or type(loss).__name__}, last {tail_blocks} blocks)")
    _finish(query, config, method or type(loss).__name__, teacher.space, dataset, online_teacher=False, augmentation=False, tail_blocks=tail_blocks)
    return history


# ---------------------------------------------------------------------------------------------- methods by name
#: method name → loss registry name, what the method needs, and its default loss arguments
QUERY_METHODS: Registry[dict] = Registry("compatibility method")
for _name, _spec in {
    "distill-l2": {"loss": "distill-l2"},
    "distill-cos": {"loss": "distill-cos"},
    "distill-metric": {"loss": "distill-metric", "own_head": True},
    "bct": {"loss": "bct", "gallery_head": True},
    "aml": {"loss": "aml", "kwargs": {"margin": 0.5}},
    "csd": {"loss": "csd", "bank": True, "kwargs": {"k": 64, "temperature": 0.05}},
    "raml": {"loss": "raml", "online_teacher": True, "kwargs": {"lambda1": 1.0, "lambda2": 1.0}},
    "rop": {"loss": "rop", "bank": True, "kwargs": {"k": 96, "tau": 0.1}},
    "monotonic": {"loss": "monotonic", "bank": True, "kwargs": {"num_knots": 16, "k": 96}},
}.items():
    QUERY_METHODS.register(_name, _spec)


def train_compatible_query(
    method: str,
    query: Encoder,
    dataset: ImageDataset,
    teacher: Encoder,
    config: TrainConfig,
    store=None,
    tail_blocks: int = 0,
    views: int = 1,
    augmentation: str | AugmentConfig = "light",
    **loss_kwargs,
) -> TrainHistory:
    """Train ``query`` to be compatible with the frozen gallery model ``teacher`` by a named method.

    The method decides the loss and what it needs: the teacher's classifier (BCT), a feature bank of the teacher's
    training-set embeddings (CSD, ROP, monotonic), an online teacher with coupled augmentation (RAML; use the same
    architecture at a lower query resolution, as the paper).  Cached teacher embeddings come from ``store``.
    Afterwards ``query.classifier`` is the teacher's classifier: the query now lives in the teacher's space.

    ``views`` > 1 trains on a fixed bank of that many views per image (:func:`~asymret.data.augment.view_bank`,
    ``augmentation``; view 0 the image itself), each embedded once by the teacher: the student regresses the
    teacher on every view rather than memorising one, and the views are coupled by construction (RAML included).
    ``tail_blocks`` fine-tunes only a pretrained student's last blocks (see :func:`train_query_model`).
    """
    from .losses import create_loss

    key = QUERY_METHODS.key(method)
    spec = QUERY_METHODS.get_entry(key)
    kwargs = {**spec.get("kwargs", {}), **loss_kwargs}
    if spec.get("gallery_head"):
        if teacher.classifier is None:
            raise ValueError(f"{method} needs the gallery model's classifier; {teacher.name} was saved without one")
        kwargs.update(gallery_head=teacher.classifier, num_classes=teacher.classifier.num_classes, dim=query.embedding_dim)
    if spec.get("own_head"):
        kwargs.update(num_classes=int(dataset.labels.max()) + 1, dim=query.embedding_dim)
    if views > 1:
        dataset = view_bank(dataset, augmentation, views, seed=0)  # one bank for every method and seed: cached once
    with seeded(config.seed):  # heads owned by the loss (own class weights, mappings): reproducible from the seed
        loss = create_loss(spec["loss"], **kwargs)
    if store is None:
        import tempfile

        store = EmbeddingStore(tempfile.mkdtemp(prefix="asymret-store-"))
    bank = store.get(teacher, dataset) if spec.get("bank") else None
    online = spec.get("online_teacher") and views == 1 and not tail_blocks
    teacher_side: Embeddings | Encoder = teacher if online else store.get(teacher, dataset)
    history = train_query_model(query, dataset, teacher_side, loss, config, bank=bank, method=key, tail_blocks=tail_blocks)
    query.classifier = teacher.classifier
    return history
