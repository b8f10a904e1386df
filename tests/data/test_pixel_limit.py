"""The library's pixel limit, ``ASYMRET_MAX_IMAGE_PIXELS`` (issue 23, item 9): it lowers the limit, refused from the
header with the variable named — and raises it past Pillow's own (89.5 M, its error at 179 M)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from asymret.data.dataset import ImageTooLargeError, read_image


def _png(side: int = 28) -> io.BytesIO:
    buffer = io.BytesIO()
    Image.fromarray(np.full((side, side), 9, np.uint8)).save(buffer, format="PNG")
    buffer.seek(0)
    return buffer


def test_the_variable_lowers_the_limit_and_is_named_in_the_refusal(monkeypatch):
    monkeypatch.setenv("ASYMRET_MAX_IMAGE_PIXELS", "700")  # 28 × 28 = 784 pixels
    with pytest.raises(ImageTooLargeError, match=r"784 pixels is over the limit of 700 .*ASYMRET_MAX_IMAGE_PIXELS"):
        read_image(_png(), name="q.png")
    monkeypatch.setenv("ASYMRET_MAX_IMAGE_PIXELS", "784")  # exactly the limit: read
    assert read_image(_png(), name="q.png").shape == (28, 28, 3)


@pytest.mark.parametrize("pillow_limit", [300, 500])  # 784 pixels: past twice Pillow's limit (its error), past once (its warning)
def test_the_variable_raises_the_limit_past_pillows_own(monkeypatch, pillow_limit):
    monkeypatch.setenv("ASYMRET_MAX_IMAGE_PIXELS", "1000")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)  # stands in for Pillow's 89.5 M
    assert read_image(_png(), name="q.png").shape == (28, 28, 3)
