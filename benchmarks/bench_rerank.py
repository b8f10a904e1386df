"""Re-ranking latency: global search alone vs global search + a re-ranker, at shortlists of 20, 100 and 400.

On a run config with a ``[rerank]`` table whose models and re-rankers ``asymret run CONFIG --workdir WORKDIR``
trained (the symmetric mode, float16 database): ``--queries`` test queries, one at a time as a service answers
them, through ``index.search(query, k=S)`` on the exact global index (FAISS flat) and through
``index.search(query, k=S, rerank=Reranking(...), shortlist=S)`` — the same search re-ranked by MaxSim, the
AMES-style pair-wise transformer (S pairs) or the LOCORE-style list-wise one (sliding windows over the S).
Reports milliseconds per query (median of ``--repeats``), the ratio (search + re-ranking) / search in the same run,
and R@1 of the re-ranked top-S on those queries, each query's own image excluded (the fusion chosen on the
validation characters at the config's shortlist).

    python benchmarks/bench_rerank.py --config glyphs-quick --workdir runs/glyphs-quick --out docs/bench_rerank.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from _common import command_line, run_arguments
from asymret.core.manifest import atomic_write_json
from asymret.core.space import Embeddings
from asymret.eval.report import RowRecorder, run_metadata
from asymret.eval.rerank import choose_fusion, shortlist_metrics
from asymret.index import GalleryIndex
from asymret.pipeline.rerank import _SeedRerank, _Sides  # the pipeline's own sides: the same descriptors as its rows
from asymret.pipeline.runner import experiment_of, load_run_config
from asymret.rerank import AMESReranker, DescriptorCodec, LOCOREReranker, MaxSimReranker, PairSide, Reranking, Shortlist, global_shortlist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    run_arguments(parser)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--shortlists", default="20,100,400")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("docs/bench_rerank.json"))
    args = parser.parse_args()
    start = time.perf_counter()
    run_config = load_run_config(args.config)
    if run_config.rerank is None:
        raise SystemExit(f"{args.config} has no [rerank] table")
    experiment = experiment_of(run_config, args.workdir)
    cfg = run_config.rerank
    step = _SeedRerank(experiment, cfg, args.seed, RowRecorder({}))
    test = _Sides(step, "symmetric", experiment.test_queries, experiment.test_gallery)
    validation = _Sides(step, "symmetric", experiment.validation, experiment.validation)
    tag = f"seed{args.seed}/symmetric-float16"
    codec = DescriptorCodec.load(experiment.cache.directory("codec", tag))
    locore = LOCOREReranker.load(experiment.cache.directory("reranker", f"{tag}-locore"))
    rerankers = {"MaxSim": (MaxSimReranker(), cfg.ames),
                 "AMES + MaxSim prior": (AMESReranker.load(experiment.cache.directory("reranker", tag)), cfg.ames),
                 f"LOCORE + MaxSim prior (window {locore.config.window}, stride {locore.config.stride})": (locore, cfg.locore)}

    def sides(split: _Sides, settings) -> tuple[PairSide, PairSide]:
        return (PairSide.from_local(split.local_queries, settings.query_budget, codec=codec, stored=False, embeddings=split.global_queries),
                PairSide.from_local(split.local_gallery, settings.database_budget, codec=codec, embeddings=split.global_gallery))

    val_short = global_shortlist(validation.global_queries, validation.global_gallery, cfg.shortlist)
    searches = {}
    for name, (reranker, settings) in rerankers.items():
        reranker.fusion, _ = choose_fusion(*reranker.fusion_logits(*sides(validation, settings), val_short))
        test_q, test_db = sides(test, settings)
        searches[name] = (reranker, test_q, Reranking(reranker, test_q, test_db))
    rows = np.random.default_rng(0).choice(len(test.global_queries.ids), size=min(args.queries, len(test.global_queries.ids)), replace=False)
    queries = test.global_queries
    torch.set_num_threads(max(1, torch.get_num_threads()))
    index = GalleryIndex(test.global_gallery.space)
    index.add(test.global_gallery)

    def one(row: int) -> Embeddings:
        return Embeddings(queries.vectors[row : row + 1], queries.ids[row : row + 1], queries.space)

    results = []
    for depth in (int(s) for s in args.shortlists.split(",")):
        full = global_shortlist(test.global_queries, test.global_gallery, depth)  # own image excluded: for R@1
        subset = Shortlist(full.query_ids[rows], full.candidates[rows], full.scores[rows], full.query_labels[rows],
                           full.gallery_labels, full.n_positives[rows])
        global_ms = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for row in rows:
                index.search(one(row), k=depth)
            global_ms.append(1000 * (time.perf_counter() - t0) / len(rows))
        entry = {"shortlist": depth, "global_ms_per_query": float(np.median(global_ms)), "rerankers": {}}
        for name, (reranker, test_q, reranking) in searches.items():
            per_query = [reranking.with_queries(test_q.take([row])) for row in rows]
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                for row, rerank in zip(rows, per_query):  # one query at a time, as a service answers
                    index.search(one(row), k=depth, rerank=rerank, shortlist=depth)
                times.append(1000 * (time.perf_counter() - t0) / len(rows))
            order, _ = reranker.rerank(test_q.take(rows), reranking.database, subset)
            total_ms = float(np.median(times))
            entry["rerankers"][name] = {"search_and_rerank_ms_per_query": total_ms, "rerank_ms_per_query": total_ms - entry["global_ms_per_query"],
                                        "ratio_to_global": total_ms / entry["global_ms_per_query"],
                                        "recall@1_global": shortlist_metrics(subset, ks=(1,))["recall@1"],
                                        "recall@1_reranked": shortlist_metrics(subset, order, ks=(1,))["recall@1"]}
        results.append(entry)
        print(json.dumps(entry), flush=True)
    meta = run_metadata(command_line(args),
                        [args.seed], start, config=args.config, queries=len(rows), gallery=len(test.global_gallery.ids),
                        budgets={"ames": [cfg.ames.query_budget, cfg.ames.database_budget],
                                 "locore": [cfg.locore.query_budget, cfg.locore.database_budget]}, codec_dim=cfg.codec_dim)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, {"meta": meta, "results": results})


if __name__ == "__main__":
    main()
