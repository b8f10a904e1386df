"""What machine a number was measured on (recorded with every result and benchmark)."""
from __future__ import annotations

import os
import platform
from typing import Any


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """The SIMD flags that decide CPU training/inference speed (AVX2, AVX-512 variants, AMX, VNNI)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("flags"):
                    return sorted(f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "amx", "fma", "vnni")))
    except OSError:
        pass
    return []


def torch_cpu_capability() -> str:
    """The SIMD kernel set torch dispatches its CPU operators to (e.g. AVX2, AVX512): hosts with different ones round
    differently, so one recipe and seed trains slightly different models on them (bit-identical only on one kind)."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def machine_description() -> dict[str, Any]:
    import torch

    return {
        "nproc": os.cpu_count(),
        "nproc_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "torch_cpu_capability": torch_cpu_capability(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
