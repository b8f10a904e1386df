"""The Ray Data engine of the embedding store: the model runs in stateful Ray actors spread over the cluster's CPUs.

The work is the store's own list of batches (shard by shard, ``batch_size`` rows each), so an actor computes
exactly the batches the local engine computes — the same images in the same batch, the same numbers.  The
driver receives the results in batch order (``preserve_order``) and the store writes each shard, its marker and
finally the manifest as in a local run: a killed job keeps its finished shards and a new run computes only the
others.  ``address`` joins an existing cluster (``ray start --head`` / KubeRay); without it a local Ray is
started with this machine's cores.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from ..data.dataset import ImageDataset
from ..encoders.encoder import Encoder
from ..encoders.onnx import onnx_providers

log = logging.getLogger(__name__)

__all__ = ["ray_batches", "EmbedActor"]


class EmbedActor:
    """A Ray Data actor: loads the model once (from the object store), then embeds the batches it is given."""

    def __init__(self, encoder_ref, dataset_ref, output: str, runtime: str, onnx_cache: str, threads: int,
                 device: str = "cpu", precision: str = "fp32", onnx_device: str = "cpu") -> None:
        import ray
        import torch

        from ..core.device import resolve_device

        from .batches import make_forward

        torch.set_num_threads(threads)
        # Ray may hand the references over resolved already (top-level ObjectRef arguments are)
        resolve = lambda value: ray.get(value) if isinstance(value, ray.ObjectRef) else value  # noqa: E731
        # a GPU actor sees the GPU Ray gave it as its first one: "cuda" means that one.  The onnx runtime's batches
        # stay on the CPU whatever ``onnx_device`` is (onnxruntime takes numpy; its CUDA provider copies them itself)
        self.device = resolve_device("cuda" if device.startswith("cuda") and runtime == "torch" else "cpu")
        self.precision = precision
        self.encoder = resolve(encoder_ref).eval().to(self.device)
        self.dataset = resolve(dataset_ref)
        self.forward = make_forward(self.encoder, output, runtime, Path(onnx_cache),
                                    "cuda" if onnx_device.startswith("cuda") else "cpu")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from .batches import embed_batch

        out: dict[str, list] = {"index": [], "vectors": [], "kept": [], "bad_ids": [], "bad_reasons": []}
        for index, rows in zip(batch["index"], batch["rows"]):
            vectors, kept, bad = embed_batch(self.encoder, self.forward, self.dataset, np.frombuffer(rows, dtype=np.int64),
                                             self.device, self.precision)
            out["index"].append(int(index))
            out["vectors"].append(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
            out["kept"].append(np.asarray(kept, dtype=np.int64).tobytes())
            out["bad_ids"].append([item for item, _ in bad])
            out["bad_reasons"].append([reason for _, reason in bad])
        return {"index": np.array(out["index"], dtype=np.int64),
                **{key: _object_array(value) for key, value in out.items() if key != "index"}}


def ray_batches(encoder: Encoder, dataset: ImageDataset, output: str, runtime: str, onnx_cache: Path, batches: list[np.ndarray],
                address: str | None = None, threads_per_actor: int | None = None, device=None,
                precision: str = "fp32", onnx_device="cpu") -> Iterator[tuple[np.ndarray, list[int], list[tuple[str, str]]]]:
    """The store's batches computed by Ray Data actors, yielded in batch order as ``(vectors, kept rows, bad)``.

    Each actor runs the model with ``threads_per_actor`` intra-op threads (default: this process's torch threads)
    and reserves that many CPUs, so the cluster runs ``CPUs // threads_per_actor`` actors.  The default makes the
    Ray engine's files identical bit for bit to the local engine's: a convolution's floating-point sums depend on
    how many threads split them (measured on EfficientNet-Lite0: 1 vs 2 threads differ in the last bits).
    ``threads_per_actor=1`` is one actor per core — equal within float tolerance, not bitwise.

    ``device`` a GPU (a :class:`torch.device` of type cuda): each actor asks Ray for one GPU (``num_gpus=1``), so
    the cluster runs one actor per GPU (at most its CPUs // threads); ``precision`` is the actors' autocast.
    ``onnx_device`` (the onnx runtime; ``auto|cpu|cuda|cuda:N``) likewise: when :func:`onnx_providers` chooses the
    CUDA provider for it, each actor asks for one GPU and runs onnxruntime's CUDA provider there (its batches stay
    on the CPU); otherwise the CPU provider, as before.
    """
    import ray
    import torch

    if not ray.is_initialized():
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # results in batch order: shards are written as they complete
    context.enable_progress_bars = False
    threads = int(threads_per_actor or torch.get_num_threads())
    cpus = int(ray.cluster_resources().get("CPU", 1))
    torch_gpu = device is not None and getattr(device, "type", str(device)) == "cuda"
    # the CUDA provider chosen (a (name, options) pair; the CPU provider is a plain name)
    onnx_gpu = runtime == "onnx" and not isinstance(onnx_providers(onnx_device)[0], str)
    gpu = torch_gpu or onnx_gpu
    actors = max(1, cpus // threads)
    if gpu:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if gpus < 1:
            raise ValueError(f"the Ray cluster has no GPU for device {device if torch_gpu else onnx_device}: "
                             "use device cpu (or a cluster with GPUs)")
        actors = min(actors, gpus)
    encoder.eval()
    work = ray.data.from_items([{"index": i, "rows": np.asarray(rows, dtype=np.int64).tobytes()} for i, rows in enumerate(batches)],
                               override_num_blocks=max(1, min(len(batches), actors * 4)))
    results = work.map_batches(
        EmbedActor, batch_size=1, compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=min(threads, cpus),
        **({"num_gpus": 1} if gpu else {}),
        fn_constructor_kwargs={"encoder_ref": ray.put(encoder), "dataset_ref": ray.put(dataset), "output": output,
                               "runtime": runtime, "onnx_cache": str(onnx_cache), "threads": threads,
                               "device": "cuda" if torch_gpu else "cpu", "precision": precision,
                               "onnx_device": "cuda" if onnx_gpu else "cpu"})
    expected = 0
    for row in results.iter_rows():
        if int(row["index"]) != expected:
            raise RuntimeError(f"Ray returned batch {row['index']} where batch {expected} was due: the store needs them in order")
        expected += 1
        kept = np.frombuffer(row["kept"], dtype=np.int64).tolist()
        vectors = np.frombuffer(row["vectors"], dtype=np.float32)
        vectors = vectors.reshape(len(kept), -1) if kept else np.zeros((0, 0), np.float32)
        yield vectors, kept, list(zip(row["bad_ids"], row["bad_reasons"]))
    if expected != len(batches):
        raise RuntimeError(f"Ray returned {expected} of {len(batches)} batches")


def _object_array(values: list) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array
