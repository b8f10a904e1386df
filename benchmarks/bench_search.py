"""Search throughput: raw FAISS vs asymret's FaissGalleryIndex wrapping the very same FAISS index.

Builds ``--n`` seeded random unit vectors in one ``faiss.IndexFlatIP``, then times, interleaved in each repeat:

(a) ``faiss_index.search(q, k)``                       -- raw FAISS
(b) ``FaissGalleryIndex.search(Embeddings(q), k)``      -- asymret, same index object (space checks + id mapping)
(c) the same with ``reject_fraction=0.1``               -- asymret with uncertainty rejection (IDSelectorBitmap)

and reports queries/s (median over repeats) and the overhead ratios asymret/raw measured in this one run.
Writes JSON atomically to ``--out`` and prints a short table.

    python benchmarks/bench_search.py --n 1000000 --dim 128 --queries 1000 --k 10 --repeats 3 --out docs/bench_search.json
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import time

import faiss
import numpy as np
from asymret.core.machine import cpu_model

from asymret.index import FaissGalleryIndex
from asymret.core.manifest import atomic_write_json
from asymret.core.space import Embeddings, Space


def random_unit(n: int, dim: int, rng: np.random.Generator, chunk: int = 100_000) -> np.ndarray:
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + len(block)] = block
    return out


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="gallery size")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reject-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/bench_search.json")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    space = Space("bench-random-unit", args.dim, True, "bench")
    t_build = time.perf_counter()
    gallery = random_unit(args.n, args.dim, rng)
    raw = faiss.IndexFlatIP(args.dim)
    raw.add(gallery)
    del gallery
    ids = np.char.add("g", np.arange(args.n).astype(str))
    uncertainty = rng.random(args.n, dtype=np.float32)
    wrapped = FaissGalleryIndex.from_faiss(raw, space, ids=ids, uncertainty=uncertainty, factory="Flat")
    assert wrapped.faiss_index is raw, "the wrapper must use the same FAISS index object"
    build_seconds = time.perf_counter() - t_build

    q = random_unit(args.queries, args.dim, rng)
    queries = Embeddings(q, np.char.add("q", np.arange(args.queries).astype(str)), space)

    mask_seconds, rejected = timed(lambda: wrapped.rejected_mask(reject_fraction=args.reject_fraction))

    # warm-up (also fills the rejection-selection cache, whose one-off cost is mask_build_seconds)
    raw.search(q[:8], args.k)
    wrapped.search(queries.take(np.arange(min(8, args.queries))), args.k, reject_fraction=args.reject_fraction)

    times: dict[str, list[float]] = {"raw": [], "asymret": [], "asymret_reject": []}
    identical = True
    reject_ok = True
    for _ in range(args.repeats):
        t, (_, raw_positions) = timed(lambda: raw.search(q, args.k))
        times["raw"].append(t)
        t, result = timed(lambda: wrapped.search(queries, args.k))
        times["asymret"].append(t)
        identical &= bool(np.array_equal(result.positions, raw_positions))
        t, result_r = timed(lambda: wrapped.search(queries, args.k, reject_fraction=args.reject_fraction))
        times["asymret_reject"].append(t)
        found = result_r.positions >= 0
        reject_ok &= bool(found.all() and not rejected[result_r.positions[found]].any())

    median = {name: statistics.median(values) for name, values in times.items()}
    qps = {name: args.queries / seconds for name, seconds in median.items()}
    report = {
        "benchmark": "bench_search",
        "config": {
            "n": args.n,
            "dim": args.dim,
            "queries": args.queries,
            "k": args.k,
            "repeats": args.repeats,
            "reject_fraction": args.reject_fraction,
            "seed": args.seed,
            "index": "faiss.IndexFlatIP (same object for raw and asymret)",
        },
        "machine": {
            "nproc": os.cpu_count(),
            "nproc_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "faiss_omp_threads": faiss.omp_get_max_threads(),
            "cpu_model": cpu_model(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "faiss": faiss.__version__,
        },
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": args.seed,
        "build_seconds": build_seconds,
        "mask_build_seconds": mask_seconds,
        "seconds": times,
        "median_seconds": median,
        "qps": qps,
        "overhead_ratio": {
            "asymret_vs_raw": median["asymret"] / median["raw"],
            "asymret_reject_vs_raw": median["asymret_reject"] / median["raw"],
        },
        "checks": {"asymret_results_identical_to_raw": identical, "rejected_items_never_returned": reject_ok},
    }
    atomic_write_json(args.out, report)

    print(f"n={args.n} dim={args.dim} queries={args.queries} k={args.k} repeats={args.repeats} "
          f"threads={faiss.omp_get_max_threads()} faiss={faiss.__version__}")
    print(f"{'variant':<28}{'median s':>10}{'qps':>12}{'vs raw':>9}")
    for name, label in (("raw", "raw faiss"), ("asymret", "asymret"), ("asymret_reject", f"asymret reject={args.reject_fraction}")):
        print(f"{label:<28}{median[name]:>10.4f}{qps[name]:>12.1f}{median[name] / median['raw']:>9.3f}")
    print(f"rejection mask build (one-off, cached): {mask_seconds:.4f} s; checks: {report['checks']}")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
