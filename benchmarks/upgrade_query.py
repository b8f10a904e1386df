"""Query-model upgrade without re-embedding the gallery: accuracy before/after and the cost against re-embedding.

The gallery is a run config's test gallery (every test image a query against the rest), indexed as the config's
CMCE ensemble (one ψ per gallery model).  Query model v1 is the config's; the upgrades measured:

- v2 trained longer (twice the config's epochs, the same images);
- v2 trained on more data (the config's epochs on three times the images) — when the config trains on a sample of
  the training split (the Fashion-MNIST demo: 10,000 of 60,000);

For each:

- accuracy: the query model alone (symmetric), v1 against the v1 gallery, v2 against the *stale* v1 gallery (what
  happens without an upgrade; the spaces are mixed on purpose), and v2 against the upgraded gallery;
- cost of ``upgrade_query`` (the query model embeds the ψ training images, ψ's refitted on *stored* gallery
  embeddings, index rebuilt — no gallery-model forward pass) against re-embedding: the gallery models embed
  the ψ training images and the gallery again (then the same refit and rebuild would follow).

    python benchmarks/upgrade_query.py --config fashion-mnist --workdir runs/fashion-mnist --seeds 0,1,2 --out docs/upgrade_query
    python benchmarks/upgrade_query.py --config glyphs --workdir runs/glyphs --seeds 0 --out docs/upgrade_query_glyphs

Reuses the models ``asymret run CONFIG --workdir WORKDIR`` trained.
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from asymret.core.manifest import atomic_write_bytes, atomic_write_json
from asymret.data import load_dataset
from asymret.eval.report import format_mean_std, run_metadata
from asymret.pipeline import Experiment
from asymret.eval.metrics import evaluate
from asymret.pipeline.experiment import mixed_spaces
from asymret.pipeline.runner import load_run_config
from asymret.index.build import gallery_from_store
from asymret.pipeline.upgrade import upgrade_query
from asymret.store import EmbeddingStore


def upgrades(experiment: Experiment) -> dict[str, Experiment]:
    """Label → an experiment whose query model is the v2 (same workdir, so the models are cached beside v1's)."""
    config, spec = experiment.config, experiment.config.query
    longer = dataclasses.replace(spec, name=f"{spec.name}-v2-{2 * spec.epochs}ep", epochs=2 * spec.epochs)
    chosen = {f"v2: trained longer ({longer.epochs} epochs, same {len(experiment.train):,} images)":
              dataclasses.replace(config, query=longer)}
    if config.train_size and 3 * config.train_size <= len(experiment.train_pool):
        more = dataclasses.replace(spec, name=f"{spec.name}-v2-{3 * config.train_size // 1000}k")
        chosen[f"v2: more data ({spec.epochs} epochs on {3 * config.train_size:,} images)"] = dataclasses.replace(
            config, query=more, train_size=3 * config.train_size)
    return {label: Experiment(c, experiment.dataset, experiment.workdir) for label, c in chosen.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="fashion-mnist", help="a run config (TOML) or a preset")
    parser.add_argument("--workdir", type=Path, default=Path("runs/fashion-mnist"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=Path("docs/upgrade_query"))
    args = parser.parse_args()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    start = time.perf_counter()
    run_config = load_run_config(args.config)
    dataset = load_dataset(run_config.dataset_kind, run_config.dataset_root, **run_config.dataset_options)
    experiment = Experiment(dataclasses.replace(run_config.experiment, seeds=seeds), dataset, args.workdir)
    gallery_images = experiment.test_gallery
    labels = list(upgrades(experiment))
    rows: dict[str, list[dict]] = {}

    def add(name: str, metrics: dict, **extra) -> None:
        rows.setdefault(name, []).append({"r1": metrics["recall@1"], "mapr": metrics["map@r"], **extra})

    for seed in seeds:
        models = experiment.models(seed)
        query_v1 = models.query
        transforms_v1 = [experiment.fit_psi(g, query_v1, seed) for g in models.gallery_models]
        store = experiment.store
        for g in models.gallery_models:  # the gallery side's stored raw embeddings (done once, when the gallery was built)
            store.get(g, experiment.train), store.get(g, gallery_images)
        gallery_v1, _, _ = gallery_from_store(store, transforms_v1, gallery_images)
        q_v1 = store.get(query_v1, gallery_images)
        add("query model v1 alone (symmetric)", evaluate(q_v1, q_v1, ks=(1,)))
        add("v1 → CMCE gallery (v1)", evaluate(q_v1, gallery_v1, ks=(1,)))
        for label, v2_experiment in upgrades(experiment).items():
            query_v2, _ = v2_experiment.train_model(v2_experiment.config.query, seed)
            q_v2 = store.get(query_v2, gallery_images)
            add(f"{label}: alone (symmetric)", evaluate(q_v2, q_v2, ks=(1,)))
            add(f"{label} → stale v1 gallery (no upgrade)", evaluate(*mixed_spaces(q_v2, gallery_v1), ks=(1,)))
            with tempfile.TemporaryDirectory() as scratch:
                # upgrade: the query model's training-image embeddings are not stored yet, so it really runs
                upgrade_store = EmbeddingStore(Path(scratch) / "store")
                for g in models.gallery_models:  # copy what the gallery side has stored: raw gallery-model embeddings
                    for data in (experiment.train, gallery_images):
                        src = store.directory(g, data)
                        shutil.copytree(src, upgrade_store.directory(g, data))
                report = upgrade_query(upgrade_store, transforms_v1, query_v2, experiment.train, gallery_images)
                gallery_v2, _, _ = gallery_from_store(upgrade_store, report.transforms, gallery_images)
                add(f"{label} → upgraded gallery (upgrade-query)", evaluate(q_v2, gallery_v2, index=report.index, ks=(1,)),
                    upgrade_seconds=report.seconds["total"], **{f"upgrade_{k}": v for k, v in report.seconds.items()})
                # the alternative: without stored raw embeddings, the gallery models embed everything again
                reembed_store = EmbeddingStore(Path(scratch) / "reembed")
                t0 = time.perf_counter()
                for g in models.gallery_models:
                    reembed_store.get(g, experiment.train), reembed_store.get(g, gallery_images)
                reembed = time.perf_counter() - t0
                rows[f"{label} → upgraded gallery (upgrade-query)"][-1]["reembed_gallery_models_seconds"] = reembed
            print(f"seed {seed} {label}: R@1 {100 * rows[f'{label} → upgraded gallery (upgrade-query)'][-1]['r1']:.1f}, "
                  f"upgrade {report.seconds['total']:.1f} s, gallery models re-embedding {reembed:.1f} s", flush=True)

    meta = run_metadata("python benchmarks/upgrade_query.py " + " ".join(sys.argv[1:]), seeds, start, config=args.config,
                        gallery_images=len(gallery_images), psi_training_images=len(experiment.train),
                        protocol="every test image a query against the rest, through the index search")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "upgrade_query.json", {"meta": meta, "rows": rows})
    lines = ["| setting | R@1 | MAP@R | seeds |", "|---|---:|---:|---:|"]
    for name, entries in rows.items():
        lines.append(f"| {name} | {format_mean_std([e['r1'] for e in entries])} | {format_mean_std([e['mapr'] for e in entries])} | {len(entries)} |")
    lines += ["", "| upgrade | upgrade-query s (query model embeds ψ training images / ψ refit / index) | "
              "re-embedding instead: gallery models' forward passes alone, s |", "|---|---:|---:|"]
    for label in labels:
        entries = rows[f"{label} → upgraded gallery (upgrade-query)"]
        parts = " / ".join(f"{np.mean([e[f'upgrade_{k}'] for e in entries]):.1f}"
                           for k in ("embed_training_images_with_query_model", "fit_transforms", "build_index"))
        lines.append(f"| {label} | {np.mean([e['upgrade_seconds'] for e in entries]):.1f} ({parts}) | "
                     f"{np.mean([e['reembed_gallery_models_seconds'] for e in entries]):.1f} |")
    table = "\n".join(lines)
    atomic_write_bytes(args.out / "upgrade_query.md", (table + "\n").encode())
    print(table)


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
