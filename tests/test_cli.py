"""The ``asymret`` command line end to end on a tiny image-folder dataset (in-process via typer's CliRunner).

A flat image folder puts every image in split "test", so models, transformations and the index of the main chain
are all trained/built on that split (``--split test``): this tests the plumbing, not generalisation.  Split
layouts (``train/`` + ``test/`` sub-folders, ``folder:class-half``) have their own test at the end.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from asymret.cli.testing import invoke, ok, fails_cleanly
from asymret.index import GalleryIndex

NUM_CLASSES, PER_CLASS, SIZE = 6, 20, 28
DIM = "16"

# ------------------------------------------------------------------------------------------------ helpers
def _pattern(label: int) -> np.ndarray:
    """A 28x28 float pattern in [0, 1] that identifies the class."""
    img = np.zeros((SIZE, SIZE), np.float32)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    if label == 0:
        img[:, ::4] = 1  # vertical stripes
    elif label == 1:
        img[::4, :] = 1  # horizontal stripes
    elif label == 2:
        img[5:23, 5:23] = 1  # filled square
    elif label == 3:
        img[np.abs(yy - xx) <= 1] = 1  # diagonal
    elif label == 4:
        img[11:17, :] = 1  # cross
        img[:, 11:17] = 1
    else:
        img[(yy - 14) ** 2 + (xx - 14) ** 2 < 60] = 1  # disc
    return img


def write_folder_dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for label in range(NUM_CLASSES):
        folder = root / f"class{label}"
        folder.mkdir(parents=True)
        for i in range(PER_CLASS):
            img = np.roll(_pattern(label), tuple(rng.integers(-2, 3, size=2)), axis=(0, 1))
            img = np.clip(img * rng.uniform(0.6, 1.0) + rng.normal(0, 0.1, img.shape), 0, 1)
            Image.fromarray((img * 255).astype(np.uint8), "L").save(folder / f"{i:02d}.png")
    return root





def metric_value(output: str, name: str) -> float:
    match = re.search(rf"{re.escape(name)}\s*│\s*([\d.]+)", output)
    assert match, f"no {name} row in:\n{output}"
    return float(match.group(1))


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return write_folder_dataset(tmp_path_factory.mktemp("cli-data") / "shapes")


@pytest.fixture(scope="module")
def built(tmp_path_factory, data_root) -> dict[str, Path]:
    """train query + 2 gallery models → embed → fit ψ per gallery model → build the ensemble index."""
    work = tmp_path_factory.mktemp("cli-work")
    data = ["--dataset", "folder", "--root", data_root, "--split", "test", "--store", work / "store"]
    paths = {name: work / name for name in ("query", "g_small", "g_medium", "psi_small", "psi_medium", "index")}
    train = ["--dim", DIM, "--epochs", "4", "--batch-size", "32", *data]
    ok("train-encoder", "--arch", "convnet-xs", "--out", paths["query"], "--seed", "0", *train)
    ok("train-encoder", "--arch", "convnet-s", "--out", paths["g_small"], "--seed", "1", *train)
    ok("train-encoder", "--arch", "convnet-m", "--out", paths["g_medium"], "--seed", "2", *train)
    for name in ("query", "g_small", "g_medium"):
        assert (paths[name] / "manifest.json").is_file()

    output = ok("embed", "--model", paths["query"], *data)
    assert "1 shards computed" in output
    output = ok("embed", "--model", paths["query"], *data)  # cached the second time
    assert "0 shards computed, 1 reused" in output

    # similarity-only ψ: on 120 images and few steps the default dual-ce term (through the barely trained query
    # model's head) keeps asymmetric recall near chance, which would hide a broken pipeline
    for g, psi in (("g_small", "psi_small"), ("g_medium", "psi_medium")):
        output = ok("fit-transform", "-g", paths[g], "-q", paths["query"], "-o", paths[psi], "--epochs", "100", "--hidden", "32", "--losses", "similarity=1", *data)
        assert "saved ψ" in output and (paths[psi] / "manifest.json").is_file()

    output = ok("build-index", "-q", paths["query"], "-o", paths["index"], "-g", paths["g_small"], "-g", paths["g_medium"],
                "-t", paths["psi_small"], "-t", paths["psi_medium"], *data)
    assert f"indexed {NUM_CLASSES * PER_CLASS} gallery images" in output
    return {**paths, "data": data_root, "store": work / "store"}


def _data_args(built):
    return ["--dataset", "folder", "--root", built["data"], "--split", "test", "--store", built["store"]]


# ------------------------------------------------------------------------------------------------ the chain
def test_entry_point_help():
    script = Path(sys.executable).parent / "asymret"
    assert script.is_file(), f"console script missing at {script}"
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    for command in ("train-encoder", "embed", "fit-transform", "build-index", "search", "evaluate", "demo"):
        assert command in proc.stdout


def test_models_lists_architectures():
    output = ok("models")
    assert "convnet-xs" in output and "convnet-m" in output


def test_index_is_an_ensemble_index(built):
    index = GalleryIndex.load(built["index"])
    assert len(index) == NUM_CLASSES * PER_CLASS
    assert index.space.dim == int(DIM)
    assert np.ptp(index.uncertainty) > 0  # two gallery models disagree somewhere


def test_search_table_and_json(built):
    queries = [built["data"] / "class0" / "00.png", built["data"] / "class3" / "05.png"]
    output = ok("search", "-i", built["index"], "-q", built["query"], "-k", "3", *queries)
    assert "gallery id" in output
    # one table per query, titled with its path (rich may fold a long title: whitespace removed), in the order given
    squeezed = "".join(output.split())
    titles = [squeezed.find(str(q)) for q in queries]
    assert min(titles) >= 0 and titles == sorted(titles), titles
    # ... holding the search's results: the same ids and scores, rank by rank, as --json
    listed = json.loads(invoke("search", "-i", built["index"], "-q", built["query"], "-k", "3", "--json", *queries).stdout)
    rows = re.findall(r"│\s*(\d+)\s*│\s*(\S+)\s*│\s*(-?\d+\.\d{4})\s*│", output)
    assert rows == [(str(rank), r["id"], f"{r['score']:.4f}") for entry in listed for rank, r in enumerate(entry["results"], 1)]
    assert len(rows) == 3 * len(queries)

    result = invoke("search", "-i", built["index"], "-q", built["query"], "-k", "4", "--json", *queries)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [entry["query"] for entry in payload] == [str(q) for q in queries]
    dataset_ids = {f"class{c}/{i:02d}.png" for c in range(NUM_CLASSES) for i in range(PER_CLASS)}
    for entry in payload:
        assert len(entry["results"]) == 4
        ids = [r["id"] for r in entry["results"]]
        scores = [r["score"] for r in entry["results"]]
        assert set(ids) <= dataset_ids and len(set(ids)) == 4
        assert scores == sorted(scores, reverse=True)


def test_search_rejects_uncertain_gallery_items(built):
    index = GalleryIndex.load(built["index"])
    n_drop = len(index) // 2
    rejected = set(index.ids[np.argsort(-index.uncertainty, kind="stable")[:n_drop]].tolist())
    assert len(rejected) == n_drop
    queries = [built["data"] / f"class{c}" / "03.png" for c in range(NUM_CLASSES)]
    k = 10
    plain = json.loads(invoke("search", "-i", built["index"], "-q", built["query"], "-k", k, "--json", *queries).stdout)
    result = invoke("search", "-i", built["index"], "-q", built["query"], "-k", k, "--json", "--reject-fraction", "0.5", *queries)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert len(payload) == len(queries)
    for entry in payload:
        ids = {r["id"] for r in entry["results"]}
        assert len(ids) == k  # still k results, all among the kept half
        assert not ids & rejected
    # without rejection some of those uncertain items are found (else the check above would prove nothing)
    assert any({r["id"] for r in entry["results"]} & rejected for entry in plain)


def test_evaluate_prints_metrics(built):
    output = ok("evaluate", "-i", built["index"], "-q", built["query"], *_data_args(built))
    assert metric_value(output, "recall@1") > 100 / NUM_CLASSES + 15  # well above chance: it learned something
    rejected = ok("evaluate", "-i", built["index"], "-q", built["query"], "--reject-fraction", "0.5", *_data_args(built))
    # the printed numbers are the measurement of the index's gallery (and, with rejection, of the gallery without
    # its most uncertain half): compare with a reference of exact retrieval over the same vectors
    from asymret.data import load_dataset
    from asymret.encoders import load_encoder
    from asymret.eval.metrics import retrieval_metrics
    from asymret.store import EmbeddingStore

    index = GalleryIndex.load(built["index"])
    data = load_dataset("folder", built["data"]).select(split="test", role="query")
    queries = EmbeddingStore(built["store"]).get(load_encoder(built["query"]), data)
    labels = dict(zip(data.ids.tolist(), data.labels.tolist()))
    gallery_labels = [labels[i] for i in index.ids.tolist()]
    vectors = index.faiss_index.reconstruct_n(0, len(index))
    kept = ~index.rejected_mask(0.5)
    want = retrieval_metrics(queries.vectors, queries.labels, vectors, gallery_labels, (1, 2, 4, 8), queries.ids, index.ids, kept)
    everything = retrieval_metrics(queries.vectors, queries.labels, vectors, gallery_labels, (1, 2, 4, 8), queries.ids, index.ids)
    for name in ("recall@1", "recall@2", "recall@4", "recall@8", "map@r"):
        assert metric_value(output, name) == pytest.approx(100 * everything[name], abs=0.006), name
    for name in ("recall@1", "map@r"):
        assert metric_value(rejected, name) == pytest.approx(100 * want[name], abs=0.006)
    assert want["map@r"] != pytest.approx(everything["map@r"])  # rejection changed what was measured


# ------------------------------------------------------------------------------------------------ clear errors
def test_error_missing_dataset_root(tmp_path):
    missing = tmp_path / "no-such-folder"
    message = fails_cleanly("train-encoder", "--arch", "convnet-xs", "--out", tmp_path / "m", "--dataset", "folder",
                            "--root", missing, "--split", "test", "--store", tmp_path / "store")
    assert str(missing) in message and "missing" in message


def test_error_missing_model_folder(tmp_path, data_root):
    message = fails_cleanly("embed", "--model", tmp_path / "no-model", "--dataset", "folder", "--root", data_root,
                            "--store", tmp_path / "store")
    assert "cannot load encoder" in message and "no-model" in message


def test_error_gallery_model_transform_count_mismatch(tmp_path, data_root):
    message = fails_cleanly("build-index", "-q", tmp_path / "q", "-o", tmp_path / "index", "-g", tmp_path / "g1",
                            "-g", tmp_path / "g2", "-t", tmp_path / "t1", "--dataset", "folder", "--root", data_root)
    assert "2 --gallery-model but 1 --transform" in message


def test_error_unknown_architecture(tmp_path, data_root):
    message = fails_cleanly("train-encoder", "--arch", "convnet-zz", "--out", tmp_path / "m", "--dataset", "folder",
                            "--root", data_root, "--split", "test", "--store", tmp_path / "store")
    assert "unknown architecture 'convnet-zz'" in message and "convnet-xs" in message
    assert not (tmp_path / "m").exists()


def test_error_query_model_from_another_space(built, tmp_path):
    image = built["data"] / "class0" / "00.png"
    # the gallery model's raw embeddings are not in the index's (query model's) space
    message = fails_cleanly("search", "-i", built["index"], "-q", built["g_small"], image)
    assert "space" in message and "g_small" in message and "query" in message
    assert "dim 16, L2-normalised]" in message  # "name [fingerprint …]" printed in full, not eaten as rich markup
    message = fails_cleanly("evaluate", "-i", built["index"], "-q", built["g_medium"], *_data_args(built))
    assert "space" in message and "g_medium" in message
    # transformations fitted towards `query` cannot build an index for another query model
    message = fails_cleanly("build-index", "-q", built["g_small"], "-o", tmp_path / "index", "-g", built["g_small"],
                            "-g", built["g_medium"], "-t", built["psi_small"], "-t", built["psi_medium"], *_data_args(built))
    assert "space" in message and not (tmp_path / "index").exists()


def test_train_query_cli(built, tmp_path):
    """`train-query` gives a query encoder that lives in the gallery model's space: the gallery model's index accepts it."""
    out = tmp_path / "q-distilled"
    ok("train-query", "--method", "distill-cos", "-g", built["g_small"], "--out", out, "--epochs", "20", "--batch-size", "32", *_data_args(built))
    from asymret import load_encoder

    assert load_encoder(out).space().fingerprint == load_encoder(built["g_small"]).space().fingerprint
    index_dir = tmp_path / "g-index"
    ok("build-index", "-q", built["g_small"], "-o", index_dir, *_data_args(built))  # symmetric index of the gallery model
    distilled = ok("evaluate", "--index", index_dir, "--query-model", out, *_data_args(built))
    symmetric = ok("evaluate", "--index", index_dir, "--query-model", built["g_small"], *_data_args(built))
    # the distilled query model retrieves the gallery model's embeddings well above chance (1/6; 73 % measured),
    # though not as well as the gallery model itself (97 %)
    assert 100 / NUM_CLASSES + 25 < metric_value(distilled, "recall@1") < metric_value(symmetric, "recall@1")
    # one gallery model alone, no ψ: the distilled query model's index holds the gallery model's own embeddings
    alone = tmp_path / "g-alone"
    ok("build-index", "-q", out, "-g", built["g_small"], "-o", alone, *_data_args(built))
    same = ok("evaluate", "--index", alone, "--query-model", out, *_data_args(built))
    assert metric_value(same, "map@r") == metric_value(distilled, "map@r")
    fails_cleanly("train-query", "--method", "nope", "-g", built["g_small"], "--out", tmp_path / "x", *_data_args(built))


# ------------------------------------------------------------------------------------------------ folder splits
@pytest.mark.parametrize("layout", ["split-folders", "class-half"])
def test_train_on_the_train_split_of_an_image_folder(tmp_path, data_root, layout):
    """A folder with train/ and test/ sub-folders, or a flat folder split by classes, trains from the CLI."""
    import shutil

    if layout == "split-folders":
        root = tmp_path / "ds"
        for label in range(NUM_CLASSES):  # open set: classes 0-2 train, 3-5 test
            shutil.copytree(data_root / f"class{label}", root / ("train" if label < 3 else "test") / f"class{label}")
        kind = "folder"
    else:
        root, kind = data_root, "folder:class-half"
    store = tmp_path / "store"
    out = ok("train-encoder", "--arch", "convnet-xs", "--dim", DIM, "--epochs", "1", "--batch-size", "32",
             "--dataset", kind, "--root", root, "--split", "train", "--store", store, "--out", tmp_path / "model")
    assert f"trained on {3 * PER_CLASS} images of 3 classes" in out  # the train split only: 3 of the 6 classes
    out = ok("embed", "--model", tmp_path / "model", "--dataset", kind, "--root", root, "--split", "test", "--store", store)
    assert f"test: {3 * PER_CLASS} images" in out  # the other 3 classes


def test_upgrade_query_rebuilds_the_index_for_a_new_query_model(built, tmp_path):
    data = _data_args(built)
    v2 = tmp_path / "query-v2"
    ok("train-encoder", "--arch", "convnet-xs", "--out", v2, "--seed", "7", "--dim", DIM, "--epochs", "4", "--batch-size", "32", *data)
    out = ok("upgrade-query", "-q", v2, "-t", built["psi_small"], "-t", built["psi_medium"], "-o", tmp_path / "index-v2",
             "--transforms-out", tmp_path / "psi-v2", "--train-split", "test", *data)
    assert f"indexed {NUM_CLASSES * PER_CLASS} gallery images from the store" in " ".join(out.split())
    r1 = metric_value(ok("evaluate", "-i", tmp_path / "index-v2", "-q", v2, *data), "recall@1")
    assert r1 > 100 / NUM_CLASSES + 10  # well above chance
    # the old query model is refused by the new index, and the new one by the old index
    fails_cleanly("evaluate", "-i", tmp_path / "index-v2", "-q", built["query"], *data)
    fails_cleanly("evaluate", "-i", built["index"], "-q", v2, *data)


# ------------------------------------------------------------------------------------------------ bad input, one line
def _bad_argument_cases(built, tmp_path):
    data = _data_args(built)
    not_artifact = tmp_path / "not-an-artifact"
    not_artifact.mkdir(exist_ok=True)
    text_file = tmp_path / "notes.png"
    text_file.write_text("not an image")
    image = built["data"] / "class0" / "00.png"
    q, idx = built["query"], built["index"]
    return {
        "train-encoder unknown arch": (["train-encoder", "--arch", "convnet-xxl", "--out", tmp_path / "m", *data], "unknown architecture"),
        "train-encoder pretrained lie": (["train-encoder", "--arch", "convnet-xs", "--pretrained", "--out", tmp_path / "m", *data], "no pretrained weights"),
        "train-encoder zero epochs": (["train-encoder", "--arch", "convnet-xs", "--epochs", "0", "--out", tmp_path / "m", *data], "epochs"),
        "embed missing model": (["embed", "--model", tmp_path / "nope", *data], "nope"),
        "embed folder that is no artifact": (["embed", "--model", not_artifact, *data], "manifest.json"),
        "embed missing dataset root": (["embed", "--model", q, "--dataset", "folder", "--root", tmp_path / "none", "--store", tmp_path / "s"], "none"),
        "embed unknown dataset kind": (["embed", "--model", q, "--dataset", "imagenet", "--root", tmp_path], "unknown dataset kind"),
        "fit-transform unknown loss": (["fit-transform", "-g", built["g_small"], "-q", q, "-o", tmp_path / "p", "--losses", "simlarity=1", *data], "similarity"),
        "build-index foreign single model": (["build-index", "-q", q, "-g", built["g_small"], "-o", tmp_path / "i", *data], "another embedding space"),
        "build-index bad factory": (["build-index", "-q", q, "-o", tmp_path / "i", "--factory", "IVFxx", *data], "factory"),
        "search reject fraction out of range": (["search", "-i", idx, "-q", q, "--reject-fraction", "1.5", image], "reject-fraction"),
        "search k zero": (["search", "-i", idx, "-q", q, "-k", "0", image], "-k"),
        "search non-image only": (["search", "-i", idx, "-q", q, text_file], "no readable query image"),
        "search index that is no artifact": (["search", "-i", not_artifact, "-q", q, image], "manifest.json"),
        "evaluate foreign space": (["evaluate", "-i", idx, "-q", built["g_small"], *data], "another embedding space"),
        "train-query unknown method": (["train-query", "--method", "bkt", "-g", built["g_small"], "-o", tmp_path / "t", *data], "bct"),
        "upgrade-query ψ folder that is no artifact": (["upgrade-query", "-q", q, "-t", not_artifact, "-o", tmp_path / "u", "--transforms-out", tmp_path / "ut", "--train-split", "test", *data], "manifest.json"),
        "demo unknown profile": (["demo", "--profile", "huge", "--workdir", tmp_path / "w", "--out", tmp_path / "o"], "unknown profile"),
        "compare unknown method": (["compare", "--profile", "tiny", "--methods", "bkt", "--workdir", tmp_path / "w", "--out", tmp_path / "o"], "unknown compatibility method"),
        "compare --profile and --config": (["compare", "--profile", "tiny", "--config", "glyphs-quick"], "give one"),
        "compare --config without [compare]": (["compare", "--config", "cub200", "--workdir", tmp_path / "w"], "no [compare] table"),
        "compare --config unknown method": (["compare", "--config", "glyphs-quick", "--methods", "bkt", "--workdir", tmp_path / "w"], "unknown compatibility method"),
        "run unknown preset": (["run", "cub", "--workdir", tmp_path / "w"], "did you mean 'cub200'"),
        "run config that is not TOML": (["run", text_file.with_suffix(".toml")], "does not exist"),
        "evaluate --rerank without a config": (["evaluate", "--rerank", "ames"], "--config"),
        "evaluate --rerank, config without [rerank]": (["evaluate", "--config", "cub200", "--rerank", "ames", "--workdir", tmp_path / "w"], "no [rerank] table"),
        "evaluate unknown re-ranker": (["evaluate", "--config", "glyphs-quick", "--rerank", "ams", "--workdir", tmp_path / "w"], "unknown re-ranking method"),
    }


def test_every_subcommand_fails_on_bad_arguments_with_one_clear_line(built, tmp_path):
    for name, (args, expected) in _bad_argument_cases(built, tmp_path).items():
        result = invoke(*args)
        output = " ".join(result.output.split())
        assert result.exit_code == 2, f"{name}: exit {result.exit_code}\n{result.output}\n{result.exception!r}"
        assert "Traceback" not in result.output, f"{name}: traceback\n{result.output}"
        assert expected.lower() in output.lower(), f"{name}: {expected!r} not in\n{result.output}"


def test_debug_flag_shows_the_traceback(built, tmp_path):
    args = ["evaluate", "-i", built["index"], "-q", built["g_small"], *_data_args(built)]
    assert invoke(*args).exit_code == 2
    result = invoke("--debug", *args)
    assert result.exit_code != 0 and result.exception is not None and not isinstance(result.exception, SystemExit)


def test_a_decompression_bomb_is_skipped_like_other_unreadable_images(built, tmp_path, monkeypatch):
    folder = tmp_path / "bomb" / "class0"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((28, 28), 40 * i, np.uint8), "L").save(folder / f"ok{i}.png")
    Image.fromarray(np.zeros((300, 300), np.uint8), "L").save(folder / "bomb.png")  # 90,000 pixels
    (folder / "empty.png").write_bytes(b"")
    monkeypatch.setenv("ASYMRET_MAX_IMAGE_PIXELS", "10000")
    store = tmp_path / "store"
    out = ok("embed", "--model", built["query"], "--dataset", "folder", "--root", tmp_path / "bomb", "--split", "test", "--store", store)
    assert "2 unreadable images skipped" in " ".join(out.split())
    out = ok("train-encoder", "--arch", "convnet-xs", "--dim", DIM, "--epochs", "1", "--out", tmp_path / "m",
             "--dataset", "folder", "--root", tmp_path / "bomb", "--split", "test", "--store", store)
    assert "trained on" in out
    result = invoke("search", "-i", built["index"], "-q", built["query"], "--json", folder / "bomb.png", folder / "ok1.png")
    assert result.exit_code == 0 and "pixels is over the limit" in " ".join(result.output.split())
    assert [entry["query"] for entry in json.loads(result.stdout)] == [str(folder / "ok1.png")]


def test_evaluate_an_approximate_index_reports_its_own_recall(built, tmp_path):
    """`asymret evaluate` searches the index it is given: an IVF index probing 1 of 8 lists scores what it returns."""
    from asymret.data import load_dataset
    from asymret.encoders import load_encoder
    from asymret.eval.metrics import evaluate
    from asymret.index import load_index
    from asymret.store import EmbeddingStore

    data = _data_args(built)
    ok("build-index", "-q", built["query"], "-o", tmp_path / "ivf", "--factory", "IVF8,Flat", *data)
    index = load_index(tmp_path / "ivf")
    index.set_search_parameters(nprobe=1)
    index.save(tmp_path / "ivf")
    output = ok("evaluate", "-i", tmp_path / "ivf", "-q", built["query"], *data)
    dataset = load_dataset("folder", built["data"]).select(split="test", role="query")
    queries = EmbeddingStore(built["store"]).get(load_encoder(built["query"]), dataset)
    labels = dict(zip(dataset.ids.tolist(), dataset.labels.tolist()))
    own = evaluate(queries, index=load_index(tmp_path / "ivf"), gallery_labels=labels)
    exact = ok("build-index", "-q", built["query"], "-o", tmp_path / "flat", *data) and \
        ok("evaluate", "-i", tmp_path / "flat", "-q", built["query"], *data)
    assert metric_value(output, "map@r") == pytest.approx(100 * own["map@r"], abs=0.006)
    assert metric_value(output, "map@r") != pytest.approx(metric_value(exact, "map@r"), abs=0.006)


def test_a_milvus_index_searches_and_evaluates_as_the_faiss_one(built, tmp_path):
    """`build-index --backend milvus` (Milvus Lite in the index folder): `search` and `evaluate` give what the FAISS
    index of the same gallery gives; building again into the folder leaves no duplicate rows."""
    args = ["-q", built["query"], "-g", built["g_small"], "-g", built["g_medium"], "-t", built["psi_small"], "-t", built["psi_medium"],
            *_data_args(built)]
    for _ in range(2):  # the second run rebuilds the collection: same rows, no duplicates
        output = ok("build-index", *args, "-o", tmp_path / "milvus", "--backend", "milvus")
    assert f"indexed {NUM_CLASSES * PER_CLASS} gallery images (Milvus Lite" in output
    image = built["data"] / "class3" / "07.png"
    by_milvus = json.loads(ok("search", "-i", tmp_path / "milvus", "-q", built["query"], "-k", "5", "--reject-fraction", "0.2", "--json", image))
    by_faiss = json.loads(ok("search", "-i", built["index"], "-q", built["query"], "-k", "5", "--reject-fraction", "0.2", "--json", image))
    assert [r["id"] for r in by_milvus[0]["results"]] == [r["id"] for r in by_faiss[0]["results"]]
    evaluate = ["-q", built["query"], *_data_args(built)]
    assert metric_value(ok("evaluate", "-i", tmp_path / "milvus", *evaluate), "map@r") == \
        pytest.approx(metric_value(ok("evaluate", "-i", built["index"], *evaluate), "map@r"), abs=1e-6)
    assert "--backend must be faiss or milvus" in fails_cleanly("build-index", *args, "-o", tmp_path / "x", "--backend", "annoy")


def test_export_query_to_onnx_and_int8_then_search_with_it(built, tmp_path):
    """The exported query model keeps the query space: the index takes its embeddings, and the results match."""
    exported, int8 = tmp_path / "query-onnx", tmp_path / "query-int8"
    output = ok("export-query", "-q", built["query"], "-o", exported, "--int8", int8, "--per-channel", "--size", "40",
                "--calibration-split", "test", *_data_args(built)[:-2])
    assert "max |Δ|" in output and (exported / "model.onnx").is_file() and (int8 / "model.onnx").is_file()
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["parity"]["max_abs_diff"] < 1e-4 and manifest["precision"] == "float32"
    assert json.loads((int8 / "manifest.json").read_text())["precision"] == "int8-per-channel"
    image = built["data"] / "class2" / "03.png"
    by_torch = json.loads(ok("search", "-i", built["index"], "-q", built["query"], "-k", "5", "--json", image))
    by_onnx = json.loads(ok("search", "-i", built["index"], "-q", exported, "-k", "5", "--json", image))
    by_runtime = json.loads(ok("search", "-i", built["index"], "-q", built["query"], "-k", "5", "--json", "--runtime", "onnx",
                               "--store", tmp_path / "store", image))  # the torch model exported into the store, run by onnxruntime
    for other in (by_onnx, by_runtime):
        assert [r["id"] for r in other[0]["results"]] == [r["id"] for r in by_torch[0]["results"]]
        np.testing.assert_allclose([r["score"] for r in other[0]["results"]], [r["score"] for r in by_torch[0]["results"]], atol=1e-4)
    by_int8 = json.loads(ok("search", "-i", built["index"], "-q", int8, "-k", "5", "--json", image))
    # INT8 moves the embeddings a little: the ranking may swap near-ties, the query's class stays on top
    assert by_int8[0]["results"][0]["id"].startswith("class2/") and by_torch[0]["results"][0]["id"].startswith("class2/")
    # an exported gallery model lives in its own space: the index refuses it as it refuses the torch one
    foreign = tmp_path / "gallery-onnx"
    ok("export-query", "-q", built["g_small"], "-o", foreign, "--size", "8", *_data_args(built)[:-2])
    assert "another embedding space" in fails_cleanly("search", "-i", built["index"], "-q", foreign, image)


def test_embed_with_the_onnx_runtime_matches_torch(built, tmp_path):
    store_args = ["--dataset", "folder", "--root", built["data"], "--split", "test"]
    ok("embed", "-m", built["query"], *store_args, "--store", tmp_path / "torch")
    output = ok("embed", "-m", built["query"], *store_args, "--store", tmp_path / "onnx", "--runtime", "onnx")
    assert "1 shards computed" in output
    torch_set, onnx_set = (next((tmp_path / name).glob("*-embedding/*/manifest.json")).parent for name in ("torch", "onnx"))
    assert torch_set.relative_to(tmp_path / "torch") == onnx_set.relative_to(tmp_path / "onnx")  # the same store key
    np.testing.assert_allclose(np.load(onnx_set / "shard_00000.npy"), np.load(torch_set / "shard_00000.npy"), atol=1e-5)
    assert "runtime must be one of torch, onnx" in fails_cleanly("embed", "-m", built["query"], *store_args, "--runtime", "tensorrt")


def test_export_query_then_serve_answers_as_search_does(built, tmp_path):
    """`asymret export-query` then `asymret serve` (a real process on loopback): the service's answer to an image
    equals `asymret search`'s; the gallery's thumbnails are served; SIGTERM stops it."""
    import httpx

    from asymret.service.server import free_port

    exported = tmp_path / "query-onnx"
    ok("export-query", "-q", built["query"], "-o", exported, "--size", "8", *_data_args(built)[:-2])
    image = built["data"] / "class4" / "05.png"
    by_cli = json.loads(ok("search", "-i", built["index"], "-q", exported, "-k", "5", "--json", image))[0]["results"]
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "asymret"), "serve", "-i", str(built["index"]), "-q", str(exported),
                               "--dataset", "folder", "--root", str(built["data"]), "--split", "test", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"asymret serve exited: {server.stdout.read()}"
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "asymret serve did not become ready in 60 s"
            time.sleep(0.2)
        response = httpx.post(url + "/search", files={"image": ("q.png", image.read_bytes(), "image/png")}, data={"k": "5"}, timeout=30)
        hits = response.json()["queries"][0]["results"]
        assert [hit["id"] for hit in hits] == [r["id"] for r in by_cli]
        np.testing.assert_allclose([hit["score"] for hit in hits], [r["score"] for r in by_cli], atol=1e-5)
        assert httpx.get(url + hits[0]["thumbnail"], timeout=10).headers["content-type"] == "image/png"
    finally:
        server.terminate()
        server.wait(30)


def test_index_spec_makes_the_index_the_older_flags_make(built, tmp_path):
    """`--index-spec` names backend and parameter in one string (the registry's); `--backend/--factory` map onto it."""
    from asymret.index import ExactIndex, load_index

    data, q = _data_args(built), built["query"]
    ok("build-index", "-q", q, "-o", tmp_path / "exact", "--index-spec", "exact", *data)
    ok("build-index", "-q", q, "-o", tmp_path / "flat", "--backend", "faiss", "--factory", "Flat", *data)
    assert isinstance(load_index(tmp_path / "exact"), ExactIndex) and load_index(tmp_path / "flat").spec == "faiss:Flat"
    exact, flat = (ok("evaluate", "-i", tmp_path / name, "-q", q, *data) for name in ("exact", "flat"))
    assert metric_value(exact, "map@r") == metric_value(flat, "map@r")
    output = " ".join(ok("build-index", "-q", q, "-o", tmp_path / "ivf", "--index-spec", "faiss:IVF8,Flat", "--target-recall", "0.99", *data).split())
    assert "(FAISS IVF8,Flat, nprobe=" in output and load_index(tmp_path / "ivf").factory == "IVF8,Flat"
    assert "unknown index backend 'annoy'" in fails_cleanly("build-index", "-q", q, "-o", tmp_path / "x", "--index-spec", "annoy", *data)


def test_evaluate_fit_and_build_take_an_exported_query_model_and_a_runtime(built, tmp_path):
    """Every command that takes a query model takes the ONNX export too (the same numbers as torch's), and every
    command that embeds takes --runtime."""
    data, exported = _data_args(built), tmp_path / "query-onnx"
    ok("export-query", "-q", built["query"], "-o", exported, "--size", "8", *data[:-2])
    by_torch = ok("evaluate", "-i", built["index"], "-q", built["query"], *data)
    by_onnx = ok("evaluate", "-i", built["index"], "-q", exported, *data)
    by_runtime = ok("evaluate", "-i", built["index"], "-q", built["query"], *data[:-1], tmp_path / "store", "--runtime", "onnx")
    for name in ("recall@1", "map@r"):
        assert metric_value(by_onnx, name) == pytest.approx(metric_value(by_torch, name), abs=0.006)
        assert metric_value(by_runtime, name) == pytest.approx(metric_value(by_torch, name), abs=0.006)
    # the ONNX query model embeds a symmetric gallery, and ψ is fitted towards it as towards the torch model
    ok("build-index", "-q", exported, "-o", tmp_path / "sym-onnx", *data)
    ok("build-index", "-q", built["query"], "-o", tmp_path / "sym-torch", *data)
    assert metric_value(ok("evaluate", "-i", tmp_path / "sym-onnx", "-q", built["query"], *data), "map@r") == \
        pytest.approx(metric_value(ok("evaluate", "-i", tmp_path / "sym-torch", "-q", built["query"], *data), "map@r"), abs=0.006)
    output = ok("fit-transform", "-g", built["g_small"], "-q", exported, "-o", tmp_path / "psi", "--epochs", "2", "--losses",
                "similarity=1", "--runtime", "onnx", *data[:-1], tmp_path / "store")
    assert "saved ψ" in output and "(onnx float32)" in " ".join(output.split())
