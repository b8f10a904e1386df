"""Making embedding spaces compatible: CMCE transformations and query-model compatibility training.

Names are imported on first use, so that ``asymret.compat.config`` (ψ settings, no torch) stays cheap to import.
"""
from __future__ import annotations

import importlib
from typing import Any

from .config import PsiConfig

__all__ = ["CMCETransform", "PsiConfig", "QuerySelf", "TransformationNet", "build_cmce_loss"]


def __getattr__(name: str) -> Any:
    if name in ("CMCETransform", "QuerySelf", "TransformationNet", "build_cmce_loss"):
        return getattr(importlib.import_module(".transform", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
