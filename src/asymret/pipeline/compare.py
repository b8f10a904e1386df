"""Query-model compatibility training side by side with CMCE (``asymret compare``).

Same data, same gallery models and the same light query architecture as the demo (models are shared with a demo
run in the same work directory).  Rows: the symmetric query model and gallery model; every compatibility method
(query model trained against the frozen gallery model); RAML (the gallery architecture at a lower query
resolution); CMCE single ψ and ensemble; and two combinations: CMCE ψ fitted on top of a distilled query model, and
an ensemble gallery in the gallery model's space served to the distilled query model.  Every row is measured by
searching an index (:func:`~asymret.eval.metrics.evaluate`).  The rows a user could deploy — every trained query
model against its gallery, RAML, the combinations — also record their validation R@1 and are deployment
candidates of ``asymret run`` (:mod:`.deploy`) like the experiment's rows.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.space import Embeddings
from ..core.uncertainty import ensemble_mean
from ..encoders.encoder import Encoder
from ..eval.report import ResultRow, RowRecorder
from ..gallery.ensemble import CMCEEnsemble
from ..eval.metrics import evaluate
from .artifacts import SeedModels, psi_seconds
from .experiment import Experiment, run_each_seed


@dataclass
class CompareConfig:
    methods: tuple[str, ...] = ("distill-l2", "distill-cos", "bct", "aml", "csd", "rop", "monotonic")
    epochs: int | None = None  # default: the experiment's kd_epochs
    teacher: str = ""  # gallery model the query models are made compatible with ("" = the first)
    raml_gallery: str = "gallery:convnet-m"  # RAML: this gallery architecture, queried at a lower resolution
    raml_query_size: int = 14
    combination_method: str = "distill-cos"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _SeedComparison:
    """One seed of the comparison: its models, test embeddings and row recorder."""

    def __init__(self, experiment: Experiment, compare: CompareConfig, seed: int, record: RowRecorder) -> None:
        self.experiment, self.compare, self.seed, self.record = experiment, compare, seed, record
        self.cfg = experiment.config
        self.models: SeedModels = experiment.models(seed)
        self.teacher = self.models.gallery_model(compare.teacher or self.models.gallery_models[0].name)
        self.students: dict[str, Encoder] = {}

    def queries(self, model: Encoder) -> Embeddings:
        return self.experiment.store.get(model, self.experiment.test_queries)

    def gallery(self, model: Encoder) -> Embeddings:
        return self.experiment.store.get(model, self.experiment.test_gallery)

    def measure(self, query_model: Encoder, gallery: Embeddings, mixed: bool = False) -> dict[str, float]:
        return self.experiment.measure_query_model(query_model, gallery, mixed=mixed)

    def flops(self, model: Encoder) -> float:
        return model.complexity()["flops"]

    def deployable_row(self, key: str, kind: str, query_model: Encoder, gallery_name: str, gallery: Embeddings, gallery_of,
                       **extra: Any) -> None:
        """A row a user could deploy: measured as the experiment measures its deployable rows (test, and R@1 on the
        validation classes with ``gallery_of`` building the same gallery for them), and a deployment candidate."""
        self.experiment.record_asymmetric(self.record, self.seed, key, kind, query_model, gallery_name, gallery, gallery_of,
                                          query_flops=self.flops(query_model), **extra)

    def gallery_of(self, model: Encoder):
        return lambda part: self.experiment.store.get(model, part)

    def baselines(self) -> None:
        query, teacher = self.models.query, self.teacher
        for model, seconds in ((query, self.models.query_seconds), (teacher, None)):
            self.record(f"symmetric: {model.name}", "symmetric", model.name, model.name,
                        evaluate(self.queries(model), self.gallery(model), ks=self.cfg.ks), query_flops=self.flops(model),
                        **({"train_seconds": seconds} if seconds is not None else {}))
        self.record(f"no compatibility: {query.name} → {teacher.name}", "asymmetric", query.name, teacher.name,
                    self.measure(query, self.gallery(teacher), mixed=True))

    def query_training(self) -> None:
        """Every compatibility method: the query architecture trained against the same frozen gallery model."""
        for method in self.compare.methods:
            student, seconds = self.experiment.train_compatible(method, self.teacher, self.seed, epochs=self.compare.epochs)
            self.students[method] = student
            self.deployable_row(f"{method}: {student.name} → {self.teacher.name}", "query-training", student, self.teacher.name,
                                self.gallery(self.teacher), self.gallery_of(self.teacher), train_seconds=seconds)

    def raml(self) -> None:
        """The same architecture on both sides, the query at a lower resolution, label-free."""
        names = [m.name for m in self.models.gallery_models]
        if self.compare.raml_gallery not in names or not self.compare.raml_query_size:
            return
        gallery_model = self.models.gallery_model(self.compare.raml_gallery)
        gallery = self.gallery(gallery_model)
        self.record(f"symmetric: {gallery_model.name}", "symmetric", gallery_model.name, gallery_model.name,
                    evaluate(self.queries(gallery_model), gallery, ks=self.cfg.ks), query_flops=self.flops(gallery_model))
        low_res = gallery_model.at_resolution(self.compare.raml_query_size)
        self.record(f"no compatibility training: {low_res.name} → {gallery_model.name}", "asymmetric", low_res.name, gallery_model.name,
                    self.measure(low_res, gallery, mixed=True), query_flops=self.flops(low_res))
        student, seconds = self.experiment.train_compatible("raml", gallery_model, self.seed, epochs=self.compare.epochs,
                                                            student_resolution=self.compare.raml_query_size)
        self.deployable_row(f"raml: {student.name} → {gallery_model.name}", "query-training", student, gallery_model.name,
                            gallery, self.gallery_of(gallery_model), train_seconds=seconds)

    def cmce(self) -> None:
        """The query model untouched, one ψ per gallery model, then their ensemble."""
        query, teacher = self.models.query, self.teacher
        transforms = [self.experiment.fit_psi(m, query, self.seed) for m in self.models.gallery_models]
        teacher_psi = transforms[self.models.gallery_models.index(teacher)]
        self.record(f"CMCE single ψ: {query.name} → ψ({teacher.name})", "cmce", query.name, f"ψ({teacher.name})",
                    self.measure(query, teacher_psi.transform(self.gallery(teacher))), query_flops=self.flops(query),
                    train_seconds=psi_seconds([teacher_psi]))
        gallery, _ = CMCEEnsemble(transforms).transform([self.gallery(m) for m in self.models.gallery_models])
        self.record(f"CMCE ensemble: {query.name} → mean ψ(all gallery models)", "cmce", query.name, "ensemble",
                    self.measure(query, gallery), query_flops=self.flops(query), train_seconds=psi_seconds(transforms))

    def combinations(self) -> None:
        combo = self.students.get(self.compare.combination_method)
        if combo is None:
            return
        method, teacher, gallery_models = self.compare.combination_method, self.teacher, self.models.gallery_models
        g_tests = [self.gallery(m) for m in gallery_models]
        # 1: CMCE ψ fitted on top of the compatibility-trained query model
        transforms = [self.experiment.fit_psi(m, combo, self.seed) for m in gallery_models]
        ensemble = CMCEEnsemble(transforms)
        gallery, uncertainty = ensemble.transform(g_tests)
        self.deployable_row(f"combination: CMCE ensemble on the {method} query model", "combination", combo, "ensemble → its space",
                            gallery, lambda part: ensemble.transform([self.experiment.store.get(m, part) for m in gallery_models])[0],
                            uncertainty=uncertainty, train_seconds=psi_seconds(transforms))
        # 2: an ensemble gallery in the gallery model's own space (ψ_i: other models → teacher), distilled query
        others = [m for m in gallery_models if m is not teacher]
        to_teacher = [self.experiment.fit_psi(m, teacher, self.seed) for m in others]

        def in_teacher_space(part) -> Embeddings:
            t_part = self.experiment.store.get(teacher, part)
            mapped = [psi.transform(self.experiment.store.get(m, part).align(t_part.ids)) for psi, m in zip(to_teacher, others)]
            return Embeddings(ensemble_mean(np.stack([t_part.vectors] + [m.vectors for m in mapped])), t_part.ids, t_part.space, t_part.labels)

        self.deployable_row(f"combination: {method} query model → ensemble in {teacher.name}'s space", "combination", combo,
                            f"mean({teacher.name}, ψ(others))", in_teacher_space(self.experiment.test_gallery), in_teacher_space,
                            train_seconds=psi_seconds(to_teacher))


def run_comparison(experiment: Experiment, compare: CompareConfig, out_dir: str | Path, command: str = "") -> tuple[list[ResultRow], dict]:
    def run_seed(seed: int, record: RowRecorder) -> None:
        step = _SeedComparison(experiment, compare, seed, record)
        for run_step in (step.baselines, step.query_training, step.raml, step.cmce, step.combinations):
            run_step()

    return run_each_seed(experiment, "compare", run_seed, out_dir, command, train_size=experiment.config.train_size,
                         test_size=len(experiment.test), compare=compare.to_dict(),
                         protocol="every test image is a query against all other test images; asymmetric rows embed queries "
                                  "with the query side; every row measured by searching an exact index",
                         instance_protocol=experiment.instance_protocol())
