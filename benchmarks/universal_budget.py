"""AMES's universal model: one re-ranker trained with random budgets, applied at any database budget.

On a run config with a ``[rerank]`` table (symmetric mode, float16 database, one seed): the fixed-budget AMES
re-ranker the run trained (its ``ames.database_budget``), a *universal* one trained the same way but with a random
budget per batch (1..budget on each side: ``AMESConfig.universal``), and MaxSim, each applied with the database
keeping 2, 4, 8 and 16 descriptors per image (the query side keeps its full budget) — the accuracy a deployment
gets when it shrinks the database's memory without retraining. Each fusion is chosen on the validation classes
at each budget; R@1 and MAP@R of the re-ranked top-S on the test classes.

    python benchmarks/universal_budget.py --config glyphs-quick --workdir runs/glyphs-quick --out docs/universal_budget.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import asdict
from pathlib import Path

from _common import command_line, open_run, run_arguments
from asymret.core.manifest import atomic_write_json
from asymret.core.seeds import derive_seed
from asymret.eval.report import RowRecorder, run_metadata
from asymret.eval.rerank import choose_fusion, shortlist_metrics
from asymret.pipeline.rerank import _SeedRerank, _Sides  # the pipeline's own sides: the same descriptors as its rows
from asymret.rerank import AMESReranker, DescriptorCodec, MaxSimReranker, PairSide, global_shortlist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    run_arguments(parser)
    parser.add_argument("--budgets", default="2,4,8,16")
    parser.add_argument("--storage", choices=("float16", "binary"), default="float16",
                        help="the database descriptors' storage (the run's codec for it is used)")
    parser.add_argument("--max-bytes", type=int, default=1024,
                        help="byte cap per database image for the budget chosen on validation")
    parser.add_argument("--out", type=Path, default=Path("docs/universal_budget.json"))
    args = parser.parse_args()
    start = time.perf_counter()
    run_config, experiment = open_run(args)
    cfg, ames = run_config.rerank, run_config.rerank.ames
    step = _SeedRerank(experiment, cfg, args.seed, RowRecorder({}))
    train, validation, test = (_Sides(step, "symmetric", q, g) for q, g in (
        (experiment.train, experiment.train), (experiment.validation, experiment.validation),
        (experiment.test_queries, experiment.test_gallery)))
    tag = f"seed{args.seed}/symmetric-{args.storage}"
    codec = DescriptorCodec.load(experiment.cache.directory("codec", tag))

    def sides(split: _Sides, database_budget: int) -> tuple[PairSide, PairSide]:
        return (PairSide.from_local(split.local_queries, ames.query_budget, codec=codec, stored=False),
                PairSide.from_local(split.local_gallery, database_budget, codec=codec))

    fixed = AMESReranker.load(experiment.cache.directory("reranker", tag))
    settings = dataclasses.replace(ames, universal=True, seed=derive_seed(args.seed, "ames", "symmetric", args.storage))
    train_q, train_db = sides(train, ames.database_budget)
    recipe = {"ames": asdict(settings), "query": train_q.space.fingerprint, "database": train_db.space.fingerprint,
              "global": [train.global_queries.space.fingerprint, train.global_gallery.space.fingerprint], "data": experiment.train.fingerprint()}
    train_short = global_shortlist(train.global_queries, train.global_gallery, settings.shortlist)
    universal, train_seconds = experiment.cache.get_or_build("reranker", f"{tag}-universal", recipe,
                                                             lambda: AMESReranker(settings).fit(train_q, train_db, train_short.candidates))
    rerankers = {"MaxSim": MaxSimReranker(), f"AMES (trained at {ames.database_budget})": fixed, "AMES universal": universal}
    val_short = global_shortlist(validation.global_queries, validation.global_gallery, cfg.shortlist)
    test_short = global_shortlist(test.global_queries, test.global_gallery, cfg.shortlist)
    results = [{"database_budget": None, "global": shortlist_metrics(test_short, ks=(1,))}]
    for budget in (int(b) for b in args.budgets.split(",")):
        entry = {"database_budget": budget, "database_bytes_per_image": codec.bytes_per_image(budget, metadata=False), "rerankers": {}}
        val_q, val_db = sides(validation, budget)
        test_q, test_db = sides(test, budget)
        for name, reranker in rerankers.items():
            reranker.fusion, grid = choose_fusion(*reranker.fusion_logits(val_q, val_db, val_short))
            validation_r1 = next(row["recall@1"] for row in grid
                                 if (row["lambda"], row["gamma"]) == (reranker.fusion["lambda"], reranker.fusion["gamma"]))
            order, _ = reranker.rerank(test_q, test_db, test_short)
            entry["rerankers"][name] = {**shortlist_metrics(test_short, order, ks=(1,)), "fusion": dict(reranker.fusion),
                                        "validation_recall@1": validation_r1}
        results.append(entry)
        print(json.dumps(entry), flush=True)
    # The deployment's choice, made on the validation classes only: per re-ranker, the budget that fits the byte cap
    # with the best validation R@1 — and what it gives on test.
    fitting = [e for e in results[1:] if e["database_bytes_per_image"] <= args.max_bytes]
    chosen = {}
    for name in rerankers:
        best = max(fitting, key=lambda e: (e["rerankers"][name]["validation_recall@1"], -e["database_budget"]), default=None)
        if best is not None:
            chosen[name] = {"database_budget": best["database_budget"], "database_bytes_per_image": best["database_bytes_per_image"],
                            "validation_recall@1": best["rerankers"][name]["validation_recall@1"],
                            "recall@1": best["rerankers"][name]["recall@1"]}
    meta = run_metadata(command_line(args),
                        [args.seed], start, config=args.config, storage=args.storage, max_bytes=args.max_bytes,
                        query_budget=ames.query_budget, universal_train_seconds=train_seconds,
                        shortlist=cfg.shortlist, test_queries=len(test_short.candidates))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, {"meta": meta, "results": results, "chosen_on_validation": chosen})


if __name__ == "__main__":
    main()
