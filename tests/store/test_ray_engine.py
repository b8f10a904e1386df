"""The Ray Data engine on a local Ray cluster started here (``ray start --head``, 2 CPUs, joined by address):
the same files as the local engine, bit for bit (unreadable images reported the same way), and a killed job
resumed at shard granularity from the command line."""
from __future__ import annotations

import filecmp
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from asymret.cli import app
from asymret.encoders import create_encoder
from asymret.store.embeddings import EmbeddingStore

RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray cluster of 2 CPUs started as a user would (``ray start --head``), stopped afterwards."""
    import ray

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # a throw-away cluster on loopback: no token authentication (a real cluster's token comes from its env)
    settings = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    env = dict(os.environ)
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
                   check=True, env=env, capture_output=True, timeout=120)
    address = f"127.0.0.1:{port}"
    yield address
    ray.shutdown()
    subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _same_files(left: Path, right: Path) -> None:
    names = sorted(p.name for p in left.iterdir())
    assert names == sorted(p.name for p in right.iterdir())
    mismatched = [name for name in names if not filecmp.cmp(left / name, right / name, shallow=False)]
    assert not mismatched, f"files differ: {mismatched}"


def test_the_ray_engine_writes_the_local_engines_files_bit_for_bit(ray_address, tmp_path, image_dir_dataset):
    encoder = create_encoder("convnet-xs", embedding_dim=8, seed=3)
    data = image_dir_dataset  # PNG files of mixed sizes and a corrupt one; shards of 4 in batches of 3
    local = EmbeddingStore(tmp_path / "local", shard_size=4, batch_size=3)
    by_ray = EmbeddingStore(tmp_path / "ray", shard_size=4, batch_size=3)
    local_report = local.extract(encoder, data)
    ray_report = by_ray.extract(encoder, data, engine="ray", address=ray_address)
    assert ray_report == local_report and ray_report.failed_ids == ["broken"]
    _same_files(local.directory(encoder, data), by_ray.directory(encoder, data))
    images = EmbeddingStore.load(EmbeddingStore(tmp_path / "ray").directory(encoder, image_dir_dataset))
    assert "broken" not in images.ids.tolist() and len(images) == len(image_dir_dataset) - 1  # reported, skipped


def test_a_killed_ray_job_resumes_at_shard_granularity_from_the_cli(ray_address, tmp_path, monkeypatch, png_folder_writer):
    from asymret.data import load_dataset
    from asymret.encoders import load_encoder

    root = tmp_path / "images"
    png_folder_writer(root / "things", count=13)  # 13 images and a corrupt one: 4 shards of 4
    create_encoder("convnet-xs", embedding_dim=8, seed=5).save(tmp_path / "encoder")
    encoder, data = load_encoder(tmp_path / "encoder"), load_dataset("folder", root).select(split="test")
    written = []
    real_write = EmbeddingStore._write_shard

    def write_then_die(self, *args):
        if len(written) == 2:
            raise KeyboardInterrupt("killed after two shards")
        real_write(self, *args)
        written.append(args[1])

    monkeypatch.setattr(EmbeddingStore, "_write_shard", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        EmbeddingStore(tmp_path / "store", shard_size=4).extract(encoder, data, engine="ray", address=ray_address)
    monkeypatch.setattr(EmbeddingStore, "_write_shard", real_write)
    directory = EmbeddingStore(tmp_path / "store").directory(encoder, data)
    assert not (directory / "manifest.json").exists() and len(list(directory.glob("shard_*.json"))) == 2

    result = CliRunner().invoke(app, ["embed", "-m", str(tmp_path / "encoder"), "--dataset", "folder", "--root", str(root),
                                      "--split", "test", "--store", str(tmp_path / "store"), "--shard-size", "4",
                                      "--engine", "ray", "--address", ray_address])
    assert result.exit_code == 0, result.output
    assert "2 shards computed, 2 reused" in " ".join(result.output.split())
    local = EmbeddingStore(tmp_path / "local", shard_size=4)
    local.extract(encoder, data)
    _same_files(local.directory(encoder, data), directory)
