"""Training-time augmentation: deterministic, shape-keeping, each op doing what it says, `light` = the old recipe."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from asymret.data.augment import AUGMENT_PRESETS, AugmentConfig, augment_batch, augment_config
from asymret.training import TrainConfig, epoch_batches, train


def _old_light_augment(batch, generator, pad=2):
    """The recipe before this module (±pad-pixel shifts with reflect padding, then horizontal flips), verbatim."""
    n, _, h, w = batch.shape
    padded = F.pad(batch, (pad, pad, pad, pad), mode="reflect")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = dy.view(n, 1) + torch.arange(h).view(1, h)
    cols = dx.view(n, 1) + torch.arange(w).view(1, w)
    out = padded[torch.arange(n).view(n, 1, 1), :, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)
    flips = torch.rand(n, generator=generator) < 0.5
    return torch.where(flips.view(n, 1, 1, 1), out.flip(-1), out).contiguous()


def _glyph_batch(n=16, size=32, channels=1):
    """Bright strokes on a dark background, in the normalised range [-1, 1]."""
    x = -torch.ones(n, channels, size, size)
    x[:, :, size // 4: 3 * size // 4, size // 2 - 1: size // 2 + 1] = 1.0  # a vertical stroke
    x[:, :, size // 2 - 1: size // 2 + 1, size // 4: 3 * size // 4] = 1.0  # a horizontal stroke
    return x


def test_light_preset_is_exactly_the_old_recipe():
    x = torch.randn(8, 1, 12, 12)
    got = augment_batch(x, "light", torch.Generator().manual_seed(3))
    torch.testing.assert_close(got, _old_light_augment(x, torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("preset", sorted(AUGMENT_PRESETS))
def test_presets_are_deterministic_and_keep_shape(preset):
    x = _glyph_batch(channels=3)
    a = augment_batch(x, preset, torch.Generator().manual_seed(1))
    b = augment_batch(x, preset, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    assert a.shape == x.shape and a.dtype == x.dtype
    if preset != "none":
        assert not torch.equal(a, augment_batch(x, preset, torch.Generator().manual_seed(2)))


@pytest.mark.parametrize("setting, value", [
    ("rotate_degrees", 20.0), ("scale", (0.7, 0.9)), ("translate", 0.2), ("shear_degrees", 15.0), ("aspect", 0.3),
    ("brightness", 0.5), ("contrast", 0.5), ("blur_p", 1.0), ("stroke_p", 1.0), ("noise_std", 0.2),
    ("hflip", True), ("shift_pad", 3), ("downscale", (0.5, 0.6)), ("jpeg_p", 1.0),
])
def test_each_op_changes_the_images_only_when_enabled(setting, value):
    x = _glyph_batch()
    x[:, :, :, :8] += 0.5  # break the left-right symmetry so that flips are visible
    changed = augment_batch(x, AugmentConfig(**{setting: value}), torch.Generator().manual_seed(0))
    assert not torch.allclose(changed, x), setting
    torch.testing.assert_close(augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(0)), x)


def test_colour_ops_need_colour():
    x = torch.randn(6, 3, 8, 8)
    grey = augment_batch(x, AugmentConfig(greyscale_p=1.0), torch.Generator().manual_seed(0))
    torch.testing.assert_close(grey[:, 0], grey[:, 1])
    saturated = augment_batch(x, AugmentConfig(saturation=0.9), torch.Generator().manual_seed(0))
    assert not torch.allclose(saturated, x)
    one_channel = torch.randn(6, 1, 8, 8)
    torch.testing.assert_close(augment_batch(one_channel, AugmentConfig(greyscale_p=1.0, saturation=0.9), torch.Generator()), one_channel)


def test_stroke_width_grows_or_shrinks_the_ink():
    x = _glyph_batch(n=64)
    ink = (x > 0).float().sum(dim=(1, 2, 3))
    out = augment_batch(x, AugmentConfig(stroke_p=1.0), torch.Generator().manual_seed(0))
    out_ink = (out > 0).float().sum(dim=(1, 2, 3))
    assert (out_ink > ink).any() and (out_ink < ink).any()  # some dilated, some eroded
    assert ((out_ink > ink) | (out_ink < ink)).all()  # every chosen sample changed width


def test_rotation_keeps_the_content_and_background():
    x = _glyph_batch(n=4, size=33)
    out = augment_batch(x, AugmentConfig(rotate_degrees=30), torch.Generator().manual_seed(0))
    # border padding continues the dark background: no grey wedges in the corners
    assert out[:, :, 0, 0].max() < -0.99
    assert (out > 0).float().sum() == pytest.approx((x > 0).float().sum(), rel=0.35)


def test_augment_config_by_name_dict_or_config():
    assert augment_config("glyph") is AUGMENT_PRESETS["glyph"] and augment_config(None) == AugmentConfig()
    assert augment_config({"scale": [0.8, 1.0]}).scale == (0.8, 1.0)
    with pytest.raises(ValueError, match="unknown augmentation preset"):
        augment_config("heavy")
    with pytest.raises(ValueError, match="unknown augmentation setting"):
        augment_config({"rotate": 3})
    assert not AUGMENT_PRESETS["glyph"].hflip  # a mirrored character is another character


def test_class_balanced_batches_hold_m_images_of_each_class():
    labels = np.repeat(np.arange(20), 6)
    config = TrainConfig(batch_size=16, m_per_class=4, seed=0)
    batches = epoch_batches(labels, config)(0, torch.Generator())
    assert len(batches) == len(labels) // 16
    for batch in batches:
        counts = np.bincount(labels[batch.numpy()], minlength=20)
        assert sorted(counts[counts > 0].tolist()) == [4, 4, 4, 4]
    with pytest.raises(ValueError, match="multiple of m_per_class"):
        epoch_batches(labels, TrainConfig(batch_size=10, m_per_class=4))


def test_warmup_ramps_the_learning_rate_linearly(monkeypatch):
    seen = []
    parameter = torch.nn.Parameter(torch.zeros(1))
    original = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    config = TrainConfig(epochs=2, batch_size=1, lr=0.4, warmup_epochs=1, schedule="constant", seed=0)
    train([parameter], lambda batch: (parameter - 1).pow(2).sum(), lambda epoch, generator: [0, 1, 2, 3], config)
    # 4 steps per epoch: the first epoch ramps 0.1 → 0.4, then the constant rate
    assert seen == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4, 0.4, 0.4])


def test_lower_resolution_removes_the_finest_detail_and_keeps_the_coarse():
    fine = torch.zeros(1, 1, 32, 32)
    fine[..., ::2, :] = 1.0  # one-pixel stripes: gone at half resolution
    coarse = torch.zeros(1, 1, 32, 32)
    coarse[..., 8:24, 8:24] = 1.0  # a large square: survives
    cfg = AugmentConfig(downscale=(0.5, 0.5))
    blurred = augment_batch(fine, cfg, torch.Generator().manual_seed(0))
    assert float(blurred.std()) < 0.1 * float(fine.std())
    kept = augment_batch(coarse, cfg, torch.Generator().manual_seed(0))
    assert float(kept.std()) > 0.8 * float(coarse.std())
    assert float(torch.corrcoef(torch.stack([kept.flatten(), coarse.flatten()]))[0, 1]) > 0.95


def test_jpeg_round_trip_is_lossy_close_and_works_in_any_normalised_range():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=gen)
    x = F.avg_pool2d(x, 3, stride=1, padding=1)  # some structure, not pure noise
    cfg = AugmentConfig(jpeg_p=1.0, jpeg_quality=(20, 20))
    out = augment_batch(x, cfg, torch.Generator().manual_seed(1))
    error = float((out - x).abs().mean())
    assert 0.0 < error < 0.1
    # the same images in a normalised space ((x − 0.5)/0.25) get the same round trip, in that space
    normalised = augment_batch((x - 0.5) / 0.25, cfg, torch.Generator().manual_seed(1))
    torch.testing.assert_close(normalised * 0.25 + 0.5, out, atol=1e-4, rtol=0)
    # grey images are encoded as one channel
    grey = augment_batch(x[:, :1], cfg, torch.Generator().manual_seed(1))
    assert grey.shape == (2, 1, 32, 32) and 0.0 < float((grey - x[:, :1]).abs().mean()) < 0.1
