"""Query-model compatibility training side by side with CMCE (``asymret compare``).

Same data, same gallery models and the same light query architecture as the demo (models are shared with a demo
run in the same work directory).  Rows: the symmetric query model and gallery model; every compatibility method
(query model trained against the frozen gallery model); RAML (the gallery architecture at a lower query
resolution); CMCE single ψ and ensemble; and two combinations: CMCE ψ fitted on top of a distilled query model, and
an ensemble gallery in the gallery model's space served to the distilled query model.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..eval.metrics import evaluate_embeddings, retrieval_metrics
from ..eval.report import ResultRow
from ..core.uncertainty import ensemble_mean
from ..gallery.ensemble import CMCEEnsemble
from ..core.progress import log
from ..core.space import Embeddings
from ..core.machine import machine_description
from .experiment import Experiment, RowRecorder, psi_seconds, write_report


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


def run_comparison(experiment: Experiment, compare: CompareConfig, out_dir: str | Path, command: str = "") -> tuple[list[ResultRow], dict]:
    cfg = experiment.config
    rows: dict[str, ResultRow] = {}
    start = time.perf_counter()

    record = RowRecorder(rows)

    test = experiment.test
    for seed in cfg.seeds:
        log.info("── compare, seed %d ──", seed)
        query, q_seconds = experiment.train_or_load(cfg.query, seed, 0)
        gallery_models = [experiment.train_or_load(spec, seed, i + 1)[0] for i, spec in enumerate(cfg.gallery)]
        names = [m.name for m in gallery_models]
        teacher = gallery_models[names.index(compare.teacher) if compare.teacher in names else 0]
        q_test, t_test = experiment.store.get(query, test), experiment.store.get(teacher, test)
        q_info, t_info = query.complexity(), teacher.complexity()

        record(f"symmetric: {query.name}", "symmetric", query.name, query.name, evaluate_embeddings(q_test, q_test, cfg.ks),
               query_flops=q_info["flops"], train_seconds=q_seconds)
        record(f"symmetric: {teacher.name}", "symmetric", teacher.name, teacher.name, evaluate_embeddings(t_test, t_test, cfg.ks),
               query_flops=t_info["flops"])
        t_aligned = t_test.align(q_test.ids)
        record(f"no compatibility: {query.name} → {teacher.name}", "asymmetric", query.name, teacher.name,
               retrieval_metrics(q_test.vectors, q_test.labels, t_aligned.vectors, t_aligned.labels, cfg.ks, q_test.ids, t_aligned.ids))

        # every query-model compatibility method against the same frozen gallery model
        students: dict[str, Any] = {}
        for method in compare.methods:
            student, seconds = experiment.train_compatible(method, teacher, seed, epochs=compare.epochs)
            students[method] = student
            s_test = experiment.store.get(student, test)
            record(f"{method}: {student.name} → {teacher.name}", "query-training", student.name, teacher.name,
                   evaluate_embeddings(s_test, t_test, cfg.ks), query_flops=student.complexity()["flops"], train_seconds=seconds)

        # RAML: the same architecture on both sides, the query at a lower resolution, label-free
        raml_teacher = next((m for m in gallery_models if m.name == compare.raml_gallery), None)
        if raml_teacher is not None and compare.raml_query_size:
            rt_test = experiment.store.get(raml_teacher, test)
            record(f"symmetric: {raml_teacher.name}", "symmetric", raml_teacher.name, raml_teacher.name,
                   evaluate_embeddings(rt_test, rt_test, cfg.ks), query_flops=raml_teacher.complexity()["flops"])
            low_res = raml_teacher.at_resolution(compare.raml_query_size)
            low_res_test = experiment.store.get(low_res, test)
            record(f"no compatibility training: {low_res.name} → {raml_teacher.name}", "asymmetric", low_res.name, raml_teacher.name,
                   _asym(low_res_test, rt_test, cfg.ks), query_flops=low_res.complexity()["flops"])
            student, seconds = experiment.train_compatible("raml", raml_teacher, seed, epochs=compare.epochs,
                                                           student_resolution=compare.raml_query_size)
            record(f"raml: {student.name} → {raml_teacher.name}", "query-training", student.name, raml_teacher.name,
                   evaluate_embeddings(experiment.store.get(student, test), rt_test, cfg.ks), query_flops=student.complexity()["flops"],
                   train_seconds=seconds)

        # CMCE: the query model untouched, ψ per gallery model
        transforms = [experiment.fit_psi(m, query, seed, i) for i, m in enumerate(gallery_models)]
        g_tests = [experiment.store.get(m, test) for m in gallery_models]
        teacher_psi = transforms[gallery_models.index(teacher)]
        record(f"CMCE single ψ: {query.name} → ψ({teacher.name})", "cmce", query.name, f"ψ({teacher.name})",
               evaluate_embeddings(q_test, teacher_psi.transform(t_test), cfg.ks), query_flops=q_info["flops"],
               train_seconds=psi_seconds([teacher_psi]))
        gallery_emb, _ = CMCEEnsemble(transforms).transform(g_tests)
        record(f"CMCE ensemble: {query.name} → mean ψ(all gallery models)", "cmce", query.name, "ensemble",
               evaluate_embeddings(q_test, gallery_emb, cfg.ks), query_flops=q_info["flops"], train_seconds=psi_seconds(transforms))

        # combination 1: CMCE ψ fitted on top of a compatibility-trained query model
        combo = students.get(compare.combination_method)
        if combo is not None:
            combo_test = experiment.store.get(combo, test)
            combo_transforms = [experiment.fit_psi(m, combo, seed, i) for i, m in enumerate(gallery_models)]
            combo_gallery, _ = CMCEEnsemble(combo_transforms).transform(g_tests)
            record(f"combination: CMCE ensemble on the {compare.combination_method} query model", "combination", combo.name,
                   "ensemble → its space", evaluate_embeddings(combo_test, combo_gallery, cfg.ks), query_flops=combo.complexity()["flops"],
                   train_seconds=psi_seconds(combo_transforms))

            # combination 2: ensemble gallery in the gallery model's own space (ψ_i: other models → teacher), distilled query
            others = [(i, m) for i, m in enumerate(gallery_models) if m is not teacher]
            to_teacher = [experiment.fit_psi(m, teacher, seed, 100 + i) for i, m in others]
            mapped = [psi.transform(g_tests[i].align(t_test.ids)) for psi, (i, _) in zip(to_teacher, others)]
            stack = np.stack([t_test.vectors] + [m.vectors for m in mapped])
            ensemble_in_teacher = Embeddings(ensemble_mean(stack), t_test.ids, t_test.space, t_test.labels)
            record(f"combination: {compare.combination_method} query model → ensemble in {teacher.name}'s space", "combination",
                   combo.name, f"mean({teacher.name}, ψ(others))", evaluate_embeddings(combo_test, ensemble_in_teacher, cfg.ks),
                   query_flops=combo.complexity()["flops"], train_seconds=psi_seconds(to_teacher))

    meta = {
        "command": command,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_description(),
        "seeds": list(cfg.seeds),
        "dataset": experiment.dataset.name,
        "train_size": cfg.train_size,
        "test_size": len(test),
        "protocol": "every test image is a query against all other test images; asymmetric rows embed queries with the query side",
        "config": cfg.to_dict(),
        "compare": compare.to_dict(),
        "wall_seconds": time.perf_counter() - start,
    }
    result_rows = list(rows.values())
    write_report(result_rows, meta, {}, Path(out_dir))
    return result_rows, meta


def _asym(query: Embeddings, gallery: Embeddings, ks) -> dict:
    """Metrics of two *incompatible* spaces compared anyway (the space check is bypassed on purpose)."""
    gallery = gallery.align(query.ids)
    return retrieval_metrics(query.vectors, query.labels, gallery.vectors, gallery.labels, ks, query.ids, gallery.ids)
