"""The end-to-end CMCE experiment behind ``asymret demo``: train → embed → fit ψ → index → search → evaluate.

The experiment is data: an :class:`ExperimentConfig` (typed, loadable from a plain dict) says what runs; this
module only sequences the public API.  Every model and ψ is built through one :class:`ArtifactCache` keyed by its
recipe, every sub-seed is derived from the run's seed and the step's *name* (:func:`derive_seed`), and every
table row is measured by searching an index (:func:`measure`), the path users search.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..compat.query_train import train_compatible_query
from ..compat.config import PsiConfig
from .config import PROFILES, ExperimentConfig, ModelSpec
from ..compat.transform import CMCETransform
from ..core.progress import log
from ..core.seeds import derive_seed
from ..core.space import Embeddings, Space
from ..data.augment import camera_views, view_bank
from ..data.dataset import ImageDataset
from ..encoders.encoder import Encoder, create_encoder
from ..encoders.train import train_encoder
from ..eval.metrics import evaluate_index, evaluate_instances, risk_coverage
from ..eval.report import ResultRow, RowRecorder, run_metadata, write_report
from ..gallery.ensemble import CMCEEnsemble
from ..index import ExactIndex, GalleryIndex, GalleryIndexBase, load_index
from ..store.embeddings import EmbeddingStore
from ..training import TrainConfig
from .cache import ArtifactCache, recipe_of
from .compatible_gallery import record_compatible_gallery

__all__ = ["ModelSpec", "ExperimentConfig", "PROFILES", "Experiment", "SeedModels", "measure", "psi_seconds"]

#: the test sample is the same for every run of a config (it is the benchmark, not a random draw per seed)
TEST_SAMPLE_SEED = 12345
VALIDATION_CLASS_SEED = 101


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


def measure(
    queries: Embeddings,
    gallery: Embeddings | None = None,
    index: GalleryIndexBase | None = None,
    ks: Sequence[int] = (1, 2, 4, 8),
    instance_ks: Sequence[int] = (),
    reject_fraction: float | None = None,
    exclude: np.ndarray | None = None,
    instance_queries: Embeddings | None = None,
) -> dict[str, float]:
    """Class-level (and, with ``instance_ks``, instance-level) recall of ``queries`` searched in ``index`` —
    an exact index over ``gallery`` when no index is given.  Gallery labels come from ``gallery``.  Instance
    recall searches ``instance_queries`` (new views of the images, same ids) when given, else ``queries``."""
    if gallery is None or gallery.labels is None:
        raise ValueError("measure needs the gallery embeddings with their labels")
    if index is None:
        index = ExactIndex.from_embeddings(gallery)
    labels = dict(zip(gallery.ids.tolist(), gallery.labels.tolist()))
    metrics = evaluate_index(index, queries, labels, ks=ks, reject_fraction=reject_fraction, exclude=exclude)
    if instance_ks:
        metrics.update(evaluate_instances(index, queries if instance_queries is None else instance_queries, ks=instance_ks,
                                          reject_fraction=reject_fraction, exclude=exclude))
    return metrics


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


def mixed_spaces(queries: Embeddings, gallery: Embeddings) -> tuple[Embeddings, Embeddings]:
    """Both sets relabelled into one space so that *incompatible* models can be compared on purpose (the
    "no compatibility" baselines): the only place where the space check is bypassed, and it says so."""
    space = Space(f"mixed:{queries.space.fingerprint}+{gallery.space.fingerprint}", queries.space.dim, queries.space.normalized,
                  name=f"{queries.space.name} vs {gallery.space.name} (incompatible, compared on purpose)")
    return (Embeddings(queries.vectors, queries.ids, space, queries.labels),
            Embeddings(gallery.vectors, gallery.ids, space, gallery.labels))


def _unlabelled(parts: Sequence[Embeddings]) -> Embeddings:
    """The parts as one set without labels (what a label-free fit may see); an image in two parts is kept once."""
    vectors = np.concatenate([p.vectors for p in parts])
    ids = np.concatenate([p.ids for p in parts])
    _, first = np.unique(ids, return_index=True)
    first = np.sort(first)
    return Embeddings(vectors[first], ids[first], parts[0].space)


def psi_seconds(transforms: Sequence[CMCETransform]) -> float:
    """Total fitting time of the transformations (recorded in their manifests, so cached ones count too)."""
    return float(sum(t.history.seconds for t in transforms if t.history is not None))


class Experiment:
    """Runs a config on a dataset with train/test splits, caching models and ψ's under ``workdir``."""

    def __init__(self, config: ExperimentConfig, dataset: ImageDataset, workdir: str | os.PathLike) -> None:
        self.config = config
        self.dataset = dataset
        self.workdir = Path(workdir)
        self.store = EmbeddingStore(self.workdir / "embeddings", runtime=config.runtime)
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
        self.deployables: dict[str, Callable[[], tuple[Encoder, Embeddings, np.ndarray | None, Any]]] = {}
        self.timings: dict[str, float] = {}
        self.complexity: dict[str, dict] = {}
        self.validation_metrics: dict[str, list[dict[str, float]]] = {}

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
                                    seed=model_seed, m_per_class=spec.m_per_class, warmup_epochs=spec.warmup_epochs)
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
                         student_spec: ModelSpec | None = None) -> tuple[Encoder, float]:
        """A query model trained against the frozen ``teacher`` with a compatibility ``method`` (distill-cos = KD).

        The student is the query spec's architecture and initialisation (from scratch, or its pretrained weights
        with only its last ``tail_blocks`` fine-tuned), a copy of ``init`` (e.g. the trained query model), or —
        with ``student_resolution`` (RAML) — the teacher's own architecture and weights at a lower input
        resolution.  With ``kd_views`` > 1 it trains on that many fixed views of each training image.
        ``student_spec`` (with ``init``): the student follows that spec's recipe instead of the query's (a gallery
        model trained into the query space: its tail blocks, batch size, learning rate).
        """
        cfg_all, spec = self.config, student_spec or self.config.query
        epochs = epochs or cfg_all.kd_epochs
        data = self.train
        self.store.get(teacher, data)  # the teacher's embeddings are extracted (or read) outside the training time
        base = teacher.name.split(":")[-1]
        if student_resolution:
            name = f"{method}:{base}@{student_resolution}←{base}@{teacher.preprocess.input_size}"
        else:
            name = f"{method}:{(init.name.split(':')[-1] + '-init') if init is not None else spec.arch}←{base}"
        student_seed = derive_seed(seed, name)
        tail_blocks = spec.tail_blocks if not student_resolution else 0
        recipe = {"method": method, "query": recipe_of(spec), "teacher": teacher.fingerprint(), "epochs": epochs, "seed": student_seed,
                  "data": data.fingerprint(), "student_resolution": student_resolution,
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
                              seed=student_seed, weight_decay=spec.weight_decay if tail_blocks else 1e-4)
            train_compatible_query(method, student, data, teacher, cfg, store=self.store, tail_blocks=tail_blocks,
                                   views=cfg_all.kd_views, augmentation=cfg_all.view_augment)
            return student

        return self.cache.get_or_build("encoder", f"seed{seed}/{name}", recipe, build)

    def train_kd(self, teacher: Encoder, seed: int, query: Encoder | None = None) -> tuple[Encoder, float]:
        """The distillation baseline of the CMCE paper: the query architecture regressing the teacher (cosine; or
        the config's ``kd_method``), started as ``kd_init`` says: ``query`` from the trained ``query`` model,
        ``teacher`` from the teacher's own weights at the query's resolution (RAML's student: same architecture)."""
        choice = self.config.kd_init
        if choice not in ("spec", "query", "teacher"):
            raise ValueError(f"kd_init must be 'spec', 'query' or 'teacher' (got {choice!r})")
        init = query if choice == "query" else None
        if choice == "teacher":
            size = self.config.query.input_size or teacher.preprocess.input_size
            init = teacher.at_resolution(size, name=f"{teacher.name}@{size}")
        return self.train_compatible(self.config.kd_method, teacher, seed, init=init)

    def fit_psi(self, gallery_model: Encoder, query_model: Encoder, seed: int, psi: PsiConfig | None = None,
                unlabelled: ImageDataset | None = None) -> CMCETransform:
        """ψ: ``gallery_model``'s space → ``query_model``'s, fitted on the training images (cached by recipe).

        With ``unlabelled`` (e.g. the gallery being indexed) ψ is fitted label-free — the similarity loss alone —
        on the training images and those images together, both embedded by both models."""
        settings = psi or self.config.psi
        train = self.psi_train
        psi_seed = derive_seed(seed, "psi", gallery_model.name, query_model.name)
        if unlabelled is not None:
            settings = replace(settings, losses={"similarity": 1.0})
        recipe = {"g": gallery_model.fingerprint(), "q": query_model.fingerprint(), "psi": recipe_of(settings), "seed": psi_seed,
                  "data": train.fingerprint(), **({"unlabelled": unlabelled.fingerprint()} if unlabelled is not None else {})}

        def build() -> CMCETransform:
            transform = CMCETransform(settings, head=query_model.classifier, name=f"ψ[{gallery_model.name}]", seed=psi_seed)
            parts = [train] if unlabelled is None else [train, unlabelled]
            g = [self.store.get(gallery_model, part) for part in parts]
            q = [self.store.get(query_model, part) for part in parts]
            if unlabelled is None:
                return transform.fit(g[0], q[0])
            return transform.fit(_unlabelled(g), _unlabelled(q))

        name = f"seed{seed}/{gallery_model.name}-to-{query_model.name}" + ("-transductive" if unlabelled is not None else "")
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

    # ------------------------------------------------------------------ one seed
    def run_seed(self, seed: int, rows: dict[str, ResultRow], curves: dict[str, list]) -> None:
        cfg, record = self.config, RowRecorder(rows)
        t0 = time.perf_counter()
        models = self.models(seed)
        query = models.query
        q_test = self.store.get(query, self.test_queries)
        g_tests = [self.store.get(model, self.test_gallery) for model in models.gallery_models]
        first_seed = seed == cfg.seeds[0]

        if self.validation is not None:  # where choices are made: every model's symmetric recall on unseen training classes
            for model in [query, *models.gallery_models]:
                embedded = self.store.get(model, self.validation)
                self.validation_metrics.setdefault(model.name, []).append(measure(embedded, embedded, ks=(1,)))
        q_gallery = self.store.get(query, self.test_gallery)
        self._record_symmetric(record, query, q_test, q_gallery, models.query_seconds,
                               validation=self._validation_recall(query, lambda part: self.store.get(query, part)))
        if first_seed:
            self.deployables[f"symmetric: {query.name}"] = lambda: (query, q_gallery, None)
        for (model, seconds), g_test in zip(models.gallery, g_tests):
            self._record_symmetric(record, model, self.store.get(model, self.test_queries), g_test, seconds)

        teacher = models.gallery_model(cfg.kd_teacher_name)
        t_test = g_tests[models.gallery_models.index(teacher)]
        record(f"asymmetric, no transformation: {query.name} → {teacher.name}", "asymmetric", query.name, teacher.name,
               self.measure_query_model(query, t_test, mixed=True))

        kd_model, kd_seconds = self.train_kd(teacher, seed, query)
        self.record_asymmetric(record, seed, f"KD baseline: {kd_model.name} → {teacher.name}", "baseline", kd_model, teacher.name,
                               t_test, lambda part: self.store.get(teacher, part), train_seconds=kd_seconds)
        self._record_symmetric(record, kd_model, self.store.get(kd_model, self.test_queries), self.store.get(kd_model, self.test_gallery),
                               kd_seconds, label=f"symmetric (the distilled student alone): {kd_model.name}")

        gallery, uncertainty, index, names, transforms = self._record_cmce(record, models, query, g_tests, seed)
        if uncertainty is not None:
            self._record_rejection(record, curves, query, q_test, gallery, uncertainty, index, names, seed)
        if cfg.robust_ensemble:
            self._record_robust(record, models, query, transforms, g_tests, seed)
        if cfg.transductive_psi:
            self._record_transductive(record, models, query, transforms, seed)
        if cfg.gallery_compat:
            record_compatible_gallery(self, record, models, query, seed)
        self.timings[f"seed{seed}/total"] = time.perf_counter() - t0

    def _validation_recall(self, query_model: Encoder, gallery_of: Callable[[ImageDataset], Embeddings]) -> float | None:
        """R@1 of ``query_model``'s validation images searched among ``gallery_of(validation)`` (every validation
        image a query against the rest): how a setting does on classes no model saw, where choices are made."""
        if self.validation is None:
            return None
        queries = self.store.get(query_model, self.validation)
        return measure(queries, gallery_of(self.validation), ks=(1,))["recall@1"]

    def record_asymmetric(self, record: RowRecorder, seed: int, key: str, kind: str, query_model: Encoder, gallery_name: str,
                          gallery: Embeddings, gallery_of: Callable[[ImageDataset], Embeddings], index: GalleryIndexBase | None = None,
                          uncertainty: np.ndarray | None = None, **extra: Any) -> None:
        """One deployable row: test metrics through ``index`` (or an exact one over ``gallery``), R@1 on the validation
        classes (``gallery_of`` builds this setting's gallery for any images), and — for the first seed — what
        :mod:`~asymret.pipeline.deploy` needs to serve it."""
        metrics = self.measure_query_model(query_model, gallery, index=index)
        validation = self._validation_recall(query_model, gallery_of)
        if validation is not None:
            metrics["validation_recall@1"] = validation
        record(key, kind, query_model.name, gallery_name, metrics, **extra)
        if seed == self.config.seeds[0]:
            self.deployables[key] = lambda: (query_model, gallery, uncertainty)

    def _record_cmce(self, record: RowRecorder, models: SeedModels, query: Encoder, g_tests: list[Embeddings], seed: int
                     ) -> tuple[Embeddings, np.ndarray | None, GalleryIndexBase, str, list[CMCETransform]]:
        """One ψ per gallery model, singly and as the paper's plain-mean ensemble (served from a saved index)."""
        t1 = time.perf_counter()
        transforms = [self.fit_psi(model, query, seed) for model in models.gallery_models]
        self.timings[f"seed{seed}/fit_psi"] = time.perf_counter() - t1
        for psi, model, g_test in zip(transforms, models.gallery_models, g_tests):
            self.record_asymmetric(record, seed, f"CMCE single ψ: {query.name} → {model.name}", "cmce", query, f"ψ({model.name})",
                                   psi.transform(g_test), lambda part, psi=psi, model=model: psi.transform(self.store.get(model, part)),
                                   train_seconds=psi_seconds([psi]))
        ensemble = CMCEEnsemble(transforms)
        gallery, uncertainty = ensemble.transform(g_tests)
        index = self.build_index(ensemble, gallery, uncertainty, seed)
        names = "+".join(model.name.split(":")[-1] for model in models.gallery_models)
        self.record_asymmetric(record, seed, f"CMCE ensemble: {query.name} → mean ψ({names})", "cmce", query, f"ensemble({names})",
                               gallery, self._ensemble_gallery(ensemble, models), index=index, uncertainty=uncertainty,
                               train_seconds=psi_seconds(transforms))
        return gallery, uncertainty, index, names, transforms

    def _ensemble_gallery(self, ensemble: CMCEEnsemble, models: SeedModels | list[Encoder]) -> Callable[[ImageDataset], Embeddings]:
        """This ensemble's gallery for any images; ``models`` are the members' encoders in the ensemble's order."""
        encoders = models.gallery_models if isinstance(models, SeedModels) else models
        return lambda part: ensemble.transform([self.store.get(model, part) for model in encoders])[0]

    def _record_robust(self, record: RowRecorder, models: SeedModels, query: Encoder, transforms: list[CMCETransform],
                       g_tests: list[Embeddings], seed: int) -> None:
        """The robust ensemble: the members chosen on the validation classes (a ψ that does not carry over there
        gets weight 0), with its own rejection row when it keeps ≥ 2 members.  With ``ensemble_query_member`` a
        second robust ensemble whose candidates include the query model itself (its own gallery embeddings)."""
        if self.validation is None:
            raise ValueError("robust_ensemble chooses members on validation classes: set validation_classes")
        candidates = [(transforms, models.gallery_models, g_tests, ("CMCE robust ensemble (members chosen on validation)", "CMCE robust ensemble"), "robust")]
        if self.config.ensemble_query_member:
            from ..compat.transform import QuerySelf

            candidates.append(([QuerySelf(query.space(), name=f"ψ=id[{query.name}]"), *transforms], [query, *models.gallery_models],
                               [self.store.get(query, self.test_gallery), *g_tests],
                               ("CMCE robust ensemble with the query model as a candidate member", "CMCE robust ensemble with the query model"),
                               "robust+query"))
        for members, encoders, tests, labels, short in candidates:
            self._record_selected(record, query, members, encoders, tests, seed, labels, short)

    def _record_selected(self, record: RowRecorder, query: Encoder, members: list, encoders: list[Encoder], tests: list[Embeddings],
                         seed: int, labels: tuple[str, str], short: str) -> None:
        from ..gallery.ensemble import select_members

        ensemble, scores = select_members(members, lambda candidate: self._validation_recall(query, self._ensemble_gallery(candidate, encoders)))
        gallery, uncertainty = ensemble.transform(tests)
        kept = "+".join(encoders[i].name.split(":")[-1] for i in ensemble.members)
        index = GalleryIndex(ensemble.space)
        index.add(gallery, uncertainty)
        self.record_asymmetric(record, seed, f"{labels[0]}: {query.name} → mean ψ({kept})", "cmce", query, f"{short}({kept})", gallery,
                               self._ensemble_gallery(ensemble, encoders), index=index, uncertainty=uncertainty,
                               train_seconds=psi_seconds(members), members=kept, subset_validation_recall=scores)
        if uncertainty is not None:
            pct = int(round(100 * self.config.reject_fraction))
            record(f"{labels[1]}, reject {pct}% most uncertain gallery", "cmce-reject", query.name, f"{short}({kept})",
                   self.measure_query_model(query, gallery, index=index, reject_fraction=self.config.reject_fraction))

    def _record_transductive(self, record: RowRecorder, models: SeedModels, query: Encoder, transforms: list[CMCETransform],
                             seed: int) -> None:
        """The transductive rows under the protocol that never sees a query: ψ fitted label-free on the training
        images plus the *held-out gallery* (part of each test class), searched with the held-out queries; beside
        them the usual ψ's and the query model alone under the same protocol."""
        queries, gallery_part = self.heldout_queries, self.heldout_gallery
        q_queries = self.store.get(query, queries)
        g_parts = [self.store.get(model, gallery_part) for model in models.gallery_models]
        protocol = f"held-out queries ({len(queries)} queries, {len(gallery_part)} indexed)"

        def measured(gallery: Embeddings) -> dict[str, float]:
            return measure(q_queries, gallery, ks=self.config.ks)

        record(f"{protocol}: query model alone {query.name}", "symmetric", query.name, query.name,
               measured(self.store.get(query, gallery_part)))
        t1 = time.perf_counter()
        transductive = [self.fit_psi(model, query, seed, unlabelled=gallery_part) for model in models.gallery_models]
        self.timings[f"seed{seed}/fit_psi_transductive"] = time.perf_counter() - t1
        for label, kind, psis in (("", "cmce", transforms), (", transductive", "cmce-transductive", transductive)):
            for psi, model, g_part in zip(psis, models.gallery_models, g_parts):
                record(f"{protocol}: CMCE single ψ{label} → {model.name}", kind, query.name, f"ψ({model.name})",
                       measured(psi.transform(g_part)), train_seconds=psi_seconds([psi]))
            gallery, _ = CMCEEnsemble(psis).transform(g_parts)
            record(f"{protocol}: CMCE ensemble{label}", kind, query.name, "ensemble", measured(gallery), train_seconds=psi_seconds(psis))

    def measure_query_model(self, query_model: Encoder, gallery: Embeddings, index: GalleryIndexBase | None = None,
                            mixed: bool = False, reject_fraction: float | None = None, exclude: np.ndarray | None = None) -> dict[str, float]:
        """Class- and instance-level recall of ``query_model``'s test queries against ``gallery`` (through ``index``
        when given); instance queries are new views of the images when the config asks for them.  ``mixed``
        compares incompatible spaces on purpose (the "no compatibility" baselines)."""
        cfg = self.config
        queries = self.store.get(query_model, self.test_queries)
        views = None
        if cfg.instance_ks and self.test_query_views is not None:
            views = self.store.get(query_model, self.test_query_views)
        if mixed:
            if views is not None:
                views = mixed_spaces(views, gallery)[0]
            queries, gallery = mixed_spaces(queries, gallery)
        return measure(queries, gallery, index=index, ks=cfg.ks, instance_ks=cfg.instance_ks, reject_fraction=reject_fraction,
                       exclude=exclude, instance_queries=views)

    def _record_symmetric(self, record: RowRecorder, model: Encoder, queries: Embeddings, gallery: Embeddings, seconds: float,
                          validation: float | None = None, label: str = "") -> None:
        info = self.complexity.setdefault(model.name, model.complexity())
        metrics = measure(queries, gallery, ks=self.config.ks)
        if validation is not None:
            metrics["validation_recall@1"] = validation
        record(label or f"symmetric: {model.name}", "symmetric", model.name, model.name, metrics,
               flops=info["flops"], params=info["params"], train_seconds=seconds)

    def _record_rejection(self, record, curves, query, q_test, gallery, uncertainty, index, names, seed) -> None:
        cfg = self.config
        pct = int(round(100 * cfg.reject_fraction))
        record(f"CMCE ensemble, reject {pct}% most uncertain gallery", "cmce-reject", query.name, f"ensemble({names})",
               self.measure_query_model(query, gallery, index=index, reject_fraction=cfg.reject_fraction))
        n_rejected = int(index.rejected_mask(cfg.reject_fraction).sum())
        at_random = np.zeros(len(index), dtype=bool)
        at_random[np.random.default_rng(derive_seed(seed, "random rejection")).permutation(len(index))[:n_rejected]] = True
        record(f"CMCE ensemble, reject {pct}% at random (reference)", "cmce-reject", query.name, f"ensemble({names})",
               self.measure_query_model(query, gallery, index=index, exclude=at_random))
        for drop in (False, True):
            curve = risk_coverage(q_test.vectors, q_test.labels, gallery.vectors, gallery.labels, uncertainty,
                                  query_ids=q_test.ids, gallery_ids=gallery.ids, random_seed=derive_seed(seed, "risk-coverage"),
                                  drop_queries=drop)
            curves.setdefault("drop_queries" if drop else "gallery_only", []).append(curve)

    def instance_protocol(self) -> str:
        view = self.config.instance_view
        return ("instance recall: the query side embeds " + (f"one new '{view}' view of each test image (seeded) and must find the "
                "original in the gallery" if view else "the gallery image itself and must find its gallery copy"))

    # ------------------------------------------------------------------ all seeds + report
    def run(self, out_dir: str | os.PathLike, command: str = "") -> tuple[list[ResultRow], dict[str, Any]]:
        start = time.perf_counter()
        rows: dict[str, ResultRow] = {}
        curves: dict[str, list] = {}
        for seed in self.config.seeds:
            log.info("── seed %d ──", seed)
            self.run_seed(seed, rows, curves)
        meta = run_metadata(
            command, self.config.seeds, start, dataset=self.dataset.name, train_size=self.config.train_size,
            test_size=len(self.test), test_queries=len(self.test_queries), test_gallery=len(self.test_gallery), config=self.config.to_dict(), timings=self.timings, models=self.complexity,
            protocol="every test image is a query against all other test images; queries embedded by the query model, "
                     "gallery by the gallery side; every row measured by searching an index (the ensemble row: the saved "
                     "and reloaded FAISS index)",
            instance_protocol=self.instance_protocol(),
        )
        if self.validation is not None:
            meta["validation"] = {"images": len(self.validation), "classes": int(len(np.unique(self.validation.labels))),
                                  "symmetric": self.validation_metrics}
        if self.complexity and self.config.gallery:
            cheapest = min(self.complexity[spec.name]["flops"] for spec in self.config.gallery)
            meta["cheapest_gallery_over_query_flops"] = cheapest / self.complexity[self.config.query.name]["flops"]
        write_report(list(rows.values()), meta, curves, Path(out_dir))
        return list(rows.values()), meta


def run_each_seed(experiment: "Experiment", label: str, run_seed: Callable[[int, RowRecorder], None], out_dir: str | os.PathLike,
                  command: str = "", **meta_fields: Any) -> tuple[list[ResultRow], dict[str, Any]]:
    """A step that adds its own table to an experiment (the comparison, the re-ranking): ``run_seed(seed, record)``
    for every seed, then results.json/.md in ``out_dir`` with the run's metadata (plus ``meta_fields``)."""
    start = time.perf_counter()
    rows: dict[str, ResultRow] = {}
    record = RowRecorder(rows)
    for seed in experiment.config.seeds:
        log.info("── %s, seed %d ──", label, seed)
        run_seed(seed, record)
    meta = run_metadata(command, experiment.config.seeds, start, dataset=experiment.dataset.name, config=experiment.config.to_dict(),
                        **meta_fields)
    result_rows = list(rows.values())
    write_report(result_rows, meta, {}, Path(out_dir))
    return result_rows, meta
