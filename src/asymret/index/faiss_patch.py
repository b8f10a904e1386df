"""FAISS's ``search`` with search parameters, despite pytorch-metric-learning's patch of it.

pytorch-metric-learning imports ``faiss.contrib.torch_utils``, which replaces ``Index.search`` with a wrapper that
drops the ``params`` argument (the original numpy method is kept as ``search_numpy``).  :func:`numpy_search` is
the call asymret's FAISS backend makes; :func:`restore_search_params` repairs the class methods for code running
FAISS in this process that asymret does not control (Milvus Lite's in-process server passes ``params``).
"""
from __future__ import annotations

from typing import Any

import faiss
import numpy as np

__all__ = ["numpy_search", "restore_search_params"]


def numpy_search(index: faiss.Index, vectors: np.ndarray, k: int, params: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """``index.search`` on numpy arrays, with search parameters: ``(scores, positions)``."""
    search = getattr(index, "search_numpy", index.search)
    return search(vectors, k) if params is None else search(vectors, k, params=params)


def restore_search_params() -> None:
    """Make ``Index.search(x, k, params=...)`` work again on numpy arrays after ``faiss.contrib.torch_utils`` replaced
    it (see :func:`numpy_search`).  Torch tensors still go to the torch wrapper.  Idempotent; cheap when nothing
    changed since the last call."""
    probe = faiss.Index  # the torch wrapper patches every index class at once, the base class first
    if "search_numpy" not in vars(probe) or getattr(probe.search, "_asymret_params", False):
        return
    for cls in (value for value in vars(faiss).values() if isinstance(value, type) and "search_numpy" in vars(value)):
        torch_search = cls.search
        if getattr(torch_search, "_asymret_params", False):
            continue

        def search(self, x, k, *args, params=None, D=None, I=None, _torch_search=torch_search):  # noqa: E741 (FAISS's names)
            if isinstance(x, np.ndarray):
                return self.search_numpy(x, k, *args, params=params, D=D, I=I)
            if params is not None:
                raise TypeError("faiss.contrib.torch_utils' search takes no params for torch tensors")
            return _torch_search(self, x, k, *args, D=D, I=I)

        search._asymret_params = True
        cls.search = search
