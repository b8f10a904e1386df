"""The end-to-end CMCE experiment behind ``asymret demo``: train → embed → fit ψ → index → search → evaluate.

The experiment is data: an :class:`ExperimentConfig` (typed, loadable from a plain dict) says what runs; this
module only sequences the public API.  Every model and ψ is built through one :class:`ArtifactCache` keyed by its
recipe, every sub-seed is derived from the run's seed and the step's *name* (:func:`derive_seed`), and every
table row is measured by searching an index (:func:`measure`), the path users search.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..compat.query_train import train_compatible_query
from ..compat.config import PsiConfig
from ..compat.transform import CMCETransform
from ..core.progress import log
from ..core.registry import Registry
from ..core.seeds import derive_seed
from ..core.settings import strict_settings
from ..core.space import Embeddings, Space
from ..data.augment import camera_views
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

__all__ = ["ModelSpec", "ExperimentConfig", "PROFILES", "Experiment", "SeedModels", "measure", "psi_seconds"]

#: the test sample is the same for every run of a config (it is the benchmark, not a random draw per seed)
TEST_SAMPLE_SEED = 12345
VALIDATION_CLASS_SEED = 101


@dataclass
class ModelSpec:
    """How to build and train one encoder of the experiment."""

    name: str
    arch: str
    epochs: int
    lr: float = 3e-3
    train_fraction: float = 1.0  # share of the training images this model sees (data diversity)
    freeze_backbone: bool = False
    tail_blocks: int = 0  # > 0: fine-tune only the backbone's last blocks on cached prefix activations
    cached_views: int = 2  # with tail_blocks: views per image whose prefix activations are cached
    pretrained: bool = False
    input_size: int | None = None
    neck: str = "linear"
    weight_decay: float = 1e-4
    batch_size: int = 128
    augment: str = "light"  # a preset of asymret.data.augment
    m_per_class: int = 0  # > 0: class-balanced batches
    warmup_epochs: float = 0.0
    center: bool = False  # centre the trained embedding on its mean training embedding (see Encoder)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelSpec":
        return cls(**strict_settings(cls, data, f"model {data.get('name', '?')!r}"))


@dataclass
class ExperimentConfig:
    """What the demo and the comparison run; ``PROFILES`` holds the named presets."""

    train_size: int | None = 10_000  # None: every training image
    test_size: int | None = 2_000  # None: every test image (the benchmarks' protocol)
    seeds: tuple[int, ...] = (0, 1, 2)
    embedding_dim: int = 64
    query: ModelSpec = field(default_factory=lambda: ModelSpec("query:convnet-xs", "convnet-xs", epochs=8))
    gallery: tuple[ModelSpec, ...] = ()
    kd_teacher: str = ""  # gallery model the KD baseline regresses ("" = the first)
    kd_epochs: int = 8
    psi: PsiConfig = field(default_factory=PsiConfig)
    reject_fraction: float = 0.1
    ks: tuple[int, ...] = (1, 2, 4, 8)
    instance_ks: tuple[int, ...] = (1, 10)
    # instance recall's queries: "" = the gallery image itself, embedded by the query side; an augmentation preset
    # (e.g. "strong", "glyph") = one new view of it (another photo, another print) that must find the original
    instance_view: str = ""
    # open-set data: this many training classes (a seeded choice) are held out of every model's training as the
    # validation split where choices are made — classes no model saw, like the test classes (0 = none)
    validation_classes: int = 0
    # also fit every ψ label-free (similarity loss alone) on the training images *plus the gallery being indexed*
    # (its images embedded by both sides — the server owns them), and report those rows beside the usual ones:
    # on open-set data a ψ fitted on training classes alone can memorise them
    transductive_psi: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ExperimentConfig":
        """A config from plain data (a parsed TOML/JSON file); unknown keys are refused, naming the known ones."""
        values = strict_settings(cls, data, "experiment")
        if "query" in values:
            values["query"] = ModelSpec.from_dict(values["query"])
        if "gallery" in values:
            values["gallery"] = tuple(ModelSpec.from_dict(spec) for spec in values["gallery"])
        if "psi" in values:
            values["psi"] = PsiConfig.from_dict(values["psi"])
        for name in ("seeds", "ks", "instance_ks"):
            if name in values:
                values[name] = tuple(int(v) for v in values[name])
        return cls(**values)

    def model(self, name: str) -> ModelSpec:
        for spec in (self.query, *self.gallery):
            if spec.name == name:
                return spec
        raise KeyError(f"no model named {name!r} in this experiment")

    @property
    def kd_teacher_name(self) -> str:
        return self.kd_teacher or self.gallery[0].name


def _default_gallery() -> tuple[ModelSpec, ...]:
    return (
        ModelSpec("gallery:lite0", "efficientnet_lite0", epochs=12, lr=1e-3, freeze_backbone=True, pretrained=True,
                  input_size=64, neck="mlp", weight_decay=5e-2),
        ModelSpec("gallery:convnet-m", "convnet-m", epochs=10, train_fraction=0.8),
        ModelSpec("gallery:resnet-tiny", "resnet-tiny", epochs=8, train_fraction=0.6),
    )


#: named presets of the demo/comparison (``asymret demo --profile NAME``)
PROFILES: Registry[ExperimentConfig] = Registry("profile")
for _name, _config in {
    "default": ExperimentConfig(gallery=_default_gallery()),
    "full": ExperimentConfig(train_size=60_000, test_size=10_000, gallery=tuple(
        replace(spec, epochs=spec.epochs * 2) for spec in _default_gallery()),
        query=ModelSpec("query:convnet-xs", "convnet-xs", epochs=15), kd_epochs=15),
    # seconds-long: for tests and smoke runs
    "tiny": ExperimentConfig(
        train_size=600, test_size=300, seeds=(0, 1), embedding_dim=16,
        query=ModelSpec("query:convnet-xs", "convnet-xs", epochs=1),
        gallery=(ModelSpec("gallery:convnet-s", "convnet-s", epochs=1), ModelSpec("gallery:convnet-m", "convnet-m", epochs=1, train_fraction=0.7)),
        kd_epochs=10, psi=PsiConfig(epochs=3, hidden_dim=32),
    ),
}.items():
    PROFILES.register(_name, _config)


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
        self.store = EmbeddingStore(self.workdir / "embeddings")
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
                          tail_blocks=spec.tail_blocks, cached_views=spec.cached_views, center=spec.center)
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
                         student_resolution: int | None = None) -> tuple[Encoder, float]:
        """A query model trained against the frozen ``teacher`` with a compatibility ``method`` (distill-cos = KD).

        The student is the query architecture from scratch, or — with ``student_resolution`` (RAML) — the
        teacher's own architecture and weights at a lower input resolution.
        """
        spec = self.config.query
        epochs = epochs or self.config.kd_epochs
        data = self.train
        self.store.get(teacher, data)  # the teacher's embeddings are extracted (or read) outside the training time
        base = teacher.name.split(":")[-1]
        if student_resolution:
            name = f"{method}:{base}@{student_resolution}←{base}@{teacher.preprocess.input_size}"
        else:
            name = f"{method}:{spec.arch}←{base}"
        student_seed = derive_seed(seed, name)
        recipe = {"method": method, "query": recipe_of(spec), "teacher": teacher.fingerprint(), "epochs": epochs, "seed": student_seed,
                  "data": data.fingerprint(), "student_resolution": student_resolution}

        def build() -> Encoder:
            if student_resolution:
                student = teacher.at_resolution(student_resolution, name=name)
            else:
                student = create_encoder(spec.arch, embedding_dim=self.config.embedding_dim, input_size=spec.input_size, name=name,
                                         neck=spec.neck, pretrained=spec.pretrained, seed=student_seed)
            cfg = TrainConfig(epochs=epochs, batch_size=spec.batch_size, lr=spec.lr if not student_resolution else spec.lr / 3,
                              seed=student_seed)
            train_compatible_query(method, student, data, teacher, cfg, store=self.store)
            return student

        return self.cache.get_or_build("encoder", f"seed{seed}/{name}", recipe, build)

    def train_kd(self, teacher: Encoder, seed: int) -> tuple[Encoder, float]:
        """The distillation baseline of the CMCE paper: the query architecture regressing the teacher (cosine)."""
        return self.train_compatible("distill-cos", teacher, seed)

    def fit_psi(self, gallery_model: Encoder, query_model: Encoder, seed: int, psi: PsiConfig | None = None,
                unlabelled: ImageDataset | None = None) -> CMCETransform:
        """ψ: ``gallery_model``'s space → ``query_model``'s, fitted on the training images (cached by recipe).

        With ``unlabelled`` (e.g. the gallery being indexed) ψ is fitted label-free — the similarity loss alone —
        on the training images and those images together, both embedded by both models."""
        settings = psi or self.config.psi
        train = self.train
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

        if self.validation is not None:  # where choices are made: every model's symmetric recall on unseen training classes
            for model in [query, *models.gallery_models]:
                embedded = self.store.get(model, self.validation)
                self.validation_metrics.setdefault(model.name, []).append(measure(embedded, embedded, ks=(1,)))
        self._record_symmetric(record, query, q_test, self.store.get(query, self.test_gallery), models.query_seconds)
        for (model, seconds), g_test in zip(models.gallery, g_tests):
            self._record_symmetric(record, model, self.store.get(model, self.test_queries), g_test, seconds)

        teacher = models.gallery_model(cfg.kd_teacher_name)
        t_test = g_tests[models.gallery_models.index(teacher)]
        record(f"asymmetric, no transformation: {query.name} → {teacher.name}", "asymmetric", query.name, teacher.name,
               self.measure_query_model(query, t_test, mixed=True))

        kd_model, kd_seconds = self.train_kd(teacher, seed)
        record(f"KD baseline: {kd_model.name} → {teacher.name}", "baseline", kd_model.name, teacher.name,
               self.measure_query_model(kd_model, t_test), train_seconds=kd_seconds)

        gallery, uncertainty, index, names = self._record_cmce(record, models, query, g_tests, seed)
        if uncertainty is not None:
            self._record_rejection(record, curves, query, q_test, gallery, uncertainty, index, names, seed)
        if cfg.transductive_psi:
            self._record_cmce(record, models, query, g_tests, seed, unlabelled=self.test_gallery)
        self.timings[f"seed{seed}/total"] = time.perf_counter() - t0

    def _record_cmce(self, record: RowRecorder, models: SeedModels, query: Encoder, g_tests: list[Embeddings], seed: int,
                     unlabelled: ImageDataset | None = None) -> tuple[Embeddings, np.ndarray | None, GalleryIndexBase | None, str]:
        """One ψ per gallery model, singly and as the ensemble (served from a saved index); with ``unlabelled`` the
        ψ's are fitted label-free on the training images plus those images (the transductive rows)."""
        label, kind = ("", "cmce") if unlabelled is None else (", transductive", "cmce-transductive")
        t1 = time.perf_counter()
        transforms = [self.fit_psi(model, query, seed, unlabelled=unlabelled) for model in models.gallery_models]
        self.timings[f"seed{seed}/fit_psi" + ("" if unlabelled is None else "_transductive")] = time.perf_counter() - t1
        for psi, model, g_test in zip(transforms, models.gallery_models, g_tests):
            record(f"CMCE single ψ{label}: {query.name} → {model.name}", kind, query.name, f"ψ({model.name})",
                   self.measure_query_model(query, psi.transform(g_test)), train_seconds=psi_seconds([psi]))
        ensemble = CMCEEnsemble(transforms)
        gallery, uncertainty = ensemble.transform(g_tests)
        index = self.build_index(ensemble, gallery, uncertainty, seed) if unlabelled is None else None
        names = "+".join(model.name.split(":")[-1] for model in models.gallery_models)
        record(f"CMCE ensemble{label}: {query.name} → mean ψ({names})", kind, query.name, f"ensemble({names})",
               self.measure_query_model(query, gallery, index=index), train_seconds=psi_seconds(transforms))
        return gallery, uncertainty, index, names

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

    def _record_symmetric(self, record: RowRecorder, model: Encoder, queries: Embeddings, gallery: Embeddings, seconds: float) -> None:
        info = self.complexity[model.name]
        record(f"symmetric: {model.name}", "symmetric", model.name, model.name, measure(queries, gallery, ks=self.config.ks),
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
