"""Model choices on the glyph benchmark, made on validation characters: the training recipe, and how to adapt the
pretrained gallery model.

    python benchmarks/recipe_check.py --out docs/recipe_check                    # recipes, ~10 min on 2 cores
    python benchmarks/recipe_check.py --group gallery --out docs/recipe_check    # frozen vs fine-tuned Lite0
    python benchmarks/recipe_check.py --epochs 2 --out /tmp/recipe               # a quick look

Every model is trained on the glyph benchmark's training characters minus a validation set of held-out training
characters; reported: symmetric R@1 / MAP@R on the validation characters (where choices are made) and on the test
characters (never used for a choice), every image a query against the rest.

- ``recipes``: today's closed-set recipe vs the open-set one, same model (``--arch``, ``--input-size``);
- ``gallery``: EfficientNet-Lite0 (packaged ImageNet weights) at 64 px with a frozen backbone (neck only) vs
  partly fine-tuned (its last blocks trained on cached prefix activations of augmented views).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from asymret.core.manifest import atomic_write_bytes, atomic_write_json
from asymret.data import load_dataset
from asymret.encoders import create_encoder, train_encoder
from asymret.eval.metrics import evaluate
from asymret.eval.report import format_mean_std, run_metadata
from asymret.store import EmbeddingStore
from asymret.training import TrainConfig

#: name → (augmentation preset, m images per class in a batch (0 = shuffled), warm-up epochs)
RECIPES = {
    "closed-set (today's default): light shifts+flips, shuffled batches": ("light", 0, 0.0),
    "open-set: glyph augmentation, shuffled batches": ("glyph", 0, 1.0),
    "open-set: glyph augmentation, 4 per class": ("glyph", 4, 1.0),
}

#: name → train_encoder settings of the gallery candidates (EfficientNet-Lite0, 64 px, MLP neck)
GALLERY_CANDIDATES = {
    "Lite0 frozen, MLP neck only (12 epochs)": dict(freeze_backbone=True, epochs=12),
    "Lite0, last 2 blocks + head fine-tuned, 2 cached views (6 epochs)": dict(tail_blocks=2, cached_views=2, epochs=6),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group", choices=("recipes", "gallery"), default="recipes")
    parser.add_argument("--arch", default="convnet-m")
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--val-classes", type=int, default=200)
    parser.add_argument("--workdir", type=Path, default=Path("runs/recipe_check"))
    parser.add_argument("--out", type=Path, default=Path("docs/recipe_check"))
    args = parser.parse_args()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    start = time.perf_counter()

    data = load_dataset("glyphs")
    train_all, test = data.select(split="train"), data.select(split="test")
    train_classes = np.unique(train_all.labels)
    val_classes = np.random.default_rng(101).choice(train_classes, size=args.val_classes, replace=False)
    is_val = np.isin(train_all.labels, val_classes)
    fit, validation = train_all.subset(np.flatnonzero(~is_val)), train_all.subset(np.flatnonzero(is_val))
    store = EmbeddingStore(args.workdir / "embeddings")

    results = []

    def measure_recipe(encoder, name: str, seed: int, seconds: float) -> None:
        row = {"recipe": name, "seed": seed, "train_seconds": seconds}
        for split_name, split in (("validation", validation), ("test", test)):
            embeddings = store.get(encoder, split)
            metrics = evaluate(embeddings, embeddings, ks=(1, 10))
            row.update({f"{split_name}_r1": metrics["recall@1"], f"{split_name}_mapr": metrics["map@r"]})
        results.append(row)
        print(f"{name} seed {seed}: val R@1 {100 * row['validation_r1']:.1f}, test R@1 {100 * row['test_r1']:.1f} ({seconds:.0f} s)",
              flush=True)

    candidates = RECIPES if args.group == "recipes" else GALLERY_CANDIDATES
    for name, recipe in candidates.items():
        for seed in seeds:
            if args.group == "recipes":
                augment, m_per_class, warmup = recipe
                encoder = create_encoder(args.arch, embedding_dim=args.dim, input_size=args.input_size, name=f"recipe:{augment}:{m_per_class}", seed=seed)
                config = TrainConfig(epochs=args.epochs, batch_size=128, lr=3e-3, seed=seed, m_per_class=m_per_class, warmup_epochs=warmup)
                options = {"augmentation": augment}
            else:
                settings = dict(recipe)
                encoder = create_encoder("efficientnet_lite0", embedding_dim=args.dim, input_size=64, pretrained=True, neck="mlp",
                                         name=f"gallery-candidate:{len(results)}", seed=seed)
                config = TrainConfig(epochs=settings.pop("epochs"), batch_size=128, lr=1e-3, weight_decay=0.05, seed=seed, warmup_epochs=0.5)
                options = {"augmentation": "glyph", "store": store, **settings}
            t0 = time.perf_counter()
            train_encoder(encoder, fit, config, **options)
            measure_recipe(encoder, name, seed, time.perf_counter() - t0)

    meta = run_metadata("python benchmarks/recipe_check.py " + " ".join(sys.argv[1:]), seeds, start, dataset=data.name,
                        group=args.group, model=({"arch": args.arch, "input_size": args.input_size, "dim": args.dim, "epochs": args.epochs}
                                                 if args.group == "recipes" else {"arch": "efficientnet_lite0", "input_size": 64, "dim": args.dim}),
                        fit_images=len(fit), validation_images=len(validation), test_images=len(test),
                        protocol="symmetric retrieval, every image a query against the rest of its split")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "recipe_check" if args.group == "recipes" else "gallery_check"
    atomic_write_json(args.out / f"{stem}.json", {"meta": meta, "results": results})
    lines = ["| recipe | validation R@1 | validation MAP@R | test R@1 | test MAP@R | training s | seeds |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name in candidates:
        rows = [r for r in results if r["recipe"] == name]
        cells = [format_mean_std([r[key] for r in rows]) for key in ("validation_r1", "validation_mapr", "test_r1", "test_mapr")]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {np.mean([r['train_seconds'] for r in rows]):.0f} | {len(rows)} |")
    table = "\n".join(lines)
    atomic_write_bytes(args.out / f"{stem}.md", (table + "\n").encode())
    print(table)


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
