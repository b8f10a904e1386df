"""The query encoder as an ONNX model: export with a dynamic batch, run it with onnxruntime, optionally static INT8.

An exported query model is a folder ``model.onnx`` + ``manifest.json`` (kind ``onnx-encoder``) naming the
*embedding space* of the encoder it came from, its preprocessing (applied before the graph: resize to
``input_size``, ``(x/255 − mean)/std``), the precision, and the parity measured against torch at export.  It keeps
the query space's fingerprint, so an index built for the torch query model accepts its embeddings and refuses
any other — an :class:`OnnxEncoder` is used wherever the CLI takes a query model.

Where onnxruntime runs: :func:`onnx_providers` decides it, in one place, from the device setting — the CUDA
provider on a CUDA device when this onnxruntime has it, else the CPU provider (an explicit CUDA device without
the provider is refused in one line; ``auto`` falls back to the CPU).

INT8: onnxruntime's static quantisation in QDQ format, activations calibrated on the user's images (MinMax),
weights per tensor or per output channel.  INT8 is not always faster on x86 (it needs VNNI to pay off) and it
moves the embeddings: measure both before shipping it (``benchmarks/``).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np

from ..core.device import module_device, resolve_device
from ..core.manifest import atomic_write_bytes, hash_file, read_manifest, write_manifest
from ..core.space import Space
from .encoder import Encoder
from .preprocess import Preprocess

__all__ = ["export_onnx", "export_local_onnx", "quantize_int8", "OnnxEncoder", "OnnxLocalDescriptors", "load_query_model", "onnx_forward",
           "onnx_providers", "RUNTIMES"]

#: inference engines for embedding (``--runtime``): torch eager, or the model exported to ONNX and run by onnxruntime
RUNTIMES = ("torch", "onnx")

ONNX_FILE = "model.onnx"
OPSET = 17
CPU_PROVIDER, CUDA_PROVIDER = "CPUExecutionProvider", "CUDAExecutionProvider"
#: an onnxruntime provider: its name, or (name, options)
Provider = Union[str, tuple[str, dict[str, Any]]]
_log = logging.getLogger(__name__)


def onnx_providers(device: Any = "auto") -> list[Provider]:
    """The onnxruntime execution providers for ``device`` (``auto|cpu|cuda|cuda:N``, as :func:`resolve_device`
    reads it) — the one place this is decided.  A CUDA device: the CUDA provider on that GPU (the CPU provider
    behind it, for the operators CUDA lacks) when this onnxruntime has it; without it, ``auto`` falls back to the
    CPU provider and an explicit CUDA device is a one-line ``ValueError``.  Anything else: the CPU provider."""
    resolved = resolve_device(device)  # a device that is not there: refused here, in its one line
    if resolved.type != "cuda":
        return [CPU_PROVIDER]
    import onnxruntime as ort

    available = ort.get_available_providers()
    if CUDA_PROVIDER in available:
        return [(CUDA_PROVIDER, {"device_id": int(resolved.index or 0)}), CPU_PROVIDER]
    if device is None or str(device).strip().lower() == "auto":
        return [CPU_PROVIDER]  # auto: a GPU onnxruntime cannot use is no reason to refuse the CPU
    raise ValueError(f"onnxruntime {ort.__version__} has no CUDA provider for device {resolved} (available: "
                     f"{', '.join(available)}): install onnxruntime-gpu, or use --device cpu or --runtime torch")


def _export_graph(module: Any, encoder: Encoder, directory: Path, output: str) -> None:
    """``module`` (preprocessed pixels of ``encoder``'s input size → ``output``) → ``directory/model.onnx``, with a
    dynamic batch, written atomically."""
    import io

    import torch

    directory.mkdir(parents=True, exist_ok=True)
    p = encoder.preprocess
    dummy = torch.zeros(2, p.channels, p.input_size, p.input_size, device=module_device(encoder))
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(module, (dummy,), buffer, input_names=["pixels"], output_names=[output],
                          dynamic_axes={"pixels": {0: "batch"}, output: {0: "batch"}}, opset_version=OPSET, dynamo=False)
    atomic_write_bytes(directory / ONNX_FILE, buffer.getvalue())


def export_onnx(encoder: Encoder, directory: str | os.PathLike, verify_images: Sequence[np.ndarray] | None = None) -> Path:
    """``encoder`` → ``directory/model.onnx`` (input ``pixels`` (B, C, S, S) float32 preprocessed, output
    ``embedding`` (B, d), dynamic batch) + manifest; with ``verify_images`` (HxWxC uint8), the max |Δ| between
    onnxruntime's and torch's embeddings of them is measured and stored in the manifest."""
    import torch

    directory = Path(directory)
    encoder = encoder.eval()
    p = encoder.preprocess
    _export_graph(encoder, encoder, directory, "embedding")
    fields: dict[str, Any] = {"space": encoder.space().to_dict(), "name": encoder.name, "embedding_dim": encoder.embedding_dim,
                              "preprocess": p.config(), "source_fingerprint": encoder.fingerprint(), "precision": "float32",
                              "opset": OPSET, "onnx_sha": hash_file(directory / ONNX_FILE)}
    if verify_images is not None and len(verify_images):
        with torch.no_grad():
            reference = encoder.embed_images(list(verify_images))
        session = _session(directory / ONNX_FILE, [CPU_PROVIDER])  # parity against torch's fp32, on the CPU
        exported = _run(session, p(list(verify_images)).numpy())
        fields["parity"] = {"images": len(verify_images), "max_abs_diff": float(np.abs(exported - reference).max())}
    write_manifest(directory, "onnx-encoder", fields)
    return directory


def export_local_onnx(encoder: Encoder, spec: Any, directory: str | os.PathLike, verify_images: Sequence[np.ndarray] | None = None) -> Path:
    """``encoder``'s local descriptors under ``spec`` (a :class:`~asymret.encoders.local.LocalSpec`) →
    ``directory/model.onnx``: input ``pixels`` (the encoder's preprocessing, as :func:`export_onnx`), output ``local``
    (B, budget · (4 + C)), the rows :func:`~asymret.encoders.local.local_descriptors` computes.  Only the layers up to
    ``spec.layer`` are in the graph (the exporter drops the rest).  With ``verify_images`` the parity against torch
    is measured and stored.  What a deployed re-ranking runs on the query side beside the global model."""
    import torch

    from .local import local_descriptors, local_space

    class _LocalRows(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return local_descriptors(self.encoder, pixels, spec)

    directory = Path(directory)
    encoder = encoder.eval()
    p = encoder.preprocess
    _export_graph(_LocalRows(), encoder, directory, "local")
    fields: dict[str, Any] = {"space": local_space(encoder, spec).to_dict(), "name": encoder.name, "budget": spec.budget,
                              "layer": spec.layer, "preprocess": p.config(), "source_fingerprint": encoder.fingerprint(),
                              "opset": OPSET, "onnx_sha": hash_file(directory / ONNX_FILE)}
    if verify_images is not None and len(verify_images):
        pixels = p(list(verify_images))
        with torch.no_grad():
            reference = local_descriptors(encoder, pixels.to(module_device(encoder)), spec).float().cpu().numpy()
        session = _session(directory / ONNX_FILE, [CPU_PROVIDER])
        exported = session.run(["local"], {"pixels": pixels.numpy()})[0]
        fields["parity"] = {"images": len(verify_images), "max_abs_diff": float(np.abs(exported - reference).max())}
    write_manifest(directory, "onnx-local", fields)
    return directory


class OnnxLocalDescriptors:
    """An exported local-descriptor extractor (:func:`export_local_onnx`) run by onnxruntime."""

    def __init__(self, directory: str | os.PathLike, device: Any = "auto") -> None:
        directory = Path(directory)
        self.manifest = read_manifest(directory, kind="onnx-local")
        if hash_file(directory / ONNX_FILE) != self.manifest["onnx_sha"]:
            raise ValueError(f"{directory}: {ONNX_FILE} does not match its manifest (corrupt or edited)")
        self.preprocess = Preprocess.from_config(self.manifest["preprocess"])
        self._session = _session(directory / ONNX_FILE, onnx_providers(device))

    def space(self) -> Space:
        return Space.from_dict(self.manifest["space"])

    def rows(self, pixels: np.ndarray) -> np.ndarray:
        """Preprocessed (B, C, S, S) pixels → (B, budget · (4 + C)) float32 rows."""
        return self._session.run(["local"], {"pixels": np.ascontiguousarray(pixels, dtype=np.float32)})[0].astype(np.float32)


def quantize_int8(source: str | os.PathLike, directory: str | os.PathLike, calibration_images: Sequence[np.ndarray],
                  per_channel: bool = False, verify_images: Sequence[np.ndarray] | None = None) -> Path:
    """An exported float model → static INT8 (QDQ, activations uint8 calibrated on ``calibration_images``, weights
    int8 per tensor or ``per_channel``); the same space, the embeddings' change against the float model stored."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    float_model = OnnxEncoder.load(source, device="cpu")  # calibration and parity: the CPU provider's numbers
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    batches = [float_model.preprocess(list(calibration_images[i : i + 32])).numpy() for i in range(0, len(calibration_images), 32)]
    if not batches:
        raise ValueError("INT8 calibration needs images: give some of yours")

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(batches)

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {"pixels": batch}

    tmp, prepared = directory / (ONNX_FILE + ".partial"), directory / (ONNX_FILE + ".prepared")
    # onnxruntime's recommended pre-processing (shape inference, graph optimisation) before quantisation
    quant_pre_process(str(Path(source) / ONNX_FILE), str(prepared))
    quantize_static(str(prepared), str(tmp), _Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    os.replace(tmp, directory / ONNX_FILE)
    prepared.unlink()
    fields = {**{k: v for k, v in float_model.manifest.items() if k not in ("kind", "format_version", "versions", "parity", "onnx_sha")},
              "precision": "int8-per-channel" if per_channel else "int8-per-tensor", "calibration_images": len(calibration_images),
              "onnx_sha": hash_file(directory / ONNX_FILE)}
    if verify_images is not None and len(verify_images):
        reference = float_model.embed_images(list(verify_images))
        quantised = OnnxEncoder(directory / ONNX_FILE, float_model.manifest, device="cpu").embed_images(list(verify_images))
        fields["parity"] = {"images": len(verify_images), "max_abs_diff_to_float": float(np.abs(quantised - reference).max()),
                            "mean_cosine_to_float": float(np.mean(np.sum(quantised * reference, axis=1)))}
    write_manifest(directory, "onnx-encoder", fields)
    return directory


def _session(path: Path, providers: list[Provider]):
    """An onnxruntime session of ``path`` on ``providers`` (:func:`onnx_providers`)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # onnxruntime's threads spin after each run by default: on 2 cores they take the CPU from the image loading
    # and preprocessing between batches (measured: the store pipeline ran the query CNN slower than torch)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=providers)
    wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
    if wanted not in session.get_providers():  # onnxruntime falls back to the CPU when a provider fails to start
        _log.warning("onnxruntime could not start %s for %s (missing CUDA/cuDNN libraries?): running on %s", wanted,
                     path, ", ".join(session.get_providers()))
    return session


def _run(session, pixels: np.ndarray) -> np.ndarray:
    return session.run(["embedding"], {"pixels": np.ascontiguousarray(pixels, dtype=np.float32)})[0].astype(np.float32)


class OnnxEncoder:
    """An exported query model run by onnxruntime: ``embed_images`` and ``space()`` as an :class:`Encoder`'s."""

    def __init__(self, path: Path, manifest: dict[str, Any], device: Any = "auto") -> None:
        self.manifest = manifest
        self.preprocess = Preprocess.from_config(manifest["preprocess"])
        self.embedding_dim = int(manifest["embedding_dim"])
        self.name = f"{manifest['name']} (onnx {manifest['precision']})"
        self.providers = onnx_providers(device)
        self._session = _session(path, self.providers)

    @classmethod
    def load(cls, directory: str | os.PathLike, device: Any = "auto") -> "OnnxEncoder":
        """The exported model in ``directory``, run on ``device``'s onnxruntime provider (:func:`onnx_providers`)."""
        directory = Path(directory)
        manifest = read_manifest(directory, kind="onnx-encoder")
        if hash_file(directory / ONNX_FILE) != manifest["onnx_sha"]:
            raise ValueError(f"{directory}: {ONNX_FILE} does not match its manifest (corrupt or edited)")
        return cls(directory / ONNX_FILE, manifest, device)

    def space(self) -> Space:
        return Space.from_dict(self.manifest["space"])

    def embed_images(self, images: list[np.ndarray], batch_size: int = 256) -> np.ndarray:
        """HxWxC uint8 images → (N, d) float32 embeddings."""
        out = [_run(self._session, self.preprocess(images[i : i + batch_size]).numpy()) for i in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.embedding_dim), np.float32)


def load_query_model(directory: str | os.PathLike, device: Any = "auto") -> Encoder | OnnxEncoder:
    """A query model folder: a torch :class:`Encoder` (loaded on the CPU: its user moves it) or an exported
    :class:`OnnxEncoder` (its session on ``device``'s provider), by its manifest."""
    from .encoder import load_encoder

    kind = read_manifest(directory).get("kind")
    return OnnxEncoder.load(directory, device) if kind == "onnx-encoder" else load_encoder(directory)


def onnx_forward(encoder: Encoder, cache: str | os.PathLike, device: Any = "cpu") -> Callable[[Any], Any]:
    """``encoder``'s forward pass (preprocessed (B, C, S, S) tensor → (B, d) tensor) run by onnxruntime.

    The model is exported once into ``cache/<encoder fingerprint>/`` (reused afterwards: the export is checked
    against its manifest when loaded) — the embedding store's ``runtime="onnx"``.  The embeddings equal torch's
    within float tolerance (the export's parity is measured on a random batch and stored in its manifest).
    ``device``: where onnxruntime runs it (:func:`onnx_providers`); batches come and go as CPU tensors.
    """
    import torch

    directory = Path(cache) / encoder.fingerprint()
    providers = onnx_providers(device)
    key = f"{directory.resolve()}|{providers!r}"
    if key in _FORWARDS:  # one onnxruntime session per exported model and process: a session takes ~0.1-0.3 s to start
        return _FORWARDS[key]
    try:
        exported = OnnxEncoder.load(directory, device)
    except (FileNotFoundError, ValueError, KeyError):
        rng = np.random.default_rng(0)
        p = encoder.preprocess
        probe = [rng.integers(0, 256, (p.input_size, p.input_size, p.channels), dtype=np.uint8) for _ in range(4)]
        export_onnx(encoder, directory, verify_images=probe)
        exported = OnnxEncoder.load(directory, device)
    if exported.manifest.get("source_fingerprint") != encoder.fingerprint():
        raise ValueError(f"{directory} holds the export of another model")
    session = exported._session
    _FORWARDS[key] = lambda batch: torch.from_numpy(_run(session, batch.numpy()))
    return _FORWARDS[key]


_FORWARDS: dict[str, Callable[[Any], Any]] = {}
