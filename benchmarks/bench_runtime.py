"""onnxruntime as the embedding engine: the store's pipeline (load → preprocess → forward → write shards) with
``runtime="torch"`` and ``runtime="onnx"``, against the bare forward passes (torch eager and the raw onnxruntime
session on the same preprocessed batches) — one run, same batch size, same images.

On a run config's trained models (seed ``--seed``): the query model and one gallery model.  Throughput in images/s;
``pipeline / raw`` is the share of the engine's speed the store keeps (the rest is image loading, preprocessing
and writing); the embeddings of the two store runs are compared (max |Δ|).  The ONNX export happens before the
timed run (the store exports once into ``<store>/_onnx`` and reuses it).

    python benchmarks/bench_runtime.py --config glyphs-quick --workdir runs/glyphs-quick --out docs/bench_runtime.json
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import command_line, open_run, run_arguments
from asymret.core.manifest import atomic_write_json
from asymret.encoders.onnx import onnx_forward
from asymret.eval.report import run_metadata
from asymret.store import EmbeddingStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    run_arguments(parser, gallery_model=True)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("docs/bench_runtime.json"))
    args = parser.parse_args()
    start = time.perf_counter()
    run_config, experiment = open_run(args)
    models = experiment.models(args.seed)
    data = experiment.test_gallery.sample(args.images, seed=0, stratified=False)
    results = []
    for role, encoder in (("query", models.query), ("gallery", models.gallery_model(args.gallery_model))):
        encoder.eval()
        root = Path(tempfile.mkdtemp(prefix="bench-runtime-"))
        onnx_run = onnx_forward(encoder, root / "onnx" / "_onnx")  # the export, outside the timed runs
        pixels = [encoder.preprocess([data.load(i) for i in range(s, min(len(data), s + args.batch_size))])
                  for s in range(0, len(data), args.batch_size)]
        entry = {"role": role, "model": encoder.name, "input_size": encoder.preprocess.input_size, "images": len(data),
                 "batch_size": args.batch_size, "images_per_second": {}}

        def timed(name: str, run) -> None:
            began = time.perf_counter()
            run()
            entry["images_per_second"][name] = len(data) / (time.perf_counter() - began)
            print(role, name, f"{entry['images_per_second'][name]:.0f} images/s", flush=True)

        with torch.no_grad():
            encoder(pixels[0][:2]), onnx_run(pixels[0][:2])  # warm-up
            timed("raw torch eager", lambda: [encoder(batch) for batch in pixels])
            timed("raw onnxruntime session", lambda: [onnx_run(batch) for batch in pixels])
        stores = {runtime: EmbeddingStore(root / runtime, batch_size=args.batch_size, runtime=runtime) for runtime in ("torch", "onnx")}
        for runtime, store in stores.items():
            timed(f"store pipeline ({runtime})", lambda: store.extract(encoder, data))
        by_torch, by_onnx = (stores[runtime].get(encoder, data).vectors for runtime in ("torch", "onnx"))
        speed = entry["images_per_second"]
        entry["max_abs_diff"] = float(np.abs(by_torch - by_onnx).max())
        entry["ratios"] = {"onnx / torch (store pipeline)": speed["store pipeline (onnx)"] / speed["store pipeline (torch)"],
                           "onnx / torch (raw)": speed["raw onnxruntime session"] / speed["raw torch eager"],
                           "store pipeline / raw (onnx)": speed["store pipeline (onnx)"] / speed["raw onnxruntime session"],
                           "store pipeline / raw (torch)": speed["store pipeline (torch)"] / speed["raw torch eager"]}
        results.append(entry)
    meta = run_metadata(command_line(args), [args.seed], start, config=args.config)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, {"meta": meta, "results": results})


if __name__ == "__main__":
    main()
