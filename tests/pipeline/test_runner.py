"""The config runner: presets load strictly, and the benchmark protocols run end to end on the loaders' fixtures."""
from __future__ import annotations

import dataclasses
import json

import pytest

from asymret.pipeline.runner import PRESETS, RunConfig, load_run_config, run

BENCHMARKS = ["cub200", "cars196", "sop", "inshop"]


def test_every_preset_loads():
    assert {"fashion-mnist", "glyphs", "glyphs-quick", *BENCHMARKS} <= set(PRESETS)
    for name in PRESETS:
        config = load_run_config(name)
        assert config.experiment.gallery and config.dataset_kind
    sop = load_run_config("sop")
    assert sop.experiment.ks == (1, 10, 100, 1000) and sop.experiment.test_size is None  # every test image


def test_unknown_keys_are_refused_by_name(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[dataset]\nkind = "folder"\n[experiment]\ntrain_sise = 3\n')
    with pytest.raises(ValueError, match="train_sise"):
        load_run_config(path)
    with pytest.raises(ValueError, match="unknown key.*datasets"):
        RunConfig.from_dict({"datasets": {}})
    with pytest.raises(ValueError, match="unknown preset 'cub'"):
        load_run_config("cub")


@pytest.mark.parametrize("kind", BENCHMARKS)
def test_benchmark_presets_run_end_to_end_on_the_fixtures(kind, tmp_path, writers):
    if kind == "cub200":
        root = writers["cub"](tmp_path / "data")
    elif kind == "sop":
        root = writers["sop"](tmp_path / "data")
    else:
        root = writers["cars" if kind == "cars196" else "inshop"](tmp_path / "data")
    config = load_run_config(kind)
    # the preset as it is, with one seed, one KD epoch and small input sizes: the plumbing, not the numbers
    small = [dataclasses.replace(spec, input_size=32, epochs=2) for spec in config.experiment.gallery]
    config.experiment = dataclasses.replace(config.experiment, seeds=(0,), kd_epochs=1, embedding_dim=16,
                                            query=dataclasses.replace(config.experiment.query, input_size=32, epochs=2), gallery=tuple(small))
    meta = run(config, tmp_path / "work", tmp_path / "out", root=str(root))
    results = json.loads((tmp_path / "out" / "experiment" / "results.json").read_text())
    settings = [row["setting"] for row in results["rows"]]
    assert any(s.startswith("CMCE ensemble:") for s in settings) and any(s.startswith("KD baseline") for s in settings)
    first = results["rows"][0]["metrics"]
    assert {f"recall@{k}" for k in config.experiment.ks} <= set(first)
    assert meta["test_queries"] > 0 and meta["test_gallery"] > 0
    if kind == "inshop":  # the fixed query/gallery split: queries are not the gallery
        assert meta["test_queries"] != meta["test_gallery"]


COMPARE_TOY = """
name = "compare-toy"
[dataset]
kind = "glyphs"
options = { size = 32, max_classes = 30 }
[experiment]
train_size = 0
test_size = 0
seeds = [0]
embedding_dim = 16
kd_epochs = 1
validation_classes = 5
instance_ks = []
psi = { epochs = 2, hidden_dim = 32 }
[experiment.query]
name = "query:convnet-xs"
arch = "convnet-xs"
epochs = 1
[[experiment.gallery]]
name = "gallery:convnet-s"
arch = "convnet-s"
epochs = 1
[compare]
methods = ["distill-cos", "bct"]
teacher = "gallery:convnet-s"
raml_gallery = ""
combination_method = "distill-cos"
"""


def test_compare_alone_from_a_config_is_the_table_run_writes(tmp_path):
    """``asymret compare --config`` (a methods subset): the rows ``asymret run`` writes in its compare folder, from the
    same models; only the methods asked for are trained."""
    from asymret.cli.testing import ok

    config_file = tmp_path / "toy.toml"
    config_file.write_text(COMPARE_TOY)
    ok("compare", "--config", config_file, "--methods", "distill-cos", "--workdir", tmp_path / "work", "--out", tmp_path / "alone")
    alone = {row["setting"]: row["metrics"] for row in json.loads((tmp_path / "alone" / "results.json").read_text())["rows"]}
    assert any(s.startswith("distill-cos: ") for s in alone) and not any(s.startswith("bct: ") for s in alone)
    assert any(s.startswith("CMCE ensemble: ") for s in alone) and any(s.startswith("combination: ") for s in alone)
    run(load_run_config(config_file), tmp_path / "work", tmp_path / "full")
    full = {row["setting"]: row["metrics"] for row in json.loads((tmp_path / "full" / "compare" / "results.json").read_text())["rows"]}
    assert any(s.startswith("bct: ") for s in full)
    for setting, metrics in alone.items():
        assert full[setting]["recall@1"]["values"] == metrics["recall@1"]["values"], setting
