"""What makes distillation and ψ carry over to unseen classes (issue 19, items 2–3), measured on validation classes.

    python benchmarks/carry_over.py --config glyphs-pretrained-quick --workdir runs/gpq --seeds 0 --out docs/carry_over/glyphs-pretrained-quick.json

Every variant is trained on the config's training classes; reported: R@1 on the config's *validation classes*
(held out of every model's training: where choices are made) — the student's own symmetric R@1, its asymmetric
R@1 against the teacher's gallery, and for ψ the query model against ψ(gallery).  Test figures are never computed
here, so nothing below can be tuned on them.  Models, views and ψ's come from the run's cache (``--workdir``).

- KD students: the query spec's start (pretrained weights, last blocks fine-tuned) vs the teacher's own weights at
  the query's resolution (RAML's student; needs one architecture) vs a copy of the trained query model; regression
  alone (distill-cos) vs regression + the student's own metric loss (distill-metric); more fine-tuned blocks;
  more views; the student at 48 px and at the teacher's own 72 px (how much of the gap is the resolution); a
  student sharing the teacher's first blocks at its resolution for a quarter of its cost (Lite0 cut after stage 2);
  and the untrained teacher at the query's resolution as the reference.
- ψ: its capacity (Procrustes, linear, the 2-layer MLP, with weight decay), its data (1 view vs a bank of views) and
  its input (the gallery model's embedding vs its pooled backbone features).
- KD data (``--groups kd-data``): the preset's student regressing the teacher on the training images alone vs also on
  unlabelled images — the indexed gallery (the validation classes split into held-out queries and an indexed
  part, as the transductive protocol does on test classes; the student never sees a query), or, for glyph configs,
  ``--extra-characters`` characters outside every split of the config.  Measured on validation: every validation
  image against the rest (``asymmetric``) and the held-out queries against the indexed part (``held-out``).
- Query models (``--groups query``): the preset's query model vs a query model that sees like the gallery (Lite0 cut
  after stage 2 at the teacher's resolution), each trained with the preset's query recipe: its own R@1 and the CMCE
  ensemble's (query → mean ψ(gallery models)), ψ fitted to it as to the preset's.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MeasuredBy, open_run, run_meta  # noqa: E402

from asymret.core.manifest import atomic_write_json  # noqa: E402
from asymret.eval.metrics import evaluate  # noqa: E402
from asymret.gallery import CMCEEnsemble  # noqa: E402
from asymret.pipeline.artifacts import TEST_SAMPLE_SEED, heldout_split  # noqa: E402
from asymret.pipeline.experiment import mixed_spaces  # noqa: E402

#: name → (ExperimentConfig overrides, query-spec overrides) of a KD student
KD_VARIANTS = {
    "spec init, distill-cos": ({"kd_init": "spec", "kd_method": "distill-cos"}, {}),
    "spec init, distill-metric": ({"kd_init": "spec", "kd_method": "distill-metric"}, {}),
    "spec init, distill-metric, 4 blocks fine-tuned": ({"kd_init": "spec", "kd_method": "distill-metric"}, {"tail_blocks": 4}),
    "query init, distill-metric": ({"kd_init": "query", "kd_method": "distill-metric"}, {}),
    "teacher init, distill-cos": ({"kd_init": "teacher", "kd_method": "distill-cos"}, {}),
    "teacher init, distill-metric": ({"kd_init": "teacher", "kd_method": "distill-metric"}, {}),
    "teacher init, distill-metric, 8 views": ({"kd_init": "teacher", "kd_method": "distill-metric", "kd_views": 8}, {}),
    # the resolution gap: the same student at 48 px, and at the teacher's own 72 px (no gap at all, only unseen classes)
    "spec init, distill-metric, student at 48 px": ({"kd_init": "spec", "kd_method": "distill-metric"}, {"input_size": 48}),
    "spec init, distill-metric, student at 72 px": ({"kd_init": "spec", "kd_method": "distill-metric"}, {"input_size": 72}),
    # a student that sees like its teacher for less: Lite0's own first 3 blocks at the teacher's 72 px + a light head
    # (efficientnet_lite0_s2, 17.1 MFLOPs); the head alone trained, or the head and the last kept block; more epochs
    "Lite0 cut after stage 2 at 72 px, distill-metric, head only": (
        {"kd_init": "spec", "kd_method": "distill-metric"}, {"arch": "efficientnet_lite0_s2", "input_size": 72, "tail_blocks": 1}),
    "Lite0 cut after stage 2 at 72 px, distill-metric, head + last block": (
        {"kd_init": "spec", "kd_method": "distill-metric"}, {"arch": "efficientnet_lite0_s2", "input_size": 72, "tail_blocks": 2}),
    "Lite0 cut after stage 2 at 72 px, distill-metric, head + last block, 20 epochs": (
        {"kd_init": "spec", "kd_method": "distill-metric", "kd_epochs": 20},
        {"arch": "efficientnet_lite0_s2", "input_size": 72, "tail_blocks": 2}),
    "Lite0 cut after stage 2 at 72 px, distill-metric, head + last block, 60 epochs": (
        {"kd_init": "spec", "kd_method": "distill-metric", "kd_epochs": 60},
        {"arch": "efficientnet_lite0_s2", "input_size": 72, "tail_blocks": 2}),
    # the control for the epochs: the preset's student (Lite0 at 32 px) trained as long
    "spec init, distill-metric, 20 epochs": ({"kd_init": "spec", "kd_method": "distill-metric", "kd_epochs": 20}, {}),
}

#: name → query-spec overrides of a query model (trained as the preset's query model: labels, its recipe)
QUERY_VARIANTS = {
    "Lite0 at 32 px (the preset's query model)": {},
    "Lite0 cut after stage 2 at the teacher's 72 px, head + last block": {
        "name": "query:lite0-s2@72", "arch": "efficientnet_lite0_s2", "input_size": 72, "tail_blocks": 2},
}

#: name → ψ settings overrides (PsiConfig fields), the number of views ψ is fitted on, and its input: the gallery
#: model's embedding or its pooled backbone features (the store's ``"pooled"`` output, e.g. 1280-d for Lite0)
PSI_VARIANTS = {
    "Procrustes (orthogonal), 1 view": ({"kind": "procrustes"}, 1, "embedding"),
    "Procrustes (orthogonal), 4 views": ({"kind": "procrustes"}, 4, "embedding"),
    "linear, 4 views": ({"kind": "linear"}, 4, "embedding"),
    "MLP, 1 view": ({}, 1, "embedding"),
    "MLP, 4 views": ({}, 4, "embedding"),
    "MLP + weight decay 0.05, 4 views": ({"weight_decay": 5e-2}, 4, "embedding"),
    "linear on backbone features, 4 views": ({"kind": "linear"}, 4, "pooled"),
    "linear + weight decay 0.05 on backbone features, 4 views": ({"kind": "linear", "weight_decay": 5e-2}, 4, "pooled"),
    "MLP on backbone features, 4 views": ({}, 4, "pooled"),
}


def extra_characters(run_config, count: int):
    """``count`` glyph characters after the config's own (GB2312 order), rendered alike, as unlabelled images; None
    for other datasets."""
    if run_config.dataset_kind != "glyphs" or count <= 0:
        return None
    from asymret.data.glyphs import gb2312_level1, load_glyphs

    options = dict(run_config.dataset_options)
    first = options.pop("max_classes", None)
    if first is None:
        return None  # the config uses every character: none is left outside it
    extra = load_glyphs(size=options.get("size", 64), characters=gb2312_level1()[first:first + count])
    return replace(extra, name=f"glyphs-outside-{first}-{first + count}")


@contextmanager
def configured(experiment, **overrides) -> Iterator[None]:
    """The experiment's config with ``overrides`` for the block (a variant's students and ψ's cache by their recipe)."""
    base = experiment.config
    experiment.config = replace(base, **overrides)
    try:
        yield
    finally:
        experiment.config = base


def recall_at_1(queries, gallery) -> float:
    return float(evaluate(queries, gallery, ks=(1,))["recall@1"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="glyphs-pretrained-quick")
    parser.add_argument("--workdir", type=Path, default=Path("runs/glyphs-pretrained-quick"))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--groups", default="kd,psi", help="any of kd, psi, kd-data, query")
    parser.add_argument("--extra-characters", type=int, default=1000,
                        help="kd-data, glyph configs: unlabelled characters from outside the config's character set")
    parser.add_argument("--kd-data-student", default="", choices=["", *KD_VARIANTS],
                        help="kd-data group: this KD variant's student instead of the preset's (its name joins the rows')")
    parser.add_argument("--kd-data-variants", default="",
                        help="kd-data group: only the data variants whose name starts with one of these (comma-separated)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    start = time.perf_counter()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    groups = set(args.groups.split(","))
    run_config, experiment = open_run(args)
    base = experiment.config
    validation = experiment.validation
    if validation is None:
        raise SystemExit("the config has no validation classes (validation_classes = 0)")
    results: dict = {"kd": {}, "psi": {}, "kd-data": {}, "query": {}, "reference": {}}
    stored = json.loads(args.out.read_text()) if args.out.is_file() else {"runs": {}, "meta": {}}
    results = {**results, **stored["runs"]}  # resume: variants an earlier run measured with the same asymret are kept
    measured_by = MeasuredBy(args.out, stored["meta"].get("code", {}), [f"{group}/{name}" for group in (*sorted(groups), "reference")
                                                                      if group in results for name in results[group]])
    done = {(group, name, seed) for group in ("kd", "psi", "kd-data", "query") for name, runs in results[group].items()
            if f"{group}/{name}" not in measured_by.stale for seed, _ in enumerate(runs)}

    def runs_for(group: str, name: str) -> list:
        """The variant's stored runs, emptied first when another asymret measured them."""
        if measured_by.measure(f"{group}/{name}"):
            results[group][name] = []
        return results[group].setdefault(name, [])

    def write() -> None:
        summary = {
            "kd": {name: {key: float(np.mean([r[key] for r in runs])) for key in ("symmetric", "asymmetric")}
                   for name, runs in results["kd"].items()},
            "psi": {name: float(np.mean([np.mean(list(r.values())) for r in runs])) for name, runs in results["psi"].items()},
            "kd-data": {name: {key: float(np.mean([r[key] for r in runs])) for key in ("symmetric", "asymmetric", "held-out")}
                        for name, runs in results["kd-data"].items()},
            "query": {name: {key: float(np.mean([r[key] for r in runs])) for key in ("symmetric", "psi_ensemble", "flops")}
                      for name, runs in results["query"].items()},
            "reference": {name: float(np.mean(values)) for name, values in results["reference"].items()},
        }
        atomic_write_json(args.out, {"meta": {**run_meta(args, seeds, start), "config": run_config.name,
                                              "measured_on": f"validation classes ({len(np.unique(validation.labels))} classes, {len(validation)} images)",
                                              "code": measured_by.rows},
                                     "summary (mean over seeds; ψ: mean over gallery models)": summary, "runs": results})
    val_queries, val_gallery = heldout_split(validation, base.transductive_query_fraction, seed=TEST_SAMPLE_SEED)
    data_variants = {"training images only (the preset's student)": None,
                     "+ the indexed validation gallery, unlabelled (held-out queries never seen)": val_gallery}
    extra_name = f"+ {args.extra_characters} characters outside the config, unlabelled"
    wanted = tuple(p.strip() for p in args.kd_data_variants.split(",") if p.strip())
    extra = extra_characters(run_config, args.extra_characters) if "kd-data" in groups and (not wanted or extra_name.startswith(wanted)) else None
    if extra is not None:
        data_variants[extra_name] = extra
    for position, seed in enumerate(seeds):
        models = experiment.models(seed)
        query = models.query
        teacher = models.gallery_model(base.kd_teacher_name)
        q_val = experiment.store.get(query, validation)
        t_val = experiment.store.get(teacher, validation)
        for name, value in (("query model alone (symmetric)", recall_at_1(q_val, q_val)),
                            (f"teacher {teacher.name} alone (symmetric)", recall_at_1(t_val, t_val))):
            runs = runs_for("reference", name)
            if len(runs) <= position:
                runs.append(value)
        if "kd" in groups:
            size = base.query.input_size or teacher.preprocess.input_size
            name = "teacher's weights at the query's resolution, untrained"
            untrained = teacher.at_resolution(size, name=f"{teacher.name}@{size}")
            u_val = experiment.store.get(untrained, validation)
            if ("kd", name, position) not in done:
                runs_for("kd", name).append(
                    {"symmetric": recall_at_1(u_val, u_val), "asymmetric": recall_at_1(*mixed_spaces(u_val, t_val)), "flops": untrained.complexity()["flops"]})
            for name, (overrides, query_overrides) in KD_VARIANTS.items():
                if ("kd", name, position) in done:
                    continue
                with configured(experiment, **overrides, query=replace(base.query, **query_overrides)):
                    student, seconds = experiment.train_kd(teacher, seed, query)
                s_val = experiment.store.get(student, validation)
                runs_for("kd", name).append({"symmetric": recall_at_1(s_val, s_val), "asymmetric": recall_at_1(s_val, t_val),
                                                          "train_seconds": seconds, "flops": student.complexity()["flops"]})
                print(f"seed {seed} KD {name}: {results['kd'][name][-1]}", flush=True)
                write()
        if "psi" in groups:
            for name, (psi_overrides, views, source) in PSI_VARIANTS.items():
                if ("psi", name, position) in done:
                    continue
                with configured(experiment, psi_views=views, psi=replace(base.psi, **psi_overrides)):
                    scores = []
                    for model in models.gallery_models:
                        psi = experiment.fit_psi(model, query, seed, source=source)
                        scores.append(recall_at_1(q_val, psi.transform(experiment.store.get(model, validation, output=source))))
                runs_for("psi", name).append(dict(zip([m.name for m in models.gallery_models], scores)))
                print(f"seed {seed} ψ {name}: {results['psi'][name][-1]}", flush=True)
                write()
        if "kd-data" in groups:
            overrides, query_overrides = KD_VARIANTS.get(args.kd_data_student, ({}, {}))
            for data_name, unlabelled in data_variants.items():
                name = (data_name.replace(" (the preset's student)", "") + f" [student: {args.kd_data_student}]"
                        if args.kd_data_student else data_name)
                if ("kd-data", name, position) in done or (wanted and not data_name.startswith(wanted)):
                    continue
                with configured(experiment, **overrides, query=replace(base.query, **query_overrides)):
                    student, seconds = experiment.train_kd(teacher, seed, query, unlabelled=unlabelled)
                s_val = experiment.store.get(student, validation)
                runs_for("kd-data", name).append({
                    "symmetric": recall_at_1(s_val, s_val), "asymmetric": recall_at_1(s_val, t_val),
                    "held-out": recall_at_1(experiment.store.get(student, val_queries), experiment.store.get(teacher, val_gallery)),
                    "train_seconds": seconds, "unlabelled_images": 0 if unlabelled is None else len(unlabelled)})
                print(f"seed {seed} KD data {name}: {results['kd-data'][name][-1]}", flush=True)
                write()
        if "query" in groups:
            for name, overrides in QUERY_VARIANTS.items():
                if ("query", name, position) in done:
                    continue
                spec = replace(base.query, **overrides)
                candidate = experiment.train_model(spec, seed)[0] if overrides else query
                c_val = experiment.store.get(candidate, validation)
                ensemble = CMCEEnsemble([experiment.fit_psi(model, candidate, seed) for model in models.gallery_models])
                g_vals = [experiment.store.get(model, validation) for model in models.gallery_models]  # read once
                runs_for("query", name).append({
                    "symmetric": recall_at_1(c_val, c_val), "psi_ensemble": recall_at_1(c_val, ensemble.transform(g_vals)[0]),
                    "psi": [recall_at_1(c_val, mapped) for mapped in ensemble.transform_each(g_vals)],
                    "flops": candidate.complexity()["flops"]})
                print(f"seed {seed} query {name}: {results['query'][name][-1]}", flush=True)
                write()
    write()
    print(json.dumps(json.loads(args.out.read_text())["summary (mean over seeds; ψ: mean over gallery models)"], indent=1))


if __name__ == "__main__":
    main()
