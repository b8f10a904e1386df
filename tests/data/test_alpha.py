"""Transparent images read right (issue 20, part 2): alpha composited onto one background before RGB or grey."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from asymret.data.dataset import (
    FileSource,
    default_background,
    parse_colour,
    read_image,
    set_background,
)


@pytest.fixture(autouse=True)
def _no_background_setting(monkeypatch):
    monkeypatch.delenv("ASYMRET_BACKGROUND", raising=False)


def _rgba_png(path: Path) -> Path:
    """4×2 RGBA: row 0 transparent black, opaque red, half-transparent red, half-transparent blue; row 1 opaque."""
    pixels = np.zeros((2, 4, 4), dtype=np.uint8)
    pixels[0, 0] = (0, 0, 0, 0)
    pixels[0, 1] = (255, 0, 0, 255)
    pixels[0, 2] = (255, 0, 0, 128)
    pixels[0, 3] = (0, 0, 255, 128)
    pixels[1] = (10, 200, 30, 255)
    Image.fromarray(pixels, "RGBA").save(path)
    return path


def _palette_png(path: Path, transparency: str) -> Path:
    """3×1 palette PNG: index 0 (stored as black) transparent, 1 green, 2 red at alpha 128 (in ``bytes`` mode).

    ``transparency="index"`` writes one transparent index, ``"bytes"`` a tRNS byte per palette entry (the case
    Pillow warns about when converting to RGB).
    """
    image = Image.new("P", (3, 1))
    image.putpalette([0, 0, 0, 0, 255, 0, 255, 0, 0] + [0] * (256 * 3 - 9))
    image.putdata([0, 1, 2])
    if transparency == "index":
        image.save(path, transparency=0)
    else:
        image.save(path, transparency=bytes([0, 255, 128]))
    with Image.open(path) as check:  # Pillow wrote what the test means: a palette PNG with transparency info
        assert check.mode == "P" and "transparency" in check.info
    return path


def _close(actual, expected, tolerance: int = 1) -> bool:
    return bool(np.all(np.abs(np.asarray(actual, int) - np.asarray(expected, int)) <= tolerance))


def test_rgba_transparent_pixel_gets_the_background_and_half_alpha_blends(tmp_path):
    pixels = read_image(_rgba_png(tmp_path / "cut.png"))
    assert pixels.shape == (2, 4, 3) and pixels.dtype == np.uint8
    assert tuple(pixels[0, 0]) == (255, 255, 255)  # not the black stored under alpha 0
    assert tuple(pixels[0, 1]) == (255, 0, 0)
    assert _close(pixels[0, 2], (255, 127, 127)) and _close(pixels[0, 3], (127, 127, 255))
    assert (pixels[1] == (10, 200, 30)).all()


def test_background_parameter_environment_and_setter(tmp_path, monkeypatch):
    path = _rgba_png(tmp_path / "cut.png")
    assert tuple(read_image(path, background="black")[0, 0]) == (0, 0, 0)
    assert _close(read_image(path, background=(0, 0, 0))[0, 2], (128, 0, 0))
    monkeypatch.setenv("ASYMRET_BACKGROUND", "#102030")
    assert default_background() == (16, 32, 48) and tuple(read_image(path)[0, 0]) == (16, 32, 48)
    set_background("0,255,0")
    try:
        assert tuple(read_image(path)[0, 0]) == (0, 255, 0)
        assert tuple(read_image(path, background="white")[0, 0]) == (255, 255, 255)  # the parameter wins
    finally:
        set_background(None)
    assert default_background() == (255, 255, 255)
    with pytest.raises(ValueError):
        parse_colour("mauve-ish")
    with pytest.raises(ValueError):
        parse_colour((0, 300, 0))


def test_grey_read_composites_before_converting(tmp_path):
    grey = read_image(_rgba_png(tmp_path / "cut.png"), mode="L")
    assert grey.shape == (2, 4, 1) and grey[0, 0, 0] == 255
    la = Image.new("LA", (2, 1))
    la.putdata([(0, 0), (40, 255)])
    la.save(tmp_path / "la.png")
    assert read_image(tmp_path / "la.png", mode="L")[:, :, 0].tolist() == [[255, 40]]
    assert read_image(tmp_path / "la.png", mode="L", background="black")[:, :, 0].tolist() == [[0, 40]]


@pytest.mark.parametrize("transparency", ["index", "bytes"])
def test_palette_transparency_is_composited_without_a_pillow_warning(tmp_path, transparency):
    path = _palette_png(tmp_path / f"palette-{transparency}.png", transparency)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's "Palette images with Transparency ..." would fail here
        pixels = read_image(path)
        grey = read_image(path, mode="L")
    assert tuple(pixels[0, 0]) == (255, 255, 255) and tuple(pixels[0, 1]) == (0, 255, 0)
    assert grey[0, 0, 0] == 255
    if transparency == "bytes":
        assert _close(pixels[0, 2], (255, 127, 127))
    else:
        assert tuple(pixels[0, 2]) == (255, 0, 0)


def test_opaque_images_are_byte_identical_to_a_plain_convert(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg", quality=90)
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "grey.png")
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE).save(tmp_path / "palette.png")  # no transparency
    for name in ("rgb.png", "rgb.jpg", "grey.png", "palette.png"):
        for mode in ("RGB", "L"):
            with Image.open(tmp_path / name) as image:
                before = np.asarray(image.convert(mode), dtype=np.uint8)  # what read_image returned before
            after = read_image(tmp_path / name, mode=mode, background="black")
            assert after.reshape(before.shape).tobytes() == before.tobytes(), (name, mode)


def test_an_upload_stream_and_a_file_source_take_the_same_path(tmp_path):
    path = _rgba_png(tmp_path / "cut.png")
    assert (read_image(io.BytesIO(path.read_bytes()), name="upload") == read_image(path)).all()
    source = FileSource(tmp_path, background="black")
    assert tuple(source.load("cut.png")[0, 0]) == (0, 0, 0)
    # the colour decides the pixels, so it is part of what identifies them
    assert source.describe() != FileSource(tmp_path).describe()
    assert FileSource(tmp_path).describe()["background"] == [255, 255, 255]
