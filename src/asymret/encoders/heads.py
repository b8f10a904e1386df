"""Classification heads shared between models (normalised softmax, as in pytorch-metric-learning)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CosineClassifier(nn.Module):
    """logits = cos(x, w_c) / temperature — the classifier of a normalised-softmax embedding model.

    CMCE's KL and dual-classification losses pass both the transformed gallery embedding and the query embedding
    through the *query model's* head; BCT passes the query embedding through the *gallery model's* head.
    """

    def __init__(self, num_classes: int, dim: int, temperature: float = 0.05) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, dim) * 0.01)
        self.temperature = float(temperature)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(embeddings, dim=1), F.normalize(self.weight, dim=1)) / self.temperature

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    @classmethod
    def from_normalized_softmax(cls, loss: nn.Module) -> "CosineClassifier":
        """Copy the class weights out of a pytorch-metric-learning ``NormalizedSoftmaxLoss`` (W is (dim, classes))."""
        weight = loss.W.detach().t().contiguous()
        head = cls(weight.shape[0], weight.shape[1], temperature=float(loss.temperature))
        with torch.no_grad():
            head.weight.copy_(weight)
        return head

    def config(self) -> dict:
        return {"num_classes": self.num_classes, "dim": self.weight.shape[1], "temperature": self.temperature}

    def frozen(self) -> "CosineClassifier":
        self.requires_grad_(False)
        return self
