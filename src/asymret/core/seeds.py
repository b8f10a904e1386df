"""Sub-seeds derived from names, so that a model's seed does not depend on where it sits in a list."""
from __future__ import annotations

import hashlib
import json

__all__ = ["derive_seed"]


def derive_seed(seed: int, *names: str) -> int:
    """A seed in [0, 2³¹) for the step named ``names`` of run ``seed``: stable across runs, machines and list order."""
    payload = json.dumps([int(seed), *[str(name) for name in names]]).encode("utf-8")
    return int.from_bytes(hashlib.sha256(payload).digest()[:4], "little") & 0x7FFFFFFF
