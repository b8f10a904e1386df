"""Why does (or doesn't) the CMCE ensemble win?  Ablations on a *validation* split, never the test split.

Reuses the demo's trained models (same work directory and profile), carves a validation set out of the
Fashion-MNIST training split (images no model was trained on) and varies one thing at a time:
ψ's losses, ψ's capacity/kind, the data ψ is fitted on (the models' training images vs held-out images),
and the ensemble's size.  Writes a JSON and a Markdown table.

    python benchmarks/ablate_cmce.py --workdir runs/demo/default --seeds 0 --out docs/ablation_cmce
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import time
from pathlib import Path

import torch

from asymret.compat import CMCETransform
from asymret.data import load_dataset
from asymret.eval.metrics import evaluate
from asymret.eval.report import format_mean_std
from asymret.gallery import CMCEEnsemble
from asymret.core.manifest import atomic_write_bytes, atomic_write_json
from asymret.core.seeds import derive_seed
from asymret.pipeline import PROFILES, Experiment
from _common import heldout_split, run_meta, validation_split

VARIANTS = {
    # name: (fit set, ψ kind, hidden, losses)
    "default: mlp-512, sim + 0.1·dual-ce": ("train", "mlp", 512, {"similarity": 1.0, "dual-ce": 0.1}),
    "similarity only": ("train", "mlp", 512, {"similarity": 1.0}),
    "sim + 1.0·dual-ce": ("train", "mlp", 512, {"similarity": 1.0, "dual-ce": 1.0}),
    "sim + 1.0·kl": ("train", "mlp", 512, {"similarity": 1.0, "kl": 1.0}),
    "linear ψ": ("train", "linear", 512, {"similarity": 1.0, "dual-ce": 0.1}),
    "residual ψ": ("train", "residual", 512, {"similarity": 1.0, "dual-ce": 0.1}),
    "small mlp-64": ("train", "mlp", 64, {"similarity": 1.0, "dual-ce": 0.1}),
    "ψ fitted on held-out images": ("heldout", "mlp", 512, {"similarity": 1.0, "dual-ce": 0.1}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="default")
    parser.add_argument("--workdir", type=Path, default=Path("runs/demo/default"))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--val-size", type=int, default=2000)
    parser.add_argument("--heldout-size", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=Path("docs/ablation_cmce"))
    args = parser.parse_args()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    config = dataclasses.replace(PROFILES[args.profile], seeds=seeds)
    experiment = Experiment(config, load_dataset("fashion-mnist"), args.workdir)
    validation = validation_split(experiment, args.val_size)
    heldout = heldout_split(experiment, validation, args.heldout_size)
    store = experiment.store
    results: list[dict] = []
    start = time.perf_counter()
    for seed in seeds:
        models = experiment.models(seed)
        query, gallery = models.query, models.gallery_models
        q_val = store.get(query, validation)
        g_val = [store.get(model, validation) for model in gallery]

        def add(variant: str, setting: str, metrics: dict) -> None:
            results.append({"seed": seed, "variant": variant, "setting": setting,
                            "recall@1": metrics["recall@1"], "map@r": metrics["map@r"]})

        add("-", f"symmetric {query.name}", evaluate(q_val, q_val, ks=(1,)))
        for model, emb in zip(gallery, g_val):
            add("-", f"symmetric {model.name}", evaluate(emb, emb, ks=(1,)))
        for variant, (fit_on, kind, hidden, losses) in VARIANTS.items():
            fit_set = experiment.train if fit_on == "train" else heldout
            transforms = []
            for i, model in enumerate(gallery):
                settings = dataclasses.replace(config.psi, kind=kind, hidden_dim=hidden, losses=losses)
                psi = CMCETransform(settings, head=query.classifier, name=model.name, seed=derive_seed(seed, "psi", model.name, query.name))
                psi.fit(store.get(model, fit_set), store.get(query, fit_set))
                transforms.append(psi)
                add(variant, f"single ψ({model.name})", evaluate(q_val, psi.transform(g_val[i]), ks=(1,)))
            for size in range(2, len(gallery) + 1):
                for subset in itertools.combinations(range(len(gallery)), size):
                    if variant != next(iter(VARIANTS)) and size < len(gallery):
                        continue  # ensemble-size ablation only for the default variant
                    ensemble, _ = CMCEEnsemble([transforms[i] for i in subset]).transform([g_val[i] for i in subset])
                    names = "+".join(gallery[i].name.split(":")[-1] for i in subset)
                    add(variant, f"ensemble({names})", evaluate(q_val, ensemble, ks=(1,)))
    meta = run_meta(args, seeds, start)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "ablation.json", {"meta": meta, "results": results})
    lines = ["| variant | setting | R@1 % | MAP@R % | seeds |", "|---|---|---:|---:|---:|"]
    keys = list(dict.fromkeys((r["variant"], r["setting"]) for r in results))
    for variant, setting in keys:
        rows = [r for r in results if r["variant"] == variant and r["setting"] == setting]
        r1 = format_mean_std([r["recall@1"] for r in rows])
        mr = format_mean_std([r["map@r"] for r in rows])
        lines.append(f"| {variant} | {setting} | {r1} | {mr} | {len(rows)} |")
    table = "\n".join(lines)
    atomic_write_bytes(args.out / "ablation.md", (table + "\n").encode())
    print(table)


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
