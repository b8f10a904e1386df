"""Does LOCORE's list context matter? The same trained list-wise re-ranker, its candidates scored together or alone.

On a run config with a ``[rerank]`` table whose LOCORE re-rankers ``asymret run CONFIG`` (or ``asymret evaluate
--config CONFIG --rerank locore``) trained (symmetric mode, float16 database), for each seed:

- **list**: the top-S scored as lists of ``window`` candidates, as in the re-ranking rows;
- **alone**: every candidate scored in a list of one (the query and that candidate only) — the same model made
  pair-wise; the difference to *list* is what the other candidates in the window contribute;
- **sliding**: the top-2S re-ranked with windows of ``window`` every ``stride`` from the end to the start — and
  the same 2S candidates in one window of 2S, for what the sliding windows cost against one long list.

Each variant's fusion is chosen on the validation classes the same way; R@1 and MAP@R on the test classes.

    python benchmarks/listwise_context.py --config glyphs-quick --workdir runs/glyphs-quick --seeds 0,1,2 --out docs/listwise_context.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from _common import command_line, open_run, run_arguments
from asymret.core.manifest import atomic_write_json
from asymret.eval.report import RowRecorder, run_metadata
from asymret.eval.rerank import choose_fusion, shortlist_metrics
from asymret.pipeline.rerank import _SeedRerank, _Sides  # the pipeline's own sides: the same descriptors as its rows
from asymret.rerank import DescriptorCodec, LOCOREReranker, PairSide, global_shortlist


def _alone(reranker: LOCOREReranker, queries: PairSide, database: PairSide, candidates: np.ndarray) -> np.ndarray:
    return np.concatenate([reranker.score(queries, database, candidates[:, j : j + 1]) for j in range(candidates.shape[1])], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    run_arguments(parser, seed=False)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=Path("docs/listwise_context.json"))
    args = parser.parse_args()
    start = time.perf_counter()
    run_config, experiment = open_run(args)
    cfg = run_config.rerank
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        step = _SeedRerank(experiment, cfg, seed, RowRecorder({}))
        validation = _Sides(step, "symmetric", experiment.validation, experiment.validation)
        test = _Sides(step, "symmetric", experiment.test_queries, experiment.test_gallery)
        tag = f"seed{seed}/symmetric-float16"
        codec = DescriptorCodec.load(experiment.cache.directory("codec", tag))
        reranker = LOCOREReranker.load(experiment.cache.directory("reranker", f"{tag}-locore"))
        window, stride = reranker.config.window, reranker.config.stride

        def sides(split: _Sides) -> tuple[PairSide, PairSide]:
            return (PairSide.from_local(split.local_queries, cfg.locore.query_budget, codec=codec, stored=False, embeddings=split.global_queries),
                    PairSide.from_local(split.local_gallery, cfg.locore.database_budget, codec=codec, embeddings=split.global_gallery))

        val_q, val_db = sides(validation)
        test_q, test_db = sides(test)
        entry = {"seed": seed, "window": window, "stride": stride}
        val_short = global_shortlist(validation.global_queries, validation.global_gallery, window)
        test_short = global_shortlist(test.global_queries, test.global_gallery, window)
        entry["global"] = shortlist_metrics(test_short, ks=(1,))
        # list: the window scored together (as the rows); alone: each candidate in a list of one
        reranker.fusion, _ = choose_fusion(val_short, reranker.score(val_q, val_db, val_short.candidates))
        entry["list"] = shortlist_metrics(test_short, reranker.rerank(test_q, test_db, test_short)[0], ks=(1,))
        list_fusion = reranker.fusion
        reranker.fusion, _ = choose_fusion(val_short, _alone(reranker, val_q, val_db, val_short.candidates))
        alone = reranker.fuse(test_short.scores, _alone(reranker, test_q, test_db, test_short.candidates))
        entry["alone"] = shortlist_metrics(test_short, test_short.reordered(alone), ks=(1,))
        # sliding windows over 2·window vs one window of 2·window (the fusion chosen on the first window, as the rows)
        reranker.fusion = list_fusion
        deep = global_shortlist(test.global_queries, test.global_gallery, 2 * window)
        entry["global_deep"] = shortlist_metrics(deep, ks=(1,))
        entry["sliding"] = shortlist_metrics(deep, reranker.rerank(test_q, test_db, deep)[0], ks=(1,))
        reranker.config = dataclasses.replace(reranker.config, window=2 * window, stride=2 * window)
        entry["one_long_window"] = shortlist_metrics(deep, reranker.rerank(test_q, test_db, deep)[0], ks=(1,))
        results.append(entry)
        print(json.dumps(entry), flush=True)
    meta = run_metadata(command_line(args),
                        [int(s) for s in args.seeds.split(",")], start, config=args.config)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, {"meta": meta, "results": results})


if __name__ == "__main__":
    main()
