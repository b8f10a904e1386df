"""A training recipe that learns from a few images per class (issue 20, item 5), chosen on validation classes.

    python benchmarks/few_images.py --config icons --workdir runs/icons --seeds 0 --out docs/few_images/icons.json
    python benchmarks/few_images.py --config glyphs-quick --workdir runs/glyphs-quick --seeds 0 --out docs/few_images/glyphs-quick.json

Every model of the config trained from scratch (no pretrained weights) is trained again under each recipe below, on
the config's training classes; reported: its symmetric R@1 on the config's *validation classes* (held out of every
model: where choices are made; test figures are never computed here) and its training time.  The recipes change
only how long and in what batches a model trains — its architecture, augmentation, loss and label smoothing stay
the config's:

- ``the preset's recipe``: the config's epochs (glyphs.toml's numbers, chosen for 8–10 images per class on 3,755
  classes: a few hundred optimiser steps on a benchmark of ~1,300 images);
- ``≈ N images seen``: epochs measured in images seen rather than passes (``--images-seen``, default 60,000; several
  budgets comma-separated), so a small training set gets as many optimiser steps as a large one;
- the same with class-balanced batches (``m_per_class`` = 4: every class in a batch has positives for the
  normalised softmax's neighbours to be pulled by; ``--balanced no`` leaves it out);
- the same under other augmentation presets (``--augments light,strong``): how much the views a model trains on
  decide what it learns from a few images.

Models come from (and go to) the run's cache (``--workdir``): the preset's recipe is the model ``asymret run``
trains.  Writes after each model; an interrupted run resumes.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MeasuredBy, open_run, run_meta  # noqa: E402

from asymret.core.manifest import atomic_write_json  # noqa: E402
from asymret.eval.metrics import evaluate  # noqa: E402


def recipes(spec, train_images: int, images_seen: list[int], balanced: bool, augments: list[str] = ()) -> dict:
    """name → the spec under that recipe (the config's own first)."""
    out = {"the preset's recipe": spec}
    for budget in images_seen:
        epochs = max(spec.epochs, int(round(budget / train_images)))
        longer = replace(spec, epochs=epochs, warmup_epochs=max(spec.warmup_epochs, 1.0))
        out[f"≈ {budget:,} images seen ({epochs} epochs)"] = longer
        if balanced:
            out[f"≈ {budget:,} images seen ({epochs} epochs), 4 per class"] = replace(longer, m_per_class=4)
        for augment in augments:
            if augment != spec.augment:
                out[f"≈ {budget:,} images seen ({epochs} epochs), '{augment}' augmentation"] = replace(longer, augment=augment)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="icons")
    parser.add_argument("--workdir", type=Path, default=Path("runs/icons"))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--images-seen", default="60000", help="comma-separated budgets of images seen")
    parser.add_argument("--balanced", choices=("yes", "no"), default="yes", help="also each budget with 4 images per class in a batch")
    parser.add_argument("--augments", default="", help="also each budget under these augmentation presets (comma-separated)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    start = time.perf_counter()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    run_config, experiment = open_run(args)
    validation = experiment.validation
    if validation is None:
        raise SystemExit("the config has no validation classes (validation_classes = 0)")
    base = experiment.config
    scratch = [spec for spec in (base.query, *base.gallery) if not spec.pretrained]
    stored = json.loads(args.out.read_text()) if args.out.is_file() else {"runs": {}, "meta": {}}
    results: dict = stored["runs"]  # resume: what an earlier run measured with the same asymret is kept
    measured_by = MeasuredBy(args.out, stored["meta"].get("code", {}), [f"{model}/{name}" for model, by_recipe in results.items() for name in by_recipe])
    counts = np.unique(validation.labels, return_counts=True)[1]
    chance = float(np.sum(counts * (counts - 1)) / (len(validation) * (len(validation) - 1)))

    def write() -> None:
        summary = {model: {name: {"validation_recall@1": float(np.mean([r["validation_recall@1"] for r in runs])),
                                  "train_seconds": float(np.mean([r["train_seconds"] for r in runs]))}
                           for name, runs in by_recipe.items()} for model, by_recipe in results.items()}
        atomic_write_json(args.out, {"meta": {**run_meta(args, seeds, start), "config": run_config.name,
                                              "measured_on": f"validation classes ({len(counts)} classes, {len(validation)} images)",
                                              "training_images": len(experiment.train),
                                              "chance_recall@1": chance, "code": measured_by.rows},
                                     "summary (mean over seeds)": summary, "runs": results})
    for position, seed in enumerate(seeds):
        for spec in scratch:
            budgets = [int(b) for b in args.images_seen.split(",")]
            for name, variant in recipes(spec, len(experiment.train), budgets, args.balanced == "yes",
                                         [a for a in args.augments.split(",") if a]).items():
                if measured_by.measure(f"{spec.name}/{name}"):
                    results[spec.name][name] = []
                runs = results.setdefault(spec.name, {}).setdefault(name, [])
                if len(runs) > position:
                    continue
                model, seconds = experiment.train_model(variant, seed)
                embedded = experiment.store.get(model, validation)
                runs.append({"validation_recall@1": evaluate(embedded, embedded, ks=(1,))["recall@1"], "train_seconds": seconds,
                             "epochs": variant.epochs, "m_per_class": variant.m_per_class})
                print(f"seed {seed} {spec.name} · {name}: {runs[-1]}", flush=True)
                write()
    write()
    print(json.dumps(json.loads(args.out.read_text())["summary (mean over seeds)"], indent=1))


if __name__ == "__main__":
    main()
