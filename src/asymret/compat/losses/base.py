"""Compatibility losses: one signature for every method.

``loss(student, teacher, labels=None, bank=None) -> scalar tensor``

- ``student`` (B, d): embeddings being trained to land in the target space — ψ_i(φ_i(x)) for a CMCE
  transformation, φ_q(x) for a query model trained against a frozen gallery model.
- ``teacher`` (B, d): the frozen target-space embeddings of the same images (φ_q(x) for CMCE, φ_g(x) for
  query-model training).
- ``labels`` (B,): class labels, for the losses that use them.
- ``bank`` (M, d): frozen target-space embeddings of a gallery feature bank, for neighbourhood losses
  (CSD, ROP, monotonic mapping).

Like pytorch-metric-learning losses, a loss is a small ``nn.Module``; a loss may own parameters (a head, a
mapping) and the trainer optimises them with the model.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ...encoders.heads import CosineClassifier


class CompatLoss(nn.Module):
    """Base class; subclasses implement :meth:`forward` with the shared signature."""

    uses_labels: bool = False
    uses_bank: bool = False

    def forward(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        labels: torch.Tensor | None = None,
        bank: torch.Tensor | None = None,
    ) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    @staticmethod
    def _need(value: torch.Tensor | None, what: str, loss: str) -> torch.Tensor:
        if value is None:
            raise ValueError(f"{loss} needs {what}")
        return value


class SimilarityLoss(CompatLoss):
    """Feature regression: mean (1 − cos(student, teacher)) (``kind="cos"``) or mean ‖student − teacher‖² (``"l2"``).

    CMCE's similarity loss and the feature-distillation baseline are this one loss.
    """

    def __init__(self, kind: str = "cos") -> None:
        super().__init__()
        if kind not in ("cos", "l2"):
            raise ValueError(f"SimilarityLoss kind must be 'cos' or 'l2', not {kind!r}")
        self.kind = kind

    def forward(self, student, teacher, labels=None, bank=None):
        teacher = teacher.detach()
        if self.kind == "cos":
            return (1.0 - F.cosine_similarity(student, teacher, dim=1)).mean()
        return (student - teacher).pow(2).sum(dim=1).mean()


class ContrastiveMatchLoss(CompatLoss):
    """InfoNCE over the batch: ``student[i]`` must be closer to ``teacher[i]`` than to every other image's teacher
    embedding, and ``teacher[i]`` closer to ``student[i]`` than to the other students (symmetric cross-entropy over
    the cosine-similarity matrix / temperature, as in CLIP).

    Unlike 1 − cos it is blind to what all target embeddings share, so it still asks for each image's own
    position when the target space is concentrated in a narrow cone — there, outputting the mean direction already
    gives a small 1 − cos and teaches nothing (measured on the glyph benchmark, docs/RESULTS.md).  Written out
    rather than taken from pytorch-metric-learning: its NTXentLoss returned 0 with a reference set and took ~3 s
    per 256-row batch in the concatenated form on this CPU.
    """

    def __init__(self, temperature: float = 0.05) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 (got {temperature})")
        self.temperature = float(temperature)

    def forward(self, student, teacher, labels=None, bank=None):
        logits = F.normalize(student, dim=1) @ F.normalize(teacher.detach(), dim=1).T / self.temperature
        rows = torch.arange(len(student), device=student.device)
        return 0.5 * (F.cross_entropy(logits, rows) + F.cross_entropy(logits.T, rows))


class SharedHeadKLLoss(CompatLoss):
    """KL(p_teacher ‖ p_student) of the class distributions a shared head gives both sides (CMCE's KL loss)."""

    def __init__(self, head: CosineClassifier, temperature: float = 1.0) -> None:
        super().__init__()
        self.head = head
        self.temperature = float(temperature)

    def forward(self, student, teacher, labels=None, bank=None):
        log_p_student = F.log_softmax(self.head(student) / self.temperature, dim=1)
        log_p_teacher = F.log_softmax(self.head(teacher.detach()) / self.temperature, dim=1)
        return F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")


class SharedHeadCELoss(CompatLoss):
    """Dual classification: CE(head(student), y) + CE(head(teacher), y) with one shared head.

    With the head frozen (the query model's own classifier, the default), the teacher term is a constant and only
    the student learns; with ``train_head=True`` the head adapts to both sides.  ``teacher_weight=0`` gives the
    BCT influence loss (student through the gallery model's frozen classifier).
    """

    uses_labels = True

    def __init__(self, head: CosineClassifier, train_head: bool = False, teacher_weight: float = 1.0) -> None:
        super().__init__()
        self.head = head
        self.head.requires_grad_(train_head)
        self.teacher_weight = float(teacher_weight)

    def forward(self, student, teacher, labels=None, bank=None):
        labels = self._need(labels, "labels", "SharedHeadCELoss")
        loss = F.cross_entropy(self.head(student), labels)
        if self.teacher_weight:
            loss = loss + self.teacher_weight * F.cross_entropy(self.head(teacher), labels)
        return loss


class WeightedSum(CompatLoss):
    """Σ_k w_k · loss_k(student, teacher, labels, bank); ``last_terms`` keeps the last value of each term for logs."""

    def __init__(self, terms: Mapping[str, tuple[CompatLoss, float]]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("WeightedSum needs at least one term")
        self.losses = nn.ModuleDict({name: loss for name, (loss, _) in terms.items()})
        self.weights = {name: float(weight) for name, (_, weight) in terms.items()}
        self.uses_labels = any(loss.uses_labels for loss in self.losses.values())
        self.uses_bank = any(loss.uses_bank for loss in self.losses.values())
        self.last_terms: dict[str, float] = {}

    def forward(self, student, teacher, labels=None, bank=None):
        total = student.new_zeros(())
        for name, loss in self.losses.items():
            if self.weights[name] == 0:
                continue
            value = loss(student, teacher, labels, bank)
            self.last_terms[name] = float(value.detach())
            total = total + self.weights[name] * value
        return total
