"""Open-set studies on a run config's validation classes (never the test classes): does ψ generalise to classes it
never saw, does fitting it on unlabelled images of the gallery being indexed fix what it doesn't, and which kind of
ensemble diversity (D-T / D-TG / D-TGA, the CMCE paper's ablation) pays.

    python benchmarks/open_set_study.py --config glyphs --workdir runs/glyphs --seeds 0,1,2 --studies 1,2,3,5 --out docs/open_set_study

Reuses the models ``asymret run CONFIG --workdir WORKDIR`` trained (the config must set ``validation_classes``).

1. **Seen vs unseen classes**: asymmetric R@1 of query → ψ(gallery model) on images of training classes (as many
   classes as the validation split, all their images) vs the validation classes; beside it each model's own
   symmetric R@1 on both sets, so that ψ's own drop is told apart from the models'.
2. **ψ without labels**: ψ fitted with the similarity loss alone on the training images, and on the training
   images plus the (unlabelled) validation images it will index — the transductive fit a gallery side can do.
3. **Diversity**: D-T (three ψ's of one gallery model, different ψ seeds), D-TG (one architecture trained with
   different seeds: the same gallery spec from three seeds' runs), D-TGA (the config's different gallery models, and
   every smaller subset of them).
4. **ψ's recipe**: the config's ψ, the same trained 10× longer, and with the contrastive (InfoNCE) term instead
   of 1 − cos; plus how concentrated the query space is (norm of its mean embedding: 0 = spread, 1 = one point).
5. **The instance views**: how far the query model moves an image when it is re-printed (the config's
   ``instance_view``): mean cos(q(x), q(view of x)) ×100 and the query model's own instance R@1 on the validation
   images (views must find their originals) — the ceiling of every asymmetric instance recall.
"""
from __future__ import annotations

import argparse
import itertools
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from asymret.compat import CMCETransform
from asymret.core.manifest import atomic_write_bytes, atomic_write_json
from asymret.core.seeds import derive_seed
from asymret.core.space import Embeddings
from asymret.data import load_dataset
from asymret.eval.metrics import evaluate
from asymret.eval.report import format_mean_std
from asymret.gallery import CMCEEnsemble
from asymret.pipeline import Experiment
from asymret.pipeline.runner import load_run_config
from _common import run_meta

SEEN_SAMPLE_SEED = 103


def seen_classes_split(experiment: Experiment, classes: int):
    """All images of ``classes`` training classes (a seeded choice): the validation split's shape, on seen classes."""
    pool = experiment.train
    chosen = np.random.default_rng(SEEN_SAMPLE_SEED).choice(np.unique(pool.labels), size=classes, replace=False)
    return pool.subset(np.flatnonzero(np.isin(pool.labels, chosen)), name=f"{pool.name}/seen-classes")


def unlabelled(*parts: Embeddings) -> Embeddings:
    """The parts as one unlabelled set (what a label-free ψ fit may see)."""
    return Embeddings(np.concatenate([p.vectors for p in parts]), np.concatenate([p.ids for p in parts]), parts[0].space)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="glyphs")
    parser.add_argument("--workdir", type=Path, default=Path("runs/glyphs"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=Path("docs/open_set_study"))
    parser.add_argument("--studies", default="1,2,3,4,5", help="which studies to run (4, ψ trained 10× longer, is the slow one)")
    args = parser.parse_args()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    studies = {int(s) for s in args.studies.split(",")}
    run_config = load_run_config(args.config)
    config = dataclasses.replace(run_config.experiment, seeds=seeds)
    experiment = Experiment(config, load_dataset(run_config.dataset_kind, run_config.dataset_root, **run_config.dataset_options), args.workdir)
    if experiment.validation is None:
        raise SystemExit(f"config {args.config} sets no validation_classes: there is no split to study on")
    validation = experiment.validation
    seen = seen_classes_split(experiment, len(np.unique(validation.labels)))
    store = experiment.store
    start = time.perf_counter()
    results: list[dict] = []

    def add(study: str, setting: str, split: str, seed: int, metrics: dict) -> None:
        results.append({"study": study, "setting": setting, "split": split, "seed": seed,
                        "recall@1": metrics["recall@1"], "map@r": metrics["map@r"]})

    all_models = {seed: experiment.models(seed) for seed in seeds}
    for seed in seeds:
        models = all_models[seed]
        query, gallery = models.query, models.gallery_models
        q = {name: store.get(query, data) for name, data in (("seen", seen), ("unseen", validation))}
        for name in q:
            add("1 seen vs unseen", f"symmetric {query.name}", name, seed, evaluate(q[name], q[name], ks=(1,)))
        transforms = []
        for model in gallery:
            psi = experiment.fit_psi(model, query, seed)
            transforms.append(psi)
            for name, data in (("seen", seen), ("unseen", validation)):
                g = store.get(model, data)
                add("1 seen vs unseen", f"symmetric {model.name}", name, seed, evaluate(g, g, ks=(1,)))
                add("1 seen vs unseen", f"{query.name} → ψ({model.name})", name, seed, evaluate(q[name], psi.transform(g), ks=(1,)))

        # 2: label-free ψ, on the training images, then with the images being indexed added (unlabelled)
        for model in (gallery if 2 in studies else []):
            g_val = store.get(model, validation)
            psi_seed = derive_seed(seed, "psi", model.name, query.name)
            g_train, q_train = store.get(model, experiment.train), store.get(query, experiment.train)
            with_labels = dataclasses.replace(config.psi, losses={"similarity": 1.0, "dual-ce": 0.1})
            labelled = CMCETransform(with_labels, head=query.classifier, name=model.name, seed=psi_seed).fit(g_train, q_train)
            add("2 ψ without labels", f"similarity + 0.1·dual-CE (the labels, through the query head), training images · {model.name}",
                "unseen", seed, evaluate(q["unseen"], labelled.transform(g_val), ks=(1,)))
            settings = dataclasses.replace(config.psi, losses={"similarity": 1.0})
            plain = CMCETransform(settings, name=model.name, seed=psi_seed).fit(unlabelled(g_train), unlabelled(q_train))
            add("2 ψ without labels", f"similarity only, training images · {model.name}", "unseen", seed,
                evaluate(q["unseen"], plain.transform(g_val), ks=(1,)))
            q_val = store.get(query, validation)
            transductive = CMCETransform(settings, name=model.name, seed=psi_seed).fit(unlabelled(g_train, g_val), unlabelled(q_train, q_val))
            add("2 ψ without labels", f"similarity only, training + indexed images (unlabelled) · {model.name}", "unseen", seed,
                evaluate(q["unseen"], transductive.transform(g_val), ks=(1,)))

        # 4: ψ's recipe, and the query space's concentration that 1 − cos cannot see past
        q_train = store.get(query, experiment.train)
        add("4 ψ recipe", f"norm of {query.name}'s mean training embedding (×100)", "seen", seed,
            {"recall@1": float(np.linalg.norm(q_train.vectors.mean(axis=0))), "map@r": float("nan")})
        recipes = {"the config's ψ, 10× the epochs": dataclasses.replace(config.psi, epochs=10 * config.psi.epochs),
                   "contrastive instead of 1 − cos": dataclasses.replace(config.psi, losses={"contrastive": 1.0}),
                   "contrastive, 10× the epochs": dataclasses.replace(config.psi, losses={"contrastive": 1.0}, epochs=10 * config.psi.epochs)}
        for model, default_psi in (zip(gallery, transforms) if 4 in studies else []):
            g_train = store.get(model, experiment.train)
            for name, data in (("seen", seen), ("unseen", validation)):
                add("4 ψ recipe", f"the config's ψ · {model.name}", name, seed,
                    evaluate(q[name], default_psi.transform(store.get(model, data)), ks=(1,)))
            for label, settings in recipes.items():
                psi = CMCETransform(settings, head=query.classifier, name=model.name, seed=derive_seed(seed, "psi", model.name, query.name))
                psi.fit(g_train, q_train)
                for name, data in (("seen", seen), ("unseen", validation)):
                    add("4 ψ recipe", f"{label} · {model.name}", name, seed, evaluate(q[name], psi.transform(store.get(model, data)), ks=(1,)))

        # 3: what kind of diversity the ensemble needs
        g_vals = [store.get(model, validation) for model in gallery]
        first = gallery[0]
        d_t = [transforms[0]] + [
            CMCETransform(config.psi, head=query.classifier, name=first.name, seed=derive_seed(seed, "D-T", str(i))).fit(
                store.get(first, experiment.train), store.get(query, experiment.train)) for i in (1, 2)]
        ensemble, _ = CMCEEnsemble(d_t).transform([g_vals[0]] * 3)
        add("3 diversity", f"D-T: 3 ψ seeds of {first.name}", "unseen", seed, evaluate(q["unseen"], ensemble, ks=(1,)))
        if len(seeds) >= 3 and len(gallery) > 1:
            same_arch = [all_models[s].gallery_models[1] for s in seeds]  # one spec, trained by three seeds' runs
            d_tg = [experiment.fit_psi(model, query, seed) for model in same_arch]
            ensemble, _ = CMCEEnsemble(d_tg).transform([store.get(model, validation) for model in same_arch])
            add("3 diversity", f"D-TG: {gallery[1].name} trained with 3 seeds", "unseen", seed, evaluate(q["unseen"], ensemble, ks=(1,)))
        ensemble, _ = CMCEEnsemble(transforms).transform(g_vals)
        add("3 diversity", "D-TGA: the config's gallery models (different architectures / data)", "unseen", seed,
            evaluate(q["unseen"], ensemble, ks=(1,)))
        # every smaller ensemble of the config's models: is the mean held back by one member?
        for size in range(2, len(gallery)):
            for members in itertools.combinations(range(len(gallery)), size):
                subset, _ = CMCEEnsemble([transforms[i] for i in members]).transform([g_vals[i] for i in members])
                names = " + ".join(gallery[i].name.split(":")[-1] for i in members)
                add("3 diversity", f"D-TGA subset: {names}", "unseen", seed, evaluate(q["unseen"], subset, ks=(1,)))
        # 5: the instance views, seen by the query model alone
        if config.instance_view:
            from asymret.data.augment import camera_views

            q_val = store.get(query, validation)
            views = store.get(query, camera_views(validation, config.instance_view, seed=derive_seed(seed, "study views"))).align(q_val.ids)
            add("5 instance views", f"mean cos(q(x), q('{config.instance_view}' view of x)) ×100 · {query.name}", "unseen", seed,
                {"recall@1": float(np.mean(np.sum(q_val.vectors * views.vectors, axis=1))), "map@r": float("nan")})
            found = evaluate(q_val, q_val, ks=(1,), instance_ks=(1,), instance_queries=views)
            add("5 instance views", f"instance R@1 of the views, symmetric {query.name}", "unseen", seed,
                {"recall@1": found["instance_recall@1"], "map@r": float("nan")})
        meta = run_meta(args, seeds, start)
        meta.update(validation=f"{len(validation)} images of {len(np.unique(validation.labels))} training classes no model was trained on",
                    seen=f"{len(seen)} images of {len(np.unique(seen.labels))} training classes the models were trained on",
                    seeds_done=list(seeds[: seeds.index(seed) + 1]))
        write_results(args.out, meta, results)  # after every seed: a long run's finished seeds are never lost
        print(f"seed {seed} done ({time.perf_counter() - start:.0f} s)", flush=True)


def write_results(out: Path, meta: dict, results: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "open_set_study.json", {"meta": meta, "results": results})
    lines = ["| study | setting | split | R@1 % | MAP@R % | seeds |", "|---|---|---|---:|---:|---:|"]
    for key in dict.fromkeys((r["study"], r["setting"], r["split"]) for r in results):
        rows = [r for r in results if (r["study"], r["setting"], r["split"]) == key]
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {format_mean_std([r['recall@1'] for r in rows])} | "
                     f"{format_mean_std([r['map@r'] for r in rows])} | {len(rows)} |")
    table = "\n".join(lines)
    atomic_write_bytes(out / "open_set_study.md", (table + "\n").encode())
    print(table, flush=True)


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
