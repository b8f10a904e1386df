"""Where models run and in what precision: one device setting for every training, embedding and serving path.

``resolve_device("auto" | "cpu" | "cuda" | "cuda:N")`` → a :class:`torch.device`; ``auto`` is the first GPU if there
is one, else the CPU.  A device that is not there is a ``ValueError`` in one line naming it and what is available
(the CLI prints ValueErrors as one line).  Precisions: ``fp32`` (the default), ``bf16`` (autocast, CPU or GPU) and
``fp16`` (autocast with a grad scaler, CUDA only: refused on CPU, which has neither fast float16 kernels nor a need
for loss scaling — use bf16 there).  Stored results stay float32 whatever the precision.

Models live on the CPU at rest (saving, hashing and loading read CPU tensors); a path that computes moves them to
its device for the work and back afterwards (:func:`on_device`), so callers get the same objects back.

torch is imported on use: reading a config or starting the CLI stays cheap.
"""
from __future__ import annotations

import contextlib
import os
import re
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["DEVICES", "PRECISIONS", "available_devices", "resolve_device", "resolve_precision", "autocast", "grad_scaler",
           "default_workers", "resolve_workers", "module_device", "on_device", "to_device"]

#: what a device setting may say
DEVICES = "auto, cpu, cuda, cuda:N"
#: compute precisions of training and extraction; stored embeddings are float32 under all of them
PRECISIONS = ("fp32", "bf16", "fp16")
_CUDA = re.compile(r"cuda(?::(\d+))?")


def available_devices() -> list[str]:
    """The devices this process can use: ``cpu`` and one ``cuda:N`` per visible GPU."""
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return found


def resolve_device(device: "str | torch.device | None" = "auto") -> "torch.device":
    """``auto`` (or None) → the first GPU if there is one, else the CPU; ``cpu``; ``cuda`` (the current GPU) or
    ``cuda:N``.  A device this machine does not have → ``ValueError`` naming it and the available ones."""
    import torch

    if isinstance(device, torch.device):
        spec = str(device)
    else:
        spec = str(device or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    match = _CUDA.fullmatch(spec)
    if not match:
        raise ValueError(f"unknown device {device!r}: use one of {DEVICES}")
    available = available_devices()
    if not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} is not available: this machine has no CUDA GPU (available: {', '.join(available)})")
    index = int(match.group(1)) if match.group(1) is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise ValueError(f"device cuda:{index} is not available (available: {', '.join(available)})")
    return torch.device("cuda", index)


def resolve_precision(precision: str | None, device: "torch.device") -> str:
    """``precision`` checked against ``device``: fp32 everywhere, bf16 on the CPU and on GPUs that have it, fp16 on
    CUDA only (one-line ``ValueError`` otherwise)."""
    import torch

    name = str(precision or "fp32").strip().lower()
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if name == "fp16" and device.type != "cuda":
        raise ValueError(f"precision fp16 needs a CUDA device (got {device}): on the CPU use bf16 or fp32")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"{device} does not support bf16: use fp16 or fp32")
    return name


def autocast(device: "torch.device", precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` on ``device`` (nothing for fp32)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: "torch.device", precision: str) -> Any:
    """A loss scaler for fp16 training on CUDA, else None (bf16 and fp32 need none)."""
    import torch

    if precision == "fp16" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


def default_workers() -> int:
    """Image-decoding threads when none is asked for: one less than the cores this process may use (the main
    thread runs the model), at most 8; 0 (decode in the main thread) on one core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cores - 1))


def resolve_workers(workers: int | None) -> int:
    """``workers`` (None → :func:`default_workers`), refusing a negative count."""
    if workers is None:
        return default_workers()
    if int(workers) < 0:
        raise ValueError(f"workers must be 0 (decode in the main thread) or more, not {workers}")
    return int(workers)


def module_device(module: Any) -> "torch.device":
    """The device of a module's first parameter or buffer (the CPU for one without any)."""
    import torch

    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def on_device(*modules: Any, device: "torch.device") -> Iterator[None]:
    """Move ``modules`` (None skipped) to ``device`` for the block, then each back to where it was."""
    present = [m for m in modules if m is not None]
    homes = [module_device(m) for m in present]
    for module in present:
        module.to(device)
    try:
        yield
    finally:
        for module, home in zip(present, homes):
            module.to(home)


def to_device(tensor: "torch.Tensor", device: "torch.device") -> "torch.Tensor":
    """``tensor`` on ``device``: a CPU tensor bound for a GPU goes through pinned memory, copied asynchronously."""
    if tensor.device == device:
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
