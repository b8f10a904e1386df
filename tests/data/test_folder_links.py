"""Folder loading follows no symlink loop (issue 23, item 5): each real file once, and what was skipped is said."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

from asymret.data import load_image_folder


def _image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), value, dtype=np.uint8)).save(path)


def test_a_link_to_its_own_folder_lists_each_file_once(tmp_path, caplog):
    """The probe: ``ln -s . root/cls/self`` turned 2 files into 82 items."""
    _image(tmp_path / "cls" / "a.png", 10)
    _image(tmp_path / "cls" / "b.png", 20)
    os.symlink(".", tmp_path / "cls" / "self")
    with caplog.at_level(logging.WARNING, logger="asymret.data.folder"):
        data = load_image_folder(tmp_path)
    assert sorted(data.ids.tolist()) == ["cls/a.png", "cls/b.png"]
    assert "symlinked folders already walked" in caplog.text and "cls/self" in caplog.text


def test_links_back_to_the_root_or_another_class_are_not_walked_again(tmp_path, caplog):
    _image(tmp_path / "cats" / "c.png", 10)
    _image(tmp_path / "dogs" / "d.png", 20)
    os.symlink("..", tmp_path / "cats" / "up")                # back to the root: would relist every class
    os.symlink("../dogs", tmp_path / "cats" / "dogs-too")     # into another class already walked (or to be)
    with caplog.at_level(logging.WARNING, logger="asymret.data.folder"):
        data = load_image_folder(tmp_path)
    assert sorted(data.ids.tolist()) == ["cats/c.png", "dogs/d.png"]
    assert data.labels[data.ids.tolist().index("dogs/d.png")] == data.class_names.index("dogs")


def test_a_linked_folder_outside_the_root_is_followed_once(tmp_path):
    """Links are still followed (datasets are often assembled from links): only a second visit is skipped."""
    _image(tmp_path / "elsewhere" / "x.png", 30)
    root = tmp_path / "root"
    (root / "cls").mkdir(parents=True)
    os.symlink(tmp_path / "elsewhere", root / "cls" / "linked")
    os.symlink(tmp_path / "elsewhere", root / "cls" / "linked-again")
    data = load_image_folder(root)
    assert data.ids.tolist() == ["cls/linked/x.png"]
    assert data.load(0)[0, 0, 0] == 30


def test_second_paths_to_one_file_and_broken_links_are_skipped_and_said(tmp_path, caplog):
    _image(tmp_path / "cls" / "real.png", 40)
    os.symlink("real.png", tmp_path / "cls" / "alias.png")            # sorted first: the alias is the one kept
    os.link(tmp_path / "cls" / "real.png", tmp_path / "cls" / "zz-hard.png")
    os.symlink("missing.png", tmp_path / "cls" / "broken.png")
    with caplog.at_level(logging.WARNING, logger="asymret.data.folder"):
        data = load_image_folder(tmp_path)
    assert data.ids.tolist() == ["cls/alias.png"]
    assert "skipped 2 further paths to image files already listed" in caplog.text
    assert "real.png" in caplog.text and "zz-hard.png" in caplog.text
    assert "skipped 1 broken symlinks: cls/broken.png" in caplog.text


def test_split_layout_with_loops_keeps_every_split(tmp_path):
    _image(tmp_path / "train" / "a" / "1.png", 10)
    _image(tmp_path / "test" / "b" / "2.png", 20)
    os.symlink("../../train", tmp_path / "test" / "b" / "loop")
    data = load_image_folder(tmp_path)
    assert sorted(zip(data.splits.tolist(), data.ids.tolist())) == [("test", "test/b/2.png"), ("train", "train/a/1.png")]


def test_a_plain_tree_loads_as_before_and_says_nothing(tmp_path, caplog):
    for cls, count in (("a", 2), ("b", 3)):
        for i in range(count):
            _image(tmp_path / cls / "sub" / f"{i}.png", i)
    with caplog.at_level(logging.WARNING, logger="asymret.data.folder"):
        data = load_image_folder(tmp_path)
    assert len(data) == 5 and "skipped" not in caplog.text
