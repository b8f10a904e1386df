"""Pixels → model input: resize, channel conversion and normalisation, part of an encoder's identity."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Preprocess:
    """How an encoder wants its pixels: ``input_size`` square, ``channels`` (1 or 3), then ``(x/255 − mean)/std``."""

    input_size: int
    channels: int = 3
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)

    def config(self) -> dict:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_config(cls, data: dict) -> "Preprocess":
        return cls(int(data["input_size"]), int(data["channels"]), tuple(data["mean"]), tuple(data["std"]))

    def __call__(self, images: Sequence[np.ndarray] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """A batch of HxWxC uint8 images (any size, C = 1 or 3) → (B, channels, S, S) float tensor."""
        if isinstance(images, torch.Tensor):
            batch = images
        elif isinstance(images, np.ndarray) and images.ndim == 4:  # already one (B, H, W, C) array
            batch = torch.from_numpy(np.ascontiguousarray(images))
        else:
            shapes = {image.shape for image in images}
            if len(shapes) == 1:
                batch = torch.from_numpy(np.stack(images))
            else:  # mixed sizes: resize one by one, then stack
                return torch.cat([self([image]) for image in images])
        batch = batch.permute(0, 3, 1, 2).float().div(255.0)  # B,C,H,W in [0,1] (out of place: a float input stays intact)
        batch = self._match_channels(batch)
        if batch.shape[-1] != self.input_size or batch.shape[-2] != self.input_size:
            batch = F.interpolate(batch, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(self.mean[: self.channels], device=batch.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std[: self.channels], device=batch.device).view(1, -1, 1, 1)
        return (batch - mean) / std

    def convert(self, batch: torch.Tensor, target: "Preprocess") -> torch.Tensor:
        """A batch preprocessed by ``self`` → as ``target`` would have preprocessed the same pixels.

        Used for coupled augmentation: one augmented view, seen by each model at its own resolution.
        """
        if target == self:
            return batch
        mean = torch.tensor(self.mean[: self.channels], device=batch.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std[: self.channels], device=batch.device).view(1, -1, 1, 1)
        pixels = target._match_channels(batch * std + mean)
        if pixels.shape[-1] != target.input_size:
            pixels = F.interpolate(pixels, size=(target.input_size, target.input_size), mode="bilinear", align_corners=False, antialias=True)
        t_mean = torch.tensor(target.mean[: target.channels], device=batch.device).view(1, -1, 1, 1)
        t_std = torch.tensor(target.std[: target.channels], device=batch.device).view(1, -1, 1, 1)
        return (pixels - t_mean) / t_std

    def _match_channels(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.shape[1] == self.channels:
            return batch
        if batch.shape[1] == 1 and self.channels == 3:
            return batch.expand(-1, 3, -1, -1)
        if batch.shape[1] == 3 and self.channels == 1:
            weights = torch.tensor([0.299, 0.587, 0.114], device=batch.device).view(1, 3, 1, 1)
            return (batch * weights).sum(dim=1, keepdim=True)
        raise ValueError(f"cannot convert {batch.shape[1]}-channel images to {self.channels} channels")
