"""Compatibility losses with one signature: ``loss(student, teacher, labels=None, bank=None) -> scalar``.

Build one by name with :func:`create_loss` (like ``timm.create_model``)::

    loss = create_loss("csd", k=64, temperature=0.05)
    loss = create_loss("bct", gallery_head=head, num_classes=100, dim=128)
"""
from __future__ import annotations

from typing import Callable

from .base import CompatLoss, SharedHeadCELoss, SharedHeadKLLoss, SimilarityLoss, WeightedSum
from .query_losses import (
    AMLLoss,
    BCTLoss,
    CSDLoss,
    MonotonicMappingLoss,
    RAMLLoss,
    ROPLoss,
    bank_neighbours,
)


def _distill_l2(**kwargs) -> SimilarityLoss:
    """Feature distillation ‖φ_q(x) − φ_g(x)‖²."""
    return SimilarityLoss(kind="l2", **kwargs)


def _distill_cos(**kwargs) -> SimilarityLoss:
    """Feature distillation 1 − cos(φ_q(x), φ_g(x))."""
    return SimilarityLoss(kind="cos", **kwargs)


#: name → constructor (keyword arguments are passed through by :func:`create_loss`).
LOSSES: dict[str, Callable[..., CompatLoss]] = {
    "similarity": SimilarityLoss,  # kwarg kind="cos" | "l2"
    "distill-l2": _distill_l2,
    "distill-cos": _distill_cos,
    "kl": SharedHeadKLLoss,  # head, temperature
    "dual-ce": SharedHeadCELoss,  # head, train_head, teacher_weight
    "bct": BCTLoss,
    "aml": AMLLoss,
    "csd": CSDLoss,
    "raml": RAMLLoss,
    "rop": ROPLoss,
    "monotonic": MonotonicMappingLoss,
}


def list_losses() -> list[str]:
    """The registered loss names, sorted."""
    return sorted(LOSSES)


def create_loss(name: str, **kwargs) -> CompatLoss:
    """Build the loss registered as ``name`` (case-insensitive, ``_`` accepted for ``-``) with ``kwargs``."""
    key = name.strip().lower().replace("_", "-")
    if key not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; available: {', '.join(list_losses())}")
    return LOSSES[key](**kwargs)


__all__ = [
    "CompatLoss",
    "SimilarityLoss",
    "SharedHeadKLLoss",
    "SharedHeadCELoss",
    "WeightedSum",
    "BCTLoss",
    "AMLLoss",
    "CSDLoss",
    "RAMLLoss",
    "ROPLoss",
    "MonotonicMappingLoss",
    "bank_neighbours",
    "LOSSES",
    "create_loss",
    "list_losses",
]
