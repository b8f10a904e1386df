"""How does CMCE's benefit depend on the gap between the query model and the gallery models?

Keeps the demo's three gallery models and varies only the query model (architecture and training length), on a
*validation* split (training-split images no model saw — never the test split).  For each query model: its
symmetric R@1 / MAP@R, the CMCE ensemble's asymmetric R@1 / MAP@R, and the gain of the latter over the former.

    python benchmarks/gap_study.py --workdir runs/demo/default --seeds 0,1,2 --out docs/gap_study
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from asymret.data import load_dataset
from asymret.eval.metrics import evaluate_embeddings
from asymret.eval.report import format_mean_std
from asymret.gallery import CMCEEnsemble
from asymret.core.manifest import atomic_write_bytes, atomic_write_json
from asymret.pipeline import PROFILES, Experiment, ModelSpec
from _common import run_meta, validation_split

QUERY_MODELS = (
    ModelSpec("query:convnet-xs-1ep", "convnet-xs", epochs=1),
    ModelSpec("query:convnet-xs-3ep", "convnet-xs", epochs=3),
    ModelSpec("query:convnet-xs", "convnet-xs", epochs=8),  # the demo's query model
    ModelSpec("query:convnet-s", "convnet-s", epochs=8),
    ModelSpec("query:convnet-m", "convnet-m", epochs=10),  # as strong as a gallery model
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="default")
    parser.add_argument("--workdir", type=Path, default=Path("runs/demo/default"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--val-size", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("docs/gap_study"))
    args = parser.parse_args()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    base = PROFILES[args.profile]
    dataset = load_dataset("fashion-mnist")
    start = time.perf_counter()
    results = []
    for spec in QUERY_MODELS:
        experiment = Experiment(dataclasses.replace(base, seeds=seeds, query=spec), dataset, args.workdir)
        validation = validation_split(experiment, args.val_size)  # the same images as ablate_cmce.py
        for seed in seeds:
            models = experiment.models(seed)
            query, gallery = models.query, models.gallery_models
            transforms = [experiment.fit_psi(model, query, seed) for model in gallery]
            q_val = experiment.store.get(query, validation)
            g_val = [experiment.store.get(m, validation) for m in gallery]
            ensemble, _ = CMCEEnsemble(transforms).transform(g_val)
            sym, asym = evaluate_embeddings(q_val, q_val, (1,)), evaluate_embeddings(q_val, ensemble, (1,))
            best_gallery = max(evaluate_embeddings(e, e, (1,))["recall@1"] for e in g_val)
            results.append({"query": spec.name, "flops": query.complexity()["flops"], "seed": seed,
                            "query_r1": sym["recall@1"], "query_mapr": sym["map@r"],
                            "cmce_r1": asym["recall@1"], "cmce_mapr": asym["map@r"], "best_gallery_r1": best_gallery})
    meta = run_meta(args, seeds, start)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "gap_study.json", {"meta": meta, "results": results})

    cell = format_mean_std
    lines = ["| query model | MFLOPs | query alone R@1 | CMCE ensemble R@1 | gain R@1 | query alone MAP@R | CMCE MAP@R | gain MAP@R | best gallery model R@1 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for spec in QUERY_MODELS:
        rows = [r for r in results if r["query"] == spec.name]
        get = lambda key: [r[key] for r in rows]  # noqa: E731
        gain_r1 = [r["cmce_r1"] - r["query_r1"] for r in rows]
        gain_map = [r["cmce_mapr"] - r["query_mapr"] for r in rows]
        lines.append(f"| {spec.name} | {rows[0]['flops'] / 1e6:.2f} | {cell(get('query_r1'))} | {cell(get('cmce_r1'))} | "
                     f"{cell(gain_r1)} | {cell(get('query_mapr'))} | {cell(get('cmce_mapr'))} | {cell(gain_map)} | {cell(get('best_gallery_r1'))} |")
    table = "\n".join(lines)
    atomic_write_bytes(args.out / "gap_study.md", (table + "\n").encode())
    print(table)


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
