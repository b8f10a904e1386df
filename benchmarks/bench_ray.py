"""Ray Data extraction against the local engine on the same machine: images/s into the embedding store.

On a run config's trained gallery model (seed ``--seed``): ``--images`` test images embedded into a fresh store by
the local engine (this process, torch's threads = the cores) and by the Ray engine (a local Ray started by the
store: actors with as many threads as this process's torch, so here one actor of 2 threads) — the same batches
and threads, so the same files (checked: every file equal, bit for bit).
Ray's time includes starting its actors (each imports torch and receives the model); ``--repeat`` runs it again
on a warm cluster to separate that start-up from the steady state.

    python benchmarks/bench_ray.py --config glyphs-quick --workdir runs/glyphs-quick --out docs/bench_ray.json
"""
from __future__ import annotations

import argparse
import filecmp
import os
import tempfile
import time
from pathlib import Path

import torch

from _common import command_line, open_run, run_arguments
from asymret.core.manifest import atomic_write_json
from asymret.eval.report import run_metadata
from asymret.store import EmbeddingStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    run_arguments(parser, gallery_model=True)
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/bench_ray.json"))
    args = parser.parse_args()
    start = time.perf_counter()
    run_config, experiment = open_run(args)
    encoder = experiment.models(args.seed).gallery_model(args.gallery_model)
    data = experiment.test_gallery.sample(args.images, seed=0, stratified=False)
    root = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    runs = []

    def timed(engine: str, store_root: Path) -> float:
        began = time.perf_counter()
        EmbeddingStore(store_root, shard_size=args.shard_size).extract(encoder, data, engine=engine)
        seconds = time.perf_counter() - began
        runs.append({"engine": engine, "seconds": seconds, "images_per_second": len(data) / seconds})
        print(runs[-1], flush=True)
        return seconds

    timed("local", root / "local")
    for attempt in range(args.repeat):  # the first run starts the actors; later ones find the cluster warm
        timed("ray", root / f"ray{attempt}")
    local_dir = EmbeddingStore(root / "local").directory(encoder, data)
    ray_dir = EmbeddingStore(root / "ray0").directory(encoder, data)
    identical = all(filecmp.cmp(path, ray_dir / path.name, shallow=False) for path in local_dir.iterdir())
    local_speed = runs[0]["images_per_second"]
    meta = run_metadata(command_line(args), [args.seed], start, config=args.config, model=encoder.name,
                        input_size=encoder.preprocess.input_size, images=len(data), shard_size=args.shard_size,
                        ray_actors=max(1, (os.cpu_count() or 1) // torch.get_num_threads()), threads_per_actor=torch.get_num_threads())
    atomic_write_json(args.out, {"meta": meta, "runs": runs, "identical_files": identical,
                                 "ray_over_local": [r["images_per_second"] / local_speed for r in runs if r["engine"] == "ray"]})


if __name__ == "__main__":
    main()
