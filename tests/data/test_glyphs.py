"""The glyph benchmark: coverage check, class-disjoint split, determinism, cache — on a few characters."""
from __future__ import annotations

import numpy as np
import pytest

from asymret.data import glyphs as G
from asymret.data.glyphs import DEFAULT_FACES, gb2312_level1, load_glyphs

CHARS = "啊阿埃挨哎唉哀皑癌蔼"  # the first ten GB2312 level-1 characters


def _installed(faces) -> bool:
    try:
        for face in faces:
            G.find_face(face)
    except FileNotFoundError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _installed(DEFAULT_FACES[:3]), reason="CJK fonts not installed (scripts/setup.sh installs them)")
FACES = DEFAULT_FACES[:3]


def test_gb2312_level1_is_the_standard_list():
    characters = gb2312_level1()
    assert len(characters) == 3755 and len(set(characters)) == 3755
    assert "".join(characters[:10]) == CHARS and characters[-1] == "座"


def test_builds_a_class_disjoint_split_deterministically(tmp_path):
    data = load_glyphs(tmp_path, size=32, faces=FACES, characters=CHARS)
    assert len(data) == len(CHARS) * len(FACES)
    images = data.source.images
    assert images.shape == (30, 32, 32, 1) and images.dtype == np.uint8
    assert images.max() == 255 and (images.reshape(30, -1).mean(axis=1) > 5).all()  # ink on every image
    train, test = data.select(split="train"), data.select(split="test")
    assert len(train) == 15 and len(test) == 15
    assert not set(train.labels) & set(test.labels)  # no character on both sides
    assert set(data.select(role="query").ids) == set(test.ids)
    assert len(set(data.ids)) == len(data)
    # every class has one image per face
    assert (np.bincount(data.labels) == len(FACES)).all()
    again = load_glyphs(tmp_path / "other", size=32, faces=FACES, characters=CHARS)
    np.testing.assert_array_equal(again.source.images, images)
    assert again.ids.tolist() == data.ids.tolist() and again.splits.tolist() == data.splits.tolist()


def test_faces_draw_a_character_differently(tmp_path):
    data = load_glyphs(tmp_path, size=32, faces=FACES, characters=CHARS[:2])
    first = data.source.images[:3, :, :, 0].astype(int)
    assert np.abs(first[0] - first[2]).mean() > 5  # Noto Sans vs Noto Serif: not the same pixels


def test_a_character_missing_from_one_face_is_dropped(tmp_path, monkeypatch):
    real_cmap = G._cmap

    def cmap_without(path, number):
        codes = real_cmap(path, number)
        return codes - {ord("阿")} if number == G.find_face(FACES[1])[1] and path == G.find_face(FACES[1])[0] else codes

    monkeypatch.setattr(G, "_cmap", cmap_without)
    data = load_glyphs(tmp_path, size=32, faces=FACES, characters=CHARS[:4])
    assert "阿" not in data.class_names and len(data.class_names) == 3
    # a symbol no CJK face has is dropped by the real cmap check too
    monkeypatch.setattr(G, "_cmap", real_cmap)
    assert "\U0001F600" not in load_glyphs(tmp_path, size=32, faces=FACES, characters=CHARS[:3] + "\U0001F600").class_names


def test_the_second_load_reads_the_cache(tmp_path, monkeypatch):
    load_glyphs(tmp_path, size=32, faces=FACES, characters=CHARS[:4])
    monkeypatch.setattr(G, "_build", lambda *args, **kwargs: pytest.fail("rebuilt although cached"))
    assert len(load_glyphs(tmp_path, size=32, faces=FACES, characters=CHARS[:4])) == 12
    with pytest.raises(pytest.fail.Exception, match="rebuilt"):
        load_glyphs(tmp_path, size=40, faces=FACES, characters=CHARS[:4])  # another size: must rebuild


def test_a_missing_font_names_its_package():
    with pytest.raises(FileNotFoundError, match="apt-get install fonts-nope"):
        G.find_face(G.GlyphFace("No Such Font", "Regular", "fonts-nope"))
