"""The experiment commands end to end on Fashion-MNIST's tiny profile: ``asymret demo`` and ``asymret compare`` write
a results.json whose rows hold what a table needs, a results.md that shows them, and the plots (slow: they train)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from asymret.cli.testing import ok

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

def _check_rows(rows: dict, n_seeds: int) -> None:
    """What every row of a results.json holds: one value per seed and their mean, Recall@K rising with K,
    Precision@1 equal to Recall@1 (one ranking measured), MAP@R in [0, 1]."""
    for name, row in rows.items():
        metrics = row["metrics"]
        for metric in ("recall@1", "recall@2", "recall@4", "recall@8", "map@r"):
            values = metrics[metric]["values"]
            assert len(values) == n_seeds, (name, metric, values)
            assert metrics[metric]["mean"] == pytest.approx(float(np.mean(values))), (name, metric)
        for seed in range(n_seeds):
            ladder = [metrics[f"recall@{k}"]["values"][seed] for k in (1, 2, 4, 8)]
            assert ladder == sorted(ladder) and 0.0 <= ladder[0] and ladder[-1] <= 1.0, (name, ladder)
            assert 0.0 <= metrics["map@r"]["values"][seed] <= 1.0
        assert metrics["precision@1"]["values"] == metrics["recall@1"]["values"], name


def _check_table(table: str, rows: dict) -> None:
    """results.md shows each row's Recall@1 and MAP@R as results.json has them (percent, one decimal)."""
    lines = table.splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    for name, row in rows.items():
        line = next((line for line in lines if line.startswith(f"| {name} |")), None)
        assert line is not None, f"no row {name!r} in results.md"
        cells = dict(zip(header, (cell.strip() for cell in line.strip("|").split("|"))))
        for metric in ("recall@1", "map@r"):
            assert cells[metric].split(" ± ")[0] == f"{100 * row['metrics'][metric]['mean']:.1f}", (name, metric, cells[metric])


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason=f"{FASHION_MNIST} not installed")
def test_demo_tiny(tmp_path):
    out_dir = tmp_path / "out"
    output = ok("demo", "--profile", "tiny", "--workdir", tmp_path / "work", "--out", out_dir)
    assert "| setting |" in output  # the markdown table, printed unwrapped

    payload = json.loads((out_dir / "results.json").read_text())
    seeds = payload["meta"]["seeds"]
    assert len(seeds) == 2
    rows = {row["setting"]: row for row in payload["rows"]}
    expected = ("symmetric: ", "asymmetric, no transformation: ", "KD baseline: ", "CMCE single ψ: ", "CMCE ensemble: ",
                "CMCE ensemble, reject ")
    for prefix in expected:
        assert any(name.startswith(prefix) for name in rows), f"no row {prefix!r}... in {list(rows)}"
    assert sum(name.startswith("symmetric: ") for name in rows) == 3  # query + 2 gallery models
    assert sum(name.startswith("CMCE single ψ: ") for name in rows) == 2
    _check_rows(rows, len(seeds))
    recall = {name: row["metrics"]["recall@1"] for name, row in rows.items()}
    # 10 classes (chance 0.1): each model alone retrieves its own embeddings far above chance (0.41–0.48 measured),
    # and the distilled query model in the gallery model's space beats the raw mismatch (0.16 vs 0.10)
    for name in rows:
        if name.startswith("symmetric: "):
            assert min(recall[name]["values"]) > 0.25, (name, recall[name])
    kd = next(value for name, value in recall.items() if name.startswith("KD baseline: "))
    raw = next(value for name, value in recall.items() if name.startswith("asymmetric, no transformation: "))
    assert kd["mean"] > raw["mean"]

    table = (out_dir / "results.md").read_text()
    _check_table(table, rows)
    for png in ("recall_at_1.png", "risk_coverage.png"):
        assert (out_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason=f"{FASHION_MNIST} not installed")
def test_compare_tiny(tmp_path):
    """Every compatibility method trains a query model that plugs into the same evaluation, beside CMCE."""
    out_dir = tmp_path / "out"
    ok("compare", "--profile", "tiny", "--seeds", "0", "--workdir", tmp_path / "work", "--out", out_dir)
    rows = {row["setting"]: row for row in json.loads((out_dir / "results.json").read_text())["rows"]}
    for method in ("distill-l2", "distill-cos", "bct", "aml", "csd", "rop", "monotonic", "raml"):
        assert any(name.startswith(f"{method}: ") for name in rows), f"no row for {method}"
    for prefix in ("CMCE ensemble: ", "combination: CMCE ensemble on", "combination: distill-cos query model"):
        assert any(name.startswith(prefix) for name in rows), prefix
    _check_rows(rows, 1)
    _check_table((out_dir / "results.md").read_text(), rows)
    # compatibility training moves the query model into the gallery model's space: far above the raw mismatch
    raw = next(r for n, r in rows.items() if n.startswith("no compatibility: "))["metrics"]["map@r"]["mean"]
    distilled = next(r for n, r in rows.items() if n.startswith("distill-cos: "))["metrics"]["map@r"]["mean"]
    assert distilled > raw
