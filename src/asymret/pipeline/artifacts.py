"""What an experiment builds, each cached by its recipe: the data splits (training pool, validation classes, the
test sample, the held-out queries), the trained models, the distilled students, the ψ's and the served index.

:class:`ExperimentArtifacts` is the base of :class:`~asymret.pipeline.experiment.Experiment`, which adds the
measurement protocol (which rows are recorded and how).  Every sub-seed is derived from the run's seed and the
step's *name* (:func:`~asymret.core.seeds.derive_seed`).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from ..compat.config import PsiConfig
from ..compat.query_train import train_compatible_query
from ..compat.transform import CMCETransform
from ..core.seeds import derive_seed
from ..core.space import Embeddings
from ..data.augment import camera_views, view_bank
from ..data.dataset import ImageDataset, concat_datasets
from ..encoders.encoder import Encoder, create_encoder
from ..encoders.train import train_encoder
from ..gallery.ensemble import CMCEEnsemble
from ..index import GalleryIndex, GalleryIndexBase, load_index
from ..store.embeddings import EmbeddingStore
from ..training import TrainConfig
from .cache import ArtifactCache, recipe_of
from .config import ExperimentConfig, ModelSpec

__all__ = ["ExperimentArtifacts", "SeedModels", "heldout_split", "unlabelled_union", "psi_seconds",
           "TEST_SAMPLE_SEED", "VALIDATION_CLASS_SEED"]

#: the test sample is the same for every run of a config (it is the benchmark, not a random draw per seed)
TEST_SAMPLE_SEED = 12345
VALIDATION_CLASS_SEED = 101
#: compatibility methods that can also regress the teacher on unlabelled images (label −1: no class term for them)
LABEL_FREE_METHODS = frozenset({"distill-cos", "distill-l2", "distill-metric"})


@dataclass
class SeedModels:
    """One seed's query model and gallery models (with their training seconds)."""

    query: Encoder
    query_seconds: float
    gallery: list[tuple[Encoder, float]]

    @property
    def gallery_models(self) -> list[Encoder]:
        return [model for model, _ in self.gallery]

    def gallery_model(self, name: str) -> Encoder:
        for model in self.gallery_models:
            if model.name == name:
                return model
        raise KeyError(f"no gallery model named {name!r}")


def heldout_split(test: ImageDataset, query_fraction: float, seed: int) -> tuple[ImageDataset, ImageDataset]:
    """Each test class's images split into held-out queries (``query_fraction`` of them, at least one, seeded) and
    the gallery that is indexed (the rest, at least one): the transductive protocol, where anything fitted on
    the indexed images never sees a query."""
    if not 0.0 < query_fraction < 1.0:
        raise ValueError(f"transductive_query_fraction must be in (0, 1) (got {query_fraction})")
    rng = np.random.default_rng(seed)
    is_query = np.zeros(len(test), dtype=bool)
    for label in np.unique(test.labels):
        rows = np.flatnonzero(test.labels == label)
        if len(rows) < 2:
            continue  # a class of one image has no other image to find: gallery only
        count = min(len(rows) - 1, max(1, int(round(query_fraction * len(rows)))))
        is_query[rng.choice(rows, size=count, replace=False)] = True
    return (test.subset(np.flatnonzero(is_query), name=f"{test.name}/held-out-queries"),
            test.subset(np.flatnonzero(~is_query), name=f"{test.name}/held-out-gallery"))


def unlabelled_union(parts: Sequence[Embeddings]) -> Embeddings:
    """The parts as one set without labels (what a label-free fit may see); an image in two parts is kept once."""
    vectors = np.concatenate([p.vectors for p in parts])
    ids = np.concatenate([p.ids for p in parts])
    _, first = np.unique(ids, return_index=True)
    first = np.sort(first)
    return Embeddings(vectors[first], ids[first], parts[0].space)


def psi_seconds(transforms: Sequence[CMCETransform]) -> float:
    """Total fitting time of the transformations (recorded in their manifests, so cached ones count too)."""
    return float(sum(t.history.seconds for t in transforms if t.history is not None))


class ExperimentArtifacts:
    """A config's data splits and everything it builds — models, distilled students, ψ's, the served index —
    each cached under ``workdir`` by its recipe (the base of :class:`~asymret.pipeline.experiment.Experiment`).

    ``device`` / ``precision`` / ``workers`` say where and how everything is computed — every training (models,
    students, ψ's, re-rankers) and every extraction — not what is built: they are no part of any recipe, so a
    cache filled on one device is reused on another (the store refuses to mix precisions in one folder)."""

    def __init__(self, config: ExperimentConfig, dataset: ImageDataset, workdir: str | os.PathLike, device: str = "auto",
                 precision: str = "fp32", workers: int | None = None) -> None:
        self.config = config
        self.dataset = dataset
        self.workdir = Path(workdir)
        self.execution = {"device": device, "precision": precision, "workers": workers}
        self.store = EmbeddingStore(self.workdir / "embeddings", runtime=config.runtime, device=device, precision=precision,
                                    workers=workers)
        self.cache = ArtifactCache(self.workdir / "artifacts")
        self.train_pool = dataset.select(split="train")
        self.validation: ImageDataset | None = None
        if config.validation_classes:
            classes = np.unique(self.train_pool.labels)
            if config.validation_classes >= len(classes):
                raise ValueError(f"validation_classes={config.validation_classes} leaves no training class (there are {len(classes)})")
            held_out = np.random.default_rng(VALIDATION_CLASS_SEED).choice(classes, size=config.validation_classes, replace=False)
            is_validation = np.isin(self.train_pool.labels, held_out)
            self.validation = self.train_pool.subset(np.flatnonzero(is_validation), name=f"{dataset.name}/validation-classes")
            self.train_pool = self.train_pool.subset(np.flatnonzero(~is_validation), name=f"{dataset.name}/train")
        test = dataset.select(split="test")
        self.test = test.sample(config.test_size, seed=TEST_SAMPLE_SEED) if config.test_size else test
        # the queries and the gallery of the test set: the same images ("every test image against the rest", self
        # excluded by id) unless the dataset fixes roles (In-Shop's query/gallery split)
        self.test_queries = self.test.select(role="query")
        self.test_gallery = self.test.select(role="gallery")
        self.test_query_views = camera_views(self.test_queries, config.instance_view, seed=TEST_SAMPLE_SEED) if config.instance_view else None
        self.heldout_queries, self.heldout_gallery = heldout_split(self.test, config.transductive_query_fraction, seed=TEST_SAMPLE_SEED)
        self.timings: dict[str, float] = {}
        self.complexity: dict[str, dict] = {}

    # ------------------------------------------------------------------ data
    @property
    def train(self) -> ImageDataset:
        """The training pool, fixed across seeds (seeds vary initialisation, batch order and per-model subsets)."""
        size = self.config.train_size
        return self.train_pool.sample(size, seed=0) if size else self.train_pool

    def unused_training_images(self, exclude: ImageDataset | None = None) -> ImageDataset:
        """Training-split images that no model of this experiment was trained on (minus ``exclude``'s): the pool
        for validation splits, so that design choices are never made on the test split."""
        pool = self.train_pool
        used = self.train.ids if exclude is None else np.concatenate([self.train.ids, exclude.ids])
        return pool.subset(np.flatnonzero(~np.isin(pool.ids, used)))

    def model_data(self, spec: ModelSpec, seed: int) -> ImageDataset:
        train = self.train
        if spec.train_fraction < 1.0:
            train = train.sample(int(round(spec.train_fraction * len(train))), seed=derive_seed(seed, spec.name, "data"))
        return train

    # ------------------------------------------------------------------ models
    def train_model(self, spec: ModelSpec, seed: int) -> tuple[Encoder, float]:
        """The encoder ``spec`` trained for ``seed`` (from the cache when this exact recipe was trained before)."""
        data = self.model_data(spec, seed)
        model_seed = derive_seed(seed, spec.name)
        recipe = {"spec": recipe_of(spec), "seed": model_seed, "dim": self.config.embedding_dim, "data": data.fingerprint()}

        def build() -> Encoder:
            encoder = create_encoder(spec.arch, embedding_dim=self.config.embedding_dim, neck=spec.neck, input_size=spec.input_size,
                                     pretrained=spec.pretrained, name=spec.name, seed=model_seed)
            train_cfg = TrainConfig(epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, weight_decay=spec.weight_decay,
                                    seed=model_seed, m_per_class=spec.m_per_class, warmup_epochs=spec.warmup_epochs, **self.execution)
            train_encoder(encoder, data, train_cfg, freeze_backbone=spec.freeze_backbone, store=self.store, augmentation=spec.augment,
                          tail_blocks=spec.tail_blocks, cached_views=spec.cached_views, center=spec.center,
                          label_smoothing=spec.label_smoothing)
            return encoder

        return self.cache.get_or_build("encoder", f"seed{seed}/{spec.name}", recipe, build)

    def models(self, seed: int) -> SeedModels:
        """This seed's query model and gallery models: the one place they are built."""
        t0 = time.perf_counter()
        query, query_seconds = self.train_model(self.config.query, seed)
        gallery = [self.train_model(spec, seed) for spec in self.config.gallery]
        self.timings[f"seed{seed}/train_models"] = time.perf_counter() - t0
        for model in [query, *(m for m, _ in gallery)]:
            self.complexity.setdefault(model.name, model.complexity())
        return SeedModels(query, query_seconds, gallery)

    def train_compatible(self, method: str, teacher: Encoder, seed: int, epochs: int | None = None,
                         student_resolution: int | None = None, init: Encoder | None = None,
                         student_spec: ModelSpec | None = None, unlabelled: ImageDataset | None = None) -> tuple[Encoder, float]:
        """A query model trained against the frozen ``teacher`` with a compatibility ``method`` (distill-cos = KD).

        The student is the query spec's architecture and initialisation (from scratch, or its pretrained weights
        with only its last ``tail_blocks`` fine-tuned), a copy of ``init`` (e.g. the trained query model), or —
        with ``student_resolution`` (RAML) — the teacher's own architecture and weights at a lower input
        resolution.  With ``kd_views`` > 1 it trains on that many fixed views of each training image.
        ``student_spec`` (with ``init``): the student follows that spec's recipe instead of the query's (a gallery
        model trained into the query space: its tail blocks, batch size, learning rate).  ``unlabelled`` (e.g. the
        gallery being indexed, never the queries): images the student also regresses the teacher on, without labels
        (distillation methods only).
        """
        cfg_all, spec = self.config, student_spec or self.config.query
        epochs = epochs or cfg_all.kd_epochs
        data = self.train
        if unlabelled is not None:
            if method not in LABEL_FREE_METHODS:
                raise ValueError(f"{method} needs a label for every image; unlabelled images train only {sorted(LABEL_FREE_METHODS)}")
            data = concat_datasets([data, replace(unlabelled, labels=np.full(len(unlabelled), -1))], name=f"{data.name}+unlabelled")
        self.store.get(teacher, data)  # the teacher's embeddings are extracted (or read) outside the training time
        base = teacher.name.split(":")[-1]
        if student_resolution:
            name = f"{method}:{base}@{student_resolution}←{base}@{teacher.preprocess.input_size}"
        else:
            name = f"{method}:{(init.name.split(':')[-1] + '-init') if init is not None else spec.arch}←{base}"
        student_seed = derive_seed(seed, name)  # with unlabelled images too: the same start, only the data differs
        if unlabelled is not None:
            name += "+unlabelled"
        tail_blocks = spec.tail_blocks if not student_resolution else 0
        recipe = {"method": method, "query": recipe_of(spec), "teacher": teacher.fingerprint(), "epochs": epochs, "seed": student_seed,
                  "data": data.fingerprint(), "student_resolution": student_resolution,
                  "loss_init": "seeded",  # the loss's own weights drawn from the seed (before: unseeded, not reproducible)
                  **({"views": cfg_all.kd_views, "view_augment": cfg_all.view_augment} if cfg_all.kd_views > 1 else {}),
                  **({"init": init.fingerprint()} if init is not None else {})}

        def build() -> Encoder:
            import copy

            if student_resolution:
                student = teacher.at_resolution(student_resolution, name=name)
            elif init is not None:
                student = copy.deepcopy(init)
                student.config = {**init.config, "name": name}
            else:
                student = create_encoder(spec.arch, embedding_dim=cfg_all.embedding_dim, input_size=spec.input_size, name=name,
                                         neck=spec.neck, pretrained=spec.pretrained, seed=student_seed)
            cfg = TrainConfig(epochs=epochs, batch_size=spec.batch_size, lr=spec.lr if not student_resolution else spec.lr / 3,
                              seed=student_seed, weight_decay=spec.weight_decay if tail_blocks else 1e-4, **self.execution)
            train_compatible_query(method, student, data, teacher, cfg, store=self.store, tail_blocks=tail_blocks,
                                   views=cfg_all.kd_views, augmentation=cfg_all.view_augment)
            return student

        return self.cache.get_or_build("encoder", f"seed{seed}/{name}", recipe, build)

    def train_kd(self, teacher: Encoder, seed: int, query: Encoder | None = None,
                 unlabelled: ImageDataset | None = None) -> tuple[Encoder, float]:
        """The distillation baseline of the CMCE paper: the query architecture regressing the teacher (cosine; or
        the config's ``kd_method``), started as ``kd_init`` says: ``query`` from the trained ``query`` model,
        ``teacher`` from the teacher's own weights at the query's resolution (RAML's student: same architecture).
        ``unlabelled``: images regressed on too, label-free (e.g. the indexed gallery)."""
        choice = self.config.kd_init
        if choice not in ("spec", "query", "teacher"):
            raise ValueError(f"kd_init must be 'spec', 'query' or 'teacher' (got {choice!r})")
        init = query if choice == "query" else None
        if choice == "teacher":
            size = self.config.query.input_size or teacher.preprocess.input_size
            init = teacher.at_resolution(size, name=f"{teacher.name}@{size}")
        return self.train_compatible(self.config.kd_method, teacher, seed, init=init, unlabelled=unlabelled)

    def fit_psi(self, gallery_model: Encoder, query_model: Encoder, seed: int, psi: PsiConfig | None = None,
                unlabelled: ImageDataset | None = None, source: str = "embedding") -> CMCETransform:
        """ψ: ``gallery_model``'s space → ``query_model``'s, fitted on the training images (cached by recipe).

        With ``unlabelled`` (e.g. the gallery being indexed) ψ is fitted label-free — the similarity loss alone —
        on the training images and those images together, both embedded by both models.  ``source``: what ψ reads
        of the gallery model — its embedding, or its pooled backbone features (``"pooled"``, the store's output)."""
        settings = psi or self.config.psi
        train = self.psi_train
        psi_seed = derive_seed(seed, "psi", gallery_model.name, query_model.name)
        if unlabelled is not None:
            settings = replace(settings, losses={"similarity": 1.0})
        recipe = {"g": gallery_model.fingerprint(), "q": query_model.fingerprint(), "psi": recipe_of(settings), "seed": psi_seed,
                  "data": train.fingerprint(), **({"unlabelled": unlabelled.fingerprint()} if unlabelled is not None else {}),
                  **({"source": source} if source != "embedding" else {})}

        def build() -> CMCETransform:
            transform = CMCETransform(settings, head=query_model.classifier, name=f"ψ[{gallery_model.name}]", seed=psi_seed,
                                      device=self.execution["device"], precision=self.execution["precision"])
            parts = [train] if unlabelled is None else [train, unlabelled]
            g = [self.store.get(gallery_model, part, output=source) for part in parts]
            q = [self.store.get(query_model, part) for part in parts]
            if unlabelled is None:
                return transform.fit(g[0], q[0])
            return transform.fit(unlabelled_union(g), unlabelled_union(q))

        name = (f"seed{seed}/{gallery_model.name}" + (f":{source}" if source != "embedding" else "") + f"-to-{query_model.name}"
                + ("-transductive" if unlabelled is not None else ""))
        return self.cache.get_or_build("transformation", name, recipe, build)[0]

    @property
    def psi_train(self) -> ImageDataset:
        """What ψ is fitted on: the training images, or a fixed bank of ``psi_views`` views of each."""
        cfg = self.config
        return view_bank(self.train, cfg.view_augment, cfg.psi_views, seed=0) if cfg.psi_views > 1 else self.train

    def build_index(self, ensemble: CMCEEnsemble, gallery: Embeddings, uncertainty: np.ndarray | None, seed: int) -> GalleryIndexBase:
        """The ensemble gallery's FAISS index, saved and reloaded as a user would serve it."""
        index = GalleryIndex(ensemble.space)
        index.add(gallery, uncertainty)
        directory = self.workdir / "index" / f"seed{seed}"
        index.save(directory)
        return load_index(directory, expect_space=ensemble.space)
