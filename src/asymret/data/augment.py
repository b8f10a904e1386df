"""Training-time augmentation of image batches: one configurable, seeded, batched transform.

Open-set metric learning with few images per class needs strong augmentation (a model must learn what stays the
same under viewpoint, scale, stroke and colour changes, not memorise pixels); the closed-set demo needs little.
:class:`AugmentConfig` says what to do, with named presets (``light`` = the old ±2-px shifts and flips exactly,
``strong`` for photos, ``glyph`` for printed characters, ``camera`` for new views of an item: crop, angle, blur,
lower resolution, JPEG), and :func:`augment_batch` applies it to a batch of *preprocessed* tensors (B, C, H, W)
with a ``torch.Generator`` — every op is per sample, vectorised except the lower-resolution and JPEG round trips.

The ops work in any affine-normalised pixel space (``(x/255 − mean)/std``): geometry resamples with border
padding (the background continues), contrast and saturation act around per-image/per-pixel means, brightness and
noise are in units of the normalised range.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from ..core.settings import strict_settings
from .dataset import ImageDataset, ImageSource

__all__ = ["AugmentConfig", "AUGMENT_PRESETS", "augment_config", "augment_batch", "ViewSource", "camera_views", "view_bank"]


@dataclass(frozen=True)
class AugmentConfig:
    """What the augmentation does; zero/one values switch an op off."""

    shift_pad: int = 0  # random translation by up to this many pixels (reflect padding): the "light" recipe
    hflip: bool = False
    rotate_degrees: float = 0.0  # affine: rotation drawn from ±rotate_degrees
    scale: tuple[float, float] = (1.0, 1.0)  # affine: zoom (>1 zooms in, like a random resized crop)
    aspect: float = 0.0  # affine: log-uniform aspect-ratio change of ±aspect
    translate: float = 0.0  # affine: shift up to this fraction of the image size
    shear_degrees: float = 0.0
    brightness: float = 0.0  # colour jitter: additive, in normalised units
    contrast: float = 0.0  # colour jitter: factor drawn from [1 − c, 1 + c] around the image mean
    saturation: float = 0.0  # colour jitter (3 channels): factor around the pixel's grey value
    greyscale_p: float = 0.0
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.3, 1.2)  # in pixels
    stroke_p: float = 0.0  # morphological dilation or erosion (3×3), thicker or thinner strokes
    noise_std: float = 0.0  # Gaussian pixel noise, normalised units
    downscale: tuple[float, float] = (1.0, 1.0)  # lower resolution: shrink by a factor drawn from this range, then back
    jpeg_p: float = 0.0  # JPEG re-encoding (per image, through Pillow) at a quality drawn from jpeg_quality
    jpeg_quality: tuple[int, int] = (30, 90)

    @property
    def enabled(self) -> bool:
        return self != AugmentConfig()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AugmentConfig":
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in strict_settings(cls, data, "augmentation").items()}
        return cls(**values)


AUGMENT_PRESETS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(),
    "light": AugmentConfig(shift_pad=2, hflip=True),
    # photos: viewpoint, crop and colour changes
    "strong": AugmentConfig(hflip=True, rotate_degrees=15, scale=(0.75, 1.15), aspect=0.15, translate=0.1, shear_degrees=10,
                            brightness=0.3, contrast=0.3, saturation=0.3, greyscale_p=0.1, blur_p=0.2),
    # printed characters: no flips (a mirrored character is another character), stroke width, blur and noise
    "glyph": AugmentConfig(rotate_degrees=10, scale=(0.8, 1.1), aspect=0.1, translate=0.08, shear_degrees=10,
                           contrast=0.3, blur_p=0.3, stroke_p=0.5, noise_std=0.1),
    # a second photo of the same item, for instance queries: a slightly different crop and angle, softer focus, a
    # lower-resolution sensor and JPEG compression
    "camera": AugmentConfig(rotate_degrees=8, scale=(0.9, 1.15), translate=0.05, brightness=0.1, contrast=0.2, blur_p=0.3,
                            downscale=(0.5, 0.9), jpeg_p=1.0, jpeg_quality=(30, 80)),
}


def augment_config(spec: str | AugmentConfig | Mapping[str, Any] | None) -> AugmentConfig:
    """A preset name, a config, a dict of settings or None (= ``none``)."""
    if spec is None:
        return AUGMENT_PRESETS["none"]
    if isinstance(spec, AugmentConfig):
        return spec
    if isinstance(spec, Mapping):
        return AugmentConfig.from_dict(spec)
    key = str(spec).strip().lower()
    if key not in AUGMENT_PRESETS:
        raise ValueError(f"unknown augmentation preset {spec!r}; known: {', '.join(AUGMENT_PRESETS)}")
    return AUGMENT_PRESETS[key]


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _chosen(n: int, p: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator) < p


def _shift(batch: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels per sample (reflect padding), by indexing: no resampling."""
    n, _, h, w = batch.shape
    padded = F.pad(batch, (pad, pad, pad, pad), mode="reflect")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = dy.view(n, 1) + torch.arange(h).view(1, h)
    cols = dx.view(n, 1) + torch.arange(w).view(1, w)
    out = padded[torch.arange(n).view(n, 1, 1), :, rows.view(n, h, 1), cols.view(n, 1, w)]  # n,h,w,c
    return out.permute(0, 3, 1, 2)


def _affine(batch: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    n = batch.shape[0]
    angle = torch.deg2rad(_uniform(n, -config.rotate_degrees, config.rotate_degrees, generator))
    shear = torch.deg2rad(_uniform(n, -config.shear_degrees, config.shear_degrees, generator))
    zoom = torch.exp(_uniform(n, math.log(config.scale[0]), math.log(config.scale[1]), generator))
    aspect = torch.exp(_uniform(n, -config.aspect, config.aspect, generator))
    sx, sy = zoom * aspect.sqrt(), zoom / aspect.sqrt()
    tx = _uniform(n, -config.translate, config.translate, generator) * 2  # grid units span [-1, 1]
    ty = _uniform(n, -config.translate, config.translate, generator) * 2
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    # output→input sampling map: inverse zoom of a rotated, sheared grid
    theta = torch.stack([
        torch.stack([cos / sx, (-sin + tan * cos) / sx, tx], dim=1),
        torch.stack([sin / sy, (cos + tan * sin) / sy, ty], dim=1),
    ], dim=1)
    grid = F.affine_grid(theta.to(batch.dtype), list(batch.shape), align_corners=False)
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _blur(batch: torch.Tensor, rows: torch.Tensor, sigma: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF

    if not rows.any():
        return batch
    value = float(_uniform(1, sigma[0], sigma[1], generator))
    kernel = 2 * math.ceil(2 * value) + 1
    out = batch.clone()
    out[rows] = TF.gaussian_blur(batch[rows], kernel_size=[kernel, kernel], sigma=[value, value])
    return out


def _stroke(batch: torch.Tensor, rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Dilate (grow the bright strokes) or erode, half of the chosen samples each."""
    if not rows.any():
        return batch
    grow = torch.rand(batch.shape[0], generator=generator) < 0.5
    dilated = F.max_pool2d(batch, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-batch, 3, stride=1, padding=1)
    out = torch.where((rows & grow).view(-1, 1, 1, 1), dilated, batch)
    return torch.where((rows & ~grow).view(-1, 1, 1, 1), eroded, out)


def _downscale(batch: torch.Tensor, factors: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    """Each image shrunk by its own factor (antialiased) and resized back: the detail a lower-resolution sensor loses."""
    n, _, h, w = batch.shape
    factor = _uniform(n, factors[0], factors[1], generator)
    out = torch.empty_like(batch)
    for i in range(n):
        small = (max(1, round(h * float(factor[i]))), max(1, round(w * float(factor[i]))))
        low = F.interpolate(batch[i:i + 1], size=small, mode="bilinear", antialias=True, align_corners=False)
        out[i:i + 1] = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    return out


def _jpeg(batch: torch.Tensor, rows: torch.Tensor, quality: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """JPEG round trip of the chosen images.  The batch may be in any affine-normalised space, so each image is
    mapped to 0–255 by its own range, encoded, decoded and mapped back."""
    import io

    from PIL import Image

    qualities = torch.randint(int(quality[0]), int(quality[1]) + 1, (batch.shape[0],), generator=generator)
    out = batch.clone()
    for i in torch.nonzero(rows).flatten().tolist():
        image = batch[i]
        low, high = float(image.min()), float(image.max())
        scale = (high - low) or 1.0
        pixels = ((image - low) / scale * 255.0).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        buffer = io.BytesIO()
        Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).save(buffer, format="JPEG", quality=int(qualities[i]))
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float32).reshape(pixels.shape)
        out[i] = torch.from_numpy(decoded).permute(2, 0, 1) / 255.0 * scale + low
    return out


def augment_batch(batch: torch.Tensor, config: AugmentConfig | str, generator: torch.Generator) -> torch.Tensor:
    """``batch`` (B, C, H, W) transformed per sample as ``config`` says (same shape and dtype; a new tensor)."""
    config = augment_config(config)
    n, channels = batch.shape[0], batch.shape[1]
    out = batch
    if config.shift_pad:
        out = _shift(out, config.shift_pad, generator)
    if config.rotate_degrees or config.shear_degrees or config.translate or config.aspect or config.scale != (1.0, 1.0):
        out = _affine(out, config, generator)
    if config.stroke_p:
        out = _stroke(out, _chosen(n, config.stroke_p, generator), generator)
    if config.brightness:
        out = out + _uniform(n, -config.brightness, config.brightness, generator).view(n, 1, 1, 1)
    if config.contrast:
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = mean + (out - mean) * _uniform(n, 1 - config.contrast, 1 + config.contrast, generator).view(n, 1, 1, 1)
    if channels == 3 and config.saturation:
        grey = out.mean(dim=1, keepdim=True)
        out = grey + (out - grey) * _uniform(n, 1 - config.saturation, 1 + config.saturation, generator).view(n, 1, 1, 1)
    if channels == 3 and config.greyscale_p:
        rows = _chosen(n, config.greyscale_p, generator).view(n, 1, 1, 1)
        out = torch.where(rows, out.mean(dim=1, keepdim=True).expand_as(out), out)
    if config.blur_p:
        out = _blur(out, _chosen(n, config.blur_p, generator), config.blur_sigma, generator)
    if config.downscale != (1.0, 1.0):
        out = _downscale(out, config.downscale, generator)
    if config.jpeg_p:
        out = _jpeg(out, _chosen(n, config.jpeg_p, generator), config.jpeg_quality, generator)
    if config.noise_std:
        out = out + config.noise_std * torch.randn(out.shape, generator=generator)
    if config.hflip:
        flips = torch.rand(n, generator=generator) < 0.5
        out = torch.where(flips.view(n, 1, 1, 1), out.flip(-1), out)
    return out.contiguous()


class ViewSource(ImageSource):
    """Another source's images, each seen through one fixed random augmentation: a *new view* of the same item
    (another photo of the product, another print of the character), for instance-level retrieval.

    The view of an item depends only on its key and ``seed`` (not on batching or order), so a view set is
    reproducible and cacheable like any dataset.
    """

    def __init__(self, base: ImageSource, config: AugmentConfig | str, seed: int = 0) -> None:
        self.base, self.config, self.seed = base, augment_config(config), int(seed)
        if not self.config.enabled:
            raise ValueError("a view source needs an augmentation that changes the image (not 'none')")

    def load(self, key: str | int) -> np.ndarray:
        from ..core.seeds import derive_seed

        pixels = self.base.load(key)
        # a read-only array (e.g. a memory-mapped source) is copied once: torch refuses to wrap it writable
        x = torch.from_numpy(np.require(pixels, requirements=["C", "W"])).permute(2, 0, 1)[None].float() / 255.0
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "view", str(key)))
        view = augment_batch(x, self.config, generator)[0].permute(1, 2, 0)
        return (view.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).numpy()

    def describe(self) -> dict:
        return {"type": "view", "base": self.base.describe(), "augmentation": self.config.to_dict(), "seed": self.seed}

    def stamps(self, keys, content: bool = False) -> list[str] | None:
        return self.base.stamps(keys, content)  # a view changes when its image does


def camera_views(dataset: ImageDataset, config: AugmentConfig | str, seed: int = 0) -> ImageDataset:
    """``dataset`` with every image replaced by one new augmented view of it (same ids, labels and roles): the
    queries of instance-level retrieval, where a new view must find its original in the gallery."""
    from dataclasses import replace

    return replace(dataset, source=ViewSource(dataset.source, config, seed), name=f"{dataset.name}~views")


class ViewBankSource(ImageSource):
    """``views`` fixed views of every image of another source: view 0 is the image itself, views 1..V−1 seeded
    augmentations (each view its own :class:`ViewSource` seed).  Keys are ``"<view>|<base key>"``."""

    def __init__(self, base: ImageSource, config: AugmentConfig | str, views: int, seed: int = 0) -> None:
        if views < 1:
            raise ValueError(f"a view bank needs ≥ 1 view per image (got {views})")
        self.base, self.config, self.views, self.seed = base, augment_config(config), int(views), int(seed)
        self._augmented = [ViewSource(base, self.config, seed=self.seed * 1000 + view) for view in range(1, self.views)] if views > 1 else []

    def load(self, key: str | int) -> np.ndarray:
        view, _, base_key = str(key).partition("|")
        view = int(view)  # every source takes its key as a string too (array sources convert row numbers)
        return self.base.load(base_key) if view == 0 else self._augmented[view - 1].load(base_key)

    def describe(self) -> dict:
        return {"type": "view-bank", "base": self.base.describe(), "augmentation": self.config.to_dict(), "views": self.views,
                "seed": self.seed}

    def stamps(self, keys, content: bool = False) -> list[str] | None:
        return self.base.stamps([str(key).partition("|")[2] for key in keys], content)


def view_bank(dataset: ImageDataset, config: AugmentConfig | str, views: int, seed: int = 0) -> ImageDataset:
    """A fixed bank of ``views`` views of every image of ``dataset`` (view 0 = the image as it is), cached once by
    the embedding store like any dataset: what a model, a ψ or a distilled student trains on when one view per
    image is memorised.  Ids are ``"<id>~v<view>"`` (view 0 keeps the plain id, so it reuses the image's
    embeddings); labels and roles follow the image."""
    if views == 1:
        return dataset
    if not augment_config(config).enabled:
        raise ValueError("a view bank of more than one view needs an augmentation that changes the image (not 'none')")
    order = np.arange(len(dataset))
    rows = np.tile(order, views)
    view_of = np.repeat(np.arange(views), len(dataset))
    ids = np.array([item if view == 0 else f"{item}~v{view}" for item, view in zip(dataset.ids[rows], view_of)])
    keys = np.array([f"{view}|{key}" for key, view in zip(dataset.keys[rows].tolist(), view_of)])
    return ImageDataset(name=f"{dataset.name}~bank{views}", source=ViewBankSource(dataset.source, config, views, seed), ids=ids,
                        keys=keys, labels=dataset.labels[rows], splits=dataset.splits[rows], is_query=dataset.is_query[rows],
                        is_gallery=dataset.is_gallery[rows], class_names=dataset.class_names)
