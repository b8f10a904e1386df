"""Re-ranking latency: global search alone vs global search + a re-ranker, at shortlists of 20, 100 and 400.

On a run config with a ``[rerank]`` table whose models and re-rankers ``asymret run CONFIG --workdir WORKDIR``
trained (the symmetric mode, float16 database): ``--queries`` test queries, one at a time as a service would
answer them, each searched in the exact global index (FAISS flat) for its top-S, then the S pairs scored by the
re-ranker (MaxSim, the AMES-style transformer). Reports milliseconds per query (median of ``--repeats``), the
ratio (global + re-ranking) / global in the same run, and R@1 of the re-ranked top-S on those queries (the fusion
chosen on the validation characters at the config's shortlist).

    python benchmarks/bench_rerank.py --config glyphs-quick --workdir runs/glyphs-quick --out docs/bench_rerank.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from asymret.core.manifest import atomic_write_json
from asymret.data import load_dataset
from asymret.eval.report import run_metadata
from asymret.eval.rerank import choose_fusion, shortlist_metrics
from asymret.pipeline import Experiment
from asymret.pipeline.rerank import _SeedRerank, _Sides  # the pipeline's own sides: the same descriptors as its rows
from asymret.pipeline.runner import load_run_config
from asymret.eval.report import RowRecorder
from asymret.rerank import AMESReranker, DescriptorCodec, MaxSimReranker, PairSide, global_shortlist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="glyphs-quick")
    parser.add_argument("--workdir", type=Path, default=Path("runs/glyphs-quick"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--shortlists", default="20,100,400")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("docs/bench_rerank.json"))
    args = parser.parse_args()
    start = time.perf_counter()
    run_config = load_run_config(args.config)
    if run_config.rerank is None:
        raise SystemExit(f"{args.config} has no [rerank] table")
    experiment = Experiment(run_config.experiment, load_dataset(run_config.dataset_kind, run_config.dataset_root,
                                                                **run_config.dataset_options), args.workdir)
    cfg, ames = run_config.rerank, run_config.rerank.ames
    step = _SeedRerank(experiment, cfg, args.seed, RowRecorder({}))
    test = _Sides(step, "symmetric", experiment.test_queries, experiment.test_gallery)
    validation = _Sides(step, "symmetric", experiment.validation, experiment.validation)
    tag = f"seed{args.seed}/symmetric-float16"
    codec = DescriptorCodec.load(experiment.cache.directory("codec", tag))
    rerankers = {"MaxSim": MaxSimReranker(), "AMES + MaxSim prior": AMESReranker.load(experiment.cache.directory("reranker", tag))}

    def sides(split: _Sides) -> tuple[PairSide, PairSide]:
        return (PairSide.from_local(split.local_queries, ames.query_budget, codec=codec, stored=False),
                PairSide.from_local(split.local_gallery, ames.database_budget, codec=codec))

    val_q, val_db = sides(validation)
    val_short = global_shortlist(validation.global_queries, validation.global_gallery, cfg.shortlist)
    for reranker in rerankers.values():
        reranker.fusion, _ = choose_fusion(val_short, reranker.score(val_q, val_db, val_short.candidates))
    test_q, test_db = sides(test)
    rows = np.random.default_rng(0).choice(len(test.global_queries.ids), size=min(args.queries, len(test.global_queries.ids)), replace=False)
    import faiss

    torch.set_num_threads(max(1, torch.get_num_threads()))
    index = faiss.IndexFlatIP(test.global_gallery.space.dim)
    index.add(test.global_gallery.vectors)
    results = []
    for depth in (int(s) for s in args.shortlists.split(",")):
        full = global_shortlist(test.global_queries, test.global_gallery, depth)
        global_ms = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for row in rows:
                index.search(test.global_queries.vectors[row : row + 1], depth + 1)
            global_ms.append(1000 * (time.perf_counter() - t0) / len(rows))
        entry = {"shortlist": depth, "global_ms_per_query": float(np.median(global_ms)), "rerankers": {}}
        for name, reranker in rerankers.items():
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                for row in rows:  # one query at a time, as a service answers
                    reranker.score(_take(test_q, [row]), test_db, full.candidates[row : row + 1])
                times.append(1000 * (time.perf_counter() - t0) / len(rows))
            logits = reranker.score(_take(test_q, rows), test_db, full.candidates[rows])
            subset = _subset(full, rows)
            fused = shortlist_metrics(subset, subset.reordered(reranker.fuse(subset.scores, logits)), ks=(1,))["recall@1"]
            rerank_ms = float(np.median(times))
            entry["rerankers"][name] = {"rerank_ms_per_query": rerank_ms, "ratio_to_global": (entry["global_ms_per_query"] + rerank_ms) / entry["global_ms_per_query"],
                                        "recall@1_global": shortlist_metrics(subset, ks=(1,))["recall@1"], "recall@1_reranked": fused}
        results.append(entry)
        print(json.dumps(entry), flush=True)
    meta = run_metadata("python benchmarks/bench_rerank.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
                        [args.seed], start, config=args.config, queries=len(rows), gallery=len(test.global_gallery.ids),
                        database_budget=ames.database_budget, query_budget=ames.query_budget, codec_dim=cfg.codec_dim)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, {"meta": meta, "results": results})


def _take(side: PairSide, rows) -> PairSide:
    rows = np.asarray(rows)
    return PairSide(side.vectors[rows], side.xy[rows], side.valid[rows], side.ids[rows], side.space,
                    None if side.labels is None else side.labels[rows])


def _subset(shortlist, rows):
    from asymret.rerank import Shortlist

    return Shortlist(shortlist.query_ids[rows], shortlist.candidates[rows], shortlist.scores[rows], shortlist.query_labels[rows],
                     shortlist.gallery_labels, shortlist.n_positives[rows])


if __name__ == "__main__":
    main()
