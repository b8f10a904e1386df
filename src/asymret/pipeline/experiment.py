"""The end-to-end CMCE experiment behind ``asymret demo``: train → embed → fit ψ → index → search → evaluate.

Everything here calls the public API (encoders, store, compat, gallery, index, eval); it only decides *what* to
run.  Trained models, embeddings and transformations are cached under the work directory keyed by their recipe,
so an interrupted or repeated run reuses what is finished.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..compat.query_train import train_compatible_query
from ..compat.transform import CMCETransform
from ..data.dataset import ImageDataset
from ..encoders.encoder import Encoder, create_encoder, load_encoder
from ..encoders.train import train_encoder
from ..eval.metrics import evaluate_embeddings, retrieval_metrics, risk_coverage
from ..eval.report import ResultRow, markdown_table, plot_recall_bars, plot_risk_coverage, write_results_json
from ..core.uncertainty import rejection_mask
from ..gallery.ensemble import CMCEEnsemble
from ..index import GalleryIndex
from ..core.machine import machine_description
from ..core.manifest import atomic_write_bytes, read_manifest, stable_hash
from ..core.progress import log
from ..store.embeddings import EmbeddingStore
from ..training import TrainConfig


@dataclass
class ModelSpec:
    """How to build and train one encoder of the experiment."""

    name: str
    arch: str
    epochs: int
    lr: float = 3e-3
    train_fraction: float = 1.0  # share of the seed's training images this model sees (data diversity)
    freeze_backbone: bool = False
    pretrained: bool = False
    input_size: int | None = None
    neck: str = "linear"
    weight_decay: float = 1e-4
    batch_size: int = 128


@dataclass
class ExperimentConfig:
    """What the demo runs; ``PROFILES`` holds the named presets."""

    train_size: int = 10_000
    test_size: int = 2_000
    seeds: tuple[int, ...] = (0, 1, 2)
    embedding_dim: int = 64
    query: ModelSpec = field(default_factory=lambda: ModelSpec("query:convnet-xs", "convnet-xs", epochs=8))
    gallery: tuple[ModelSpec, ...] = ()
    kd_teacher: str = ""  # gallery model the KD baseline regresses ("" = the first)
    kd_epochs: int = 8
    psi_kind: str = "mlp"
    psi_hidden: int = 512
    psi_epochs: int = 30
    psi_losses: dict[str, float] = field(default_factory=lambda: {"similarity": 1.0, "kl": 0.0, "dual-ce": 0.1})
    reject_fraction: float = 0.1
    ks: tuple[int, ...] = (1, 2, 4, 8)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _default_gallery() -> tuple[ModelSpec, ...]:
    return (
        ModelSpec("gallery:lite0", "efficientnet_lite0", epochs=12, lr=1e-3, freeze_backbone=True, pretrained=True,
                  input_size=64, neck="mlp", weight_decay=5e-2),
        ModelSpec("gallery:convnet-m", "convnet-m", epochs=10, train_fraction=0.8),
        ModelSpec("gallery:resnet-tiny", "resnet-tiny", epochs=8, train_fraction=0.6),
    )


PROFILES: dict[str, ExperimentConfig] = {
    "default": ExperimentConfig(gallery=_default_gallery()),
    "full": ExperimentConfig(train_size=60_000, test_size=10_000, gallery=tuple(
        replace(spec, epochs=spec.epochs * 2) for spec in _default_gallery()),
        query=ModelSpec("query:convnet-xs", "convnet-xs", epochs=15), kd_epochs=15),
    # seconds-long: for tests and smoke runs
    "tiny": ExperimentConfig(
        train_size=600, test_size=300, seeds=(0, 1), embedding_dim=16,
        query=ModelSpec("query:convnet-xs", "convnet-xs", epochs=1),
        gallery=(ModelSpec("gallery:convnet-s", "convnet-s", epochs=1), ModelSpec("gallery:convnet-m", "convnet-m", epochs=1, train_fraction=0.7)),
        kd_epochs=1, psi_epochs=3, psi_hidden=32,
    ),
}


class Experiment:
    """Runs a config on a dataset with train/test splits, caching under ``workdir``."""

    def __init__(self, config: ExperimentConfig, dataset: ImageDataset, workdir: str | os.PathLike) -> None:
        self.config = config
        self.dataset = dataset
        self.workdir = Path(workdir)
        self.store = EmbeddingStore(self.workdir / "embeddings")
        self.train_pool = dataset.select(split="train")
        self.test = dataset.select(split="test").sample(config.test_size, seed=12345)
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ models
    @property
    def train(self) -> ImageDataset:
        """The training pool, fixed across seeds (seeds vary initialisation, batch order and per-model subsets)."""
        return self.train_pool.sample(self.config.train_size, seed=0)

    def unused_training_images(self, exclude: ImageDataset | None = None) -> ImageDataset:
        """Training-split images that no model of this experiment was trained on (minus ``exclude``'s): the pool
        for validation splits, so that design choices are never made on the test split."""
        pool = self.train_pool
        used = self.train.ids if exclude is None else np.concatenate([self.train.ids, exclude.ids])
        return pool.subset(np.flatnonzero(~np.isin(pool.ids, used)))

    def _model_data(self, spec: ModelSpec, seed: int, index: int) -> ImageDataset:
        train = self.train
        if spec.train_fraction < 1.0:
            train = train.sample(int(round(spec.train_fraction * len(train))), seed=seed * 1000 + index + 1)
        return train

    def _cached_encoder(self, directory: Path, recipe: dict, build: Callable[[], Encoder]) -> tuple[Encoder, float]:
        """Load the encoder trained from exactly ``recipe`` at ``directory``, or build+train+save it."""
        cached = _cached(directory, "encoder", recipe)
        if cached is not None:
            return load_encoder(directory), float(cached.get("train_seconds", 0.0))
        start = time.perf_counter()
        encoder = build()
        seconds = time.perf_counter() - start
        encoder.save(directory, extra={"recipe": recipe, "recipe_hash": stable_hash(recipe), "train_seconds": seconds})
        return encoder, seconds

    def train_or_load(self, spec: ModelSpec, seed: int, index: int) -> tuple[Encoder, float]:
        """Train the model ``spec`` for ``seed`` (or load it if this exact recipe was trained before)."""
        data = self._model_data(spec, seed, index)
        recipe = {"spec": asdict(spec), "seed": seed, "dim": self.config.embedding_dim, "data": data.fingerprint()}

        def build() -> Encoder:
            encoder = create_encoder(spec.arch, embedding_dim=self.config.embedding_dim, neck=spec.neck, input_size=spec.input_size,
                                     pretrained=spec.pretrained, name=spec.name, seed=seed * 7919 + index)
            train_cfg = TrainConfig(epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, weight_decay=spec.weight_decay,
                                    seed=seed * 7919 + index)
            train_encoder(encoder, data, train_cfg, freeze_backbone=spec.freeze_backbone, store=self.store)
            return encoder

        return self._cached_encoder(self.workdir / "models" / f"seed{seed}" / _slug(spec.name), recipe, build)

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
        recipe = {"method": method, "query": asdict(spec), "teacher": teacher.fingerprint(), "epochs": epochs, "seed": seed,
                  "data": data.fingerprint(), "student_resolution": student_resolution}
        base = teacher.name.split(":")[-1]
        if student_resolution:
            name = f"{method}:{base}@{student_resolution}←{base}@{teacher.preprocess.input_size}"
        else:
            name = f"{method}:{spec.arch}←{base}"

        def build() -> Encoder:
            student_seed = seed * 7919 + 99
            if student_resolution:
                student = teacher.at_resolution(student_resolution, name=name)
            else:
                student = create_encoder(spec.arch, embedding_dim=self.config.embedding_dim, input_size=spec.input_size, name=name,
                                         seed=student_seed)
            cfg = TrainConfig(epochs=epochs, batch_size=spec.batch_size, lr=spec.lr if not student_resolution else spec.lr / 3,
                              seed=student_seed)
            train_compatible_query(method, student, data, teacher, cfg, store=self.store)
            return student

        return self._cached_encoder(self.workdir / "models" / f"seed{seed}" / _slug(name), recipe, build)

    def train_kd(self, teacher: Encoder, seed: int) -> tuple[Encoder, float]:
        """The distillation baseline of the CMCE paper: the query architecture regressing the teacher (cosine)."""
        return self.train_compatible("distill-cos", teacher, seed)

    def fit_psi(self, gallery_model: Encoder, query_model: Encoder, seed: int, index: int) -> CMCETransform:
        train = self.train
        g, q = self.store.get(gallery_model, train), self.store.get(query_model, train)
        cfg = self.config
        recipe = {"g": gallery_model.fingerprint(), "q": query_model.fingerprint(), "kind": cfg.psi_kind, "hidden": cfg.psi_hidden,
                  "epochs": cfg.psi_epochs, "losses": cfg.psi_losses, "seed": seed, "data": train.fingerprint()}
        directory = self.workdir / "transforms" / f"seed{seed}" / f"{_slug(gallery_model.name)}-to-{_slug(query_model.name)}"
        if _cached(directory, "transformation", recipe) is not None:
            return CMCETransform.load(directory)
        psi = CMCETransform(kind=cfg.psi_kind, hidden_dim=cfg.psi_hidden, losses=cfg.psi_losses, head=query_model.classifier,
                            train=TrainConfig(epochs=cfg.psi_epochs, batch_size=256, lr=2e-3, weight_decay=1e-4, seed=seed * 31 + index),
                            name=f"ψ[{gallery_model.name}]")
        psi.fit(g, q)
        psi.save(directory)
        _write_recipe(directory, recipe)
        return psi

    # ------------------------------------------------------------------ one seed
    def run_seed(self, seed: int, rows: dict[str, ResultRow], curves: dict[str, list]) -> None:
        cfg = self.config
        t0 = time.perf_counter()
        query, q_seconds = self.train_or_load(cfg.query, seed, 0)
        gallery_models = [self.train_or_load(spec, seed, i + 1) for i, spec in enumerate(cfg.gallery)]
        self.timings[f"seed{seed}/train_models"] = time.perf_counter() - t0

        test = self.test
        q_test = self.store.get(query, test)
        complexity = {query.name: query.complexity()} | {g.name: g.complexity() for g, _ in gallery_models}
        self.complexity = complexity

        record = RowRecorder(rows)

        # symmetric: each model alone
        record(f"symmetric: {query.name}", "symmetric", query.name, query.name, evaluate_embeddings(q_test, q_test, cfg.ks),
               flops=complexity[query.name]["flops"], params=complexity[query.name]["params"], train_seconds=q_seconds)
        g_tests = []
        for (model, seconds) in gallery_models:
            g_test = self.store.get(model, test)
            g_tests.append(g_test)
            record(f"symmetric: {model.name}", "symmetric", model.name, model.name, evaluate_embeddings(g_test, g_test, cfg.ks),
                   flops=complexity[model.name]["flops"], params=complexity[model.name]["params"], train_seconds=seconds)

        # asymmetric, no transformation: incompatible spaces compared anyway (the space check is bypassed on purpose)
        kd_index = next((i for i, spec in enumerate(cfg.gallery) if spec.name == cfg.kd_teacher), 0)
        teacher, _ = gallery_models[kd_index]
        g_raw = g_tests[kd_index].align(q_test.ids)
        record(f"asymmetric, no transformation: {query.name} → {teacher.name}", "asymmetric", query.name, teacher.name,
               retrieval_metrics(q_test.vectors, q_test.labels, g_raw.vectors, g_raw.labels, cfg.ks, q_test.ids, g_raw.ids))

        # KD baseline: query architecture trained to regress the teacher, searched against the teacher's gallery
        kd_model, kd_seconds = self.train_kd(teacher, seed)
        kd_test = self.store.get(kd_model, test)
        record(f"KD baseline: {kd_model.name} → {teacher.name}", "baseline", kd_model.name, teacher.name,
               retrieval_metrics(kd_test.vectors, kd_test.labels, g_raw.vectors, g_raw.labels, cfg.ks, kd_test.ids, g_raw.ids),
               train_seconds=kd_seconds)

        # CMCE: one ψ per gallery model, then the ensemble
        t1 = time.perf_counter()
        transforms = [self.fit_psi(model, query, seed, i) for i, (model, _) in enumerate(gallery_models)]
        self.timings[f"seed{seed}/fit_psi"] = time.perf_counter() - t1
        for psi, (model, _), g_test in zip(transforms, gallery_models, g_tests):
            mapped = psi.transform(g_test)
            record(f"CMCE single ψ: {query.name} → {model.name}", "cmce", query.name, f"ψ({model.name})",
                   evaluate_embeddings(q_test, mapped, cfg.ks), train_seconds=psi_seconds([psi]))
        ensemble = CMCEEnsemble(transforms)
        gallery_emb, uncertainty = ensemble.transform(g_tests)
        names = "+".join(m.name.split(":")[-1] for m, _ in gallery_models)
        record(f"CMCE ensemble: {query.name} → mean ψ({names})", "cmce", query.name, f"ensemble({names})",
               evaluate_embeddings(q_test, gallery_emb, cfg.ks), train_seconds=psi_seconds(transforms))

        # the index: build, save, reload, and search through it (a foreign query space would be refused here)
        index = GalleryIndex(ensemble.space)
        index.add(gallery_emb, uncertainty)
        index_dir = self.workdir / "index" / f"seed{seed}"
        index.save(index_dir)
        index = GalleryIndex.load(index_dir, expect_space=ensemble.space)
        result = index.search(q_test.take(np.arange(min(5, len(q_test)))), k=5, reject_fraction=cfg.reject_fraction)
        log.info("seed %d: index search, first query %s → %s", seed, q_test.ids[0], result.ids[0].tolist())

        if uncertainty is not None:
            rejected = rejection_mask(uncertainty, fraction=cfg.reject_fraction)
            pct = int(round(100 * cfg.reject_fraction))
            record(f"CMCE ensemble, reject {pct}% most uncertain gallery", "cmce-reject", query.name, f"ensemble({names})",
                   evaluate_embeddings(q_test, gallery_emb, cfg.ks, gallery_mask=~rejected))
            random_rejected = np.zeros(len(uncertainty), bool)
            random_rejected[np.random.default_rng(seed).permutation(len(uncertainty))[: int(rejected.sum())]] = True
            record(f"CMCE ensemble, reject {pct}% at random (reference)", "cmce-reject", query.name, f"ensemble({names})",
                   evaluate_embeddings(q_test, gallery_emb, cfg.ks, gallery_mask=~random_rejected))
            for drop in (False, True):
                curve = risk_coverage(q_test.vectors, q_test.labels, gallery_emb.vectors, gallery_emb.labels, uncertainty,
                                      query_ids=q_test.ids, gallery_ids=gallery_emb.ids, random_seed=seed, drop_queries=drop)
                curves.setdefault("drop_queries" if drop else "gallery_only", []).append(curve)
        self.timings[f"seed{seed}/total"] = time.perf_counter() - t0

    # ------------------------------------------------------------------ all seeds + report
    def run(self, out_dir: str | os.PathLike, command: str = "") -> tuple[list[ResultRow], dict[str, Any]]:
        start = time.perf_counter()
        rows: dict[str, ResultRow] = {}
        curves: dict[str, list] = {}
        for seed in self.config.seeds:
            log.info("── seed %d ──", seed)
            self.run_seed(seed, rows, curves)
        wall = time.perf_counter() - start
        meta = {
            "command": command,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine_description(),
            "seeds": list(self.config.seeds),
            "dataset": self.dataset.name,
            "train_size": self.config.train_size,
            "test_size": len(self.test),
            "protocol": "every test image is a query against all other test images; queries embedded by the query model, gallery by the gallery side",
            "config": self.config.to_dict(),
            "wall_seconds": wall,
            "timings": self.timings,
            "models": getattr(self, "complexity", {}),
        }
        if meta["models"] and self.config.gallery:
            cheapest = min(meta["models"][spec.name]["flops"] for spec in self.config.gallery)
            meta["cheapest_gallery_over_query_flops"] = cheapest / meta["models"][self.config.query.name]["flops"]
        write_report(list(rows.values()), meta, curves, Path(out_dir))
        return list(rows.values()), meta


class RowRecorder:
    """Collects one seed's metrics into the table rows (one row per setting; values appended per seed)."""

    def __init__(self, rows: dict[str, ResultRow]) -> None:
        self.rows = rows

    def __call__(self, key: str, kind: str, query_name: str, gallery_name: str, metrics: dict, **extra: Any) -> None:
        row = self.rows.setdefault(key, ResultRow(key, kind, query_name, gallery_name, extra={}))
        row.add({k: v for k, v in metrics.items() if not k.startswith("num_")})
        for name, value in extra.items():
            row.extra.setdefault(name, []).append(value)


def psi_seconds(transforms: Sequence[CMCETransform]) -> float:
    """Total fitting time of the transformations (recorded in their manifests, so cached ones count too)."""
    return float(sum(t.history.seconds for t in transforms if t.history is not None))


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in name)


def _cached(directory: Path, kind: str, recipe: dict) -> dict | None:
    """The manifest at ``directory`` if it was produced from exactly ``recipe``."""
    try:
        manifest = read_manifest(directory, kind=kind)
    except (FileNotFoundError, ValueError):
        return None
    if kind == "transformation":
        recipe_file = directory / "recipe.json"
        if not recipe_file.is_file() or json.loads(recipe_file.read_text()).get("hash") != stable_hash(recipe):
            return None
        return manifest
    return manifest if manifest.get("recipe_hash") == stable_hash(recipe) else None


def _write_recipe(directory: Path, recipe: dict) -> None:
    atomic_write_bytes(directory / "recipe.json", json.dumps({"hash": stable_hash(recipe), "recipe": recipe}, indent=2, default=str).encode())


def _mean_curve(curves: list[dict], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    coverage = np.asarray(curves[0]["coverage"])
    values = np.stack([np.asarray(c[key]) for c in curves])
    return coverage, values.mean(axis=0), values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros(len(coverage))


def cost_table(rows: Sequence[ResultRow]) -> str:
    """Markdown table of the query side's FLOPs/params and training seconds (mean over seeds), where recorded."""
    lines = []
    for row in rows:
        flops = row.extra.get("query_flops") or row.extra.get("flops")
        params = row.extra.get("params")
        seconds = row.extra.get("train_seconds")
        if not (flops or seconds):
            continue
        cells = [f"{np.mean(flops) / 1e6:.2f}" if flops else "–", f"{np.mean(params) / 1e6:.3f}" if params else "–",
                 f"{np.mean(seconds):.1f}" if seconds else "–"]
        lines.append(f"| {row.setting} | " + " | ".join(cells) + " |")
    if not lines:
        return ""
    header = ["| setting | query-side MFLOPs/image | params (M) | training s (mean over seeds) |", "|---|---:|---:|---:|"]
    return "\n".join(header + lines)


def write_report(rows: Sequence[ResultRow], meta: dict, curves: dict[str, list], out_dir: Path) -> None:
    """results.json, results.md (the table), recall@1.png and risk_coverage.png in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_results_json(out_dir / "results.json", rows, meta)
    table = markdown_table(rows)
    costs = cost_table(rows)
    atomic_write_bytes(out_dir / "results.md", (table + ("\n\n" + costs if costs else "") + "\n").encode())
    plot_recall_bars(rows, out_dir / "recall_at_1.png", metric="recall@1")
    if curves:
        plot_curves = {}
        for variant, entries in curves.items():
            label = "" if variant == "gallery_only" else " (uncertain items also dropped as queries)"
            cov, mean, std = _mean_curve(entries, "risk_uncertainty")
            plot_curves[f"uncertainty rejection{label}"] = (cov, mean, std)
            cov, mean, std = _mean_curve(entries, "risk_random")
            plot_curves[f"random rejection{label}"] = (cov, mean, std)
        plot_risk_coverage(plot_curves, out_dir / "risk_coverage.png")
        summary = {name: {"coverage": c.tolist(), "risk_mean": m.tolist(), "risk_std": s.tolist()} for name, (c, m, s) in plot_curves.items()}
        atomic_write_bytes(out_dir / "risk_coverage.json", json.dumps(summary, indent=2).encode())
