"""The end-to-end CMCE experiment behind ``asymret demo`` and ``asymret run``: train → embed → fit ψ → index →
search → evaluate.

The experiment is data: an :class:`ExperimentConfig` (typed, loadable from a plain dict) says what runs;
:class:`~asymret.pipeline.artifacts.ExperimentArtifacts` builds and caches what it needs; this module is the
measurement protocol — which rows a seed records, each measured by searching an index
(:func:`~asymret.eval.metrics.evaluate`), the path users search.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .artifacts import ExperimentArtifacts, SeedModels, heldout_split, psi_seconds
from .config import PROFILES, ExperimentConfig, ModelSpec
from ..compat.transform import CMCETransform
from ..core.progress import log
from ..core.seeds import derive_seed
from ..core.space import Embeddings, Space
from ..data.dataset import ImageDataset
from ..encoders.encoder import Encoder
from ..eval.metrics import evaluate, risk_coverage
from ..eval.report import ResultRow, RowRecorder, run_metadata, write_report
from ..gallery.ensemble import CMCEEnsemble
from ..index import GalleryIndex, GalleryIndexBase
from .compatible_gallery import record_compatible_gallery
from .deploy import Deployable

__all__ = ["ModelSpec", "ExperimentConfig", "PROFILES", "Experiment", "SeedModels", "heldout_split", "mixed_spaces", "psi_seconds",
           "run_each_seed"]


def mixed_spaces(queries: Embeddings, gallery: Embeddings) -> tuple[Embeddings, Embeddings]:
    """Both sets relabelled into one space so that *incompatible* models can be compared on purpose (the
    "no compatibility" baselines): the only place where the space check is bypassed, and it says so."""
    space = Space(f"mixed:{queries.space.fingerprint}+{gallery.space.fingerprint}", queries.space.dim, queries.space.normalized,
                  name=f"{queries.space.name} vs {gallery.space.name} (incompatible, compared on purpose)")
    return (Embeddings(queries.vectors, queries.ids, space, queries.labels),
            Embeddings(gallery.vectors, gallery.ids, space, gallery.labels))


class Experiment(ExperimentArtifacts):
    """Runs a config on a dataset with train/test splits and records its table (models and ψ's cached under
    ``workdir``)."""

    def __init__(self, config: ExperimentConfig, dataset: ImageDataset, workdir: str | os.PathLike, device: str = "auto",
                 precision: str = "fp32", workers: int | None = None) -> None:
        super().__init__(config, dataset, workdir, device=device, precision=precision, workers=workers)
        self.deployables: dict[str, Callable[[], Deployable]] = {}
        self.validation_metrics: dict[str, list[dict[str, float]]] = {}

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
                self.validation_metrics.setdefault(model.name, []).append(evaluate(embedded, embedded, ks=(1,)))
        q_gallery = self.store.get(query, self.test_gallery)
        self._record_symmetric(record, query, q_test, q_gallery, models.query_seconds,
                               validation=self._validation_recall(query, lambda part: self.store.get(query, part)))
        if first_seed:
            self.deployables[f"symmetric: {query.name}"] = lambda: Deployable(query, q_gallery)
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
        if cfg.transductive_psi or cfg.transductive_kd:
            self._record_transductive(record, models, query, transforms, seed, kd_model, kd_seconds)
        if cfg.gallery_compat:
            record_compatible_gallery(self, record, models, query, seed)
        self.timings[f"seed{seed}/total"] = time.perf_counter() - t0

    def _validation_recall(self, query_model: Encoder, gallery_of: Callable[[ImageDataset], Embeddings]) -> float | None:
        """R@1 of ``query_model``'s validation images searched among ``gallery_of(validation)`` (every validation
        image a query against the rest): how a setting does on classes no model saw, where choices are made."""
        if self.validation is None:
            return None
        queries = self.store.get(query_model, self.validation)
        return evaluate(queries, gallery_of(self.validation), ks=(1,))["recall@1"]

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
            self.deployables[key] = lambda: Deployable(query_model, gallery, uncertainty)

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
        # one row whatever the members: seeds may keep different ones (each seed's are in the row's ``members``)
        self.record_asymmetric(record, seed, f"{labels[0]}: {query.name} → mean of the kept ψ's", "cmce", query, short, gallery,
                               self._ensemble_gallery(ensemble, encoders), index=index, uncertainty=uncertainty,
                               train_seconds=psi_seconds(members), members=kept, subset_validation_recall=scores)
        if uncertainty is not None:
            pct = int(round(100 * self.config.reject_fraction))
            record(f"{labels[1]}, reject {pct}% most uncertain gallery", "cmce-reject", query.name, short,
                   self.measure_query_model(query, gallery, index=index, reject_fraction=self.config.reject_fraction))

    def _record_transductive(self, record: RowRecorder, models: SeedModels, query: Encoder, transforms: list[CMCETransform],
                             seed: int, kd_model: Encoder, kd_seconds: float) -> None:
        """The transductive rows under the protocol that never sees a query: ψ fitted (``transductive_psi``) and the
        KD student distilled (``transductive_kd``) label-free on the training images plus the *held-out gallery*
        (part of each test class), searched with the held-out queries; beside them the usual ψ's and student and the
        query model alone under the same protocol."""
        queries, gallery_part = self.heldout_queries, self.heldout_gallery
        q_queries = self.store.get(query, queries)
        g_parts = [self.store.get(model, gallery_part) for model in models.gallery_models]
        protocol = f"held-out queries ({len(queries)} queries, {len(gallery_part)} indexed)"

        def measured(gallery: Embeddings) -> dict[str, float]:
            return evaluate(q_queries, gallery, ks=self.config.ks)

        record(f"{protocol}: query model alone {query.name}", "symmetric", query.name, query.name,
               measured(self.store.get(query, gallery_part)))
        if self.config.transductive_kd:
            teacher = models.gallery_model(self.config.kd_teacher_name)
            t_part = g_parts[models.gallery_models.index(teacher)]
            transductive_kd = self.train_kd(teacher, seed, query, unlabelled=gallery_part)
            for label, kind, (student, seconds) in (("", "baseline", (kd_model, kd_seconds)),
                                                    (", distilled also on the indexed gallery", "baseline-transductive", transductive_kd)):
                record(f"{protocol}: KD baseline{label} → {teacher.name}", kind, student.name, teacher.name,
                       evaluate(self.store.get(student, queries), t_part, ks=self.config.ks), train_seconds=seconds)
        if not self.config.transductive_psi:
            return
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
        views = self._instance_views(query_model)
        if mixed:
            if views is not None:
                views = mixed_spaces(views, gallery)[0]
            queries, gallery = mixed_spaces(queries, gallery)
        return evaluate(queries, gallery, index=index, ks=cfg.ks, instance_ks=cfg.instance_ks, reject_fraction=reject_fraction,
                       exclude=exclude, instance_queries=views)

    def _instance_views(self, model: Encoder) -> Embeddings | None:
        """``model``'s embeddings of the new views of the test queries (the instance queries), when the config has them."""
        if self.config.instance_ks and self.test_query_views is not None:
            return self.store.get(model, self.test_query_views)
        return None

    def _record_symmetric(self, record: RowRecorder, model: Encoder, queries: Embeddings, gallery: Embeddings, seconds: float,
                          validation: float | None = None, label: str = "") -> None:
        info = self.complexity.setdefault(model.name, model.complexity())
        cfg = self.config
        # the model finding its own image from a new view: the ceiling every asymmetric row's instance recall is read against
        views = self._instance_views(model)
        metrics = evaluate(queries, gallery, ks=cfg.ks, instance_ks=cfg.instance_ks if views is not None else (), instance_queries=views)
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
