"""The icon benchmark (issue 20, part 1) on four tiny fake themes (tests/data/fixtures/icon_themes, see make_fixtures.py).

The SVG drawings are rendered by ``rsvg-convert``; ``scripts/setup.sh`` installs it, and these tests fail (not skip)
without it.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from asymret.data import icons
from asymret.data.icon_themes import IconFile, choose_file, parse_index_theme, scan_theme
from asymret.data.icons import IconTheme, find_theme, load_icons, render_icon
from asymret.data.loaders import DATASET_LOADERS

FIXTURES = Path(__file__).parent / "fixtures" / "icon_themes"
THEMES = [IconTheme(slug, slug, f"{slug}-icon-theme") for slug in ("alpha", "beta", "gamma", "derived")]
SIX = {"document-save", "folder", "printer", "edit-copy", "go-home", "user-trash"}


@pytest.fixture(autouse=True)
def _white(monkeypatch):
    monkeypatch.delenv("ASYMRET_BACKGROUND", raising=False)


@pytest.fixture()
def themes_dir(tmp_path: Path) -> Path:
    """A writable copy of the fixture themes (links kept as links)."""
    target = tmp_path / "icons"
    shutil.copytree(FIXTURES, target, symlinks=True)
    return target


def _load(cache: Path, icon_dirs, **kwargs):
    options = {"themes": THEMES, "icon_dirs": [icon_dirs], "min_themes": 3, "alias_themes": 2, "size": 32}
    return load_icons(cache, **{**options, **kwargs})


# ------------------------------------------------------------------------------------------------ index.theme
def test_parse_index_theme_reads_sizes_scales_contexts_and_guesses_unlisted_folders():
    dirs = {d.folder: d for d in parse_index_theme(FIXTURES / "alpha")}
    assert set(dirs) == {"48x48/apps", "24x24/apps", "48x48@2x/apps", "16x16/panel", "64x64/apps"}  # 32x32/gone absent
    assert (dirs["48x48/apps"].size, dirs["48x48/apps"].scale, dirs["48x48/apps"].kind) == (48, 1, "fixed")
    assert dirs["48x48/apps"].context == "apps"  # "Applications" canonical
    assert dirs["48x48@2x/apps"].scale == 2
    assert dirs["16x16/panel"].context == "panel"
    assert (dirs["64x64/apps"].size, dirs["64x64/apps"].context) == (64, "apps")  # not in index.theme: from its path
    beta = {d.folder: d for d in parse_index_theme(FIXTURES / "beta")}
    assert beta["scalable/apps"].kind == "scalable"
    assert beta["48x48/apps"].kind == "threshold"


def test_scan_theme_leaves_out_symbolic_hidpi_panel_and_dangling_links():
    names = scan_theme(FIXTURES / "alpha")
    assert SIX <= set(names)
    assert "gtk-save" in names and "unlisted-only" in names
    for out in ("document-save-symbolic", "hidpi-only", "panel-only", "dangling"):
        assert out not in names
    # two sizes of folder (48 and 24), never the 2x copy
    assert sorted(f.size for f in names["folder"]) == [24, 48]


def test_choose_file_prefers_the_smallest_drawing_at_or_above_the_target():
    def f(name: str, size: int, scalable: bool = False) -> IconFile:
        return IconFile(Path(name), size, scalable, "apps")

    files = [f("a16.png", 16), f("a48.png", 48), f("a96.png", 96), f("a.svg", 48, scalable=True)]
    assert choose_file(files, 64).path.name == "a96.png"
    assert choose_file(files, 32).path.name == "a48.png"
    assert choose_file(files, 200).path.name == "a.svg"  # nothing fixed reaches 200: the vector drawing
    assert choose_file([f("b22.png", 22), f("b16.png", 16)], 64).path.name == "b22.png"  # else the largest
    assert choose_file([f("c.svg", 48), f("c.png", 48)], 48).path.name == "c.png"  # a tie: the PNG


# ------------------------------------------------------------------------------------------------ rendering
def test_svg_is_rendered_by_rsvg_convert_to_a_transparent_square():
    assert shutil.which("rsvg-convert"), "rsvg-convert (librsvg2-bin) is missing: run scripts/setup.sh"
    file = IconFile(FIXTURES / "beta/scalable/apps/folder.svg", 48, True, "apps")
    image = render_icon(file, 40)
    assert image.mode == "RGBA" and image.size == (40, 40)
    alpha = np.asarray(image)[..., 3]
    assert alpha.min() == 0 and alpha.max() == 255  # drawn shapes on a transparent background


def test_missing_renderer_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(FileNotFoundError, match="librsvg2-bin"):
        render_icon(IconFile(FIXTURES / "beta/scalable/apps/folder.svg", 48, True, "apps"), 32)


def test_monochrome_and_colour_drawings_are_told_apart():
    printer = render_icon(IconFile(FIXTURES / "gamma/48x48/apps/printer.png", 48, False, "apps"), 32)
    folder = render_icon(IconFile(FIXTURES / "gamma/48x48/apps/folder.png", 48, False, "apps"), 32)
    assert icons._describe(printer)[1] is True
    assert icons._describe(folder)[1] is False


def test_missing_theme_names_its_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install alpha-icon-theme"):
        find_theme(THEMES[0], [tmp_path])


# ------------------------------------------------------------------------------------------------ the set
def test_classes_aliases_monochrome_and_near_duplicates(tmp_path):
    dataset = _load(tmp_path / "cache", FIXTURES)
    by_class = {name: sorted(str(i).split("/")[0] for i in dataset.ids[dataset.labels == k])
                for k, name in enumerate(dataset.class_names)}
    # gtk-save merged into document-save; edit-paste (a link in one theme) and default-folder (derived's file its
    # folder links to: the drawing goes to folder, which more themes draw) are no classes
    assert set(by_class) == SIX
    # derived's document-save is alpha's file copied: counted once (alpha, the earlier theme, keeps it)
    assert by_class["document-save"] == ["alpha", "beta", "gamma"]
    # gamma's printer is one flat grey: out
    assert by_class["printer"] == ["alpha", "beta", "derived"]
    for name in ("folder", "edit-copy", "go-home", "user-trash"):
        assert by_class[name] == ["alpha", "beta", "derived", "gamma"]
    manifest = json.loads(next((tmp_path / "cache").glob("icons-*/manifest.json")).read_text())
    assert manifest["monochrome"] == 1 and manifest["near_duplicates"] == 1
    assert manifest["num_images"] == len(dataset) == 3 + 3 + 4 * 4
    pair = {tuple(p["themes"]): p for p in manifest["pair_duplicate_rates"]}
    assert pair["alpha", "derived"]["near_duplicates"] == 1 and pair["alpha", "beta"]["near_duplicates"] == 0
    table = json.loads(next((tmp_path / "cache").glob("icons-*/classes.json")).read_text())
    assert table["aliases"] == {"document-save": ["gtk-save"]}


def test_min_themes_counts_distinct_drawings(tmp_path):
    dataset = _load(tmp_path / "cache", FIXTURES, min_themes=4)
    # document-save (a near-duplicate) and printer (a monochrome drawing) have 3 distinct drawings only
    assert set(dataset.class_names) == {"folder", "edit-copy", "go-home", "user-trash"}
    with pytest.raises(ValueError, match="distinct drawings"):
        _load(tmp_path / "cache", FIXTURES, min_themes=5)


def test_alias_needs_enough_themes(tmp_path):
    table = _load(tmp_path / "cache", FIXTURES, alias_themes=4)
    # gtk-save shares document-save's file in three themes only: not merged; it is no class of its own either,
    # since in every theme the file is document-save's (drawn by more themes)
    assert "gtk-save" not in table.class_names and "document-save" in table.class_names
    assert not json.loads(next((tmp_path / "cache").glob("icons-*/classes.json")).read_text())["aliases"]


def test_split_is_class_disjoint_and_a_stable_hash(tmp_path):
    dataset = _load(tmp_path / "cache", FIXTURES)
    test_classes = set(dataset.labels[dataset.splits == "test"])
    train_classes = set(dataset.labels[dataset.splits == "train"])
    assert test_classes and train_classes and not test_classes & train_classes
    for k, name in enumerate(dataset.class_names):
        assert (k in test_classes) == icons._split(name, 0)
    assert np.array_equal(dataset.is_query, dataset.splits == "test")
    assert np.array_equal(dataset.is_gallery, dataset.splits == "test")
    again = _load(tmp_path / "other-cache", FIXTURES)
    assert list(again.ids) == list(dataset.ids) and list(again.splits) == list(dataset.splits)
    other = _load(tmp_path / "cache", FIXTURES, split_seed=1)
    assert [icons._split(n, 1) for n in other.class_names] == [
        bool(other.splits[other.labels == k][0] == "test") for k in range(len(other.class_names))]


def test_cache_is_reused_and_a_changed_recipe_rebuilds(tmp_path, themes_dir, monkeypatch):
    cache = tmp_path / "cache"
    first = _load(cache, themes_dir)
    built = list(cache.glob("icons-*"))
    assert len(built) == 1

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt a cached set")

    monkeypatch.setattr(icons, "_build", no_build)
    second = _load(cache, themes_dir)
    assert list(second.ids) == list(first.ids) and second.fingerprint() == first.fingerprint()
    monkeypatch.undo()
    # an upgraded theme (its index.theme changes) is another recipe: built anew beside the old one
    index = themes_dir / "beta" / "index.theme"
    index.write_text(index.read_text() + "\n")
    _load(cache, themes_dir)
    assert len(list(cache.glob("icons-*"))) == 2
    _load(cache, themes_dir, size=24)
    assert len(list(cache.glob("icons-*"))) == 3


def test_manifest_is_written_last_and_a_failed_build_leaves_nothing_loadable(tmp_path, monkeypatch):
    seen = {}
    real = icons.write_manifest

    def spy(folder, kind, data):
        seen["files"] = sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*.png"))
        seen["classes"] = (Path(folder) / "classes.json").is_file()
        return real(folder, kind, data)

    monkeypatch.setattr(icons, "write_manifest", spy)
    dataset = _load(tmp_path / "cache", FIXTURES)
    assert seen["classes"] and len(seen["files"]) == len(dataset)  # every image and the table before the manifest
    monkeypatch.undo()

    def broken(image):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(icons, "_describe", broken)
    with pytest.raises(RuntimeError, match="interrupted"):
        _load(tmp_path / "cache2", FIXTURES)
    assert not [p for p in (tmp_path / "cache2").iterdir() if (p / "manifest.json").exists()]


def test_images_are_rgb_on_white_when_read(tmp_path, monkeypatch):
    dataset = _load(tmp_path / "cache", FIXTURES)
    cached = np.asarray(Image.open(dataset.source.root / dataset.keys[0]))
    assert cached.shape == (32, 32, 4) and cached[..., 3].min() == 0  # the cache keeps the transparency
    image = dataset.load(0)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    transparent = cached[..., 3] == 0
    assert (image[transparent] == 255).all()
    opaque = cached[..., 3] == 255
    assert np.array_equal(image[opaque], cached[..., :3][opaque])
    monkeypatch.setenv("ASYMRET_BACKGROUND", "black")
    assert (dataset.load(0)[transparent] == 0).all()


def test_registered_as_a_dataset_kind(tmp_path):
    assert DATASET_LOADERS.key("icons") == "icons"
    assert DATASET_LOADERS.meta["icons"]["builds_itself"]
    from asymret.data.loaders import load_dataset

    dataset = load_dataset("icons", tmp_path / "cache", themes=THEMES, icon_dirs=[FIXTURES], min_themes=4,
                           alias_themes=2, size=32, max_classes=2)
    assert dataset.class_names == ["edit-copy", "folder"]  # max_classes: the first classes by name
    assert os.path.basename(str(dataset.source.root)) == "images"
