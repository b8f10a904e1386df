"""Re-ranking in the experiment: global only vs + a local-descriptor re-ranker, symmetric and asymmetric modes.

For every seed, on the experiment's models:

- **symmetric** (the papers' mode): the query model everywhere — the global ranking is query → query, both sides'
  local descriptors come from the query model;
- **asymmetric** (asymret's case): the global ranking is query → the CMCE ensemble gallery; the query side's local
  descriptors come from the light query model, the database side's from a gallery model; the re-ranker's two input
  projections must learn to compare them;
- **asymmetric-mapped**: the same, with the gallery model's descriptors first mapped into the query model's
  descriptor space (:class:`~asymret.rerank.mapping.DescriptorMap`, the way ψ maps global embeddings), so that
  MaxSim and the MaxSim prior apply.

For each mode and each database storage (float16 PCA, binarised ITQ), a descriptor codec and a re-ranker are
trained on the training classes (cached by recipe), the fusion (λ, γ) is chosen on the validation classes, and the
test shortlist is re-ranked: rows of R@K and MAP@R beside the global ranking of the same shortlist, the database
side's bytes per image, and the re-ranker's added time per query.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..core.progress import log
from ..core.seeds import derive_seed
from ..core.settings import strict_settings
from ..core.space import Embeddings
from ..data.dataset import ImageDataset
from ..eval.report import ResultRow, RowRecorder
from ..gallery.ensemble import CMCEEnsemble
from ..eval.rerank import choose_fusion, shortlist_metrics
from ..rerank.deployed import RerankDeployable
from ..rerank.mapping import DescriptorMap
from ..rerank import (AMESConfig, AMESReranker, DescriptorCodec, LocalSpec, LOCOREConfig, LOCOREReranker, MaxSimReranker, PairSide,
                      global_shortlist, stored_local)
from .artifacts import SeedModels
from .deploy import Deployable
from .experiment import Experiment, run_each_seed

__all__ = ["RerankConfig", "run_rerank"]

MODES = ("symmetric", "asymmetric", "asymmetric-mapped")
METHODS = ("maxsim", "ames", "locore")
STORAGES = ("float16", "binary")


@dataclass
class RerankConfig:
    """What the re-ranking rows run (the ``[rerank]`` table of a run config)."""

    methods: tuple[str, ...] = METHODS  # maxsim: the training-free baseline (not in the unmapped asymmetric mode)
    budget: int = 32  # local descriptors extracted per image (the query side uses ames.query_budget of them)
    query_layer: str = ""  # the query model's layer whose feature map gives its descriptors ("" = the backbone output)
    gallery_model: str = ""  # the gallery model whose descriptors the database keeps (asymmetric mode; "" = the KD teacher)
    gallery_layer: str = ""
    codec_dim: int = 32  # database descriptors projected to this many dimensions (bits when binarised)
    shortlist: int = 20  # test and validation: the global top-S re-ranked (≥ every query's R for an exact MAP@R)
    modes: tuple[str, ...] = MODES
    storages: tuple[str, ...] = STORAGES
    # LOCORE's rows only for these storages (its windows cost ~10× AMES's pairs on 2 cores; the 1 KB budget is AMES's)
    locore_storages: tuple[str, ...] = STORAGES
    ames: AMESConfig = field(default_factory=AMESConfig)
    locore: LOCOREConfig = field(default_factory=LOCOREConfig)

    def __post_init__(self) -> None:
        for value, known, what in ((self.modes, MODES, "mode"), (self.storages, STORAGES, "storage"), (self.methods, METHODS, "method"),
                                   (self.locore_storages, STORAGES, "storage")):
            unknown = sorted(set(value) - set(known))
            if unknown:
                raise ValueError(f"unknown re-ranking {what}(s) {', '.join(unknown)}; known: {', '.join(known)}")
        for name, settings in (("ames", self.ames), ("locore", self.locore)):
            if name in self.methods and max(settings.query_budget, settings.database_budget) > self.budget:
                raise ValueError(f"the {name} re-ranker's budgets ({settings.query_budget}, {settings.database_budget}) exceed the "
                                 f"{self.budget} descriptors extracted per image")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RerankConfig":
        values = strict_settings(cls, data, "[rerank]")
        for name, settings_class in (("ames", AMESConfig), ("locore", LOCOREConfig)):
            if name in values:
                values[name] = settings_class.from_dict(dict(values[name]))
        for name in ("modes", "storages", "methods", "locore_storages"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Sides:
    """One mode's global embeddings and local descriptors of a split, for both sides."""

    def __init__(self, step: "_SeedRerank", mode: str, queries: ImageDataset, gallery: ImageDataset) -> None:
        exp, models = step.experiment, step.models
        store = exp.store
        query = models.query
        self.global_queries = store.get(query, queries)
        if mode == "symmetric":
            self.global_gallery = store.get(query, gallery)
            db_model, db_spec = query, step.query_spec
        else:
            self.global_gallery, _ = step.ensemble.transform([store.get(m, gallery) for m in models.gallery_models])
            db_model, db_spec = step.database_model, step.gallery_spec
        self.local_queries = stored_local(store, query, queries, step.query_spec).align(self.global_queries.ids)
        if db_model is query and queries.fingerprint() == gallery.fingerprint():  # one image set, one model: read once
            self.local_gallery = self.local_queries
        else:
            self.local_gallery = stored_local(store, db_model, gallery, db_spec).align(self.global_gallery.ids)
        if mode == "asymmetric-mapped":  # the gallery model's descriptors mapped into the query model's descriptor space
            self.local_gallery = step.descriptor_map().transform(self.local_gallery)
        if self.global_gallery.labels is None:  # the ensemble's output carries no labels: take them from the store's
            self.global_gallery = Embeddings(self.global_gallery.vectors, self.global_gallery.ids, self.global_gallery.space,
                                             self.local_gallery.labels)


class _SeedRerank:
    def __init__(self, experiment: Experiment, cfg: RerankConfig, seed: int, record: RowRecorder, export_dir: Path | None = None) -> None:
        self.experiment, self.cfg, self.seed, self.record, self.export_dir = experiment, cfg, seed, record, export_dir
        self.models: SeedModels = experiment.models(seed)
        query = self.models.query
        self.database_model = self.models.gallery_model(cfg.gallery_model or experiment.config.kd_teacher_name)
        self.ensemble = CMCEEnsemble([experiment.fit_psi(m, query, seed) for m in self.models.gallery_models])
        self.query_spec = LocalSpec(cfg.budget, cfg.query_layer)
        self.gallery_spec = LocalSpec(cfg.budget, cfg.gallery_layer)
        if experiment.validation is None:
            raise ValueError("re-ranking chooses its fusion on validation classes: set validation_classes in the experiment")
        self._map: DescriptorMap | None = None

    def descriptor_map(self) -> DescriptorMap:
        """The gallery model's descriptors → the query model's, fitted on the training images' common positions."""
        if self._map is None:
            exp = self.experiment
            source = stored_local(exp.store, self.database_model, exp.train, self.gallery_spec)
            target = stored_local(exp.store, self.models.query, exp.train, self.query_spec)
            self._map = DescriptorMap().fit(source, target)
            log.info("descriptor map %s → %s fitted on %d aligned positions", self.database_model.name, self.models.query.name, self._map.pairs_)
        return self._map

    def run(self) -> None:
        exp = self.experiment
        for mode in self.cfg.modes:
            train = _Sides(self, mode, exp.train, exp.train)
            validation = _Sides(self, mode, exp.validation, exp.validation)
            test = _Sides(self, mode, exp.test_queries, exp.test_gallery)
            test_short = global_shortlist(test.global_queries, test.global_gallery, self.cfg.shortlist)
            db_name = {"symmetric": "query model", "asymmetric": self.database_model.name,
                       "asymmetric-mapped": f"{self.database_model.name}, mapped"}[mode]
            global_name = f"{mode}: global only ({self.models.query.name} → "
            global_name += f"{self.models.query.name})" if mode == "symmetric" else "CMCE ensemble)"
            if mode == "asymmetric-mapped" and "asymmetric" in self.cfg.modes:
                global_name = None  # the same global ranking as the asymmetric mode's row
            if global_name is not None:
                self.record(global_name, "global", self.models.query.name, db_name, shortlist_metrics(test_short, ks=exp.config.ks),
                            shortlist=self.cfg.shortlist)
            for storage in self.cfg.storages:
                self._storage(mode, storage, train, validation, test, test_short, db_name)

    def _storage(self, mode: str, storage: str, train: _Sides, validation: _Sides, test: _Sides, test_short, db_name: str) -> None:
        exp, cfg = self.experiment, self.cfg
        tag = f"seed{self.seed}/{mode}-{storage}"
        codec_seed = derive_seed(self.seed, "codec", mode, storage)
        codec_recipe = {"local": train.local_gallery.space.fingerprint, "dim": cfg.codec_dim, "binary": storage == "binary",
                        "seed": codec_seed, "data": exp.train.fingerprint()}
        codec, _ = exp.cache.get_or_build("codec", tag, codec_recipe, lambda: DescriptorCodec(
            cfg.codec_dim, binary=storage == "binary", seed=codec_seed).fit(train.local_gallery))

        def sides(split: _Sides, settings) -> tuple[PairSide, PairSide]:
            # symmetric: the query side in the codec's projected space (float), comparable descriptor by descriptor
            query_codec = codec if mode != "asymmetric" else None
            return (PairSide.from_local(split.local_queries, settings.query_budget, codec=query_codec, stored=False,
                                        embeddings=split.global_queries),
                    PairSide.from_local(split.local_gallery, settings.database_budget, codec=codec, embeddings=split.global_gallery))

        bits = f"{cfg.codec_dim}-bit" if storage == "binary" else f"{cfg.codec_dim}-d float16"
        val_short = global_shortlist(validation.global_queries, validation.global_gallery, cfg.shortlist)
        for method in cfg.methods:
            if method == "maxsim" and mode == "asymmetric":
                continue  # descriptors of two models share no space to compare them in: only a learned re-ranker can
            if method == "locore" and storage not in cfg.locore_storages:
                continue
            settings = cfg.locore if method == "locore" else cfg.ames
            if method == "maxsim":
                reranker, train_seconds, label = MaxSimReranker(device=exp.execution["device"], precision=exp.execution["precision"]), 0.0, "MaxSim (training-free)"
            else:
                reranker, train_seconds, label = self._learned(method, mode, storage, tag, train, sides)
            val_q, val_db = sides(validation, settings)
            test_q, test_db = sides(test, settings)
            reranker.fusion, _ = choose_fusion(*reranker.fusion_logits(val_q, val_db, val_short))
            if self.export_dir is not None and method != "maxsim":
                self._export(method, mode, storage, reranker, codec)
            start = time.perf_counter()
            order, _ = reranker.rerank(test_q, test_db, test_short)
            seconds = time.perf_counter() - start
            measured = shortlist_metrics(test_short, order, ks=exp.config.ks)
            # where a deployment is chosen (pipeline.deploy): R@1 on the validation classes the fusion was chosen on
            measured["validation_recall@1"] = shortlist_metrics(val_short, reranker.rerank(val_q, val_db, val_short)[0], ks=(1,))["recall@1"]
            extra = {"window": settings.window, "stride": settings.stride} if method == "locore" else {}
            setting = f"{mode}: + {label}, database {settings.database_budget} × {bits}"
            if self.seed == exp.config.seeds[0]:
                exp.deployables[setting] = lambda reranker=reranker, codec=codec, settings=settings, test=test, mode=mode: Deployable(
                    self.models.query, test.global_gallery, None, RerankDeployable(
                        reranker, codec, gallery_local=test.local_gallery, gallery_embeddings=test.global_gallery,
                        database_budget=settings.database_budget, query_spec=self.query_spec, query_budget=settings.query_budget,
                        project_queries=mode != "asymmetric", shortlist=self.cfg.shortlist))
            self.record(setting, f"rerank-{mode}", self.models.query.name,
                        db_name, measured, bytes_per_image=codec.bytes_per_image(settings.database_budget),
                        descriptor_bytes_per_image=codec.bytes_per_image(settings.database_budget, metadata=False),
                        rerank_ms_per_query=1000.0 * seconds / len(test_short.candidates), shortlist=cfg.shortlist,
                        fusion_lambda=reranker.fusion["lambda"], fusion_gamma=reranker.fusion["gamma"], train_seconds=train_seconds,
                        **extra)
            log.info("%s %s %s: R@1 %.3f → %.3f (λ %.2f, γ %.2f)", mode, storage, label, shortlist_metrics(test_short, ks=(1,))["recall@1"],
                     measured["recall@1"], reranker.fusion["lambda"], reranker.fusion["gamma"])

    def _export(self, method: str, mode: str, storage: str, reranker, codec: DescriptorCodec) -> None:
        """The trained re-ranker (its fusion chosen on validation), the database codec and, in the mapped mode, the
        descriptor map: a folder per seed, mode, storage and method, each artifact with its manifest."""
        folder = self.export_dir / f"seed{self.seed}" / f"{mode}-{storage}-{method}"
        reranker.save(folder / "reranker")
        codec.save(folder / "codec")
        if mode == "asymmetric-mapped":
            self.descriptor_map().save(folder / "descriptor-map")
        log.info("exported %s re-ranker (%s, %s) → %s", method, mode, storage, folder)

    def _learned(self, method: str, mode: str, storage: str, tag: str, train: _Sides, sides) -> tuple[AMESReranker | LOCOREReranker, float, str]:
        """The AMES or LOCORE re-ranker of this mode and storage, trained on the training classes (cached by recipe)."""
        exp = self.experiment
        base, reranker_class, name = {"ames": (self.cfg.ames, AMESReranker, "AMES"),
                                      "locore": (self.cfg.locore, LOCOREReranker, "LOCORE")}[method]
        settings = dataclasses.replace(base, seed=derive_seed(self.seed, method, mode, storage),
                                       maxsim_prior=base.maxsim_prior and mode != "asymmetric")
        train_q, train_db = sides(train, settings)
        depth = settings.window if method == "locore" else settings.shortlist
        train_short = global_shortlist(train.global_queries, train.global_gallery, depth)
        recipe = {method: asdict(settings), "query": train_q.space.fingerprint, "database": train_db.space.fingerprint,
                  "global": [train.global_queries.space.fingerprint, train.global_gallery.space.fingerprint],
                  "data": exp.train.fingerprint()}
        kind_tag = tag if method == "ames" else f"{tag}-{method}"  # AMES's entries keep their earlier names
        reranker, seconds = exp.cache.get_or_build("reranker", kind_tag, recipe,
                                                   lambda: reranker_class(settings, device=exp.execution["device"], precision=exp.execution["precision"]).fit(
                                                       train_q, train_db, train_short.candidates))
        # one read from the cache scores where, and at the precision, this run computes
        reranker.device, reranker.precision = exp.execution["device"], exp.execution["precision"]
        label = name + (" + MaxSim prior" if settings.maxsim_prior else "")
        if method == "locore":
            label += f", window {settings.window}"
        return reranker, seconds, label


def run_rerank(experiment: Experiment, cfg: RerankConfig, out_dir: str | Path, command: str = "",
               export_dir: str | Path | None = None) -> tuple[list[ResultRow], dict]:
    """Every seed's re-ranking rows; results.json/.md in ``out_dir``; with ``export_dir``, every trained re-ranker
    with its codec (and descriptor map) saved there too (``asymret rerank-train``)."""
    export = None if export_dir is None else Path(export_dir)
    return run_each_seed(experiment, "re-rank", lambda seed, record: _SeedRerank(experiment, cfg, seed, record, export).run(), out_dir,
                         command, rerank=cfg.to_dict(),
                         protocol=f"every test image a query against the rest; the exact global top-{cfg.shortlist} re-ranked; "
                                  "fusion (λ, γ) chosen on the validation classes")
