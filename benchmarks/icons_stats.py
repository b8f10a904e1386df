"""Statistics of the icon benchmark (docs/ICONS.md): classes, images, per-theme counts, near-duplicates, sizes, time.

    python benchmarks/icons_stats.py --out docs/icons_stats.json       # ~2-3 min on 2 cores (two cold builds)
    python benchmarks/icons_stats.py --candidates /tmp/icon-candidates/usr/share/icons --out docs/icons_themes.json

The second form is how the themes were chosen: the Debian themes not installed by setup.sh unpacked (not
installed) into a folder first, e.g.

    cd /tmp && apt-get download papirus-icon-theme paper-icon-theme mate-icon-theme moka-icon-theme lxde-icon-theme
    for deb in *.deb; do dpkg-deb -x "$deb" /tmp/icon-candidates; done

then, over all candidate themes (the default ones and those), how many classes have at least 5 (and 4) distinct
drawings — each theme left out in turn, and themes dropped one by one (least classes lost per installed megabyte)
until the rest fits in the budget — and how the count moves with the near-duplicate threshold.

Builds the default set cold into a temporary cache (timed), reloads it (timed), and reads its manifest and class
table; a second build with ``min_themes=3`` gives how many classes have at least 3, 4, 5, 6, ... distinct drawings
(the near-duplicate merging does not depend on ``min_themes``).  The near-duplicate threshold is put beside the
distances of *different* classes' drawings across themes (16-px grey thumbnails of the cached images, the measure
the build uses): how often two unrelated drawings would be merged at each threshold.  Disk: each theme's folder
(files, links not followed) and its package's installed size from dpkg.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np

from asymret.core.manifest import atomic_write_json
from asymret.data.icon_themes import choose_file, scan_theme
from asymret.data.icons import (ICON_DIRS, DEFAULT_THEMES, IconTheme, _alias_classes, _deduplicate, _describe, find_theme,
                                load_icons, render_icon)
from asymret.eval.report import run_metadata

THRESHOLDS = (0.02, 0.03, 0.035, 0.04, 0.05)
#: Debian themes measured but not installed (docs/ICONS.md: fewer distinct designs per megabyte); faba is moka's
#: dependency in Debian
EXTRA_CANDIDATES = (IconTheme("mate", "mate", "mate-icon-theme"), IconTheme("moka", "Moka", "moka-icon-theme"),
                    IconTheme("lxde", "nuoveXT2", "lxde-icon-theme"), IconTheme("papirus", "Papirus", "papirus-icon-theme"),
                    IconTheme("paper", "Paper", "paper-icon-theme"))
DEPENDS = {"moka": ("faba",), "faba": ("gnome",), "gnome-colors": ("gnome",), "numix-circle": ("numix",)}


def folder_megabytes(folder: Path) -> float:
    total = 0
    for directory, _, files in os.walk(folder):
        for name in files:
            path = Path(directory) / name
            if not path.is_symlink():
                total += path.stat().st_size
    return total / 1e6


def installed_megabytes(package: str) -> float | None:
    try:
        done = subprocess.run(["dpkg-query", "-W", "-f=${Installed-Size}", package], capture_output=True, text=True,
                              check=True)
        return int(done.stdout.strip()) / 1024
    except (OSError, subprocess.CalledProcessError, ValueError):
        return None


def thumbnails(directory: Path, classes: list[str], members: list[list[str]]) -> dict[tuple[str, str], np.ndarray]:
    from PIL import Image

    out = {}
    for name, themes in zip(classes, members):
        for slug in themes:
            with Image.open(directory / "images" / slug / f"{name}.png") as image:
                out[slug, name] = _describe(image.convert("RGBA"))[0].ravel()
    return out


def distance_study(thumbs: dict[tuple[str, str], np.ndarray], slugs: list[str]) -> dict:
    """Mean absolute thumbnail differences across themes: same class (kept drawings, so all ≥ the threshold) and
    different classes (the null: how close unrelated drawings come)."""
    by_theme = {s: [(c, v) for (t, c), v in thumbs.items() if t == s] for s in slugs}
    same, below, total = [], {t: 0 for t in THRESHOLDS}, 0
    null_sample = []
    rng = np.random.default_rng(0)
    for a, b in combinations(slugs, 2):
        if not by_theme[a] or not by_theme[b]:
            continue
        names_a = [c for c, _ in by_theme[a]]
        names_b = [c for c, _ in by_theme[b]]
        A = np.stack([v for _, v in by_theme[a]])
        B = np.stack([v for _, v in by_theme[b]])
        D = np.abs(A[:, None, :] - B[None, :, :]).mean(-1)
        index_b = {c: j for j, c in enumerate(names_b)}
        mask = np.ones(D.shape, dtype=bool)
        for i, c in enumerate(names_a):
            if c in index_b:
                same.append(float(D[i, index_b[c]]))
                mask[i, index_b[c]] = False
        different = D[mask]
        total += different.size
        for t in THRESHOLDS:
            below[t] += int((different < t).sum())
        null_sample.append(rng.choice(different, size=min(2000, different.size), replace=False))
    null = np.concatenate(null_sample)
    quantiles = (0.001, 0.01, 0.05, 0.5)
    return {
        "different_class_pairs": total,
        "different_class_below": {str(t): below[t] / total for t in THRESHOLDS},
        "different_class_quantiles (sample)": {str(q): round(float(np.quantile(null, q)), 4) for q in quantiles},
        "same_class_pairs": len(same),
        "same_class_quantiles": {str(q): round(float(np.quantile(same, q)), 4) for q in quantiles},
    }


def apt_megabytes(package: str) -> float:
    """The installed size apt states for ``package`` (whether installed or not), in MiB."""
    done = subprocess.run(["apt-cache", "show", "--no-all-versions", package], capture_output=True, text=True, check=True)
    return next(int(line.split(":")[1]) for line in done.stdout.splitlines() if line.startswith("Installed-Size:")) / 1024


class Candidates:
    """Every candidate theme scanned once; drawings rendered on first use; a subset's class count on demand."""

    def __init__(self, themes: list[IconTheme], icon_dirs: list[str], size: int, alias_themes: int) -> None:
        self.size, self.alias_themes, self.order = size, alias_themes, [t.slug for t in themes]
        self.scans = {t.slug: {n: choose_file(f, size) for n, f in scan_theme(find_theme(t, icon_dirs)).items()}
                      for t in themes}
        self.thumbs: dict[Path, np.ndarray | None] = {}

    def thumbnail(self, file) -> np.ndarray | None:
        if file.path not in self.thumbs:
            try:
                thumbnail, flat = _describe(render_icon(file, self.size))
                self.thumbs[file.path] = None if flat else thumbnail
            except (OSError, ValueError):
                self.thumbs[file.path] = None
        return self.thumbs[file.path]

    def count(self, subset, threshold: float) -> dict[str, int]:
        """Classes with at least 4 and 5 distinct drawings in the themes ``subset`` (the build's rules)."""
        slugs = [s for s in self.order if s in subset]
        scans = {s: self.scans[s] for s in slugs}
        classes, chosen = _alias_classes(scans, self.alias_themes)
        counts = {"4": 0, "5": 0}
        for c in classes:
            if sum(c in chosen[s] for s in slugs) < 4:
                continue
            drawings = {s: self.thumbnail(scans[s][chosen[s][c]]) for s in slugs if c in chosen[s]}
            distinct = len(_deduplicate({s: d for s, d in drawings.items() if d is not None}, slugs, threshold))
            counts["4"] += distinct >= 4
            counts["5"] += distinct >= 5
        return counts


def candidate_study(folder: Path, size: int, budget: float) -> dict:
    defaults = {t.slug: t for t in DEFAULT_THEMES}
    themes = [*DEFAULT_THEMES, *EXTRA_CANDIDATES]
    megabytes = {t.slug: round(apt_megabytes(t.package), 1) for t in themes}
    defaults_of = {k: v.default for k, v in inspect.signature(load_icons).parameters.items()}
    threshold = defaults_of["duplicate_threshold"]
    study = Candidates(themes, [*ICON_DIRS, str(folder)], size, alias_themes=defaults_of["alias_themes"])
    budget -= apt_megabytes("librsvg2-bin")  # the renderer is part of the budget
    every = set(study.order)

    def closed(subset: set[str]) -> bool:
        return all(d in subset for s in subset for d in DEPENDS.get(s, ()))

    result = {"themes_mb": megabytes, "threshold": threshold,
              "all": {"themes": sorted(every), "mb": round(sum(megabytes.values()), 1), **study.count(every, threshold)},
              "default": {"themes": sorted(defaults), "mb": round(sum(megabytes[s] for s in defaults), 1),
                          **study.count(set(defaults), threshold)}}
    base = result["all"]["5"]
    result["all_but_one"] = {s: base - study.count(every - {s}, threshold)["5"] for s in study.order
                             if closed(every - {s})}
    path, current = [], set(every)
    while sum(megabytes[s] for s in current) > budget:
        now = study.count(current, threshold)["5"]
        options = [(now - study.count(current - {s}, threshold)["5"], s) for s in current if closed(current - {s})]
        loss, drop = min(options, key=lambda o: (o[0] / megabytes[o[1]], o[1]))
        current -= {drop}
        path.append({"drop": drop, "lost": loss, "mb": round(sum(megabytes[s] for s in current), 1),
                     **study.count(current, threshold)})
    result["backward_elimination"] = path
    # then add back what still fits, most classes gained per megabyte first
    fill = []
    while True:
        now = study.count(current, threshold)["5"]
        room = budget - sum(megabytes[s] for s in current)
        options = [(study.count(current | {s}, threshold)["5"] - now, s) for s in every - current
                   if megabytes[s] <= room and closed(current | {s})]
        options = [o for o in options if o[0] > 0]
        if not options:
            break
        gain, add = max(options, key=lambda o: (o[0] / megabytes[o[1]], o[1]))
        current |= {add}
        fill.append({"add": add, "gained": gain, "mb": round(sum(megabytes[s] for s in current), 1),
                     **study.count(current, threshold)})
    result["add_back"] = fill
    result["chosen"] = sorted(current)
    result["threshold_sensitivity"] = {str(t): {"default": study.count(set(defaults), t), "all": study.count(every, t)}
                                       for t in THRESHOLDS}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/icons_stats.json"))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--candidates", type=Path, default=None, help="a folder of unpacked candidate themes")
    parser.add_argument("--budget", type=float, default=400.0, help="installed MiB the themes may take")
    args = parser.parse_args()
    start = time.perf_counter()
    if args.candidates is not None:
        result = candidate_study(args.candidates, args.size, args.budget)
        atomic_write_json(args.out, {**run_metadata("python benchmarks/icons_stats.py " + " ".join(sys.argv[1:]), [],
                                                    start), **result})
        print(json.dumps({k: result[k] for k in ("all", "default", "backward_elimination", "add_back", "chosen")}, indent=1))
        return
    with tempfile.TemporaryDirectory(prefix="icons-stats-") as scratch:
        began = time.perf_counter()
        load_icons(scratch, size=args.size)
        build = time.perf_counter() - began
        began = time.perf_counter()
        load_icons(scratch, size=args.size)
        reload = time.perf_counter() - began
        directory = next(Path(scratch).glob("icons-*"))
        manifest = json.loads((directory / "manifest.json").read_text())
        table = json.loads((directory / "classes.json").read_text())
        cache_mb = folder_megabytes(directory)
        cache_files = sum(1 for _ in (directory / "images").rglob("*.png"))
        slugs = [t.slug for t in DEFAULT_THEMES]
        thumbs = thumbnails(directory, table["classes"], table["themes"])
        distances = distance_study(thumbs, slugs)
        loose = load_icons(Path(scratch) / "loose", size=args.size, min_themes=3)
        distinct = np.bincount(loose.labels)
    themes = []
    for theme in DEFAULT_THEMES:
        folder = find_theme(theme)
        themes.append({"slug": theme.slug, "folder": str(folder), "package": theme.package,
                       "installed_mb": installed_megabytes(theme.package), "folder_mb": round(folder_megabytes(folder), 1),
                       "names_scanned": manifest["names_per_theme"][theme.slug],
                       "images": manifest["images_per_theme"][theme.slug],
                       "monochrome_left_out": manifest["monochrome_per_theme"][theme.slug],
                       "near_duplicates_left_out": manifest["near_duplicates_per_theme"][theme.slug]})
    renderer = installed_megabytes("librsvg2-bin")
    installed = [t["installed_mb"] for t in themes if t["installed_mb"] is not None]
    rates = sorted(manifest["pair_duplicate_rates"], key=lambda r: -r["rate"])
    stats = {
        **run_metadata("python benchmarks/icons_stats.py " + " ".join(sys.argv[1:]), [], start),
        "recipe": {k: v for k, v in manifest["recipe"].items() if k != "themes"},
        "classes": manifest["num_classes"], "images": manifest["num_images"],
        "train": {"classes": manifest["train_classes"], "images": manifest["train_images"]},
        "test": {"classes": manifest["test_classes"], "images": manifest["test_images"]},
        "images_per_class": manifest["images_per_class"],
        "classes_with_at_least_k_distinct_drawings": {str(k): int((distinct >= k).sum()) for k in range(3, 11)},
        "aliased_classes": len(table["aliases"]),
        "candidate_classes": manifest["candidate_classes"], "rendered": manifest["rendered"],
        "failed": manifest["failed"], "monochrome_left_out": manifest["monochrome"],
        "near_duplicates_left_out": manifest["near_duplicates"],
        "themes": themes,
        "installed_mb": {"themes": round(sum(installed), 1), "librsvg2-bin": renderer,
                         "total": round(sum(installed) + (renderer or 0), 1)},
        "near_duplicate_pairs_top": rates[:12],
        "near_duplicate_distances": distances,
        "build_seconds": round(build, 1), "reload_seconds": round(reload, 2),
        "cache": {"megabytes": round(cache_mb, 1), "files": cache_files},
    }
    atomic_write_json(args.out, stats)
    print(json.dumps({k: stats[k] for k in ("classes", "images", "train", "test", "images_per_class",
                                            "classes_with_at_least_k_distinct_drawings", "installed_mb",
                                            "build_seconds", "reload_seconds", "cache")}, indent=1))


if __name__ == "__main__":
    main()
