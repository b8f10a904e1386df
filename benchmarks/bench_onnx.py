"""The query side on a device: torch eager vs onnxruntime FP32 vs static INT8 (per tensor, per channel).

On a run config's trained models (seed ``--seed``; ``asymret run CONFIG --workdir WORKDIR`` trained them): the
query model and one gallery model (the heavier network, where the runtime matters most) are exported with
:func:`asymret.encoders.onnx.export_onnx`, and quantised to static INT8 (QDQ) calibrated on ``--calibration``
training images. For each runtime, one run, same preprocessed batches:

- throughput at batch 64 and latency at batch 1 (median of ``--repeats``), preprocessing excluded;
- parity against torch on the test images: max |Δ| and mean cosine of the embeddings;
- accuracy as deployed: the test images embedded by the runtime searched against the *torch* model's index of
  the test images (every image a query against the rest): R@1 and MAP@R, beside torch → torch.

    python benchmarks/bench_onnx.py --config glyphs-quick --workdir runs/glyphs-quick --out docs/bench_onnx.json
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import command_line, open_run, run_arguments
from asymret.core.manifest import atomic_write_json
from asymret.core.space import Embeddings
from asymret.encoders.onnx import OnnxEncoder, _run, export_onnx, quantize_int8
from asymret.eval.metrics import evaluate
from asymret.eval.report import run_metadata


def _median_seconds(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    run_arguments(parser, gallery_model=True)
    parser.add_argument("--calibration", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("docs/bench_onnx.json"))
    args = parser.parse_args()
    start = time.perf_counter()
    run_config, experiment = open_run(args)
    models = experiment.models(args.seed)
    test = experiment.test_gallery
    images = [test.load(i) for i in range(len(test))]
    train = experiment.train.sample(args.calibration, seed=0, stratified=False)
    calibration = [train.load(i) for i in range(len(train))]
    results = {}
    for role, encoder in (("query", models.query), ("gallery", models.gallery_model(args.gallery_model))):
        folder = Path(tempfile.mkdtemp(prefix="bench-onnx-"))
        export_onnx(encoder, folder / "fp32")
        quantize_int8(folder / "fp32", folder / "int8-tensor", calibration, per_channel=False)
        quantize_int8(folder / "fp32", folder / "int8-channel", calibration, per_channel=True)
        pixels = encoder.preprocess(images).numpy()
        batch64, batch1 = pixels[:64], pixels[:1]
        with torch.no_grad():
            reference = encoder.embed_images(images)
        gallery = Embeddings(reference, test.ids, encoder.space(), test.labels)
        runtimes = {"torch eager": None, **{name: OnnxEncoder.load(folder / name) for name in ("fp32", "int8-tensor", "int8-channel")}}
        entry = {"model": encoder.name, "input_size": encoder.preprocess.input_size, "runtimes": {}}
        for name, runtime in runtimes.items():
            if runtime is None:
                def forward(x):
                    with torch.no_grad():
                        return encoder(torch.from_numpy(x)).numpy()
                embedded = reference
            else:
                def forward(x, session=runtime._session):
                    return _run(session, x)
                embedded = np.concatenate([forward(pixels[i : i + 256]) for i in range(0, len(pixels), 256)])
            seconds64 = _median_seconds(lambda: forward(batch64), args.repeats)
            seconds1 = _median_seconds(lambda: [forward(batch1) for _ in range(20)], args.repeats) / 20
            queries = Embeddings(embedded, test.ids, encoder.space(), test.labels)
            measured = evaluate(queries, gallery, ks=(1,))
            entry["runtimes"][name] = {
                "images_per_s_batch64": 64 / seconds64, "ms_batch1": 1000 * seconds1,
                "max_abs_diff_to_torch": float(np.abs(embedded - reference).max()),
                "mean_cosine_to_torch": float(np.mean(np.sum(embedded * reference, axis=1))),
                "recall@1_against_torch_index": measured["recall@1"], "map@r_against_torch_index": measured["map@r"],
            }
            print(role, name, json.dumps(entry["runtimes"][name]), flush=True)
        results[role] = entry
    meta = run_metadata(command_line(args),
                        [args.seed], start, config=args.config, test_images=len(images), calibration_images=len(calibration))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, {"meta": meta, "results": results})


if __name__ == "__main__":
    main()
