"""Errors that name the file (issue 23, item 10): a truncated or foreign checkpoint, a checkpoint refused for holding
code (without torch's advice to load it anyway), a full disk."""
from __future__ import annotations

import errno
import os

import pytest
import torch

from asymret.core.manifest import CheckpointError, atomic_write_bytes, atomic_write_json, load_checkpoint
from asymret.encoders import create_encoder, load_encoder


class _Evil:
    """Unpickling this runs ``os.system``: what a malicious checkpoint holds."""

    def __reduce__(self):
        return os.system, ("echo pwned > /dev/null",)


def _saved_encoder(tmp_path):
    create_encoder("convnet-xs", embedding_dim=8).save(tmp_path / "enc")
    return tmp_path / "enc", tmp_path / "enc" / "encoder.pt"


def test_a_truncated_encoder_checkpoint_names_the_file(tmp_path):
    folder, path = _saved_encoder(tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or not a torch checkpoint") as error:
        load_encoder(folder)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=str(path)):
        load_encoder(folder)
    path.write_bytes(b"not a checkpoint at all " * 4)
    with pytest.raises(CheckpointError, match=str(path)):
        load_encoder(folder)


def test_a_checkpoint_holding_code_is_refused_without_advice_to_run_it(tmp_path):
    folder, path = _saved_encoder(tmp_path)
    torch.save({"config": {}, "state_dict": {}, "payload": _Evil()}, path)
    with pytest.raises(CheckpointError) as error:
        load_encoder(folder)
    message = str(error.value)
    assert str(path) in message and "refused" in message and "system" in message
    assert "weights_only" not in message and "False" not in message and "trusted source" not in message
    assert error.value.__cause__ is None and error.value.__suppress_context__  # torch's text not chained either


def test_load_checkpoint_reads_tensors_and_plain_data(tmp_path):
    torch.save({"w": torch.arange(3), "name": "x", "sizes": [1, 2]}, tmp_path / "ok.pt")
    loaded = load_checkpoint(tmp_path / "ok.pt")
    assert loaded["name"] == "x" and loaded["w"].tolist() == [0, 1, 2]
    with pytest.raises(FileNotFoundError, match="missing checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "store" / "shard_00003.npy"
    atomic_write_bytes(target, b"old contents")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as error:
        atomic_write_bytes(target, b"x" * 5000)
    assert error.value.errno == errno.ENOSPC
    assert str(target) in str(error.value) and "no space left" in str(error.value) and "5,000 bytes" in str(error.value)
    assert target.read_bytes() == b"old contents"
    assert sorted(p.name for p in target.parent.iterdir()) == ["shard_00003.npy"]  # no temporary file left
    with pytest.raises(OSError, match="manifest.json"):
        atomic_write_json(tmp_path / "store" / "manifest.json", {"a": 1})
