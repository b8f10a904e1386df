"""Compressed and approximate indexes at a million gallery vectors: bytes per image, recall@10 against exact search,
queries/s, build time — through asymret's index (factory strings, exact re-ranking, rejection).

The gallery: 1,000,000 real embeddings — the demo's query model (``--query-model``, 64-d) embedding random
augmented views (the ``strong`` preset: crops, shifts, rotations, blur, JPEG) of the Fashion-MNIST images, round
after round until ``--size``; the queries: ``--queries`` test images left out of the gallery, un-augmented.  The
vectors are cached in ``--cache``.  For each factory: build (train on 100,000 gallery vectors, add all), the
smallest ``nprobe``/``efSearch`` reaching recall@10 ≥ ``--target`` on 1,000 *gallery* vectors used as queries
(never the test queries), then on the test queries: recall@10 against exact search, queries/s for the batch of
queries and ms for one query at a time, and recall@10 with the 10 % most uncertain items rejected (uncertainty:
a seeded random value per item — the rejection path, not its benefit, is measured here).  Bytes per image = the
serialized index (codes, ids, graph or lists) / N in RAM, plus the float vectors on disk for exact re-ranking.

    python benchmarks/bench_ann.py --out docs/bench_ann.json
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from _common import command_line
from asymret.core.manifest import atomic_save_npy, atomic_write_json
from asymret.core.space import Embeddings
from asymret.data import load_dataset
from asymret.data.augment import augment_batch
from asymret.encoders import load_encoder
from asymret.eval.report import run_metadata
from asymret.index import ExactIndex, GalleryIndex
from asymret.index.tuning import recall_at_k, tune_for_recall

FACTORIES = [  # (factory, exact re-ranking depth R: top R·k rescored with the float vectors on disk; 0 = none)
    ("Flat", 0),
    ("HNSW16", 0),
    ("IVF4096,Flat", 0),
    ("IVF4096,SQ8", 0),
    ("IVF4096,PQ32", 0),
    ("IVF4096,PQ32", 10),
    ("OPQ16_64,IVF4096,PQ16", 10),
]


def embed_views(encoder, images: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` embeddings of augmented views of ``images`` (N, H, W, C uint8), round after round."""
    out, generator, done = [], torch.Generator().manual_seed(seed), 0
    with torch.no_grad():
        while done < size:
            for start in range(0, len(images), 4096):
                if done >= size:
                    break
                batch = encoder.preprocess(images[start:start + min(4096, size - done)])
                out.append(encoder(augment_batch(batch, "strong", generator)).numpy())
                done += len(batch)
            print(f"{done:,} views embedded", flush=True)
    return np.concatenate(out)[:size].astype(np.float32)


def serialized_bytes(index: GalleryIndex) -> int:
    return int(faiss.serialize_index(index.faiss_index).nbytes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--query-model", type=Path, default=Path("runs/demo/default/artifacts/encoder/seed0/query_convnet-xs"))
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--factories", default=";".join(f"{f}@{r}" for f, r in FACTORIES),
                        help="factory@R;... (R: exact re-ranking depth, 0 = none)")
    parser.add_argument("--cache", type=Path, default=Path("runs/ann/gallery-1m.npy"))
    parser.add_argument("--out", type=Path, default=Path("docs/bench_ann.json"))
    args = parser.parse_args()
    start = time.perf_counter()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    encoder = load_encoder(args.query_model).eval()
    space = encoder.space()
    data = load_dataset("fashion-mnist")
    rng = np.random.default_rng(0)
    query_rows = rng.choice(len(data), args.queries, replace=False)
    gallery_rows = np.setdiff1d(np.arange(len(data)), query_rows)
    images = np.stack([data.load(int(i)) for i in range(len(data))])
    with torch.no_grad():
        queries = Embeddings(encoder(encoder.preprocess(images[query_rows])).numpy(), data.ids[query_rows], space)
    if args.cache.is_file() and np.load(args.cache, mmap_mode="r").shape == (args.size, space.dim):
        vectors = np.load(args.cache)
        embed_seconds = None
    else:
        began = time.perf_counter()
        vectors = embed_views(encoder, images[gallery_rows], args.size, seed=1)
        embed_seconds = time.perf_counter() - began
        args.cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_npy(args.cache, vectors)
    gallery = Embeddings(vectors, np.arange(len(vectors)).astype(str), space)
    uncertainty = rng.uniform(0, 1, len(vectors)).astype(np.float32)
    exact = ExactIndex.from_embeddings(gallery, uncertainty)
    truth = exact.search(queries, k=args.k).positions
    truth_rejecting = exact.search(queries, k=args.k, reject_fraction=0.1).positions
    tuning = gallery.take(rng.choice(len(gallery), 1000, replace=False))
    tuning_truth = exact.search(tuning, k=args.k).positions
    training = gallery.take(rng.choice(len(gallery), min(100_000, len(gallery)), replace=False))
    results = []
    for factory, depth in ((f, int(r)) for f, _, r in (item.rpartition("@") for item in args.factories.split(";"))):
        began = time.perf_counter()
        index = GalleryIndex(space, factory=factory, exact_rerank=depth)
        if not index.is_trained:
            index.train(training)
        index.add(gallery, uncertainty)
        build_seconds = time.perf_counter() - began
        choice = tune_for_recall(index, tuning, tuning_truth, target=args.target, k=args.k)
        index.search(queries.take(np.arange(10)), k=args.k)  # warm-up
        began = time.perf_counter()
        found = index.search(queries, k=args.k).positions
        batch_seconds = time.perf_counter() - began
        one = []
        for i in range(100):
            began = time.perf_counter()
            index.search(queries.take(np.array([i])), k=args.k)
            one.append(time.perf_counter() - began)
        rejecting = index.search(queries, k=args.k, reject_fraction=0.1).positions
        ram = serialized_bytes(index)  # the float vectors of exact re-ranking are on disk once saved: counted apart
        entry = {"factory": factory, "exact_rerank": depth, "build_seconds": build_seconds,
                 "bytes_per_image_ram": ram / len(gallery), "bytes_per_image_disk_for_rerank": (4 * space.dim) if depth else 0,
                 "tuned": {key: value for key, value in choice.items() if key != "sweep"}, "sweep": choice["sweep"],
                 "recall@10": recall_at_k(found, truth), "recall@10_rejecting_10%": recall_at_k(rejecting, truth_rejecting),
                 "rejected_items_returned": int(np.isin(rejecting[rejecting >= 0], np.flatnonzero(exact.rejected_mask(reject_fraction=0.1))).sum()),
                 "queries_per_second_batch": len(queries) / batch_seconds, "ms_per_query_one_at_a_time": 1000 * float(np.median(one))}
        print({k: v for k, v in entry.items() if k != "sweep"}, flush=True)
        results.append(entry)
        del index
    meta = run_metadata(command_line(args), [0], start, gallery_vectors=len(gallery), dim=space.dim, queries=len(queries),
                        embed_seconds=embed_seconds, query_model=encoder.name, faiss=faiss.__version__)
    atomic_write_json(args.out, {"meta": meta, "results": results})


if __name__ == "__main__":
    main()
