"""Tests for asymret.eval.report: table formatting, JSON round trip, plots."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from asymret.eval.report import (
    ResultRow,
    format_mean_std,
    markdown_table,
    mean_std,
    plot_recall_bars,
    plot_risk_coverage,
    read_results_json,
    write_results_json,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rows():
    return [
        ResultRow(
            setting="CUB",
            kind="asymmetric",
            query_model="effnet-lite0",
            gallery_model="resnet50",
            metrics={"recall@1": [0.870, 0.876], "map@r": [0.25, 0.25, 0.25]},
            extra={"flops": 1.2e9, "train_seconds": 42.0},
        ),
        ResultRow("CUB", "symmetric", "resnet50", "resnet50", {"recall@1": [0.9]}),
        ResultRow("CUB", "cmce", "effnet-lite0", "ensemble|3", {"recall@1": [0.88, 0.89]}),
    ]


def test_mean_std_convention():
    assert mean_std([0.5]) == (0.5, 0.0)
    mean, std = mean_std([1.0, 2.0, 3.0])
    assert mean == 2.0 and std == pytest.approx(1.0)  # sample std (ddof=1)
    assert mean_std([1.0, float("nan"), 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert all(math.isnan(v) for v in mean_std([]))


def test_format_cells():
    assert format_mean_std([0.870, 0.876]) == "87.3 ± 0.4"  # mean 0.873, std 0.00424
    assert format_mean_std([0.9]) == "90.0 ± 0.0"
    assert format_mean_std([0.870, 0.876], percent=False) == "0.873 ± 0.004"
    assert format_mean_std([]) == "–"


def test_markdown_table_exact():
    table = markdown_table(_rows(), metrics=("recall@1", "map@r"))
    lines = table.splitlines()
    assert lines[0] == "| setting | query side | gallery side | recall@1 | map@r | seeds |"
    assert lines[1] == "|---|---|---|---:|---:|---:|"
    assert lines[2] == "| CUB | effnet-lite0 | resnet50 | 87.3 ± 0.4 | 25.0 ± 0.0 | 3 |"
    assert lines[3] == "| CUB | resnet50 | resnet50 | 90.0 ± 0.0 | – | 1 |"
    assert lines[4] == "| CUB | effnet-lite0 | ensemble\\|3 | 88.5 ± 0.7 | – | 2 |"
    assert len(lines) == 5 and table.endswith("\n")
    # default metrics: R@1/2/4/8, MAP@R, instance R@1/10 (missing ones show "–")
    header = markdown_table(_rows()).splitlines()[0]
    assert header.count("|") == 12 and "instance_recall@10" in header


def test_row_add_and_summary():
    row = ResultRow("SOP", "baseline", "a", "b")
    row.add({"recall@1": 0.5, "map@r": 0.1, "num_queries": 10})
    row.add({"recall@1": 0.7, "map@r": 0.3, "num_queries": 10})
    assert row.num_seeds == 2
    assert row.mean("recall@1") == pytest.approx(0.6)
    assert row.std("recall@1") == pytest.approx(np.std([0.5, 0.7], ddof=1))


def test_results_json_round_trip(tmp_path):
    path = tmp_path / "sub" / "results.json"
    meta = {"command": "asymret eval ...", "machine": "test", "date": "2024-01-01", "seeds": [0, 1, 2]}
    rows = _rows()
    write_results_json(path, rows, meta)
    raw = json.loads(path.read_text())
    assert raw["meta"] == meta
    first = raw["rows"][0]
    assert first["metrics"]["recall@1"]["values"] == [0.870, 0.876]
    assert first["metrics"]["recall@1"]["mean"] == pytest.approx(0.873)
    assert first["metrics"]["recall@1"]["std"] == pytest.approx(np.std([0.870, 0.876], ddof=1))
    assert first["extra"] == {"flops": 1.2e9, "train_seconds": 42.0}
    meta_back, rows_back = read_results_json(path)
    assert meta_back == meta
    assert rows_back == rows
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_read_rejects_foreign_json(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"rows": []}))
    with pytest.raises(ValueError):
        read_results_json(path)


def _captured_figure(monkeypatch, plot, *args, **kwargs):
    """Run a plot function and return the matplotlib figure it would have saved (inspect what is drawn)."""
    from asymret.eval import report

    captured = {}
    monkeypatch.setattr(report, "_save_figure", lambda figure, path: captured.setdefault("figure", figure))
    plot(*args, **kwargs)
    return captured["figure"]


def test_plot_recall_bars_draws_each_rows_mean_and_spread(tmp_path, monkeypatch):
    rows = _rows() + [ResultRow("X", "other", "q", "g", {"map@r": [0.1]})]  # no recall@1: left out
    axes = _captured_figure(monkeypatch, plot_recall_bars, rows, tmp_path / "bars.png", title="R@1").axes[0]
    bars = [patch for patch in axes.patches if patch.get_width() > 0]
    widths = sorted(round(bar.get_width(), 6) for bar in bars)
    assert widths == sorted([round(100 * np.mean(v), 6) for v in ([0.870, 0.876], [0.9], [0.88, 0.89])])
    # the first row is drawn on top and every row is labelled by its setting
    assert [t.get_text() for t in axes.get_yticklabels()] == ["CUB", "CUB", "CUB"]
    top = max(bars, key=lambda bar: bar.get_y())
    assert top.get_width() == pytest.approx(100 * np.mean([0.870, 0.876]))
    # bars are coloured by kind: three kinds, three colours
    assert len({tuple(bar.get_facecolor()) for bar in bars}) == 3
    with pytest.raises(ValueError):
        plot_recall_bars(_rows(), tmp_path / "none.png", metric="recall@8")


def test_plot_files_are_real_pngs_of_the_figure(tmp_path):
    from PIL import Image

    path = tmp_path / "bars.png"
    plot_recall_bars(_rows(), path)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 400 and image.height > 100
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 10  # something is drawn, not a blank canvas


def test_plot_risk_coverage_draws_each_curve(tmp_path, monkeypatch):
    path = tmp_path / "risk.png"
    cov = np.linspace(0.5, 1.0, 11)
    curves = {
        "uncertainty": (cov, 0.3 - 0.2 * (1 - cov), np.full(11, 0.01)),
        "random": (cov, np.full(11, 0.3), np.full(11, 0.02)),
    }
    axes = _captured_figure(monkeypatch, plot_risk_coverage, curves, path).axes[0]
    lines = {line.get_label(): line for line in axes.get_lines()}
    assert set(lines) == {"uncertainty", "random"}
    np.testing.assert_allclose(lines["uncertainty"].get_ydata(), curves["uncertainty"][1])
    np.testing.assert_allclose(lines["random"].get_xdata(), cov)
    assert lines["random"].get_linestyle() == "--" and lines["uncertainty"].get_linestyle() == "-"
    monkeypatch.undo()
    plot_risk_coverage(curves, path)  # and the real file, written atomically (no temporary left behind)
    assert path.read_bytes().startswith(PNG_MAGIC)
    assert [p.name for p in tmp_path.iterdir()] == ["risk.png"]


def test_cost_table_leaves_out_what_no_row_recorded():
    from asymret.eval.report import ResultRow, cost_table

    rows = [ResultRow("a", "symmetric", "q", "g", extra={"query_flops": [2e6, 4e6], "train_seconds": [1.0, 3.0]}),
            ResultRow("b", "cmce", "q", "g", extra={"query_flops": [1e6]}),
            ResultRow("no cost", "baseline", "q", "g")]
    table = cost_table(rows).splitlines()
    assert table[0] == "| setting | query-side MFLOPs/image | training s (mean over seeds) |"
    assert table[2] == "| a | 3.00 | 2.0 |" and table[3] == "| b | 1.00 | – |"
    assert len(table) == 4  # the row without any cost is not listed
    rows[1].extra["params"] = [5e5]
    assert "params (M)" in cost_table(rows).splitlines()[0] and "| b | 1.00 | 0.500 | – |" in cost_table(rows)
    assert cost_table(rows[2:]) == ""


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    import os

    from asymret.core.manifest import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f.txt", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
