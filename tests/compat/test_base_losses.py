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


def test_contrastive_match_sees_what_one_minus_cos_cannot():
    """In a target space concentrated in a narrow cone, the mean direction has a small 1 − cos to every target;
    the contrastive term still tells the right image from the others."""
    from asymret.compat.losses import create_loss

    generator = torch.Generator().manual_seed(0)
    detail = torch.nn.functional.normalize(torch.randn(64, 16, generator=generator), dim=1)
    common = torch.zeros(16)
    common[0] = 1.0
    targets = torch.nn.functional.normalize(common + 0.1 * detail, dim=1)  # pairwise cos ≈ 0.99
    mean_direction = common.expand(64, 16).clone()
    contrastive, cosine = create_loss("contrastive", temperature=0.01), create_loss("similarity")
    assert cosine(mean_direction, targets) < 0.01  # 1 − cos is content with the mean direction...
    # ...the contrastive term is not: the mean direction scores every image alike (log n), the right images do not
    assert contrastive(mean_direction, targets).item() == pytest.approx(np.log(64), abs=0.01)
    assert contrastive(targets, targets) < np.log(64) - 0.5
    shuffled = targets[torch.randperm(64, generator=generator)]
    assert contrastive(targets, targets) < contrastive(shuffled, targets)
    with pytest.raises(ValueError, match="temperature"):
        create_loss("contrastive", temperature=0.0)


def test_psi_fits_with_the_contrastive_term():
    from asymret.compat import CMCETransform
    from asymret.compat.transform import build_cmce_loss
    from asymret.core.space import Embeddings, Space

    loss = build_cmce_loss({"contrastive": 1.0, "similarity": 0.5}, head=None, contrastive_temperature=0.1)
    assert set(loss.losses) == {"contrastive", "similarity"} and loss.losses["contrastive"].temperature == 0.1
    rng = np.random.default_rng(0)
    source = rng.normal(size=(300, 8)).astype(np.float32)
    target = np.tanh(source @ rng.normal(size=(8, 6)).astype(np.float32))
    target /= np.linalg.norm(target, axis=1, keepdims=True)
    ids = np.array([f"x{i}" for i in range(300)])
    g = Embeddings(source / np.linalg.norm(source, axis=1, keepdims=True), ids, Space("g", 8, True))
    q = Embeddings(target, ids, Space("q", 6, True))
    psi = CMCETransform(losses={"contrastive": 1.0}, epochs=40, batch_size=64, seed=0).fit(g, q)
    mapped = psi.transform(g).vectors
    hits = (np.argmax(mapped @ target.T, axis=1) == np.arange(300)).mean()
    assert hits > 0.5 and psi.history.epoch_losses[-1] < psi.history.epoch_losses[0]
