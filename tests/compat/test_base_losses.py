"""Minimal tests for the shared losses in ``asymret.compat.losses.base``."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from asymret.compat.losses import SharedHeadCELoss, SharedHeadKLLoss, SimilarityLoss
from asymret.encoders.heads import CosineClassifier


def f64(a) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)


def test_similarity_cos_known_value():
    s = f64([[1.0, 0.0], [0.0, 1.0]])
    t = f64([[0.0, 1.0], [0.6, 0.8]])
    # 1 − cos: 1 − 0 = 1 and 1 − 0.8 = 0.2 → mean 0.6
    assert SimilarityLoss("cos")(s, t).item() == pytest.approx(0.6)


def test_similarity_l2_known_value():
    s = f64([[1.0, 0.0], [0.0, 1.0]])
    t = f64([[0.0, 1.0], [0.6, 0.8]])
    # ‖s − t‖²: 2 and 0.36 + 0.04 = 0.4 → mean 1.2
    assert SimilarityLoss("l2")(s, t).item() == pytest.approx(1.2)


def test_similarity_zero_at_teacher_and_bad_kind():
    t = F.normalize(torch.randn(5, 7, generator=torch.Generator().manual_seed(0)), dim=1)
    assert SimilarityLoss("cos")(t.clone(), t).item() == pytest.approx(0.0, abs=1e-6)
    assert SimilarityLoss("l2")(t.clone(), t).item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        SimilarityLoss("l1")


def test_shared_head_kl_zero_at_teacher():
    torch.manual_seed(0)
    head = CosineClassifier(6, 8, temperature=0.1)
    t = F.normalize(torch.randn(5, 8), dim=1)
    loss = SharedHeadKLLoss(head, temperature=2.0)
    assert loss(t.clone(), t).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(F.normalize(torch.randn(5, 8), dim=1), t).item() > 1e-4


def test_shared_head_ce_known_value():
    head = CosineClassifier(2, 2, temperature=0.5)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))  # normalised inside: e1, e2
    s = np.array([[1.0, 0.0], [0.6, 0.8]])
    t = np.array([[0.0, 1.0], [0.8, 0.6]])
    y = np.array([0, 1])

    def ce(x):
        logits = x @ np.eye(2).T / 0.5
        logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        return -logp[np.arange(2), y].mean()

    loss = SharedHeadCELoss(head, teacher_weight=0.5)
    value = loss(torch.tensor(s, dtype=torch.float32), torch.tensor(t, dtype=torch.float32), torch.tensor(y))
    assert value.item() == pytest.approx(ce(s) + 0.5 * ce(t), rel=1e-5)
    assert not head.weight.requires_grad  # frozen by default
    influence_only = SharedHeadCELoss(head, teacher_weight=0.0)
    assert influence_only(torch.tensor(s, dtype=torch.float32), None, torch.tensor(y)).item() == pytest.approx(ce(s), rel=1e-5)
    with pytest.raises(ValueError, match="labels"):
        loss(torch.tensor(s, dtype=torch.float32), torch.tensor(t, dtype=torch.float32))
