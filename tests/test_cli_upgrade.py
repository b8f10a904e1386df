"""``asymret upgrade-query`` with the new query model exported to ONNX (the same top-k as with its torch original),
an ONNX model refused where a ψ needs the classifier head, and a gallery of 0 readable images refused in one line.

A folder split by classes (``folder:class-half``): the ψ's are fitted on the train half, the test half is the gallery.
The models are tiny and barely trained: these tests check the plumbing, not retrieval quality.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from asymret.cli.testing import ok, fails_cleanly
from asymret.data import load_dataset
from asymret.encoders import create_encoder, train_encoder
from asymret.training import TrainConfig

CLASSES, PER_CLASS, SIZE, DIM = 4, 10, 28, 8




def write_stripes(root: Path, unreadable_classes: tuple[int, ...] = ()) -> Path:
    """``CLASSES`` folders of striped 28x28 grey images (the stripes' period and angle name the class); the classes in
    ``unreadable_classes`` hold files that are no image."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    for label in range(CLASSES):
        folder = root / f"class{label}"
        folder.mkdir(parents=True)
        for i in range(PER_CLASS):
            if label in unreadable_classes:
                (folder / f"{i:02d}.png").write_bytes(b"not a png")
                continue
            angle = label * np.pi / CLASSES + rng.normal(0, 0.1)
            wave = np.sin((np.cos(angle) * xx + np.sin(angle) * yy) / (1.5 + label) + rng.uniform(0, 6.3))
            pixels = np.clip(128 + 100 * wave + rng.normal(0, 20, wave.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "L").save(folder / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A gallery model, query v1 (the ψ's target) and query v2 (the upgrade), trained briefly on the train half."""
    work = tmp_path_factory.mktemp("upgrade-models")
    train = load_dataset("folder", str(write_stripes(work / "data")), split_by="class-half").select(split="train")
    paths = {}
    for name, arch, seed in (("gallery", "convnet-s", 1), ("v1", "convnet-xs", 2), ("v2", "convnet-xs", 3)):
        model = create_encoder(arch, embedding_dim=DIM, name=name, seed=seed)
        train_encoder(model, train, TrainConfig(epochs=2, batch_size=16, seed=seed))
        paths[name] = model.save(work / name)
    return paths


def _args(root: Path, store: Path) -> list:
    return ["--dataset", "folder:class-half", "--root", root, "--store", store]


def test_upgrade_query_with_an_exported_onnx_model_gives_the_torch_top_k(models, tmp_path):
    data = _args(write_stripes(tmp_path / "data"), tmp_path / "store")
    ok("embed", "-m", models["gallery"], *data, "--split", "train")
    ok("embed", "-m", models["gallery"], *data, "--split", "test")
    # a closed-form ψ (orthogonal Procrustes): nearly equal query embeddings give a nearly equal ψ
    ok("fit-transform", "-g", models["gallery"], "-q", models["v1"], "-o", tmp_path / "psi", "--kind", "procrustes",
       "--losses", "similarity=1", *data, "--split", "train")
    ok("export-query", "-q", models["v2"], "-o", tmp_path / "v2-onnx", "--size", "8", *data[:-2])
    for form, model in (("torch", models["v2"]), ("onnx", tmp_path / "v2-onnx")):
        output = ok("upgrade-query", "-q", model, "-t", tmp_path / "psi", "-o", tmp_path / f"index-{form}",
                    "--transforms-out", tmp_path / f"psi-{form}", *data)
        assert f"indexed {CLASSES // 2 * PER_CLASS} gallery images from the store" in " ".join(output.split())
    assert "(onnx float32)" in output  # the exported model ran, not a torch one found beside it
    images = [tmp_path / "data" / f"class{label}" / "04.png" for label in (2, 3)]
    by_torch, by_onnx = (json.loads(ok("search", "-i", tmp_path / f"index-{form}", "-q", models["v2"], "-k", "5", "--json", *images))
                         for form in ("torch", "onnx"))
    for torch_hits, onnx_hits in zip(by_torch, by_onnx):
        assert [r["id"] for r in onnx_hits["results"]] == [r["id"] for r in torch_hits["results"]]
        np.testing.assert_allclose([r["score"] for r in onnx_hits["results"]], [r["score"] for r in torch_hits["results"]], atol=1e-4)
    # an exported model has no classifier: a ψ fitted with the dual-ce loss cannot be refitted to it
    ok("fit-transform", "-g", models["gallery"], "-q", models["v1"], "-o", tmp_path / "psi-ce", "--epochs", "1",
       "--losses", "similarity=1,dual-ce=0.1", *data, "--split", "train")
    message = fails_cleanly("upgrade-query", "-q", tmp_path / "v2-onnx", "-t", tmp_path / "psi-ce", "-o", tmp_path / "index-ce",
                            "--transforms-out", tmp_path / "psi-ce-v2", *data)
    assert "dual-ce loss, which needs the query model's classifier head, and an exported ONNX model" in message
    assert not (tmp_path / "index-ce").exists()


def test_upgrade_query_refuses_a_gallery_of_0_readable_images(models, tmp_path):
    """The test half's images are all unreadable: the stored gallery holds 0 vectors, and an index of them is refused."""
    data = _args(write_stripes(tmp_path / "data", unreadable_classes=(2, 3)), tmp_path / "store")
    ok("embed", "-m", models["gallery"], *data, "--split", "train")
    assert f"{CLASSES // 2 * PER_CLASS} unreadable images skipped" in " ".join(ok("embed", "-m", models["gallery"], *data, "--split", "test").split())
    ok("fit-transform", "-g", models["gallery"], "-q", models["v1"], "-o", tmp_path / "psi", "--kind", "procrustes",
       "--losses", "similarity=1", *data, "--split", "train")
    message = fails_cleanly("upgrade-query", "-q", models["v2"], "-t", tmp_path / "psi", "-o", tmp_path / "index",
                            "--transforms-out", tmp_path / "psi-v2", *data)
    assert "refusing to build an index of 0 items" in message
    assert not (tmp_path / "index").exists() and not (tmp_path / "psi-v2").exists()
