"""An open-set, many-class benchmark that installs offline: printed CJK characters in many typefaces.

A class is a character of the GB2312 level-1 list (3,755 common simplified characters, listed offline by Python's
``gb2312`` codec); an instance is that character rendered in one typeface.  Ming/Song, Kai, Hei and serif/sans
designs draw the same character genuinely differently, so retrieval must recognise the character across designs
— on characters never seen in training: the classes are split in two, the CUB protocol.

The fonts come from Debian packages (``scripts/setup.sh`` installs them; licences in ``docs/GLYPHS.md``).  A
character is kept only if every chosen face has it in its cmap (a fallback box is not a glyph).  The rendered set
is cached as one uint8 array with a manifest; a second load reads the cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.manifest import atomic_save_npy, atomic_write_json, hash_file, read_manifest, stable_hash, write_manifest
from ..core.progress import log
from .dataset import ArraySource, ImageDataset

__all__ = ["GlyphFace", "DEFAULT_FACES", "gb2312_level1", "find_face", "load_glyphs"]

FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts")
FORMAT = "asymret-glyphs/1"


@dataclass(frozen=True)
class GlyphFace:
    """One typeface: a family and style as its font's name table spells them, and the Debian package that has it."""

    family: str
    style: str
    package: str

    @property
    def slug(self) -> str:
        return f"{self.family}-{self.style}".lower().replace(" ", "-")


#: 10 faces of 8 designs that all cover GB2312 level 1 (Noto Sans/Serif count once each as a design; their Bold
#: weights are further faces).  Regional variants in one file (Noto JP/KR/TC, UKai HK/TW) draw most characters
#: alike, so only the simplified-Chinese face of each is used.
DEFAULT_FACES: tuple[GlyphFace, ...] = (
    GlyphFace("Noto Sans CJK SC", "Regular", "fonts-noto-cjk"),
    GlyphFace("Noto Sans CJK SC", "Bold", "fonts-noto-cjk"),
    GlyphFace("Noto Serif CJK SC", "Regular", "fonts-noto-cjk"),
    GlyphFace("Noto Serif CJK SC", "Bold", "fonts-noto-cjk"),
    GlyphFace("AR PL SungtiL GB", "Regular", "fonts-arphic-gbsn00lp"),
    GlyphFace("AR PL KaitiM GB", "Regular", "fonts-arphic-gkai00mp"),
    GlyphFace("AR PL UKai CN", "Book", "fonts-arphic-ukai"),
    GlyphFace("AR PL UMing CN", "Light", "fonts-arphic-uming"),
    GlyphFace("WenQuanYi Micro Hei", "Regular", "fonts-wqy-microhei"),
    GlyphFace("WenQuanYi Zen Hei", "Regular", "fonts-wqy-zenhei"),
)


def gb2312_level1() -> list[str]:
    """The 3,755 GB2312 level-1 characters in code order (byte pairs 0xB0–0xD7 × 0xA1–0xFE that decode)."""
    characters = []
    for high in range(0xB0, 0xD8):
        for low in range(0xA1, 0xFF):
            try:
                characters.append(bytes([high, low]).decode("gb2312"))
            except UnicodeDecodeError:
                continue
    return characters


def _font_files() -> list[Path]:
    files: list[Path] = []
    for folder in FONT_DIRS:
        root = Path(folder).expanduser()
        if root.is_dir():
            files += sorted(p for p in root.rglob("*") if p.suffix.lower() in (".ttf", ".ttc", ".otf", ".otc"))
    return files


def _names(font) -> tuple[str, str]:
    """(family, style) from a font's name table, preferring the typographic names (IDs 16/17)."""
    table = font["name"]
    family = table.getDebugName(16) or table.getDebugName(1) or ""
    style = table.getDebugName(17) or table.getDebugName(2) or ""
    return family, style


def find_face(face: GlyphFace) -> tuple[Path, int]:
    """The font file and face index (in a .ttc collection) of ``face``; FileNotFoundError naming the package."""
    from fontTools.ttLib import TTCollection, TTFont

    for path in _font_files():
        try:
            fonts = TTCollection(str(path), lazy=True).fonts if path.suffix.lower() in (".ttc", ".otc") else [TTFont(str(path), lazy=True)]
        except Exception:  # noqa: BLE001 - an unreadable font file is simply not a candidate
            continue
        for number, font in enumerate(fonts):
            if _names(font) == (face.family, face.style):
                return path, number
    raise FileNotFoundError(f"font {face.family} {face.style} is not installed: apt-get install {face.package} "
                            "(scripts/setup.sh installs every font of the glyph benchmark)")


def _cmap(path: Path, number: int) -> set[int]:
    from fontTools.ttLib import TTFont

    font = TTFont(str(path), fontNumber=number, lazy=True)
    return set(font.getBestCmap() or {})


def _render(character: str, font, size: int) -> np.ndarray:
    """White glyph on black, centred by its ink bounding box, ``size``×``size`` uint8."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = draw.textbbox((0, 0), character, font=font)
    x = (size - (right - left)) / 2 - left
    y = (size - (bottom - top)) / 2 - top
    draw.text((x, y), character, fill=255, font=font)
    return np.asarray(canvas, dtype=np.uint8)


def default_cache_root() -> Path:
    return Path(os.environ.get("ASYMRET_CACHE", "~/.cache/asymret")).expanduser()


def load_glyphs(
    root: str | os.PathLike | None = None,
    size: int = 64,
    faces: Sequence[GlyphFace] = DEFAULT_FACES,
    characters: Sequence[str] | None = None,
    max_classes: int | None = None,
    split_seed: int = 0,
) -> ImageDataset:
    """The glyph benchmark as an :class:`ImageDataset`: built on first use, then read from the cache.

    Args:
        root: cache folder (default ``$ASYMRET_CACHE`` or ``~/.cache/asymret``); the set lives in a sub-folder named
            by the hash of everything that decides it (fonts' file hashes, characters, size, split).
        size: rendered image size in pixels (the glyph spans ~85 % of it).
        faces: the typefaces (each must cover a character for it to be kept).
        characters: the candidate classes (default: GB2312 level 1); ``max_classes`` keeps the first N of them.
        split_seed: seed of the class permutation whose first half is ``train`` and second half ``test``.

    Every image of a test character is a query and a gallery item (every test image against the rest).
    """
    if size < 16:
        raise ValueError(f"glyph size must be at least 16 px, got {size}")
    candidates = list(characters) if characters is not None else gb2312_level1()
    if max_classes is not None:
        candidates = candidates[:max_classes]
    located = [(face, *find_face(face)) for face in faces]
    fonts_key = [{"family": f.family, "style": f.style, "file": str(p), "face_index": n, "sha256": hash_file(p)} for f, p, n in located]
    recipe = {"format": FORMAT, "size": size, "fonts": fonts_key, "split_seed": split_seed,
              "characters": hashlib.sha256("".join(candidates).encode("utf-8")).hexdigest()[:16]}
    directory = Path(root).expanduser() if root is not None else default_cache_root()
    directory = directory / f"glyphs-{stable_hash(recipe)}"
    if not _cached(directory, recipe):
        _build(directory, recipe, candidates, located, size, split_seed)
    return _load(directory)


def _cached(directory: Path, recipe: dict) -> bool:
    try:
        return read_manifest(directory, kind="glyph-benchmark").get("recipe") == json.loads(json.dumps(recipe))
    except (FileNotFoundError, ValueError):
        return False


def _build(directory: Path, recipe: dict, candidates: list[str], located, size: int, split_seed: int) -> None:
    from PIL import ImageFont

    start = time.perf_counter()
    covered = set(map(ord, candidates))
    for _, path, number in located:
        covered &= _cmap(path, number)
    kept = [c for c in candidates if ord(c) in covered]
    dropped = len(candidates) - len(kept)
    if len(kept) < 2:
        raise ValueError(f"only {len(kept)} of {len(candidates)} characters are covered by every face: choose other fonts")
    log.info("glyphs: %d of %d characters covered by all %d faces (%d dropped)", len(kept), len(candidates), len(located), dropped)
    fonts = [ImageFont.truetype(str(path), size=int(round(0.85 * size)), index=number) for _, path, number in located]
    images = np.zeros((len(kept) * len(fonts), size, size), dtype=np.uint8)
    for c, character in enumerate(kept):
        for f, font in enumerate(fonts):
            images[c * len(fonts) + f] = _render(character, font, size)
    order = np.random.default_rng(split_seed).permutation(len(kept))
    test_class = np.zeros(len(kept), dtype=bool)
    test_class[order[len(kept) // 2:]] = True  # first half of the permutation trains, the second half tests
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "manifest.json").unlink(missing_ok=True)
    atomic_save_npy(directory / "images.npy", images)
    atomic_write_json(directory / "classes.json", {"characters": kept, "test": test_class.tolist(),
                                                   "faces": [face.slug for face, _, _ in located]})
    seconds = time.perf_counter() - start
    write_manifest(directory, "glyph-benchmark", {
        "recipe": recipe, "num_classes": len(kept), "num_faces": len(fonts), "num_images": int(len(images)),
        "dropped_characters": dropped, "train_classes": int((~test_class).sum()), "test_classes": int(test_class.sum()),
        "build_seconds": seconds, "bytes": int(images.nbytes),
    })
    log.info("glyphs: rendered %d images of %d px in %.1f s → %s", len(images), size, seconds, directory)


def _load(directory: Path) -> ImageDataset:
    manifest = read_manifest(directory, kind="glyph-benchmark")
    images = np.load(directory / "images.npy", allow_pickle=False)
    classes = json.loads((directory / "classes.json").read_text())
    characters, test_class, faces = classes["characters"], np.asarray(classes["test"], dtype=bool), classes["faces"]
    n_faces = len(faces)
    if images.shape[0] != len(characters) * n_faces or images.shape[0] != manifest["num_images"]:
        raise ValueError(f"{directory}: the cached glyph set is inconsistent with its manifest; delete the folder to rebuild it")
    labels = np.repeat(np.arange(len(characters)), n_faces)
    ids = np.array([f"glyph/{ord(ch):04X}/{face}" for ch in characters for face in faces])
    is_test = np.repeat(test_class, n_faces)
    return ImageDataset(
        name=f"glyphs{images.shape[1]}",
        source=ArraySource(images, origin=f"glyphs:{directory.name}"),
        ids=ids,
        keys=np.arange(len(ids)),
        labels=labels,
        splits=np.where(is_test, "test", "train"),
        is_query=is_test,
        is_gallery=is_test.copy(),
        class_names=list(characters),
    )
