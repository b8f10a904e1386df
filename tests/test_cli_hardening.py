"""The command line's smaller hardening (issue 23, item 10): --version, a missing --root said in the flag's words, an
index of 0 items refused at build time, evaluate never printing nan, a refused checkpoint without torch's advice."""
from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from asymret.cli.testing import invoke, fails_cleanly
from asymret.core.version import __version__
from asymret.encoders import create_encoder
from asymret.index import create_index



def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"asymret {__version__}"


def test_a_folder_dataset_without_root_says_so_in_the_flags_words(tmp_path):
    model = _query_model(tmp_path)
    message = fails_cleanly("embed", "--model", model, "--dataset", "folder", "--store", tmp_path / "s")
    assert "--dataset folder needs --root PATH (the dataset folder)" in message and "root=" not in message
    assert "--dataset csv needs --root PATH (the CSV file)" in fails_cleanly(
        "embed", "--model", model, "--dataset", "csv", "--store", tmp_path / "s")
    assert "--dataset folder:class-half needs --root" in fails_cleanly(
        "embed", "--model", model, "--dataset", "folder:class-half", "--store", tmp_path / "s")


def _query_model(tmp_path):
    create_encoder("convnet-xs", embedding_dim=8, name="query").save(tmp_path / "query")
    return tmp_path / "query"


def test_an_index_of_0_items_is_refused_at_build_time(tmp_path):
    """The probe: every gallery image unreadable built an empty index with exit 0."""
    folder = tmp_path / "data" / "cls"
    folder.mkdir(parents=True)
    for i in range(3):
        (folder / f"{i}.png").write_bytes(b"not a png")
    message = fails_cleanly("build-index", "-q", _query_model(tmp_path), "-o", tmp_path / "idx", "--dataset", "folder",
                            "--root", tmp_path / "data", "--store", tmp_path / "store")
    assert "refusing to build an index of 0 items" in message
    assert not (tmp_path / "idx" / "manifest.json").exists()


def test_evaluate_refuses_an_empty_index_instead_of_printing_nan(tmp_path):
    query = _query_model(tmp_path)
    folder = tmp_path / "data" / "cls"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(folder / "0.png")
    from asymret.encoders import load_encoder

    create_index("faiss:Flat", load_encoder(query).space()).save(tmp_path / "idx")  # an empty index from the API
    message = fails_cleanly("evaluate", "-i", tmp_path / "idx", "-q", query, "--dataset", "folder", "--root",
                            tmp_path / "data", "--store", tmp_path / "store")
    assert "holds no items" in message and "nan" not in message.lower()


class _Evil:
    def __reduce__(self):
        return os.system, ("echo pwned > /dev/null",)


def test_a_malicious_checkpoint_is_refused_in_one_line_without_torchs_advice(tmp_path):
    query = _query_model(tmp_path)
    torch.save({"config": {}, "x": _Evil()}, query / "encoder.pt")
    (tmp_path / "data" / "cls").mkdir(parents=True)
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "data" / "cls" / "0.png")
    message = fails_cleanly("embed", "--model", query, "--dataset", "folder", "--root", tmp_path / "data",
                            "--store", tmp_path / "store")
    assert "encoder.pt is refused" in message
    assert "weights_only" not in message and "trusted source" not in message
