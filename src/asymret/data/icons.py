"""An open-set benchmark from freedesktop icon themes: a class is an icon name, its images the themes' drawings.

``document-save``, ``folder``, ``printer``, ``media-playback-start``: every freedesktop icon theme draws the same
names, each in its own design.  Retrieval must recognise the concept across designs, on names never seen in
training (the classes are split by a hash of the name).  The themes are Debian packages (``scripts/setup.sh``
installs them; sizes, statistics and licences in ``docs/ICONS.md``).

How a set is built (once; then read from a cache folder):

1. Each theme's ``index.theme`` tells its folders' sizes and contexts (:mod:`asymret.data.icon_themes`); symbolic
   variants, animation strips, flags, panel glyphs and HiDPI copies are out.  A name's drawing is the file made for
   the smallest size at or above the target (PNG read, SVG rendered by librsvg's ``rsvg-convert``), else the
   largest; it is fitted to a square of ``size`` pixels keeping its transparency.
2. Aliases: themes link one drawing under several names (``gtk-save`` → ``document-save``).  Names sharing one
   file in at least ``alias_themes`` themes are one class (named after its most-drawn name).  A file a theme links
   under the names of several classes is the drawing of one of them only: the class drawn by most themes (a tie:
   the class of the file's own name, else neither) — so no file is the image of two classes.
3. Monochrome drawings (one flat colour: symbolic or panel style, mostly invisible on white) are out.
4. Derived themes (adwaita and gnome-colors from gnome, elementary-xfce from elementary, numix-circle from numix,
   ...) copy or recolour many drawings: two drawings of one class whose 16-px grey thumbnails differ by less than
   ``duplicate_threshold`` count once (the earlier theme in ``themes`` keeps its drawing).  The per-pair rates are
   in the manifest.
5. Classes with at least ``min_themes`` distinct drawings are kept.

The cached images keep their alpha; :func:`~asymret.data.dataset.read_image` composites them onto the one
background colour when they are read (white by default).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.manifest import atomic_write_json, read_manifest, stable_hash, write_manifest
from ..core.progress import log
from .dataset import FileSource, ImageDataset, read_image
from .icon_themes import IconFile, choose_file, scan_theme

__all__ = ["IconTheme", "DEFAULT_THEMES", "ICON_DIRS", "find_theme", "render_icon", "load_icons"]

FORMAT = "asymret-icons/1"
ICON_DIRS = ("/usr/share/icons", "/usr/local/share/icons", "~/.local/share/icons", "~/.icons")
THUMBNAIL = 16  # side of the grey thumbnails near-duplicates and monochrome drawings are judged on


@dataclass(frozen=True)
class IconTheme:
    """One icon theme: a short name (item ids use it), its folder under an icon directory and its Debian package."""

    slug: str
    folder: str
    package: str


#: the 17 themes of the benchmark: chosen for distinct designs per megabyte within ~400 MB installed (docs/ICONS.md,
#: docs/icons_themes.json); an original comes before the themes derived from it, so that it keeps the drawings they copy
DEFAULT_THEMES: tuple[IconTheme, ...] = (
    IconTheme("tango", "Tango", "tango-icon-theme"),
    IconTheme("gnome", "gnome", "gnome-icon-theme"),
    IconTheme("adwaita", "Adwaita", "adwaita-icon-theme"),
    IconTheme("gnome-colors", "gnome-colors-common", "gnome-colors-common"),
    IconTheme("oxygen", "oxygen", "oxygen-icon-theme"),
    IconTheme("breeze", "breeze", "breeze-icon-theme"),
    IconTheme("elementary", "elementary", "elementary-icon-theme"),
    IconTheme("elementary-xfce", "elementary-xfce", "elementary-xfce-icon-theme"),
    IconTheme("faba", "Faba", "faba-icon-theme"),
    IconTheme("numix", "Numix", "numix-icon-theme"),
    IconTheme("numix-circle", "Numix-Circle", "numix-icon-theme-circle"),
    IconTheme("faenza", "Faenza", "faenza-icon-theme"),
    IconTheme("nuovo", "Nuovo", "gnome-icon-theme-nuovo"),
    IconTheme("yasis", "yasis", "gnome-icon-theme-yasis"),
    IconTheme("suru", "suru", "suru-icon-theme"),
    IconTheme("gartoon", "gartoon", "gnome-icon-theme-gartoon"),
    IconTheme("suede", "Suede", "gnome-icon-theme-suede"),
)


def default_cache_root() -> Path:
    return Path(os.environ.get("ASYMRET_CACHE", "~/.cache/asymret")).expanduser()


def find_theme(theme: IconTheme, icon_dirs: Sequence[str | os.PathLike] = ICON_DIRS) -> Path:
    """The folder of ``theme`` (the first icon directory that has it); FileNotFoundError naming the package."""
    for directory in icon_dirs:
        folder = Path(directory).expanduser() / theme.folder
        if (folder / "index.theme").is_file():
            return folder
    raise FileNotFoundError(f"icon theme {theme.slug} ({theme.folder}) is not installed: apt-get install {theme.package} "
                            "(scripts/setup.sh installs every theme of the icon benchmark)")


# ------------------------------------------------------------------------------------------------ one drawing
def _fit(image, size: int):
    """An RGBA image padded to a centred square and resized to ``size``; resampled premultiplied (RGBa), so that
    the colour stored under transparent pixels cannot bleed into the edges."""
    from PIL import Image

    side = max(image.size)
    if image.size != (side, side):
        square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        image = square
    if side == size:
        return image
    return image.convert("RGBa").resize((size, size), Image.LANCZOS).convert("RGBA")


def render_icon(file: IconFile, size: int):
    """One drawing as a ``size``×``size`` RGBA Pillow image.  PNGs are read by the one read path (kept RGBA);
    SVGs are rendered by ``rsvg-convert`` (librsvg, the renderer GTK draws these themes with)."""
    import io

    from PIL import Image

    if file.is_svg:
        try:
            done = subprocess.run(["rsvg-convert", "--width", str(size), "--height", str(size), "--keep-aspect-ratio",
                                   "--format", "png", str(file.path)], capture_output=True, timeout=60, check=False)
        except FileNotFoundError:
            raise FileNotFoundError("rsvg-convert is not installed: apt-get install librsvg2-bin "
                                    "(scripts/setup.sh installs it)") from None
        if done.returncode != 0 or not done.stdout:
            raise ValueError(f"rsvg-convert failed on {file.path}: {done.stderr.decode(errors='replace').strip()[:200]}")
        pixels = read_image(io.BytesIO(done.stdout), mode="RGBA", name=str(file.path))
    else:
        pixels = read_image(file.path, mode="RGBA")
    return _fit(Image.fromarray(pixels, "RGBA"), size)


def _describe(image) -> tuple[np.ndarray, bool]:
    """(grey thumbnail on white in [0, 1], monochrome?) of an RGBA drawing.

    Monochrome: the pixels that are mostly opaque hold (almost) one flat colour — a symbolic or panel glyph — which
    says little once composited, and on white a light one all but vanishes.  A grey drawing with shading (a printer)
    has a spread of grey levels and stays.
    """
    from PIL import Image

    rgba = np.asarray(image, dtype=np.float32)
    opaque = rgba[..., 3] >= 128
    if opaque.sum() < 0.02 * opaque.size:
        monochrome = True  # (almost) nothing drawn
    else:
        rgb = rgba[..., :3][opaque]
        chroma = float((rgb.max(axis=1) - rgb.min(axis=1)).mean())
        spread = float((rgb @ np.array([0.299, 0.587, 0.114], np.float32)).std())
        monochrome = chroma < 12.0 and spread < 12.0
    white = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image).convert("L")
    thumbnail = np.asarray(white.resize((THUMBNAIL, THUMBNAIL), Image.BOX), dtype=np.float32) / 255.0
    return thumbnail, monochrome


# ------------------------------------------------------------------------------------------------ classes
def _alias_classes(scans: dict[str, dict[str, IconFile]], alias_themes: int) -> tuple[dict[str, list[str]], dict[str, dict[str, str]]]:
    """(class → member names, theme → {class: the name whose drawing it uses}).

    Names sharing one real file in ``alias_themes`` or more themes are one class; the class is named by its member
    drawn by most themes.  A file a theme links under the names of several classes (Numix's ``folder.svg`` →
    ``default-folder.svg``, breeze's ``document-sign`` → ``document-edit``) is the drawing of the class that most
    themes draw; the theme merely falls back to it for the others.  On a tie it goes to the class of the file's own
    name, or to neither.  So one file is never the image of two classes.
    """
    shared: dict[tuple[str, str], int] = {}
    files_by_theme: dict[str, dict[Path, list[str]]] = {}
    for slug, names in scans.items():
        by_file: dict[Path, list[str]] = {}
        for name, file in names.items():
            by_file.setdefault(file.path.resolve(), []).append(name)
        files_by_theme[slug] = by_file
        for group in by_file.values():
            for a, b in combinations(sorted(group), 2):
                shared[a, b] = shared.get((a, b), 0) + 1
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        while parent.get(name, name) != name:
            name = parent[name]
        return name

    for (a, b), count in sorted(shared.items()):
        if count >= alias_themes:
            ra, rb = root(a), root(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    drawn: dict[str, int] = {}
    for names in scans.values():
        for name in names:
            drawn[name] = drawn.get(name, 0) + 1
    members: dict[str, list[str]] = {}
    for name in sorted(drawn):
        members.setdefault(root(name), []).append(name)
    rank = {n: (-drawn[n], n) for n in drawn}
    classes: dict[str, list[str]] = {}
    class_of: dict[str, str] = {}
    for group in members.values():
        group.sort(key=rank.__getitem__)
        classes[group[0]] = group
        for name in group:
            class_of[name] = group[0]
    reach = {c: sum(any(n in names for n in group) for names in scans.values()) for c, group in classes.items()}
    chosen: dict[str, dict[str, str]] = {}
    for slug, by_file in files_by_theme.items():
        picks: dict[str, str] = {}
        for path, group in by_file.items():
            most = max(reach[class_of[n]] for n in group)
            top = {class_of[n] for n in group if reach[class_of[n]] == most}
            if len(top) > 1:
                top &= {class_of.get(path.stem)}  # a tie goes to the class of the file's own name
                if not top:
                    continue  # two classes equally entitled to one drawing: ambiguous, in neither here
            owner = top.pop()
            best = min((n for n in group if class_of[n] == owner), key=rank.__getitem__)
            if owner not in picks or rank[best] < rank[picks[owner]]:
                picks[owner] = best
        chosen[slug] = picks
    return classes, chosen


def _split(name: str, split_seed: int) -> bool:
    """Whether class ``name`` is a test class: a stable hash of the name (a class keeps its side when others
    are added or removed, unlike a permutation)."""
    return hashlib.sha256(f"{split_seed}/{name}".encode("utf-8")).digest()[0] & 1 == 1


def _pair_rates(kept: dict[str, dict[str, np.ndarray]], slugs: Sequence[str], threshold: float) -> list[dict]:
    """Per pair of themes: how many classes both draw and the fraction whose drawings are near-duplicates."""
    rates = []
    for a, b in combinations(slugs, 2):
        shared = [c for c, drawings in kept.items() if a in drawings and b in drawings]
        if not shared:
            continue
        near = sum(float(np.abs(kept[c][a] - kept[c][b]).mean()) < threshold for c in shared)
        rates.append({"themes": [a, b], "shared": len(shared), "near_duplicates": int(near),
                      "rate": round(near / len(shared), 4)})
    return rates


def _deduplicate(drawings: dict[str, np.ndarray], slugs: Sequence[str], threshold: float) -> list[str]:
    """The themes whose drawing of one class counts: in theme order, each drawing that is no near-duplicate of
    one already counted."""
    counted: list[str] = []
    for slug in slugs:
        if slug in drawings and all(float(np.abs(drawings[slug] - drawings[c]).mean()) >= threshold for c in counted):
            counted.append(slug)
    return counted


# ------------------------------------------------------------------------------------------------ the loader
def load_icons(
    root: str | os.PathLike | None = None,
    size: int = 64,
    themes: Sequence[IconTheme | str] = DEFAULT_THEMES,
    icon_dirs: Sequence[str | os.PathLike] = ICON_DIRS,
    min_themes: int = 5,
    alias_themes: int = 3,
    duplicate_threshold: float = 0.035,
    split_seed: int = 0,
    max_classes: int | None = None,
    workers: int | None = None,
) -> ImageDataset:
    """The icon benchmark as an :class:`ImageDataset`: built on first use, then read from the cache.

    Args:
        root: cache folder (default ``$ASYMRET_CACHE`` or ``~/.cache/asymret``); the set lives in a sub-folder named
            by the hash of everything that decides it (themes and their ``index.theme`` files, size, thresholds).
        size: image side in pixels.
        themes: the themes (:data:`DEFAULT_THEMES`; a slug string picks one of them).
        icon_dirs: where themes are looked for (the freedesktop icon directories).
        min_themes: a class needs this many distinct drawings (after near-duplicates count once).
        alias_themes: names sharing one file in this many themes are one class.
        duplicate_threshold: two drawings whose 16-px grey thumbnails differ by less than this mean absolute
            difference (0–1) are one drawing.
        split_seed: salt of the name hash that puts a class in ``train`` or ``test``.
        max_classes: keep only the first N classes of the set (by name; for quick runs and tests).
        workers: parallel renders (default: the CPU count, at most 4).

    Every image of a test class is a query and a gallery item; item ids are ``<theme>/<name>``.
    """
    if size < 16:
        raise ValueError(f"icon size must be at least 16 px, got {size}")
    by_slug = {t.slug: t for t in DEFAULT_THEMES}
    chosen_themes = [by_slug[t] if isinstance(t, str) else t for t in themes]
    if len({t.slug for t in chosen_themes}) != len(chosen_themes):
        raise ValueError("icon themes must have distinct slugs")
    located = [(theme, find_theme(theme, icon_dirs)) for theme in chosen_themes]
    themes_key = [{"slug": t.slug, "folder": str(p), "index": _index_key(p)} for t, p in located]
    recipe = {"format": FORMAT, "size": size, "themes": themes_key, "min_themes": min_themes,
              "alias_themes": alias_themes, "duplicate_threshold": duplicate_threshold, "split_seed": split_seed,
              "max_classes": max_classes}
    base = Path(root).expanduser() if root is not None else default_cache_root()
    directory = base / f"icons-{stable_hash(recipe)}"
    if not _cached(directory, recipe):
        _build(directory, recipe, located, workers)
    return _load(directory)


def _index_key(theme: Path) -> str:
    """What identifies an installed theme version cheaply: its ``index.theme`` bytes and modification time (dpkg
    keeps the packaged mtimes, so an upgrade changes it) — hashing every file of a theme would make a warm load slow."""
    index = theme / "index.theme"
    return f"{hashlib.sha256(index.read_bytes()).hexdigest()[:16]}-{index.stat().st_mtime_ns}"


def _cached(directory: Path, recipe: dict) -> bool:
    try:
        return read_manifest(directory, kind="icon-benchmark").get("recipe") == json.loads(json.dumps(recipe))
    except (FileNotFoundError, ValueError):
        return False


def _build(directory: Path, recipe: dict, located: list[tuple[IconTheme, Path]], workers: int | None) -> None:
    start = time.perf_counter()
    size, min_themes = recipe["size"], recipe["min_themes"]
    slugs = [t.slug for t, _ in located]
    scans = {t.slug: {n: choose_file(files, size) for n, files in scan_theme(p).items()} for t, p in located}
    classes, chosen = _alias_classes(scans, recipe["alias_themes"])
    candidates = sorted(c for c in classes if sum(c in chosen[s] for s in slugs) >= min_themes)
    jobs = [(s, c, scans[s][chosen[s][c]]) for c in candidates for s in slugs if c in chosen[s]]
    log.info("icons: %d themes, %d names, %d classes drawn by >= %d themes: rendering %d drawings",
             len(slugs), sum(len(v) for v in scans.values()), len(candidates), min_themes, len(jobs))
    # build beside the final folder and rename it into place: a reader never sees half a set
    staging = directory.with_name(f"{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        kept = _fill(staging, recipe, slugs, classes, jobs, workers, start,
                     scanned={s: len(scans[s]) for s in slugs}, candidates=len(candidates))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if kept < 2:
        shutil.rmtree(staging, ignore_errors=True)
        raise ValueError(f"only {kept} icon classes have {min_themes} distinct drawings: install more themes "
                         "or lower min_themes")
    shutil.rmtree(directory, ignore_errors=True)  # a stale or half-written set of the same recipe
    os.replace(staging, directory)
    log.info("icons: %d classes in %.1f s → %s", kept, time.perf_counter() - start, directory)


def _fill(staging: Path, recipe: dict, slugs: list[str], classes: dict[str, list[str]],
          jobs: list[tuple[str, str, IconFile]], workers: int | None, start: float, scanned: dict[str, int],
          candidates: int) -> int:
    """Render ``jobs`` into ``staging``, keep the classes with enough distinct drawings, write the class table and
    then the manifest (last); the number of classes kept."""
    size, min_themes, threshold = recipe["size"], recipe["min_themes"], recipe["duplicate_threshold"]
    (staging / "images").mkdir(parents=True)

    def render(job: tuple[str, str, IconFile]) -> tuple[str, str, np.ndarray | None, bool, str]:
        slug, name, file = job
        try:
            image = render_icon(file, size)
        except Exception as error:  # noqa: BLE001 - one unreadable drawing is left out, not the whole set
            return slug, name, None, False, f"{file.path}: {error}"
        (staging / "images" / slug).mkdir(exist_ok=True)
        image.save(staging / "images" / slug / f"{name}.png")
        thumbnail, monochrome = _describe(image)
        return slug, name, thumbnail, monochrome, ""

    drawings: dict[str, dict[str, np.ndarray]] = {}
    failed: list[str] = []
    monochrome = {s: 0 for s in slugs}
    with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
        for slug, name, thumbnail, flat, error in pool.map(render, jobs):
            if thumbnail is None:
                log.warning("icons: left out an unreadable drawing: %s", error)
                failed.append(error)
            elif flat:
                monochrome[slug] += 1
            else:
                drawings.setdefault(name, {})[slug] = thumbnail
    rates = _pair_rates(drawings, slugs, threshold)
    members = {c: _deduplicate(d, slugs, threshold) for c, d in drawings.items()}
    kept = sorted(c for c, themes in members.items() if len(themes) >= min_themes)
    if recipe["max_classes"] is not None:
        kept = kept[: recipe["max_classes"]]  # the first classes of the full set (a quick variant of it)
    near = {s: sum(s in d and s not in members[c] for c, d in drawings.items()) for s in slugs}
    keep = {(s, c) for c in kept for s in members[c]}
    for slug, name, _ in jobs:  # drop the renders no class uses, so the folder holds exactly the set
        if (slug, name) not in keep:
            (staging / "images" / slug / f"{name}.png").unlink(missing_ok=True)
    test = [_split(c, recipe["split_seed"]) for c in kept]
    atomic_write_json(staging / "classes.json", {
        "classes": kept, "test": test, "themes": [members[c] for c in kept],
        "aliases": {c: classes[c][1:] for c in kept if len(classes[c]) > 1}})
    per_class = [len(members[c]) for c in kept]
    write_manifest(staging, "icon-benchmark", {
        "recipe": recipe, "num_classes": len(kept), "num_images": int(sum(per_class)),
        "train_classes": int(len(kept) - sum(test)), "test_classes": int(sum(test)),
        "train_images": int(sum(n for n, t in zip(per_class, test) if not t)),
        "test_images": int(sum(n for n, t in zip(per_class, test) if t)),
        "images_per_class": {"min": min(per_class, default=0), "mean": float(np.mean(per_class or [0])),
                             "median": float(np.median(per_class or [0])), "max": max(per_class, default=0),
                             "histogram": {str(k): per_class.count(k) for k in sorted(set(per_class))}},
        "images_per_theme": {s: sum(s in members[c] for c in kept) for s in slugs},
        "names_per_theme": scanned, "candidate_classes": candidates, "rendered": len(jobs),
        "failed": len(failed), "failures": failed[:20],
        "monochrome": int(sum(monochrome.values())), "monochrome_per_theme": monochrome,
        "near_duplicates": int(sum(near.values())), "near_duplicates_per_theme": near,
        "pair_duplicate_rates": rates, "build_seconds": time.perf_counter() - start,
    })
    return len(kept)


def _load(directory: Path) -> ImageDataset:
    manifest = read_manifest(directory, kind="icon-benchmark")
    table = json.loads((directory / "classes.json").read_text(encoding="utf-8"))
    names, test, members = table["classes"], table["test"], table["themes"]
    if sum(len(m) for m in members) != manifest["num_images"] or len(names) != manifest["num_classes"]:
        raise ValueError(f"{directory}: the cached icon set is inconsistent with its manifest; delete the folder to rebuild it")
    labels = np.repeat(np.arange(len(names)), [len(m) for m in members])
    is_test = np.repeat(np.asarray(test, dtype=bool), [len(m) for m in members])
    return ImageDataset(
        name=f"icons{manifest['recipe']['size']}",
        source=FileSource(directory / "images", mode="RGB"),
        ids=np.array([f"{slug}/{name}" for name, themes in zip(names, members) for slug in themes]),
        keys=np.array([f"{slug}/{name}.png" for name, themes in zip(names, members) for slug in themes]),
        labels=labels,
        splits=np.where(is_test, "test", "train"),
        is_query=is_test,
        is_gallery=is_test.copy(),
        class_names=list(names),
    )
