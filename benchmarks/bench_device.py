"""Device benchmark: training-step throughput, extraction throughput and search latency for every device this
machine has (the CPU and each visible GPU) × precision (fp32, bf16, and fp16 on CUDA), named in the JSON.

The same script runs unchanged on a GPU machine (``--devices auto`` lists the CPU and every ``cuda:N``):

- **train step**: the one training loop (:func:`asymret.training.train`) on ``--model`` with a normalised-softmax
  loss, ``--train-steps`` steps of ``--batch-size`` random ``--input-size`` images already in memory (the model
  and the loss on the device, each batch copied there) — images/s;
- **extraction**: ``EmbeddingStore(device, precision, workers).extract`` of a folder of ``--images`` JPEGs of
  mixed sizes (about 1.2–1.6 × ``--input-size``, decoded and resized to ``--input-size``), fresh store each time —
  images/s, with ``--workers`` 0 (decoding in the main thread, as before issue 22) and N decoding threads; also the
  raw forward on preprocessed tensors, so the pipeline's share of the raw throughput is measured in the same run;
- **search latency**: one query image embedded by the model on the device + exact search in a gallery of
  ``--gallery`` random unit vectors (FAISS Flat) — milliseconds per query, median of ``--queries``.

Writes JSON atomically to ``--out`` and prints a table.

    python benchmarks/bench_device.py --model efficientnet-lite0 --input-size 224 --images 48 --batch-size 16 \\
        --train-steps 1 --workers 0,1 --repeats 2 --queries 5 --out docs/bench_device.json
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ASYMRET_NO_PROGRESS", "1")  # keep the progress bars out of the timings

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from asymret.core.device import available_devices, on_device, resolve_device, resolve_precision, to_device  # noqa: E402
from asymret.core.machine import cpu_model, machine_description  # noqa: E402
from asymret.core.manifest import atomic_write_json, library_versions  # noqa: E402
from asymret.data.dataset import FileSource, ImageDataset  # noqa: E402
from asymret.encoders import create_encoder  # noqa: E402
from asymret.store.embeddings import EmbeddingStore  # noqa: E402
from asymret.training import TrainConfig, batch_indices, train  # noqa: E402


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def precisions_of(device: torch.device, wanted: list[str]) -> list[str]:
    usable = []
    for precision in wanted:
        try:
            usable.append(resolve_precision(precision, device))
        except ValueError:
            pass
    return usable


def jpeg_folder(root: Path, count: int, size: int, seed: int = 0) -> ImageDataset:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(count):
        h, w = (int(size * rng.uniform(1.2, 1.6)) for _ in range(2))
        # smooth content (a random low-resolution image upsampled): JPEG sizes as photos have, not as noise has
        small = rng.integers(0, 256, size=(max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
        Image.fromarray(small).resize((w, h), Image.BILINEAR).save(root / f"{k:05d}.jpg", quality=90)
        names.append(f"{k:05d}.jpg")
    n = len(names)
    return ImageDataset(name="bench-jpegs", source=FileSource(root), ids=[name[:-4] for name in names], keys=names,
                        labels=np.arange(n) % 10, splits=["test"] * n, is_query=np.zeros(n, bool), is_gallery=np.ones(n, bool))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_throughput(args, device: torch.device, precision: str) -> float:
    from pytorch_metric_learning import losses as pml_losses

    encoder = create_encoder(args.model, embedding_dim=64, input_size=args.input_size, seed=0)
    loss_fn = pml_losses.NormalizedSoftmaxLoss(num_classes=10, embedding_size=64)
    generator = torch.Generator().manual_seed(0)
    n = args.batch_size * args.train_steps
    images = torch.randn(n, encoder.preprocess.channels, args.input_size, args.input_size, generator=generator)
    labels = torch.randint(0, 10, (n,), generator=generator)
    config = TrainConfig(epochs=1, batch_size=args.batch_size, lr=1e-3, device=str(device), precision=precision)
    with on_device(encoder, loss_fn, device=device):
        on_labels = labels.to(device)

        def compute_loss(rows: torch.Tensor) -> torch.Tensor:
            return loss_fn(encoder(to_device(images[rows], device)), on_labels[rows.to(device)])

        # one warm-up step (allocations, kernel selection), then the timed steps
        train(list(encoder.parameters()) + list(loss_fn.parameters()), compute_loss,
              lambda epoch, gen: batch_indices(args.batch_size, args.batch_size, gen), config, modules=[encoder])
        sync(device)
        start = time.perf_counter()
        train(list(encoder.parameters()) + list(loss_fn.parameters()), compute_loss,
              lambda epoch, gen: batch_indices(n, args.batch_size, gen), config, modules=[encoder])
        sync(device)
    return n / (time.perf_counter() - start)


def raw_throughput(encoder, dataset: ImageDataset, device: torch.device, precision: str, batch_size: int) -> tuple[float, float]:
    """(images/s, CPU seconds per image) of the forward pass alone on tensors preprocessed beforehand."""
    from asymret.core.device import autocast
    from asymret.data.batches import load_tensors

    tensors, _, _ = load_tensors(dataset, encoder.preprocess, workers=0)  # untimed
    with on_device(encoder, device=device), torch.no_grad(), autocast(device, precision):
        encoder.eval()
        encoder(to_device(tensors[:batch_size], device))  # warm-up
        sync(device)
        start, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(tensors), batch_size):
            encoder(to_device(tensors[i : i + batch_size], device)).float().cpu()
        sync(device)
    return len(tensors) / (time.perf_counter() - start), (time.process_time() - cpu) / len(tensors)


def extraction_throughput(encoder, dataset: ImageDataset, device: torch.device, precision: str, workers: int, batch_size: int,
                          scratch: Path) -> tuple[float, float]:
    """(images/s, CPU seconds per image of this process, decoding threads included)."""
    with tempfile.TemporaryDirectory(dir=scratch) as root:
        store = EmbeddingStore(root, batch_size=batch_size, device=str(device), precision=precision, workers=workers)
        start, cpu = time.perf_counter(), time.process_time()
        store.extract(encoder, dataset)
        sync(device)
        return len(dataset) / (time.perf_counter() - start), (time.process_time() - cpu) / len(dataset)


def extraction_rates(encoder, dataset: ImageDataset, device: torch.device, precision: str, workers: list[int], args,
                     scratch: Path) -> dict[str, dict[str, float]]:
    """Images/s and CPU seconds per image, per worker count and of the raw forward ("raw"): the best of ``--repeats``
    runs, interleaved (raw, 0, N, raw, 0, N, …) so that a machine's changing load falls on every setting alike.  The CPU time is what a shared machine's
    load does not change much: the work done, not the share of the cores this process got."""
    best: dict[str, float] = {"raw": 0.0}
    cpu: dict[str, float] = {"raw": float("inf")}
    for _ in range(args.repeats):
        rate, seconds = raw_throughput(encoder, dataset, device, precision, args.batch_size)
        best["raw"], cpu["raw"] = max(best["raw"], rate), min(cpu["raw"], seconds)
        for w in workers:
            rate, seconds = extraction_throughput(encoder, dataset, device, precision, w, args.batch_size, scratch)
            best[str(w)] = max(best.get(str(w), 0.0), rate)
            cpu[str(w)] = min(cpu.get(str(w), float("inf")), seconds)
    return {"images_per_s": best, "cpu_seconds_per_image": cpu}


def search_latency(encoder, dataset: ImageDataset, device: torch.device, precision: str, gallery: int, queries: int) -> float:
    from asymret.core.device import autocast
    from asymret.core.space import Embeddings
    from asymret.index.faiss_index import FaissGalleryIndex

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((gallery, encoder.embedding_dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    space = encoder.space()
    index = FaissGalleryIndex(space)
    index.add(Embeddings(vectors, np.array([f"g{i}" for i in range(gallery)]), space))
    images = [dataset.load(i % len(dataset)) for i in range(queries + 1)]
    times = []
    with on_device(encoder, device=device), autocast(device, precision):
        for i, image in enumerate(images):
            start = time.perf_counter()
            query = encoder.embed_images([image])
            index.search(Embeddings(query, np.array(["q"]), space), k=10)
            if i:  # the first one warms up
                times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="auto", help="auto (the CPU and every visible GPU) or a comma-separated list")
    parser.add_argument("--precisions", default="fp32,bf16,fp16", help="those a device lacks are skipped (fp16: CUDA only)")
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--images", type=int, default=192, help="JPEGs extracted")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--workers", default="0,1", help="decoding threads compared in the extraction (0 = the main thread)")
    parser.add_argument("--repeats", type=int, default=2, help="extraction runs per worker count (best kept, interleaved)")
    parser.add_argument("--gallery", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--scratch", type=Path, default=None, help="folder for the JPEGs and stores (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=Path("docs/bench_device.json"))
    args = parser.parse_args()

    devices = [resolve_device(d) for d in (available_devices() if args.devices == "auto" else args.devices.split(","))]
    workers = [int(w) for w in args.workers.split(",")]
    start_all = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        dataset = jpeg_folder(Path(scratch) / "jpegs", args.images, args.input_size)
        encoder = create_encoder(args.model, embedding_dim=64, input_size=args.input_size, seed=0)
        for device in devices:
            for precision in precisions_of(device, args.precisions.split(",")):
                extraction_throughput(encoder, dataset.subset(np.arange(min(len(dataset), args.batch_size))), device, precision, 0,
                                      args.batch_size, Path(scratch))  # warm-up (allocations, kernel selection): untimed
                extraction = extraction_rates(encoder, dataset, device, precision, workers, args, Path(scratch))
                raw_rate, raw_cpu = extraction["images_per_s"].pop("raw"), extraction["cpu_seconds_per_image"].pop("raw")
                row = {"device": str(device), "device_name": device_name(device), "precision": precision,
                       "train_images_per_s": train_throughput(args, device, precision),
                       "raw_forward_images_per_s": raw_rate, "raw_forward_cpu_seconds_per_image": raw_cpu,
                       "extraction_images_per_s": extraction["images_per_s"],
                       "extraction_cpu_seconds_per_image": extraction["cpu_seconds_per_image"],
                       "search_ms_per_query": search_latency(encoder, dataset, device, precision, args.gallery, args.queries),
                       "load_average": os.getloadavg()[0]}
                row["pipeline_share_of_raw"] = {w: v / raw_rate for w, v in row["extraction_images_per_s"].items()}
                rows.append(row)
                summary = ", ".join(f"{w} workers {v:.1f}/s" for w, v in row["extraction_images_per_s"].items())
                print(f"{row['device']:8s} {precision:5s} train {row['train_images_per_s']:7.1f} img/s | raw forward "
                      f"{row['raw_forward_images_per_s']:7.1f} img/s | extraction {summary} | search {row['search_ms_per_query']:.1f} ms",
                      flush=True)
    command = "python benchmarks/bench_device.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "scratch")
    atomic_write_json(args.out, {
        "benchmark": "device", "command": command, "machine": machine_description(), "versions": library_versions(),
        "settings": {"model": args.model, "input_size": args.input_size, "images": args.images, "batch_size": args.batch_size,
                     "repeats": args.repeats,
                     "train_steps": args.train_steps, "gallery": args.gallery, "queries": args.queries,
                     "images_kind": "synthetic JPEGs of mixed sizes, 1.2-1.6x the input size"},
        "rows": rows, "wall_seconds": time.perf_counter() - start_all,
    })
    print(f"→ {args.out}")


if __name__ == "__main__":
    main()
