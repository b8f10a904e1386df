"""Tests for the query-model compatibility losses (BCT, AML, CSD, RAML, ROP, monotonic mapping) and the registry.

Hand-computed values are recomputed here with NumPy, independently of the implementation.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from asymret.compat.losses import (
    LOSSES,
    AMLLoss,
    BCTLoss,
    CompatLoss,
    CSDLoss,
    MonotonicMappingLoss,
    RAMLLoss,
    ROPLoss,
    SharedHeadCELoss,
    SharedHeadKLLoss,
    SimilarityLoss,
    WeightedSum,
    bank_neighbours,
    create_loss,
)
from asymret.encoders.heads import CosineClassifier

NUM_CLASSES = 4


def unit(*shape: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


def angles(*degrees: float) -> np.ndarray:
    rad = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)


def t64(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)


def np_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_ce(logits: np.ndarray, labels: np.ndarray) -> float:
    p = np_softmax(logits)
    return float(-np.log(p[np.arange(len(labels)), labels]).mean())


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def set_head(head: CosineClassifier, weight) -> CosineClassifier:
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(weight, dtype=head.weight.dtype))
    return head


def make(name: str, dim: int = 8) -> CompatLoss:
    torch.manual_seed(1)
    if name == "bct":
        return create_loss("bct", gallery_head=CosineClassifier(NUM_CLASSES, dim), num_classes=NUM_CLASSES, dim=dim)
    if name in ("kl", "dual-ce"):
        return create_loss(name, head=CosineClassifier(NUM_CLASSES, dim))
    kwargs = {"k": 5} if name in ("csd", "rop", "monotonic") else {}
    return create_loss(name, **kwargs)


QUERY_LOSSES = ["bct", "aml", "csd", "raml", "rop", "monotonic"]


# --------------------------------------------------------------------------------------------- generic properties
@pytest.mark.parametrize("name", QUERY_LOSSES)
@pytest.mark.parametrize("batch,dim,bank_size", [(1, 3, 2), (6, 8, 20), (5, 16, 3)])
def test_finite_scalar(name, batch, dim, bank_size):
    torch.manual_seed(0)
    loss = make(name, dim)
    student, teacher, bank = unit(batch, dim, seed=1), unit(batch, dim, seed=2), unit(bank_size, dim, seed=3)
    labels = torch.randint(0, NUM_CLASSES, (batch,))
    value = loss(student, teacher, labels, bank)
    assert value.dim() == 0
    assert torch.isfinite(value)
    assert value.item() >= -1e-6


@pytest.mark.parametrize("name", QUERY_LOSSES)
def test_gradients_reach_student_only(name):
    torch.manual_seed(0)
    loss = make(name)
    student = unit(6, 8, seed=1).requires_grad_(True)
    teacher = unit(6, 8, seed=2).requires_grad_(True)
    bank = unit(20, 8, seed=3).requires_grad_(True)
    labels = torch.tensor([0, 1, 0, 2, 3, 1])
    loss(student, teacher, labels, bank).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None or teacher.grad.abs().sum() == 0
    assert bank.grad is None or bank.grad.abs().sum() == 0


def test_bct_frozen_gallery_head_trainable_own_head():
    dim = 8
    gallery_head = CosineClassifier(NUM_CLASSES, dim)
    loss = BCTLoss(gallery_head, num_classes=NUM_CLASSES + 2, dim=dim)
    assert not any(p.requires_grad for p in loss.gallery_head.parameters())
    trainable = [p for p in loss.parameters() if p.requires_grad]
    assert len(trainable) == 1 and trainable[0] is loss.own_head.weight
    student = unit(5, dim, seed=1).requires_grad_(True)
    loss(student, unit(5, dim, seed=2), torch.tensor([0, 1, 2, 3, 5]), None).backward()
    assert gallery_head.weight.grad is None
    assert loss.own_head.weight.grad is not None and loss.own_head.weight.grad.abs().sum() > 0


def test_monotonic_mapping_parameters_get_gradients():
    loss = MonotonicMappingLoss(num_knots=8, k=5)
    student = unit(6, 8, seed=1).requires_grad_(True)
    loss(student, unit(6, 8, seed=2), None, unit(20, 8, seed=3)).backward()
    assert loss.slope_params.grad is not None and loss.slope_params.grad.abs().sum() > 0
    assert loss.offset.grad is not None


@pytest.mark.parametrize("name", QUERY_LOSSES)
def test_flags_say_what_the_loss_reads(name):
    """``uses_labels``/``uses_bank`` decide what the trainer prepares; they must match what the loss really reads:
    a loss that declares no labels (bank) gives the same value whatever labels (bank) it gets."""
    loss = make(name)
    student, teacher = unit(6, 8, seed=1), unit(6, 8, seed=2)
    bank_a, bank_b = unit(20, 8, seed=3), unit(20, 8, seed=4)
    labels_a, labels_b = torch.tensor([0, 1, 0, 2, 3, 1]), torch.tensor([3, 3, 1, 0, 2, 2])
    with torch.no_grad():
        base = loss(student, teacher, labels_a, bank_a)
        other_labels = loss(student, teacher, labels_b, bank_a)
        other_bank = loss(student, teacher, labels_a, bank_b)
    assert loss.uses_labels == (not torch.allclose(base, other_labels)), "uses_labels disagrees with the loss's behaviour"
    assert loss.uses_bank == (not torch.allclose(base, other_bank)), "uses_bank disagrees with the loss's behaviour"


@pytest.mark.parametrize("name", ["csd", "rop", "monotonic"])
def test_bank_losses_need_bank(name):
    with pytest.raises(ValueError, match="bank"):
        make(name)(unit(3, 8), unit(3, 8, seed=1))


@pytest.mark.parametrize("name", ["bct"])
def test_label_losses_need_labels(name):
    with pytest.raises(ValueError, match="labels"):
        make(name)(unit(3, 8), unit(3, 8, seed=1))


# ---------------------------------------------------------------------------------------------------------- BCT
def test_bct_hand_value():
    s = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, -1.0]])
    y = np.array([0, 1, 1])
    wg = np.array([[1.0, 0.0], [0.0, 2.0]])  # normalised inside the head
    wo = np.array([[1.0, 1.0], [1.0, -1.0]])
    gallery = set_head(CosineClassifier(2, 2, temperature=0.5), wg)
    loss = BCTLoss(gallery, num_classes=2, dim=2, own_weight=0.3, influence_weight=2.0, temperature=0.25)
    set_head(loss.own_head, wo)

    def logits(w, temp):
        return s @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T / temp

    expected = 2.0 * np_ce(logits(wg, 0.5), y) + 0.3 * np_ce(logits(wo, 0.25), y)
    value = loss(torch.tensor(s, dtype=torch.float32), torch.zeros(3, 2), torch.tensor(y), None)
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_bct_new_classes_skip_influence_term():
    s = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, -1.0]])
    wg = np.array([[1.0, 0.0], [0.0, 1.0]])
    gallery = set_head(CosineClassifier(2, 2, temperature=1.0), wg)
    loss = BCTLoss(gallery, num_classes=3, dim=2, own_weight=0.0)
    value = loss(torch.tensor(s, dtype=torch.float32), torch.zeros(3, 2), torch.tensor([0, 2, 1]), None)
    expected = np_ce(s[[0, 2]] @ wg.T, np.array([0, 1]))
    assert value.item() == pytest.approx(expected, rel=1e-5)
    # only unseen classes → influence term 0
    assert loss(torch.tensor(s, dtype=torch.float32), None, torch.tensor([2, 2, 2]), None).item() == 0.0


# ---------------------------------------------------------------------------------------------------------- AML
def np_aml(q, g, positive, margin):
    d = np.linalg.norm(q[:, None, :] - g[None, :, :], axis=-1)
    pos = (d[positive] ** 2).mean() if positive.any() else 0.0
    neg = (np.maximum(margin - d[~positive], 0.0) ** 2).mean() if (~positive).any() else 0.0
    return pos + neg


def test_aml_hand_value():
    q = angles(0, 90, 200)
    g = angles(20, 60, 180)
    margin = 1.5
    loss = AMLLoss(margin=margin)
    labels = np.array([0, 1, 0])
    positive = labels[:, None] == labels[None, :]
    value = loss(t64(q), t64(g), torch.tensor(labels), None)
    assert value.item() == pytest.approx(np_aml(q, g, positive, margin), rel=1e-9)
    # hand check of one number: only j = i positive when labels are None
    value_nolabels = loss(t64(q), t64(g), None, None)
    assert value_nolabels.item() == pytest.approx(np_aml(q, g, np.eye(3, dtype=bool), margin), rel=1e-9)
    # every label equal → every pair positive, no negative term
    value_same = loss(t64(q), t64(g), torch.tensor([1, 1, 1]), None)
    d2 = ((q[:, None] - g[None]) ** 2).sum(-1)
    assert value_same.item() == pytest.approx(d2.mean(), rel=1e-9)


def test_aml_lower_when_student_is_teacher():
    teacher = unit(16, 32, seed=2)
    labels = torch.arange(16) % 4
    loss = AMLLoss()
    assert loss(teacher.clone(), teacher, labels) < loss(unit(16, 32, seed=5), teacher, labels)
    assert loss(teacher.clone(), teacher, None).item() == pytest.approx(0.0, abs=1e-6)


def test_aml_rejects_unknown_mode():
    with pytest.raises(ValueError):
        AMLLoss(mode="triplet")


# ---------------------------------------------------------------------------------------------------------- CSD
def test_csd_hand_value():
    t = angles(0)
    q = angles(25)
    bank = np.concatenate([angles(0), angles(10, 40, 95, 170)])  # item 0 is the image itself
    k, tau = 2, 0.5
    # neighbours of t without the self-match: 10° and 40°
    nb = angles(10, 40)
    p_t = np_softmax(t @ nb.T / tau)
    p_s = np_softmax(q @ nb.T / tau)
    kl = float((p_t * (np.log(p_t) - np.log(p_s))).sum())
    imitation = 1.0 - math.cos(math.radians(25))
    loss = CSDLoss(k=k, temperature=tau, imitation_weight=0.7, kl_weight=1.3)
    value = loss(t64(q), t64(t), None, t64(bank))
    assert value.item() == pytest.approx(0.7 * imitation + 1.3 * kl, rel=1e-9)
    # l2 imitation
    loss_l2 = CSDLoss(k=k, temperature=tau, kl_weight=0.0, imitation="l2")
    assert loss_l2(t64(q), t64(t), None, t64(bank)).item() == pytest.approx(((q - t) ** 2).sum(), rel=1e-9)


def test_csd_kl_zero_when_student_is_teacher():
    teacher, bank = unit(8, 16, seed=2), unit(30, 16, seed=3)
    bank = torch.cat([bank, teacher[:3]])  # some images are in the bank (self-matches excluded)
    loss = CSDLoss(k=10, imitation_weight=0.0)
    assert loss(teacher.clone(), teacher, None, bank).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(unit(8, 16, seed=9), teacher, None, bank).item() > 1e-3


def test_csd_small_bank_with_only_self_match_is_finite():
    teacher = unit(2, 4, seed=2)
    loss = CSDLoss(k=5)
    value = loss(unit(2, 4, seed=1), teacher, None, teacher[:1].clone())
    assert torch.isfinite(value)


# --------------------------------------------------------------------------------------------------------- RAML
def test_raml_hand_value():
    q = angles(0, 80, 170)
    t = angles(30, 90, 150)
    lam1, lam2 = 0.5, 2.0
    cos = (q * t).sum(1)
    expected = ((1 - cos) ** 2).mean() + lam1 * ((q @ t.T - t @ t.T) ** 2).mean() + lam2 * ((q @ q.T - t @ t.T) ** 2).mean()
    value = RAMLLoss(lambda1=lam1, lambda2=lam2)(t64(q), t64(t))
    assert value.item() == pytest.approx(expected, rel=1e-9)


def test_raml_ignores_labels():
    student, teacher = unit(6, 8, seed=1), unit(6, 8, seed=2)
    loss = RAMLLoss()
    base = loss(student, teacher, None)
    for labels in (torch.zeros(6, dtype=torch.long), torch.arange(6), torch.tensor([3, 1, 4, 1, 5, 9])):
        assert loss(student, teacher, labels).item() == base.item()
    assert loss(teacher.clone(), teacher).item() == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------------------------------------------------- ROP
def np_rop(q, t, bank, k, tau, tau_g, weighting):
    s_g_all = t @ bank.T
    order = np.argsort(-s_g_all)[:k]
    s_g = s_g_all[order]
    s_q = (q @ bank.T)[order]
    total, norm = 0.0, 0.0
    for a in range(k):
        w = 1.0 / (1.0 + a) if weighting == "inverse_rank" else 1.0
        for b in range(k):
            i_g = np_sigmoid((s_g[b] - s_g[a]) / tau_g)
            i_q = np_sigmoid((s_q[b] - s_g[a]) / tau)
            total += w * (i_g - i_q) ** 2
            norm += w
    return total / norm


@pytest.mark.parametrize("weighting", ["uniform", "inverse_rank"])
def test_rop_hand_value(weighting):
    t = angles(0)
    q = angles(12)
    bank = angles(50, 5, 30, 120)
    k, tau, tau_g = 3, 0.5, 0.25
    expected = np_rop(q[0], t[0], bank, k, tau, tau_g, weighting)
    loss = ROPLoss(k=k, tau=tau, tau_g=tau_g, weighting=weighting)
    assert loss(t64(q), t64(t), None, t64(bank)).item() == pytest.approx(expected, rel=1e-9)


def test_rop_zero_at_teacher_and_grows_with_rank_swaps():
    teacher = t64(angles(0))
    bank = t64(angles(8, 20, 35, 60, 90, 140))
    loss = ROPLoss(k=6)
    same = loss(teacher.clone(), teacher, None, bank).item()
    slightly_off = loss(t64(angles(2)), teacher, None, bank).item()  # same ranking, small score change
    swapped = loss(t64(angles(16)), teacher, None, bank).item()  # now closer to 20° than to 8°: top-2 swapped
    assert same == pytest.approx(0.0, abs=1e-12)
    assert 0.0 < slightly_off < swapped
    # random batch: zero at the teacher, positive elsewhere
    teacher_b, bank_b = unit(8, 16, seed=2), unit(40, 16, seed=3)
    assert loss(teacher_b.clone(), teacher_b, None, bank_b).item() == pytest.approx(0.0, abs=1e-7)
    assert loss(unit(8, 16, seed=4), teacher_b, None, bank_b).item() > 1e-3


def test_rop_student_pairing_also_zero_at_teacher():
    teacher, bank = unit(4, 8, seed=2), unit(20, 8, seed=3)
    loss = ROPLoss(k=8, pairing="student")
    assert loss(teacher.clone(), teacher, None, bank).item() == pytest.approx(0.0, abs=1e-7)
    assert loss(unit(4, 8, seed=4), teacher, None, bank).item() > 1e-3


def test_rop_sharp_target_has_floor_at_teacher():
    """Documented: with τ_g ≪ τ (paper setting) a perfectly compatible student keeps a positive loss."""
    teacher = t64(angles(0))
    bank = t64(angles(8, 20, 35))
    assert ROPLoss(k=3, tau=0.1, tau_g=0.01)(teacher.clone(), teacher, None, bank).item() > 1e-3


def test_rop_k_larger_than_bank_and_k_none():
    student, teacher, bank = unit(3, 8, seed=1), unit(3, 8, seed=2), unit(4, 8, seed=3)
    assert ROPLoss(k=96)(student, teacher, None, bank).item() == pytest.approx(
        ROPLoss(k=None)(student, teacher, None, bank).item()
    )


# ---------------------------------------------------------------------------------------------------- monotonic
def inverse_softplus(y: float) -> float:
    return math.log(math.expm1(y))


def test_monotonic_identity_at_init():
    loss = MonotonicMappingLoss(num_knots=16)
    x = torch.linspace(-1, 1, 101)
    assert torch.allclose(loss.mapping(x), x, atol=1e-6)


def test_monotonic_mapping_hand_value():
    loss = MonotonicMappingLoss(num_knots=3, k=2, anchor_weight=0.5)  # knots −1, 0, 1
    with torch.no_grad():
        loss.slope_params.copy_(torch.tensor([inverse_softplus(0.5), inverse_softplus(2.0)]))
        loss.offset.fill_(0.1)

    def f(x):
        return 0.1 + 0.5 * np.clip(x + 1.0, 0.0, 1.0) + 2.0 * np.clip(x, 0.0, 1.0)

    xs = np.array([-1.0, -0.5, 0.0, 0.25, 0.5, 1.0, 1.5])
    assert np.allclose(loss.mapping(torch.tensor(xs, dtype=torch.float32)).detach().numpy(), f(np.clip(xs, -1, 1)), atol=1e-6)

    t = angles(0)
    q = angles(30)
    bank = angles(10, 60, 100)
    s_g = np.array([math.cos(math.radians(10)), math.cos(math.radians(60))])  # top-2 by the teacher
    s_q = np.array([math.cos(math.radians(20)), math.cos(math.radians(30))])
    expected = ((s_q - f(s_g)) ** 2).mean() + 0.5 * ((f(s_g) - s_g) ** 2).mean()
    value = loss(t64(q), t64(t), None, t64(bank))
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_monotonic_mapping_non_decreasing_for_random_parameters():
    x = torch.linspace(-1.2, 1.2, 1001)
    g = torch.Generator().manual_seed(0)
    for trial in range(200):
        loss = MonotonicMappingLoss(num_knots=int(torch.randint(2, 33, (1,), generator=g)))
        with torch.no_grad():
            scale = float(10 ** torch.empty(1).uniform_(-1, 1.5, generator=g))
            loss.slope_params.copy_(torch.randn(loss.slope_params.shape, generator=g) * scale)
            loss.offset.copy_(torch.randn((), generator=g) * 3)
        y = loss.mapping(x)
        assert torch.all(y[1:] - y[:-1] >= -1e-6), trial


def test_monotonic_zero_at_teacher_with_identity_mapping():
    teacher, bank = unit(5, 8, seed=2), unit(30, 8, seed=3)
    loss = MonotonicMappingLoss(k=10)
    assert loss(teacher.clone(), teacher, None, bank).item() == pytest.approx(0.0, abs=1e-10)
    assert loss(unit(5, 8, seed=7), teacher, None, bank).item() > 1e-3


def test_monotonic_fit_follows_squashed_student_without_collapse():
    """Optimising f alone against a student whose scores are s_q = 0.5·s_g: f moves toward the
    anchored optimum (0.5 + λ)/(1 + λ)·s_g, stays non-decreasing and does not flatten."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: avoid thread overhead on a loaded machine
    try:
        teacher, bank = unit(16, 8, seed=2), unit(64, 8, seed=3)
        loss = MonotonicMappingLoss(num_knots=8, k=16, anchor_weight=0.1)
        params = list(loss.parameters())
        for _ in range(300):
            grads = torch.autograd.grad(loss(0.5 * teacher, teacher, None, bank), params)
            with torch.no_grad():
                for p, g in zip(params, grads):
                    p -= 0.5 * g
    finally:
        torch.set_num_threads(threads)
    y = loss.mapping(torch.linspace(-1, 1, 201)).detach()
    assert torch.all(y[1:] >= y[:-1] - 1e-6)
    f = loss.mapping(torch.tensor([0.2, 0.8])).detach()
    slope = float((f[1] - f[0]) / 0.6)
    assert 0.3 < slope < 0.9  # identity (1.0) at init, optimum 0.6/1.1 ≈ 0.55, never flat
    assert f[1] < 0.7


# ------------------------------------------------------------------------------------------------ bank neighbours
def test_bank_neighbours_sorted_and_self_excluded():
    teacher = unit(3, 6, seed=1)
    bank = torch.cat([unit(10, 6, seed=2), teacher[1:2]])
    s_g, idx, valid = bank_neighbours(teacher, bank, k=4, exclude_self=True)
    assert s_g.shape == idx.shape == valid.shape == (3, 4)
    assert torch.all(s_g[:, 1:] <= s_g[:, :-1])
    assert 10 not in idx[1].tolist()
    assert valid.all()
    s_g, idx, valid = bank_neighbours(teacher, teacher[:1], k=3, exclude_self=True)
    assert s_g.shape == (3, 1) and not valid[0, 0] and valid[1, 0]


# ------------------------------------------------------------------------------------------------------ registry
def test_registry_names():
    expected = {"similarity", "distill-l2", "distill-cos", "distill-metric", "kl", "dual-ce", "bct", "aml", "csd", "raml", "rop", "monotonic", "contrastive"}
    assert set(LOSSES) == expected


@pytest.mark.parametrize(
    "name,cls",
    [
        ("similarity", SimilarityLoss),
        ("distill-l2", SimilarityLoss),
        ("distill-cos", SimilarityLoss),
        ("kl", SharedHeadKLLoss),
        ("dual-ce", SharedHeadCELoss),
        ("bct", BCTLoss),
        ("aml", AMLLoss),
        ("csd", CSDLoss),
        ("raml", RAMLLoss),
        ("rop", ROPLoss),
        ("monotonic", MonotonicMappingLoss),
    ],
)
def test_create_loss_builds_each(name, cls):
    assert isinstance(make(name), cls)


def test_create_loss_kwargs_and_aliases():
    assert create_loss("distill-l2").kind == "l2"
    assert create_loss("distill-cos").kind == "cos"
    assert create_loss("similarity", kind="l2").kind == "l2"
    assert create_loss("ROP", k=7, tau=0.2).k == 7
    assert create_loss("dual_ce", head=CosineClassifier(3, 4)).uses_labels
    assert create_loss("csd", temperature=0.1).temperature == 0.1


def test_create_loss_unknown_name():
    with pytest.raises(ValueError) as err:
        create_loss("arcface-magic")
    message = str(err.value)
    assert "arcface-magic" in message
    for name in LOSSES:
        assert name in message
    with pytest.raises(ValueError, match="did you mean 'csd'"):
        create_loss("cds")


def test_create_loss_refuses_arguments_the_loss_does_not_take():
    with pytest.raises(TypeError, match="does not take tempreature"):
        create_loss("csd", tempreature=0.1)
    with pytest.raises(TypeError, match="does not take kind"):
        create_loss("distill-l2", kind="cos")  # would silently contradict the name


def test_weighted_sum_with_query_losses():
    loss = WeightedSum({"csd": (CSDLoss(k=5), 1.0), "raml": (RAMLLoss(), 0.5), "bct": (make("bct"), 0.1)})
    assert loss.uses_bank and loss.uses_labels
    student, teacher, bank = unit(4, 8, seed=1), unit(4, 8, seed=2), unit(12, 8, seed=3)
    labels = torch.tensor([0, 1, 2, 3])
    total = loss(student, teacher, labels, bank)
    # each term computed on its own, outside the sum (the bct term through the same module: its own head is trained)
    expected = (1.0 * CSDLoss(k=5)(student, teacher, labels, bank) + 0.5 * RAMLLoss()(student, teacher, labels, bank)
                + 0.1 * loss.losses["bct"](student, teacher, labels, bank))
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.weights == {"csd": 1.0, "raml": 0.5, "bct": 0.1}


def test_metric_distillation_regresses_unlabelled_rows_without_a_class_term():
    """Label −1 (an unlabelled image): the regression counts it, the student's own classification does not."""
    from asymret.compat.losses import create_loss

    torch.manual_seed(0)
    loss = create_loss("distill-metric", num_classes=3, dim=8)
    student, teacher = torch.randn(6, 8), torch.randn(6, 8)
    labels = torch.tensor([0, 1, 2, -1, -1, -1])
    regression = lambda rows: (1 - torch.nn.functional.cosine_similarity(student[rows], teacher[rows])).mean()  # noqa: E731
    labelled_only = loss(student[:3], teacher[:3], labels[:3]) - regression(slice(0, 3))
    mixed = loss(student, teacher, labels)
    assert torch.allclose(mixed, regression(slice(None)) + labelled_only, atol=1e-6)
    assert torch.allclose(loss(student[3:], teacher[3:], labels[3:]), regression(slice(3, None)), atol=1e-6)
