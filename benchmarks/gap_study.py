"""How does CMCE's gain depend on the gap between the gallery models and the query model?

Varies *both* sides of a run config — the query model's training length and every gallery model's training length
(a weaker gallery = the same architectures trained for a fraction of their epochs) — and measures, on the config's
validation split (held-out training classes for open-set data, unused training images otherwise; never the test
split), for every (query strength, gallery strength) cell:

- the query model's symmetric R@1 and the gallery models' (the gap: best gallery model − query model);
- the CMCE ensemble's asymmetric R@1 (query → mean ψ(gallery)), every single ψ's, and the KD baseline's (the query
  architecture distilled from the config's KD teacher at that gallery strength, querying the teacher's gallery);
- CMCE's gain over the query model alone, over the best single ψ and over KD — plotted against the gap.

    python benchmarks/gap_study.py --config glyphs-quick --workdir runs/glyphs-quick --seeds 0,1,2 --out docs/gap_study_glyphs

Models at the config's full strength are the ones ``asymret run CONFIG --workdir WORKDIR`` trains (reused from the
cache); the weaker ones are trained here and cached beside them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from asymret.core.manifest import atomic_write_bytes, atomic_write_json
from asymret.data import load_dataset
from asymret.eval.metrics import evaluate
from asymret.eval.report import format_mean_std
from asymret.gallery import CMCEEnsemble
from asymret.pipeline import Experiment, ExperimentConfig, ModelSpec
from asymret.pipeline.runner import load_run_config
from _common import MeasuredBy, run_meta, validation_split

BASELINES = {"query": "over the query model alone", "single": "over the best single ψ", "kd": "over KD"}


def weakened(spec: ModelSpec, fraction: float) -> ModelSpec:
    """``spec`` trained for ``fraction`` of its epochs (at least one); the full-strength spec keeps its name (and cache)."""
    if fraction >= 1.0:
        return spec
    epochs = max(1, math.ceil(fraction * spec.epochs))
    return dataclasses.replace(spec, name=f"{spec.name}-{epochs}ep", epochs=epochs, warmup_epochs=min(spec.warmup_epochs, epochs / 4))


def cell_config(config: ExperimentConfig, query_fraction: float, gallery_fraction: float) -> ExperimentConfig:
    gallery = tuple(weakened(spec, gallery_fraction) for spec in config.gallery)
    teacher = gallery[[spec.name for spec in config.gallery].index(config.kd_teacher_name)].name
    return dataclasses.replace(config, query=weakened(config.query, query_fraction), gallery=gallery, kd_teacher=teacher)


def r1(queries, gallery) -> float:
    return evaluate(queries, gallery, ks=(1,))["recall@1"]


def measure_cell(experiment: Experiment, validation, seed: int) -> dict:
    store, config = experiment.store, experiment.config
    models = experiment.models(seed)
    query, gallery = models.query, models.gallery_models
    q_val = store.get(query, validation)
    g_val = [store.get(model, validation) for model in gallery]
    transforms = [experiment.fit_psi(model, query, seed) for model in gallery]
    ensemble, _ = CMCEEnsemble(transforms).transform(g_val)
    teacher = models.gallery_model(config.kd_teacher_name)
    kd_model, _ = experiment.train_kd(teacher, seed)
    gallery_r1 = [r1(g, g) for g in g_val]
    query_r1 = r1(q_val, q_val)
    return {"query": query.name, "query_epochs": config.query.epochs, "gallery": [m.name for m in gallery],
            "gallery_epochs": [spec.epochs for spec in config.gallery], "seed": seed,
            "query_r1": query_r1, "gallery_r1": gallery_r1, "gap": max(gallery_r1) - query_r1,
            "single_psi_r1": [r1(q_val, psi.transform(g)) for psi, g in zip(transforms, g_val)],
            "cmce_r1": r1(q_val, ensemble),
            "kd_r1": r1(store.get(kd_model, validation), g_val[gallery.index(teacher)])}


def gains(row: dict) -> dict[str, float]:
    return {"query": row["cmce_r1"] - row["query_r1"], "single": row["cmce_r1"] - max(row["single_psi_r1"]),
            "kd": row["cmce_r1"] - row["kd_r1"]}


def write_results(out: Path, meta: dict, results: list[dict], query_fractions, gallery_fractions) -> None:
    """The JSON, the table and the plot of what has been measured so far (called after every seed)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "gap_study.json", {"meta": meta, "results": results})
    cell = format_mean_std
    lines = ["| gallery strength | query strength | best gallery R@1 | query R@1 | gap | best single ψ R@1 | KD R@1 | CMCE ensemble R@1 | "
             "gain over query | gain over best ψ | gain over KD | seeds |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for gf in gallery_fractions:
        for qf in query_fractions:
            rows = [r for r in results if r["gallery_fraction"] == gf and r["query_fraction"] == qf]
            if not rows:
                continue
            g = [gains(r) for r in rows]
            lines.append(f"| {gf:g}× epochs ({'/'.join(map(str, rows[0]['gallery_epochs']))}) | {qf:g}× ({rows[0]['query_epochs']} ep) | "
                         f"{cell([max(r['gallery_r1']) for r in rows])} | {cell([r['query_r1'] for r in rows])} | {cell([r['gap'] for r in rows])} | "
                         f"{cell([max(r['single_psi_r1']) for r in rows])} | {cell([r['kd_r1'] for r in rows])} | {cell([r['cmce_r1'] for r in rows])} | "
                         f"{cell([x['query'] for x in g])} | {cell([x['single'] for x in g])} | {cell([x['kd'] for x in g])} | {len(rows)} |")
    table = "\n".join(lines)
    machine = meta["machine"]
    isa = "AVX-512" if "avx512f" in machine.get("cpu_flags", []) else "AVX2" if "avx2" in machine.get("cpu_flags", []) else "no AVX2"
    header = (f"`{meta['command']}` — {meta['date']}, {machine.get('cpu_model')} ({machine.get('nproc')} vCPU, {isa}), "
              f"{meta['wall_seconds'] / 60:.1f} min, seeds {meta['seeds']}. Validation split: {meta['validation']}.\n\n")
    atomic_write_bytes(out / "gap_study.md", (header + table + "\n\n![gain against gap](gain_vs_gap.png)\n").encode())
    plot(out / "gain_vs_gap.png", results, gallery_fractions)
    print(table, flush=True)


def plot(path: Path, results: list[dict], gallery_fractions) -> None:
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 3.8), layout="constrained")
    axes = figure.subplots(1, len(BASELINES), sharey=True)
    colours = colormaps["viridis"](np.linspace(0.1, 0.85, len(gallery_fractions)))
    for ax, (key, title) in zip(axes, BASELINES.items()):
        for gf, colour in zip(gallery_fractions, colours):
            cells = sorted({r["query_fraction"] for r in results if r["gallery_fraction"] == gf})
            xs, ys, es = [], [], []
            for qf in cells:
                rows = [r for r in results if r["gallery_fraction"] == gf and r["query_fraction"] == qf]
                xs.append(100 * np.mean([r["gap"] for r in rows]))
                values = [100 * gains(r)[key] for r in rows]
                ys.append(np.mean(values))
                es.append(np.std(values))
            if xs:
                ax.errorbar(xs, ys, yerr=es, marker="o", color=colour, capsize=3, label=f"gallery {gf:g}× epochs")
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_title(f"CMCE gain {title}")
        ax.set_xlabel("gap: best gallery − query R@1 (points)")
    axes[0].set_ylabel("R@1 gain (points)")
    figure.suptitle("CMCE's gain against the gallery–query gap, validation classes (mean ± std over seeds)")
    axes[0].legend(fontsize=8)
    FigureCanvasAgg(figure).print_png(str(path))


def cell_key(row: dict) -> str:
    """A stored cell's key: its seed and the two strengths."""
    return f"{row['seed']}/{row['query_fraction']}/{row['gallery_fraction']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="glyphs-quick", help="a run config (TOML) or a preset")
    parser.add_argument("--workdir", type=Path, default=Path("runs/glyphs-quick"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--query-fractions", default="0.1,0.3,1", help="the query model's training length, as fractions of the config's")
    parser.add_argument("--gallery-fractions", default="0.1,0.3,1", help="every gallery model's training length, as fractions")
    parser.add_argument("--val-size", type=int, default=2000, help="validation images when the config holds out no classes")
    parser.add_argument("--out", type=Path, default=Path("docs/gap_study_glyphs"))
    args = parser.parse_args()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    query_fractions = [float(f) for f in args.query_fractions.split(",")]
    gallery_fractions = [float(f) for f in args.gallery_fractions.split(",")]
    run_config = load_run_config(args.config)
    dataset = load_dataset(run_config.dataset_kind, run_config.dataset_root, **run_config.dataset_options)
    base = dataclasses.replace(run_config.experiment, seeds=seeds)
    reference = Experiment(base, dataset, args.workdir)
    if reference.validation is not None:
        validation = reference.validation
        described = f"{len(validation)} images of {len(np.unique(validation.labels))} held-out training classes no model saw"
    else:
        validation = validation_split(reference, args.val_size)
        described = f"{len(validation)} training-split images no model saw"
    start = time.perf_counter()
    previous = args.out / "gap_study.json"
    stored = json.loads(previous.read_text()) if previous.exists() else {"results": [], "meta": {}}  # resume after an interruption
    measured_by = MeasuredBy(previous, stored["meta"].get("code", {}), [cell_key(r) for r in stored["results"]])
    results: list[dict] = stored["results"]
    earlier_seconds = 0.0 if measured_by.stale else float(stored["meta"].get("wall_seconds", 0.0))
    for seed in seeds:
        for gf in gallery_fractions:
            for qf in query_fractions:
                key = cell_key({"seed": seed, "query_fraction": qf, "gallery_fraction": gf})
                if measured_by.measure(key):  # another asymret measured it: drop it, measure it again
                    results = [r for r in results if cell_key(r) != key]
                elif any(cell_key(r) == key for r in results):
                    continue
                experiment = Experiment(cell_config(base, qf, gf), dataset, args.workdir)
                results.append({"query_fraction": qf, "gallery_fraction": gf, **measure_cell(experiment, validation, seed)})
        meta = {**run_meta(args, seeds, start), "validation": described, "code": measured_by.rows}
        meta["wall_seconds"] += earlier_seconds  # a resumed run's time includes the interrupted ones
        write_results(args.out, meta, results, query_fractions, gallery_fractions)
        print(f"seed {seed} done ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
