"""The one dataset abstraction: images with an id, a label, a split and query/gallery roles.

A dataset is a table of items plus a *source* that turns an item into pixels.  Sources are either image files
under a root folder (every benchmark layout, image folders, CSV manifests) or an in-memory uint8 array
(Fashion-MNIST, digits).  Views (``select``/``subset``) share the source, so selecting a split copies nothing.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Sequence

import numpy as np

from ..core.manifest import stable_hash

log = logging.getLogger(__name__)


class ImageLoadError(RuntimeError):
    """An image could not be read or decoded. Extraction reports it and skips the item."""


class ImageTooLargeError(ImageLoadError):
    """An image with more pixels than :func:`max_image_pixels` (a decompression bomb?), refused before decoding."""


#: images above this many pixels are refused (Pillow's own default; ``ASYMRET_MAX_IMAGE_PIXELS`` overrides it)
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485


def max_image_pixels() -> int:
    value = os.environ.get("ASYMRET_MAX_IMAGE_PIXELS")
    try:
        return int(value) if value else DEFAULT_MAX_IMAGE_PIXELS
    except ValueError:
        raise ValueError(f"ASYMRET_MAX_IMAGE_PIXELS must be a number of pixels, got {value!r}") from None


#: the colour transparent pixels are composited onto before an image becomes RGB or grey (``ASYMRET_BACKGROUND``
#: or :func:`set_background` choose another): one fixed colour, so that two cut-outs of one object on "no
#: background" read alike — left to ``convert`` they would show whatever colour each file stores under its
#: transparent pixels (black for most)
DEFAULT_BACKGROUND: tuple[int, int, int] = (255, 255, 255)

_NAMED_COLOURS = {"white": (255, 255, 255), "black": (0, 0, 0), "grey": (128, 128, 128), "gray": (128, 128, 128)}


def parse_colour(value: str | Sequence[int]) -> tuple[int, int, int]:
    """``"white"``/``"black"``/``"grey"``, ``"#rrggbb"``, ``"r,g,b"`` or a 3-sequence of 0–255 as an (r, g, b) tuple."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _NAMED_COLOURS:
            return _NAMED_COLOURS[text]
        try:
            if text.startswith("#") and len(text) == 7:
                return tuple(int(text[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
            parts = [int(part) for part in text.split(",")]
        except ValueError:
            parts = []
        if len(parts) != 3:
            raise ValueError(f"background colour must be white, black, grey, #rrggbb or r,g,b; got {value!r}")
        value = parts
    colour = tuple(int(v) for v in value)
    if len(colour) != 3 or not all(0 <= v <= 255 for v in colour):
        raise ValueError(f"background colour must be three values in 0..255, got {value!r}")
    return colour  # type: ignore[return-value]


def default_background() -> tuple[int, int, int]:
    """The background transparent pixels are composited onto: ``ASYMRET_BACKGROUND`` if set, else white."""
    value = os.environ.get("ASYMRET_BACKGROUND")
    return parse_colour(value) if value else DEFAULT_BACKGROUND


def set_background(colour: str | Sequence[int] | None) -> None:
    """Choose the background for every later read (``None``: back to white).

    It is kept in ``ASYMRET_BACKGROUND`` rather than a module variable so that worker processes (Ray, spawned
    data loaders, the service's workers) started afterwards read images the same way.
    """
    if colour is None:
        os.environ.pop("ASYMRET_BACKGROUND", None)
    else:
        os.environ["ASYMRET_BACKGROUND"] = ",".join(str(v) for v in parse_colour(colour))


def has_transparency(image) -> bool:
    """Whether a Pillow image carries alpha: an alpha band (RGBA, LA, PA, ...) or a tRNS/GIF transparency entry."""
    return "A" in image.getbands() or "transparency" in image.info


def flatten_alpha(image, mode: str, colour: tuple[int, int, int]):
    """``image`` composited onto ``colour`` and converted to ``mode``; opaque images only converted, as before.

    Converting straight to RGB or L drops alpha and keeps whatever colour a file stores under its transparent
    pixels (black for most cut-outs); for palette images Pillow also warns.  Going through RGBA first honours every
    kind of transparency (alpha band, palette alpha bytes, a single transparent index or colour).
    """
    from PIL import Image

    if "A" in mode or not has_transparency(image):
        return image.convert(mode)
    rgba = image.convert("RGBA")
    flat = Image.alpha_composite(Image.new("RGBA", rgba.size, colour + (255,)), rgba)
    return flat.convert(mode)


#: Pillow modes of one 16-bit (or wider integer) grey channel: converting them to 8 bits clips at 255
_WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_8_bit(image):
    """A 16-bit grey image scaled to 8 bits (0–65535 → 0–255, rounded), its tRNS transparent value kept as alpha;
    any other image as it is.

    Pillow's own ``convert("L")`` clips instead: 99.6 % of a 0–65535 gradient becomes 255.  ``I`` (32-bit) images are
    taken as 16-bit too — what 16-bit PNGs and TIFFs decode to — with values outside 0–65535 clipped.  (16-bit RGB PNGs
    Pillow already reads as 8-bit RGB, by their high bytes.)
    """
    from PIL import Image

    if image.mode not in _WIDE_GREY_MODES:
        return image
    wide = np.asarray(image).astype(np.float64)
    grey = Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8), "L")
    transparent = image.info.get("transparency")
    if isinstance(transparent, int):  # a tRNS grey value marks transparent pixels: keep them transparent
        alpha = Image.fromarray(np.where(wide == transparent, 0, 255).astype(np.uint8), "L")
        return Image.merge("LA", (grey, alpha))
    return grey


#: the EXIF tag of the orientation a camera stored its pixels in (1 = upright)
_EXIF_ORIENTATION = 0x0112


def upright(image):
    """``image`` turned as its EXIF orientation says (a photo stored rotated or mirrored, read as it is shown); an image
    without one (or upright already) as it is, uncopied."""
    from PIL import ImageOps

    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block: the pixels are still readable as stored
        return image
    if orientation in (None, 1):
        return image
    return ImageOps.exif_transpose(image)


def allow_pillow_pixels(limit: int) -> None:
    """Let Pillow open images up to ``limit`` pixels: asymret's check from the header is the limit, and Pillow's own
    (lower by default: 89.5 M) would refuse first.  Raised only, never lowered: a process-wide setting other threads
    may be reading under."""
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit


def read_image(path: str | os.PathLike | IO[bytes], mode: str = "RGB", name: str | None = None,
               background: str | Sequence[int] | None = None) -> np.ndarray:
    """An image file (a path or an open binary file, e.g. an upload) as an HxWxC uint8 array — the one place images
    are opened.

    Anything Pillow refuses (unreadable, truncated, not an image, or a decompression bomb: more pixels than
    :func:`max_image_pixels`, checked from the header before decoding) raises :class:`ImageLoadError`, which every
    loader, extraction, training, search and service path reports and skips.  ``name`` names the image in messages
    (default: the path).  An image with transparency (alpha band or palette/tRNS transparency) is composited onto
    ``background`` (default :func:`default_background`: white unless ``ASYMRET_BACKGROUND`` or :func:`set_background` say
    otherwise) before it becomes ``mode``; an opaque image is converted exactly as without it.  Images are read as they
    look: a 16-bit image is scaled to 8 bits (:func:`to_8_bit`, not clipped) and an EXIF orientation applied
    (:func:`upright`: a phone photo stored sideways is read upright).
    """
    import warnings

    from PIL import Image

    name = name or str(path)
    limit = max_image_pixels()
    allow_pillow_pixels(limit)
    colour = parse_colour(background) if background is not None else default_background()
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice it: refuse those too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > limit:
                    raise ImageTooLargeError(f"cannot read image {name}: {width}×{height} = {width * height:,} pixels is over the "
                                         f"limit of {limit:,} (a decompression bomb?); raise ASYMRET_MAX_IMAGE_PIXELS to allow it")
                image.load()
                image = flatten_alpha(upright(to_8_bit(image)), mode, colour)
    except ImageLoadError:
        raise
    except Image.UnidentifiedImageError as error:  # its message names the file object, not the image
        raise ImageLoadError(f"cannot read image {name}: not an image format Pillow can read") from error
    except Exception as error:  # Pillow raises many types for bad files (its bomb warning is one too)
        raise ImageLoadError(f"cannot read image {name}: {type(error).__name__}: {error}") from error
    array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def file_stamp(path: str | os.PathLike, content: bool = False) -> str:
    """``"<size>:<mtime in ns>"`` of a file (through symlinks), or with ``content`` ``"sha256:<hash of its bytes>"``;
    ``"missing"`` when there is none.  Size and time notice an edit or a replacement by any ordinary tool; the hash
    also one that keeps both (a copy with ``cp -p`` of another image of the same size)."""
    import hashlib

    try:
        if content:
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
            return f"sha256:{digest.hexdigest()[:32]}"
        info = os.stat(path)
    except OSError:
        return "missing"
    return f"{info.st_size}:{info.st_mtime_ns}"


class ImageSource:
    """Turns an item's ``key`` into an HxWxC uint8 array (C = 1 or 3)."""

    def load(self, key: str | int) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict:
        """What identifies the pixels (root folder, file path, content hash) for the dataset fingerprint."""
        raise NotImplementedError  # pragma: no cover - interface

    def stamps(self, keys: Sequence[str | int], content: bool = False) -> list[str] | None:
        """What each key's pixels are now, for the embedding store to notice an image edited or replaced under the
        same name: per key a short string that changes when its file does (``content``: a hash of the file's bytes,
        else its size and modification time).  ``None``: the pixels cannot change under :meth:`describe` (an array
        in memory)."""
        return None


class FileSource(ImageSource):
    """Image files relative to ``root`` (keys are relative paths).

    Transparent images are composited onto ``background`` (default: :func:`default_background` at read time);
    the colour is part of :meth:`describe`, so embeddings cached under one background are not reused under another.
    """

    def __init__(self, root: str | os.PathLike, mode: str = "RGB", background: str | Sequence[int] | None = None) -> None:
        self.root = Path(root)
        self.mode = mode
        self.background = parse_colour(background) if background is not None else None

    def _colour(self) -> tuple[int, int, int]:
        return self.background if self.background is not None else default_background()

    def load(self, key: str | int) -> np.ndarray:
        return read_image(self.root / str(key), self.mode, background=self._colour())

    def describe(self) -> dict:
        return {"type": "files", "root": str(self.root.resolve()), "mode": self.mode, "background": list(self._colour())}

    def stamps(self, keys: Sequence[str | int], content: bool = False) -> list[str]:
        return [file_stamp(self.root / str(key), content) for key in keys]


class ArraySource(ImageSource):
    """Images held in one uint8 array of shape (N, H, W) or (N, H, W, C); keys are row numbers."""

    def __init__(self, images: np.ndarray, origin: str) -> None:
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ValueError("ArraySource expects a uint8 array of shape (N,H,W) or (N,H,W,C)")
        self.images = images if images.ndim == 4 else images[..., None]
        self.origin = origin

    def load(self, key: str | int) -> np.ndarray:
        return self.images[int(key)]

    def describe(self) -> dict:
        return {"type": "array", "origin": self.origin, "shape": list(self.images.shape)}


class CroppedSource(ImageSource):
    """Rectangles of another source's images; keys are row numbers into ``crops`` = ``[(base_key, box), ...]``.

    ``box`` is ``(x1, y1, x2, y2)`` in pixels, x2/y2 exclusive, with PIL's ``Image.crop`` semantics (the reference
    for revisitop's query crops): each coordinate is rounded with Python's ``round`` and area outside the image
    is filled with zeros.  A box that rounds to an empty region is refused with :class:`ImageLoadError`.
    """

    def __init__(self, base: ImageSource, crops: Sequence[tuple[str | int, Sequence[float]]]) -> None:
        self.base = base
        self.crops = [(key, tuple(float(v) for v in box)) for key, box in crops]
        for key, box in self.crops:
            if len(box) != 4:
                raise ValueError(f"crop box for {key!r} must be (x1, y1, x2, y2), got {box}")

    def load(self, key: str | int) -> np.ndarray:
        base_key, box = self.crops[int(key)]
        pixels = self.base.load(base_key)
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        if x2 <= x1 or y2 <= y1:
            raise ImageLoadError(f"crop box {box} of image {base_key!r} is empty")
        height, width = pixels.shape[:2]
        out = np.zeros((y2 - y1, x2 - x1, pixels.shape[2]), dtype=pixels.dtype)
        # copy the part of the box that lies inside the image (PIL pads the rest with zeros)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if sx2 > sx1 and sy2 > sy1:
            out[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = pixels[sy1:sy2, sx1:sx2]
        return out

    def stamps(self, keys: Sequence[str | int], content: bool = False) -> list[str] | None:
        return self.base.stamps([self.crops[int(key)][0] for key in keys], content)  # the box is in describe()

    def describe(self) -> dict:
        return {
            "type": "cropped",
            "base": self.base.describe(),
            "crops": stable_hash([[str(key), list(box)] for key, box in self.crops], 32),
        }


class ConcatSource(ImageSource):
    """Several datasets' sources as one; keys are ``"<part>|<that part's key>"``."""

    def __init__(self, parts: Sequence[ImageSource], integer_keys: Sequence[bool]) -> None:
        self.parts, self.integer_keys = list(parts), list(integer_keys)

    def _split(self, key: str | int) -> tuple[ImageSource, str | int]:
        part, inner = str(key).split("|", 1)
        return self.parts[int(part)], int(inner) if self.integer_keys[int(part)] else inner

    def load(self, key: str | int) -> np.ndarray:
        source, inner = self._split(key)
        return source.load(inner)

    def stamps(self, keys: Sequence[str | int], content: bool = False) -> list[str] | None:
        # one call per part (a file source stats its files in one pass), answers put back in the keys' order
        by_part: dict[int, list[int]] = {}
        split = [str(key).split("|", 1) for key in keys]
        for position, (part, _) in enumerate(split):
            by_part.setdefault(int(part), []).append(position)
        stamps = [""] * len(split)
        for part, positions in by_part.items():
            inner = [int(split[p][1]) if self.integer_keys[part] else split[p][1] for p in positions]
            for position, stamp in zip(positions, self.parts[part].stamps(inner, content) or [""] * len(positions)):
                stamps[position] = stamp
        return stamps if any(stamps) else None

    def describe(self) -> dict:
        return {"type": "concat", "parts": [part.describe() for part in self.parts]}


@dataclass
class ImageDataset:
    """Items of one dataset.  All per-item columns are numpy arrays of equal length.

    - ``ids``: unique string id per item (stable across runs; used to align embeddings)
    - ``keys``: what the source loads (relative path or row number)
    - ``labels``: int class / identity label (-1 if unknown)
    - ``splits``: e.g. ``"train"`` / ``"test"``
    - ``is_query`` / ``is_gallery``: retrieval roles within the evaluation split
    """

    name: str
    source: ImageSource
    ids: np.ndarray
    keys: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    is_query: np.ndarray
    is_gallery: np.ndarray
    class_names: Sequence[str] | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        self.ids = np.asarray(self.ids).astype(str)
        self.keys = np.asarray(self.keys)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.splits = np.asarray(self.splits).astype(str)
        self.is_query = np.asarray(self.is_query, dtype=bool)
        self.is_gallery = np.asarray(self.is_gallery, dtype=bool)
        for column in ("keys", "labels", "splits", "is_query", "is_gallery"):
            if len(getattr(self, column)) != n:
                raise ValueError(f"dataset {self.name}: column {column} has {len(getattr(self, column))} rows, ids has {n}")
        if len(np.unique(self.ids)) != n:
            raise ValueError(f"dataset {self.name}: item ids are not unique")

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, indices: np.ndarray | Sequence[int], name: str | None = None) -> "ImageDataset":
        """A view holding the given rows (in that order)."""
        indices = np.asarray(indices, dtype=np.int64)
        return ImageDataset(
            name=name or self.name,
            source=self.source,
            ids=self.ids[indices],
            keys=self.keys[indices],
            labels=self.labels[indices],
            splits=self.splits[indices],
            is_query=self.is_query[indices],
            is_gallery=self.is_gallery[indices],
            class_names=self.class_names,
        )

    def select(self, split: str | None = None, role: str | None = None) -> "ImageDataset":
        """Rows of one split and/or role (``"query"`` or ``"gallery"``)."""
        mask = np.ones(len(self), dtype=bool)
        if split is not None:
            if split not in set(self.splits.tolist()):
                raise ValueError(f"dataset {self.name} has no split {split!r} (has {sorted(set(self.splits.tolist()))})")
            mask &= self.splits == split
        if role is not None:
            if role not in ("query", "gallery"):
                raise ValueError(f"role must be 'query' or 'gallery', not {role!r}")
            mask &= self.is_query if role == "query" else self.is_gallery
        suffix = "/".join(part for part in (split, role) if part)
        return self.subset(np.flatnonzero(mask), name=f"{self.name}/{suffix}" if suffix else self.name)

    def sample(self, count: int, seed: int, stratified: bool = True) -> "ImageDataset":
        """A seeded random subset of ``count`` rows (class-stratified by default), in the original order."""
        if count >= len(self):
            return self
        rng = np.random.default_rng(seed)
        if not stratified:
            chosen = rng.choice(len(self), size=count, replace=False)
        else:
            chosen_parts = []
            classes, counts = np.unique(self.labels, return_counts=True)
            quota = np.floor(counts / counts.sum() * count).astype(int)
            quota[: count - quota.sum()] += 1  # hand out the remainder
            for cls, q in zip(classes, quota):
                rows = np.flatnonzero(self.labels == cls)
                chosen_parts.append(rng.choice(rows, size=min(q, len(rows)), replace=False))
            chosen = np.concatenate(chosen_parts)
        return self.subset(np.sort(chosen), name=f"{self.name}[{count}@{seed}]")

    # ------------------------------------------------------------------ pixels
    def load(self, index: int) -> np.ndarray:
        """HxWxC uint8 pixels of row ``index``; raises :class:`ImageLoadError` if unreadable."""
        return self.source.load(self.keys[index].item() if hasattr(self.keys[index], "item") else self.keys[index])

    # ------------------------------------------------------------------ identity
    def fingerprint(self) -> str:
        """Hash of the source and every row's id, key and label: equal fingerprints mean the same items."""
        return stable_hash(
            {
                "source": self.source.describe(),
                "ids": stable_hash(self.ids.tolist(), 32),
                "keys": stable_hash([str(k) for k in self.keys.tolist()], 32),
                "labels": stable_hash(self.labels.tolist(), 32),
            }
        )

    def stamps(self, rows: Sequence[int] | np.ndarray, content: bool = False) -> list[str] | None:
        """What the pixels of ``rows`` are now (:meth:`ImageSource.stamps`): the embedding store compares them with
        what it recorded, to re-embed an image edited under the same name.  ``None`` for pixels that cannot change."""
        keys = [self.keys[row].item() if hasattr(self.keys[row], "item") else self.keys[row] for row in rows]
        return self.source.stamps(keys, content)

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def summary(self) -> str:
        split_counts = {s: int((self.splits == s).sum()) for s in sorted(set(self.splits.tolist()))}
        return (
            f"{self.name}: {len(self)} images, {len(np.unique(self.labels))} classes, splits {split_counts}, "
            f"{int(self.is_query.sum())} queries, {int(self.is_gallery.sum())} gallery"
        )


def concat_datasets(parts: Sequence[ImageDataset], name: str | None = None) -> ImageDataset:
    """The rows of ``parts`` as one dataset (e.g. labelled training images and unlabelled ones, label −1), whatever
    their sources; item ids must stay unique across the parts."""
    if not parts:
        raise ValueError("concat_datasets needs at least one dataset")
    if len(parts) == 1:
        return parts[0]
    integer = [np.issubdtype(part.keys.dtype, np.integer) for part in parts]
    keys = np.concatenate([np.array([f"{i}|{key}" for key in part.keys.tolist()]) for i, part in enumerate(parts)])
    column = lambda attribute: np.concatenate([getattr(part, attribute) for part in parts])  # noqa: E731
    return ImageDataset(name=name or "+".join(part.name for part in parts),
                        source=ConcatSource([part.source for part in parts], integer), ids=column("ids"), keys=keys,
                        labels=column("labels"), splits=column("splits"), is_query=column("is_query"),
                        is_gallery=column("is_gallery"))
