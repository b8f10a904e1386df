"""Query-model upgrade without re-embedding the gallery: accuracy before/after and the cost against re-embedding.

The gallery is Fashion-MNIST's whole test split (10,000 images, every image a query against the rest), indexed
as the demo's CMCE ensemble (three gallery models, one ψ each). Query model v1 is the demo's (convnet-xs, 8
epochs on 10,000 images); two upgrades are measured: v2 trained longer (16 epochs, same images) and v2 trained on
more data (8 epochs on 30,000 images). For each:

- accuracy: the query model alone (symmetric), v1 against the v1 gallery, v2 against the *stale* v1 gallery (what
  happens without an upgrade; the spaces are mixed on purpose), and v2 against the upgraded gallery;
- cost of ``upgrade_query`` (the query model embeds the ψ training images, ψ's refitted on *stored* gallery
  embeddings, index rebuilt — no gallery-model forward pass) against re-embedding: the gallery models embed
  the ψ training images and the gallery again, then the same refit and rebuild.

    python benchmarks/upgrade_query.py --workdir runs/demo/default --seeds 0,1,2 --out docs/upgrade_query
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
from asymret.core.seeds import derive_seed
from asymret.data import load_dataset
from asymret.encoders import create_encoder, train_encoder
from asymret.eval.report import format_mean_std, run_metadata
from asymret.pipeline import PROFILES, Experiment
from asymret.pipeline.experiment import measure, mixed_spaces
from asymret.pipeline.upgrade import gallery_from_store, upgrade_query
from asymret.store import EmbeddingStore
from asymret.training import TrainConfig

UPGRADES = {"v2: trained longer (16 epochs, same 10k images)": (16, 10_000),
            "v2: more data (8 epochs on 30k images)": (8, 30_000)}


def train_query_v2(experiment: Experiment, epochs: int, images: int, seed: int):
    spec = experiment.config.query
    pool = experiment.train_pool.sample(images, seed=derive_seed(seed, "upgrade data")) if images != len(experiment.train) else experiment.train
    model_seed = derive_seed(seed, "query v2", str(epochs), str(images))
    name = f"query:convnet-xs-v2-{epochs}ep-{images // 1000}k"
    recipe = {"epochs": epochs, "data": pool.fingerprint(), "seed": model_seed, "spec": dataclasses.asdict(spec)}

    def build():
        encoder = create_encoder(spec.arch, embedding_dim=experiment.config.embedding_dim, neck=spec.neck, input_size=spec.input_size,
                                 name=name, seed=model_seed)
        train_encoder(encoder, pool, TrainConfig(epochs=epochs, batch_size=spec.batch_size, lr=spec.lr, weight_decay=spec.weight_decay,
                                                 seed=model_seed), augmentation=spec.augment)
        return encoder

    return experiment.cache.get_or_build("encoder", f"seed{seed}/{name}", recipe, build)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("runs/demo/default"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=Path("docs/upgrade_query"))
    args = parser.parse_args()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    start = time.perf_counter()
    experiment = Experiment(PROFILES["default"], load_dataset("fashion-mnist"), args.workdir)
    gallery_images = experiment.dataset.select(split="test")  # all 10,000
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
        add("query model v1 alone (symmetric)", measure(q_v1, q_v1, ks=(1,)))
        add("v1 → CMCE gallery (v1)", measure(q_v1, gallery_v1, ks=(1,)))
        for label, (epochs, images) in UPGRADES.items():
            query_v2 = train_query_v2(experiment, epochs, images, seed)
            q_v2 = store.get(query_v2, gallery_images)
            add(f"{label}: alone (symmetric)", measure(q_v2, q_v2, ks=(1,)))
            add(f"{label} → stale v1 gallery (no upgrade)", measure(*mixed_spaces(q_v2, gallery_v1), ks=(1,)))
            with tempfile.TemporaryDirectory() as scratch:
                # upgrade: the query model's training-image embeddings are not stored yet, so it really runs
                upgrade_store = EmbeddingStore(Path(scratch) / "store")
                for g in models.gallery_models:  # copy what the gallery side has stored: raw gallery-model embeddings
                    for data in (experiment.train, gallery_images):
                        src = store.directory(g, data)
                        shutil.copytree(src, upgrade_store.directory(g, data))
                report = upgrade_query(upgrade_store, transforms_v1, query_v2, experiment.train, gallery_images)
                gallery_v2, _, _ = gallery_from_store(upgrade_store, report.transforms, gallery_images)
                add(f"{label} → upgraded gallery (upgrade-query)", measure(q_v2, gallery_v2, index=report.index, ks=(1,)),
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

    meta = run_metadata("python benchmarks/upgrade_query.py " + " ".join(sys.argv[1:]), seeds, start, dataset="fashion-mnist",
                        gallery_images=len(gallery_images), psi_training_images=len(experiment.train),
                        protocol="every test image a query against the other 9,999, through the index search")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "upgrade_query.json", {"meta": meta, "rows": rows})
    lines = ["| setting | R@1 | MAP@R | seeds |", "|---|---:|---:|---:|"]
    for name, entries in rows.items():
        lines.append(f"| {name} | {format_mean_std([e['r1'] for e in entries])} | {format_mean_std([e['mapr'] for e in entries])} | {len(entries)} |")
    lines += ["", "| upgrade | upgrade-query s (query model embeds ψ training images / ψ refit / index) | "
              "re-embedding instead: gallery models' forward passes alone, s |", "|---|---:|---:|"]
    for label in UPGRADES:
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
