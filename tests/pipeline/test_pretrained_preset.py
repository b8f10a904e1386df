"""The pretrained glyph preset's recipe, shrunk to seconds: every row it records, the compatible gallery models,
and the robust ensemble whose candidates include the query model itself (never below it on validation)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from asymret.pipeline.deploy import VALIDATION_METRIC, choose_deployment
from asymret.pipeline.runner import experiment_of, load_run_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    config = load_run_config("glyphs-pretrained-quick")
    config.dataset_options.update(max_classes=24, size=32)
    shrink = {"epochs": 1, "cached_views": 1}
    cfg = config.experiment
    cfg = dataclasses.replace(
        cfg, seeds=(0,), runtime="torch", validation_classes=4, kd_epochs=1, psi_views=2, kd_views=2, gallery_compat_epochs=1,
        psi=dataclasses.replace(cfg.psi, epochs=2), query=dataclasses.replace(cfg.query, **shrink),
        gallery=tuple(dataclasses.replace(spec, **shrink) for spec in cfg.gallery[:2]))
    root = tmp_path_factory.mktemp("pretrained")
    experiment = experiment_of(dataclasses.replace(config, experiment=cfg), root / "work")
    rows, meta = experiment.run(root / "results")
    return experiment, {row.setting: row for row in rows}, meta


def test_the_preset_records_every_family_of_rows(run):
    _, rows, meta = run
    families = {setting.split(":")[0].split(" (")[0] for setting in rows}
    assert {"symmetric", "KD baseline", "CMCE single ψ", "CMCE ensemble", "CMCE robust ensemble",
            "CMCE robust ensemble with the query model as a candidate member", "compatible gallery",
            "compatible gallery ensemble"} <= families
    compatible = [s for s in rows if s.startswith("compatible gallery (distill-metric)")]
    assert len(compatible) == 2 and all(VALIDATION_METRIC in rows[s].metrics for s in compatible)
    assert meta["cheapest_gallery_over_query_flops"] >= 3.0  # Lite0 at 72 px vs 32 px


def test_the_robust_ensemble_with_the_query_model_is_never_below_it_on_validation(run):
    _, rows, _ = run
    alone = next(r for s, r in rows.items() if s.startswith("symmetric: query:"))
    robust = next(r for s, r in rows.items() if s.startswith("CMCE robust ensemble with the query model as a candidate member"))
    assert robust.metrics[VALIDATION_METRIC][0] >= alone.metrics[VALIDATION_METRIC][0]
    scores = robust.extra["subset_validation_recall"]
    scores = scores[0] if isinstance(scores, list) else scores
    assert len(scores) == 2 ** 3 - 1  # every subset of {query itself, ψ1, ψ2} was scored on validation
    choice = choose_deployment(list(rows.values()))
    assert choice["validation_recall@1"] >= np.mean(robust.metrics[VALIDATION_METRIC])
