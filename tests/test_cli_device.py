"""``--device``, ``--precision`` and ``--workers`` on the command line: a device that is not there (or a precision
it lacks) ends the command with one line and a non-zero exit code, before anything loads; a CPU run works."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from asymret.cli import app
from asymret.core.manifest import read_manifest

runner = CliRunner()


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def _one_line_failure(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


@pytest.mark.parametrize("command", [
    ["embed", "--model", "no-model"],
    ["train-encoder", "--arch", "convnet-xs", "--out", "m"],
    ["train-query", "--method", "distill-cos", "-g", "g", "--out", "q"],
    ["fit-transform", "-g", "g", "-q", "q", "-o", "t"],
    ["build-index", "-q", "q", "-o", "i"],
    ["upgrade-query", "-q", "q", "-t", "t", "-o", "i", "--transforms-out", "t2"],
    ["search", "-i", "i", "-q", "q", "image.png"],
    ["evaluate", "-i", "i", "-q", "q"],
    ["serve", "-i", "i", "-q", "q"],
    ["run", "glyphs-quick"],
    ["demo", "--profile", "tiny"],
    ["compare", "--profile", "tiny"],
    ["rerank-train", "--config", "glyphs-quick", "--rerank", "ames", "--out", "o"],
    ["evaluate", "--config", "glyphs-quick", "--rerank", "maxsim"],
])
def test_a_missing_gpu_is_one_line(no_gpu, tmp_path, command):
    line = _one_line_failure(*command, "--device", "cuda:1")
    assert "device 'cuda:1' is not available" in line and "available: cpu" in line


def test_fp16_on_the_cpu_is_one_line(tmp_path):
    line = _one_line_failure("embed", "--model", tmp_path / "m", "--device", "cpu", "--precision", "fp16")
    assert "precision fp16 needs a CUDA device" in line


def test_embed_on_cpu_with_workers_and_bf16(tmp_path):
    from asymret.encoders import create_encoder

    rng = np.random.default_rng(0)
    for label in range(2):
        (tmp_path / "data" / f"c{label}").mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (30 + i, 28, 3), dtype=np.uint8)).save(tmp_path / "data" / f"c{label}" / f"{i}.png")
    create_encoder("convnet-xs", embedding_dim=8, seed=0, name="m").save(tmp_path / "m")
    result = runner.invoke(app, [str(a) for a in ("embed", "--model", tmp_path / "m", "--dataset", "folder", "--root", tmp_path / "data",
                                                  "--store", tmp_path / "store", "--device", "cpu", "--precision", "bf16",
                                                  "--workers", "2")])
    assert result.exit_code == 0, result.output
    manifests = list((tmp_path / "store").glob("*-embedding/*/manifest.json"))
    assert len(manifests) == 1 and read_manifest(manifests[0].parent)["precision"] == "bf16"
