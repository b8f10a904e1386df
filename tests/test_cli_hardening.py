"""The command line's smaller hardening (issue 23, item 10): --version, a missing --root said in the flag's words, an
index of 0 items refused at build time, evaluate never printing nan, a refused checkpoint without torch's advice, a
full disk one line naming the file; and item 4's probe as it was run, through ``asymret embed``: an image edited in
place is re-embedded, the rest reused."""
from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from asymret.cli.testing import fails_cleanly, invoke, ok
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


def test_embed_again_after_an_image_is_edited_in_place_re_embeds_it(tmp_path):
    """The probe: it printed '1 reused' and kept the old vector."""
    query = _query_model(tmp_path)
    folder = tmp_path / "data" / "cls"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / f"{i}.png")
        os.utime(folder / f"{i}.png", (1_700_000_000, 1_700_000_000))
    embed = ("embed", "--model", query, "--dataset", "folder", "--root", tmp_path / "data", "--store", tmp_path / "store")
    assert "1 shards computed, 0 reused" in " ".join(ok(*embed).split())
    assert "0 shards computed, 1 reused, 0 unreadable" in " ".join(ok(*embed).split())  # nothing changed: nothing read
    Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / "1.png")  # other pixels, same name
    assert "1 changed images re-embedded" in " ".join(ok(*embed).split())
    assert "0 shards computed, 1 reused, 0 unreadable" in " ".join(ok(*embed).split())


def test_a_full_disk_during_embed_is_one_line_naming_the_file(tmp_path, monkeypatch):
    import errno

    query = _query_model(tmp_path)
    (tmp_path / "data" / "cls").mkdir(parents=True)
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "data" / "cls" / "0.png")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    message = fails_cleanly("embed", "--model", query, "--dataset", "folder", "--root", tmp_path / "data",
                            "--store", tmp_path / "store")
    assert "no space left on the device" in message and "--debug" not in message  # one line, no traceback offered
    assert f"cannot write {tmp_path / 'store'}".replace(" ", "") in message.replace(" ", "")  # the file is named (however wrapped)
