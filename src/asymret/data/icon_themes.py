"""Reading freedesktop icon themes: which icon names a theme draws, at which sizes, and which file to use.

A theme is a folder with an ``index.theme`` (the freedesktop Icon Theme Specification): its ``Directories`` each
have a nominal ``Size``, a ``Scale``, a ``Type`` (Fixed, Threshold or Scalable) and a ``Context`` (Actions,
Applications, Places, ...).  An icon's *name* is its file name without the extension; lookups by name ignore the
context, so one name is one icon of a theme.  Used by :mod:`asymret.data.icons`.
"""
from __future__ import annotations

import configparser
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["IconFile", "ThemeDir", "parse_index_theme", "scan_theme", "choose_file", "canonical_context", "is_symbolic"]

#: file types read (XPM and friends are left out: few, tiny and old)
EXTENSIONS = (".png", ".svg")

#: the canonical context of each spelling used by the themes (KDE/GNOME/old GNOME names differ)
_CONTEXTS = {
    "actions": "actions", "apps": "apps", "applications": "apps", "categories": "categories",
    "devices": "devices", "emblems": "emblems", "emotes": "emotes", "emoticons": "emotes",
    "mimetypes": "mimetypes", "mimetype": "mimetypes", "filesystems": "places", "places": "places",
    "status": "status", "notifications": "status", "animations": "animations", "intl": "intl",
    "international": "intl", "stock": "stock", "panel": "panel", "applets": "applets", "legacy": "legacy",
}

#: contexts whose drawings are not full-colour icons of one thing: animation frame strips, flags, tiny panel and
#: tray glyphs (drawn monochrome for a dark panel), the cursor and symbolic folders
EXCLUDED_CONTEXTS = frozenset({"animations", "intl", "panel", "cursors", "symbolic"})


def canonical_context(context: str, folder: str = "") -> str:
    """The context as one lower-case word; from the folder's name parts when ``index.theme`` gives none."""
    text = context.strip().lower()
    if text in _CONTEXTS:
        return _CONTEXTS[text]
    for part in reversed(Path(folder).parts):
        part = part.lower()
        if part in _CONTEXTS or part in EXCLUDED_CONTEXTS:
            return _CONTEXTS.get(part, part)
    return text or "other"


def is_symbolic(name: str, folder: str) -> bool:
    """Symbolic (monochrome, recoloured at run time) variants: ``-symbolic`` names and ``symbolic`` folders."""
    return name.endswith("-symbolic") or name.endswith(".symbolic") or "symbolic" in folder.lower()


@dataclass(frozen=True)
class ThemeDir:
    """One ``Directories`` entry of an ``index.theme``."""

    folder: str
    size: int
    scale: int
    kind: str  # "fixed" | "threshold" | "scalable"
    context: str


@dataclass(frozen=True)
class IconFile:
    """One drawing of a name: its file, the nominal size it was drawn for and whether it is vector."""

    path: Path
    size: int
    scalable: bool
    context: str

    @property
    def is_svg(self) -> bool:
        return self.path.suffix.lower() == ".svg"


_SIZE_FOLDER = re.compile(r"^(\d+)(?:x(\d+))?(@\d+x?)?$")


def _guess_dir(folder: str) -> ThemeDir | None:
    """A directory's size and context from its path (``48x48/apps``, ``apps/48``, ``scalable/...``) when the
    ``index.theme`` does not list it."""
    size, kind, scale = 0, "fixed", 1
    for part in Path(folder).parts:
        match = _SIZE_FOLDER.match(part)
        if match:
            size = int(match.group(1))
            scale = int(match.group(3).strip("@x")) if match.group(3) else 1
        elif part.lower() == "scalable":
            kind = "scalable"
    if size == 0 and kind != "scalable":
        return None
    return ThemeDir(folder, size or 48, scale, kind, canonical_context("", folder))


def parse_index_theme(theme: Path) -> list[ThemeDir]:
    """The directories an ``index.theme`` lists (those that exist), plus any image folder it forgot."""
    dirs: dict[str, ThemeDir] = {}
    index = theme / "index.theme"
    if index.is_file():
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        parser.optionxform = str  # keys are case-sensitive in the spec
        parser.read_string(index.read_text(encoding="utf-8", errors="replace"))
        listed: list[str] = []
        if parser.has_section("Icon Theme"):
            for key in ("Directories", "ScaledDirectories"):
                listed += [d.strip() for d in parser.get("Icon Theme", key, fallback="").split(",") if d.strip()]
        for folder in listed:
            if not parser.has_section(folder) or not (theme / folder).is_dir():
                continue
            section = parser[folder]
            try:
                size = int(section.get("Size", "0"))
                scale = int(section.get("Scale", "1"))
            except ValueError:
                continue  # a malformed entry is no reliable size: skip the folder rather than guess
            kind = section.get("Type", "Threshold").strip().lower()
            dirs[folder] = ThemeDir(folder, size, scale, kind if kind in ("fixed", "scalable") else "threshold",
                                    canonical_context(section.get("Context", ""), folder))
    # some themes ship folders their index forgets; their path still says the size
    for path in sorted(p for p in theme.rglob("*") if p.is_dir()):
        folder = path.relative_to(theme).as_posix()
        if folder not in dirs and any(f.suffix.lower() in EXTENSIONS for f in path.iterdir()):
            guessed = _guess_dir(folder)
            if guessed is not None:
                dirs[folder] = guessed
    return list(dirs.values())


def scan_theme(theme: Path) -> dict[str, list[IconFile]]:
    """Every full-colour icon name of a theme and its drawings (all sizes), symbolic variants and excluded contexts
    out, HiDPI (``Scale`` > 1) folders out (the same drawing as the 1× one at twice the pixels)."""
    names: dict[str, list[IconFile]] = {}
    for entry in parse_index_theme(theme):
        if entry.scale != 1 or entry.context in EXCLUDED_CONTEXTS or "symbolic" in entry.folder.lower():
            continue
        folder = theme / entry.folder
        for path in sorted(folder.iterdir()):
            suffix = path.suffix.lower()
            if suffix not in EXTENSIONS or not path.is_file():  # is_file follows links: dangling ones are out
                continue
            name = path.name[: -len(suffix)]
            if is_symbolic(name, entry.folder):
                continue
            names.setdefault(name, []).append(IconFile(path, entry.size, entry.kind == "scalable", entry.context))
    return names


def choose_file(files: list[IconFile], target: int) -> IconFile:
    """The drawing to read for a ``target``-pixel image.

    The one drawn for the smallest size at or above ``target`` (a scalable SVG counts as any size, so a fixed
    drawing made for that size wins over it); on a tie a PNG, which needs no rendering.  If nothing reaches
    ``target``: the largest, an SVG first (it renders sharp where a small PNG would be enlarged).
    """
    def nominal(f: IconFile) -> float:
        return float("inf") if f.scalable else f.size

    big = [f for f in files if nominal(f) >= target]
    if big:
        return min(big, key=lambda f: (nominal(f), f.is_svg, str(f.path)))
    return max(files, key=lambda f: (nominal(f), f.is_svg, str(f.path)))
