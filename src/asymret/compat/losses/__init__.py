"""Compatibility losses with one signature: ``loss(student, teacher, labels=None, bank=None) -> scalar``.

Build one by name with :func:`create_loss` (like ``timm.create_model``)::

    loss = create_loss("csd", k=64, temperature=0.05)
    loss = create_loss("bct", gallery_head=head, num_classes=100, dim=128)
"""
from __future__ import annotations

from typing import Callable

from ...core.registry import Registry
from .base import CompatLoss, ContrastiveMatchLoss, SharedHeadCELoss, SharedHeadKLLoss, SimilarityLoss, WeightedSum
from .query_losses import (
    AMLLoss,
    BCTLoss,
    CSDLoss,
    MetricDistillLoss,
    MonotonicMappingLoss,
    RAMLLoss,
    ROPLoss,
    bank_neighbours,
)


def _distill_l2() -> SimilarityLoss:
    """Feature distillation ‖φ_q(x) − φ_g(x)‖²."""
    return SimilarityLoss(kind="l2")


def _distill_cos() -> SimilarityLoss:
    """Feature distillation 1 − cos(φ_q(x), φ_g(x))."""
    return SimilarityLoss(kind="cos")


#: name → constructor; :func:`create_loss` passes keyword arguments through (and refuses ones it does not take)
LOSSES: Registry[Callable[..., CompatLoss]] = Registry("loss")
for _name, _constructor in {
    "similarity": SimilarityLoss,  # kwarg kind="cos" | "l2"
    "contrastive": ContrastiveMatchLoss,  # kwarg temperature
    "distill-l2": _distill_l2,
    "distill-cos": _distill_cos,
    "distill-metric": MetricDistillLoss,  # num_classes, dim, metric_weight
    "kl": SharedHeadKLLoss,  # head, temperature
    "dual-ce": SharedHeadCELoss,  # head, train_head, teacher_weight
    "bct": BCTLoss,
    "aml": AMLLoss,
    "csd": CSDLoss,
    "raml": RAMLLoss,
    "rop": ROPLoss,
    "monotonic": MonotonicMappingLoss,
}.items():
    LOSSES.register(_name, _constructor)


def list_losses() -> list[str]:
    """The registered loss names, sorted."""
    return sorted(LOSSES)


def create_loss(name: str, **kwargs) -> CompatLoss:
    """Build the loss registered as ``name`` (case-insensitive, ``_`` accepted for ``-``) with ``kwargs``."""
    return LOSSES.create(name, **kwargs)


__all__ = [
    "CompatLoss",
    "SimilarityLoss",
    "SharedHeadKLLoss",
    "SharedHeadCELoss",
    "WeightedSum",
    "MetricDistillLoss",
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
