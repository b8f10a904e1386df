"""Images read as they look (issue 23, item 6): EXIF orientation applied, 16-bit images scaled to 8 bits, not clipped —
in the one read path, :func:`asymret.data.dataset.read_image`."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from asymret.data.dataset import FileSource, read_image


@pytest.fixture(autouse=True)
def _no_background_setting(monkeypatch):
    monkeypatch.delenv("ASYMRET_BACKGROUND", raising=False)


def _stored_pixels() -> np.ndarray:
    """2×3 RGB, every pixel different, so any turn or mirror shows."""
    pixels = np.zeros((2, 3, 3), dtype=np.uint8)
    pixels[..., 0] = np.arange(6).reshape(2, 3) * 40
    pixels[..., 1] = 255 - pixels[..., 0]
    return pixels


def _with_orientation(path, orientation: int, fmt: str = "PNG"):
    image = Image.fromarray(_stored_pixels(), "RGB")
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, format=fmt, exif=exif.tobytes())
    return path


@pytest.mark.parametrize("orientation, shown", [
    (1, lambda a: a),
    (3, lambda a: np.rot90(a, 2)),
    (6, lambda a: np.rot90(a, -1)),         # stored turned left: shown turned right (clockwise)
    (8, lambda a: np.rot90(a, 1)),
    (2, lambda a: a[:, ::-1]),              # mirrored
])
def test_exif_orientation_is_applied(tmp_path, orientation, shown):
    path = _with_orientation(tmp_path / f"photo{orientation}.png", orientation)
    assert np.array_equal(read_image(path), shown(_stored_pixels()))


def test_exif_orientation_applies_to_uploads_and_grey_reads_and_sources(tmp_path):
    path = _with_orientation(tmp_path / "sideways.png", 6)
    expected = np.rot90(_stored_pixels(), -1)
    with open(path, "rb") as upload:  # the service reads an open file
        assert np.array_equal(read_image(upload), expected)
    assert read_image(path, mode="L").shape == (3, 2, 1)
    assert np.array_equal(FileSource(tmp_path).load("sideways.png"), expected)


def test_jpeg_phone_photo_is_read_upright(tmp_path):
    """The probe: a camera JPEG stored sideways (orientation 6) is embedded upright — a bright top half stays on top."""
    stored = np.zeros((40, 80, 3), dtype=np.uint8)
    stored[:, :40] = 255  # shown turned clockwise: the stored left half becomes the top half
    image = Image.fromarray(stored)
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(tmp_path / "phone.jpg", quality=95, exif=exif.tobytes())
    pixels = read_image(tmp_path / "phone.jpg").astype(int)
    assert pixels.shape == (80, 40, 3)
    assert pixels[:35].mean() > 240 and pixels[45:].mean() < 15


def _png16(values: np.ndarray, color_type: int, transparent: int | None = None) -> bytes:
    """A 16-bit PNG written by hand (Pillow writes 16-bit grey only): ``color_type`` 0 grey, 2 RGB."""
    height, width = values.shape[:2]
    raw = b"".join(b"\x00" + values[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0))
    trns = chunk(b"tRNS", struct.pack(">H", transparent)) if transparent is not None else b""
    return b"\x89PNG\r\n\x1a\n" + header + trns + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_16_bit_grey_gradient_is_scaled_not_clipped(tmp_path):
    """The probe: a 0–65535 gradient read as 0–255 in order (Pillow's convert clips 99.6 % of it to 255)."""
    gradient = np.linspace(0, 65535, 512).astype(np.uint16).reshape(1, 512)
    (tmp_path / "wide.png").write_bytes(_png16(gradient, color_type=0))
    grey = read_image(tmp_path / "wide.png", mode="L")[0, :, 0].astype(int)
    assert np.abs(grey - np.rint(gradient[0] / 257.0)).max() == 0
    assert grey[0] == 0 and grey[-1] == 255 and (np.diff(grey) >= 0).all()
    assert (grey == 255).mean() < 0.01
    rgb = read_image(tmp_path / "wide.png")  # RGB: the same grey in every channel
    assert np.array_equal(rgb[0, :, 0], grey) and np.array_equal(rgb[0, :, 2], grey)


def test_16_bit_grey_written_by_pillow_and_tiff_are_scaled(tmp_path):
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "pillow.png")
    Image.fromarray(values).save(tmp_path / "pillow.tif")
    for name in ("pillow.png", "pillow.tif"):
        assert read_image(tmp_path / name, mode="L")[0, :, 0].tolist() == [0, 100, 255]


def test_16_bit_grey_transparent_value_still_gets_the_background(tmp_path):
    values = np.array([[1000, 65535]], dtype=np.uint16)
    (tmp_path / "trns.png").write_bytes(_png16(values, color_type=0, transparent=1000))
    pixels = read_image(tmp_path / "trns.png", background="black")
    assert pixels[0, 0].tolist() == [0, 0, 0] and pixels[0, 1].tolist() == [255, 255, 255]
    assert read_image(tmp_path / "trns.png", background="white")[0, 0].tolist() == [255, 255, 255]


def test_16_bit_rgb_keeps_its_colours(tmp_path):
    values = (np.arange(12).reshape(2, 2, 3) * 5000).astype(np.uint16)
    (tmp_path / "rgb48.png").write_bytes(_png16(values, color_type=2))
    pixels = read_image(io.BytesIO((tmp_path / "rgb48.png").read_bytes())).astype(int)
    assert np.abs(pixels - values / 257.0).max() <= 1


def test_8_bit_images_read_exactly_as_before(tmp_path):
    pixels = _stored_pixels()
    Image.fromarray(pixels).save(tmp_path / "plain.png")
    assert np.array_equal(read_image(tmp_path / "plain.png"), pixels)
    Image.fromarray(pixels[..., 0]).save(tmp_path / "grey.png")
    assert np.array_equal(read_image(tmp_path / "grey.png", mode="L")[..., 0], pixels[..., 0])
