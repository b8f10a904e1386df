"""Local descriptors from any encoder: the feature map of a chosen layer, a detector score per position, the top-k.

A re-ranker (AMES, LOCORE) compares two images by their *local* descriptors — feature-map positions — rather than
by one global embedding.  Any :class:`~asymret.encoders.Encoder` gives them:

- the feature map of ``layer`` (a module path inside the encoder, caught with a forward hook; ``""`` = the
  backbone's output), e.g. ``backbone.net._blocks.10`` for EfficientNet-Lite's stride-16 stage;
- a detector score per position: the L2 norm of the feature (what AMES falls back to without detector weights);
- the ``budget`` highest-scoring positions, each with its normalised (x, y) centre, the detector weight and a
  validity flag (a map with fewer positions than the budget is padded with invalid rows).

Descriptors are stored in the :class:`~asymret.store.EmbeddingStore` like embeddings — sharded, resumable,
fingerprinted — one flat row per image (:data:`META_FIELDS` then the channels, per descriptor), under the output
name :meth:`LocalSpec.output`.  Their space is the encoder's backbone *and* the spec, so descriptors of another
model, layer or budget are refused like embeddings of another space.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..core.device import module_device
from ..core.manifest import stable_hash
from ..core.space import Space

__all__ = ["LocalSpec", "META_FIELDS", "channels_at", "feature_map", "local_descriptors", "local_space"]

#: per-descriptor metadata stored before the channels: normalised centre (x, y) in [0, 1], detector weight, valid
META_FIELDS = ("x", "y", "weight", "valid")
_OUTPUT = re.compile(r"^local-k(?P<budget>\d+)(@(?P<layer>[A-Za-z0-9_.]+))?$")


@dataclass(frozen=True)
class LocalSpec:
    """Which local descriptors: ``budget`` positions of the feature map of ``layer`` ("" = the backbone's output)."""

    budget: int = 50
    layer: str = ""

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise ValueError(f"a local-descriptor budget must be at least 1, got {self.budget}")
        if self.layer and not re.fullmatch(r"[A-Za-z0-9_.]+", self.layer):
            raise ValueError(f"layer must be a module path like 'backbone.features.1', got {self.layer!r}")

    @property
    def output(self) -> str:
        """The store's output name for these descriptors (``local-k50``, ``local-k50@backbone.net._blocks.10``)."""
        return f"local-k{self.budget}" + (f"@{self.layer}" if self.layer else "")

    @classmethod
    def from_output(cls, output: str) -> "LocalSpec":
        match = _OUTPUT.match(output)
        if match is None:
            raise ValueError(f"not a local-descriptor output name: {output!r} (expected e.g. 'local-k50' or 'local-k50@backbone.features.1')")
        return cls(int(match["budget"]), match["layer"] or "")

    @staticmethod
    def is_output(output: str) -> bool:
        return output.startswith("local-")


def _module(encoder: nn.Module, layer: str) -> nn.Module:
    if not layer:
        return encoder.backbone
    try:
        return encoder.get_submodule(layer)
    except AttributeError:
        names = [name for name, _ in encoder.named_modules() if name][:12]
        raise ValueError(f"{getattr(encoder, 'name', 'the encoder')} has no module {layer!r} (e.g. {', '.join(names)}, …)") from None


def feature_map(encoder: nn.Module, batch: torch.Tensor, layer: str = "") -> torch.Tensor:
    """The (B, C, h, w) output of ``layer`` for a preprocessed ``batch`` (the forward pass stops being useful there,
    but runs to the end: the hook keeps the code independent of how each backbone is written)."""
    if not layer:
        return encoder.forward_features(batch)
    captured: list[torch.Tensor] = []
    handle = _module(encoder, layer).register_forward_hook(lambda _m, _i, output: captured.append(output))
    try:
        encoder.forward_features(batch)
    finally:
        handle.remove()
    out = captured[0]
    if out.ndim != 4:
        raise ValueError(f"layer {layer!r} gives a tensor of shape {tuple(out.shape)}, not a (B, C, h, w) feature map")
    return out


def local_descriptors(encoder: nn.Module, batch: torch.Tensor, spec: LocalSpec) -> torch.Tensor:
    """Flat rows (B, budget · (4 + C)): per descriptor x, y, detector weight, valid, then the C channels.

    The descriptors are the feature vectors at the ``budget`` positions with the largest L2 norm, in decreasing
    order of it; positions beyond the map's size are zero rows with valid = 0.
    """
    features = feature_map(encoder, batch, spec.layer).float()
    b, c, h, w = features.shape
    flat = features.flatten(2).transpose(1, 2)  # (B, h·w, C)
    scores = flat.norm(dim=2)
    k = min(spec.budget, h * w)
    weights, positions = scores.topk(k, dim=1)  # sorted, largest first
    vectors = torch.gather(flat, 1, positions.unsqueeze(-1).expand(b, k, c))
    ys = (positions // w).float().add(0.5).div(h)
    xs = (positions % w).float().add(0.5).div(w)
    rows = torch.zeros(b, spec.budget, len(META_FIELDS) + c, device=features.device)
    rows[:, :k, 0], rows[:, :k, 1], rows[:, :k, 2], rows[:, :k, 3] = xs, ys, weights, 1.0
    rows[:, :k, len(META_FIELDS):] = vectors
    return rows.reshape(b, -1)


def channels_at(encoder: nn.Module, layer: str) -> int:
    """The channel count of ``layer``'s feature map (one forward pass of a blank image)."""
    size = encoder.preprocess.input_size
    blank = np.zeros((size, size, encoder.preprocess.channels), np.uint8)
    with torch.no_grad():
        return int(feature_map(encoder.eval(), encoder.preprocess([blank]).to(module_device(encoder)), layer).shape[1])


def local_space(encoder: nn.Module, spec: LocalSpec) -> Space:
    """The space of ``encoder``'s local descriptors under ``spec``: its backbone (weights and input size), the layer
    and the budget.  The neck and the centre do not change feature maps, so they are not part of it."""
    channels = channels_at(encoder, spec.layer)
    fingerprint = stable_hash({"backbone": encoder.backbone_fingerprint(), "local": spec.output})
    return Space(fingerprint, spec.budget * (len(META_FIELDS) + channels), normalized=False, name=f"{encoder.name}:{spec.output}")
