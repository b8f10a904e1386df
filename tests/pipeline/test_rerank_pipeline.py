"""The re-ranking rows of an experiment: both modes, both storages, cached re-rankers, the config table."""
from __future__ import annotations

import dataclasses

import pytest

from asymret.data.dataset import ArraySource, ImageDataset
from asymret.pipeline import PROFILES, Experiment
from asymret.pipeline.rerank import RerankConfig, run_rerank
from asymret.pipeline.runner import RunConfig
from asymret.rerank import AMESConfig, AMESReranker, DescriptorCodec, DescriptorMap, LOCOREConfig, LOCOREReranker, load_reranker

SMALL = RerankConfig(budget=8, codec_dim=16, shortlist=10,
                     ames=AMESConfig(dim=16, layers=1, heads=2, ffn=32, query_budget=8, database_budget=4, shortlist=8,
                                     pairs_per_epoch=512, epochs=1, batch_size=64),
                     locore=LOCOREConfig(dim=16, layers=1, heads=2, ffn=32, query_budget=8, database_budget=4, window=6, stride=3,
                                         lists_per_epoch=64, epochs=1, batch_size=16))


def test_rerank_rows_for_both_modes_and_storages_and_a_cached_rerun(tmp_path, tiny_arrays, monkeypatch):
    test = tiny_arrays["splits"] == "test"  # every test image a query against the rest (the fixture's queries are one class)
    dataset = ImageDataset(name="tiny-all-vs-all", source=ArraySource(tiny_arrays["images"], origin="tests:tiny-synthetic-v1"),
                           ids=tiny_arrays["ids"], keys=tiny_arrays["keys"], labels=tiny_arrays["labels"], splits=tiny_arrays["splits"],
                           is_query=test, is_gallery=test)
    config = dataclasses.replace(PROFILES["tiny"], train_size=None, test_size=None, seeds=(0,), validation_classes=1)
    experiment = Experiment(config, dataset, tmp_path / "work")
    rows, meta = run_rerank(experiment, SMALL, tmp_path / "out")
    by_kind = {}
    for row in rows:
        by_kind.setdefault(row.kind, []).append(row)
    # symmetric and mapped: MaxSim, AMES and LOCORE per storage; asymmetric: the learned ones only (two models'
    # descriptors share no space for MaxSim)
    assert len(by_kind["global"]) == 2 and len(by_kind["rerank-symmetric"]) == 6 and len(by_kind["rerank-asymmetric"]) == 4
    assert len(by_kind["rerank-asymmetric-mapped"]) == 6
    locore = [r for r in by_kind["rerank-symmetric"] if "LOCORE" in r.setting]
    assert len(locore) == 2 and locore[0].extra["window"] == [6]
    binary = next(r for r in by_kind["rerank-asymmetric"] if "bit" in r.setting)
    assert any("MaxSim" in r.setting for r in by_kind["rerank-symmetric"])
    assert binary.extra["descriptor_bytes_per_image"] == [4 * 16 // 8]  # 4 database descriptors × 16 bits
    assert binary.gallery_model == "gallery:convnet-s"  # the KD teacher's descriptors on the database side
    for row in rows:
        assert 0.0 <= row.mean("recall@1") <= 1.0 and 0.0 <= row.mean("map@r") <= 1.0
    assert (tmp_path / "out" / "results.md").is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("the cached re-ranker should have been reused")

    monkeypatch.setattr(AMESReranker, "fit", no_training)
    monkeypatch.setattr(LOCOREReranker, "fit", no_training)
    again, _ = run_rerank(experiment, SMALL, tmp_path / "out2")
    assert [r.metrics for r in again] == [r.metrics for r in rows]
    # one re-ranker's rows alone (`asymret evaluate --config … --rerank locore`): the same rows, from the cache
    # and `asymret rerank-train`: the same re-rankers saved, each loadable with its codec
    alone, _ = run_rerank(experiment, dataclasses.replace(SMALL, methods=("locore",)), tmp_path / "out3", export_dir=tmp_path / "export")
    expected = [r for r in rows if r.kind == "global" or "LOCORE" in r.setting]
    assert [(r.setting, r.metrics) for r in alone] == [(r.setting, r.metrics) for r in expected]
    exported = sorted(p.name for p in (tmp_path / "export" / "seed0").iterdir())
    assert exported == sorted(f"{mode}-{storage}-locore" for mode in ("symmetric", "asymmetric", "asymmetric-mapped")
                              for storage in ("float16", "binary"))
    mapped = tmp_path / "export" / "seed0" / "asymmetric-mapped-binary-locore"
    loaded = load_reranker(mapped / "reranker")
    assert isinstance(loaded, LOCOREReranker) and loaded.fusion == next(
        {"lambda": r.extra["fusion_lambda"][0], "gamma": r.extra["fusion_gamma"][0]} for r in alone if r.setting.startswith("asymmetric-mapped") and "bit" in r.setting)
    assert DescriptorCodec.load(mapped / "codec").binary and DescriptorMap.load(mapped / "descriptor-map").coef_ is not None


def test_rerank_table_in_a_run_config_is_checked():
    data = {"dataset": {"kind": "fashion-mnist"}, "rerank": {"budget": 16, "ames": {"query_budget": 16, "database_budget": 8},
                                                                    "locore": {"query_budget": 16, "database_budget": 8, "window": 10}}}
    config = RunConfig.from_dict(data)
    assert config.rerank.budget == 16 and config.rerank.ames.database_budget == 8 and config.rerank.locore.window == 10
    assert RunConfig.from_dict({**data, "rerank": {"budget": 16, "methods": ["maxsim"]}}).rerank.methods == ("maxsim",)
    with pytest.raises(ValueError, match="unknown key"):
        RunConfig.from_dict({**data, "rerank": {"budgett": 3}})
    with pytest.raises(ValueError, match="exceed"):
        RerankConfig(budget=4)  # the default AMES budgets need more descriptors than 4
    with pytest.raises(ValueError, match="unknown re-ranking mode"):
        RerankConfig(modes=("sideways",))
