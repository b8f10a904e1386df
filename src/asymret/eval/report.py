"""Result rows, Markdown tables, results JSON and plots for experiment reports.

Spread over seeds: :func:`mean_std` returns the mean and the *sample* standard deviation (``ddof=1``) when there
are at least two values, and 0 for a single value (one seed has no measurable spread); NaN values are ignored.
"""
from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..core.manifest import atomic_write_bytes, atomic_write_json

__all__ = [
    "ResultRow",
    "mean_std",
    "format_mean_std",
    "markdown_table",
    "write_results_json",
    "read_results_json",
    "plot_recall_bars",
    "plot_risk_coverage",
    "RESULTS_FORMAT",
    "RowRecorder",
    "run_metadata",
    "cost_table",
    "write_report",
]

RESULTS_FORMAT = "asymret-results/1"
DEFAULT_TABLE_METRICS = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "instance_recall@1", "instance_recall@10")
# fixed colours for the usual kinds; others cycle through tab10
KIND_COLOURS = {
    "symmetric": "tab:blue",
    "asymmetric": "tab:orange",
    "baseline": "tab:gray",
    "cmce": "tab:green",
}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and spread of per-seed values.

    The spread is the sample standard deviation (``ddof=1``) for two or more values and ``0.0`` for exactly one.
    NaN values are dropped first; no finite value gives ``(nan, nan)``.
    """
    array = np.asarray(list(values), dtype=np.float64)
    array = array[~np.isnan(array)]
    if len(array) == 0:
        return float("nan"), float("nan")
    mean = float(array.mean())
    std = float(array.std(ddof=1)) if len(array) >= 2 else 0.0
    return mean, std


def format_mean_std(values: Sequence[float], percent: bool = True) -> str:
    """``"87.3 ± 0.4"`` (percent, one decimal) or ``"0.873 ± 0.004"``; ``"–"`` when there is no value."""
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "–"
    if percent:
        return f"{100 * mean:.1f} ± {100 * std:.1f}"
    return f"{mean:.3f} ± {std:.3f}"


@dataclass
class ResultRow:
    """One line of a results table: a retrieval setting evaluated over one or more seeds.

    Attributes:
        setting: free-form name of the experiment setting (e.g. ``"CUB / R50→R18"``).
        kind: ``"symmetric"``, ``"asymmetric"``, ``"baseline"``, ``"cmce"``, ... (used for colours).
        query_model: the model embedding the queries.
        gallery_model: the model (or ensemble) embedding the gallery.
        metrics: metric name -> one value per seed (fractions in [0, 1] for retrieval metrics).
        extra: anything else worth keeping (FLOPs, training seconds, ...); must be JSON-serialisable.
    """

    setting: str
    kind: str
    query_model: str
    gallery_model: str
    metrics: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, values: Mapping[str, float]) -> None:
        """Append one seed's metric values (e.g. the dict returned by ``retrieval_metrics``)."""
        for name, value in values.items():
            self.metrics.setdefault(name, []).append(float(value))

    def mean(self, metric: str) -> float:
        return mean_std(self.metrics[metric])[0]

    def std(self, metric: str) -> float:
        return mean_std(self.metrics[metric])[1]

    @property
    def num_seeds(self) -> int:
        """The largest number of values recorded for any metric."""
        return max((len(v) for v in self.metrics.values()), default=0)

    def to_dict(self) -> dict[str, Any]:
        summary = {}
        for name, values in self.metrics.items():
            mean, std = mean_std(values)
            summary[name] = {"mean": mean, "std": std, "values": [float(v) for v in values]}
        return {
            "setting": self.setting,
            "kind": self.kind,
            "query_model": self.query_model,
            "gallery_model": self.gallery_model,
            "num_seeds": self.num_seeds,
            "metrics": summary,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ResultRow":
        metrics = {}
        for name, entry in data.get("metrics", {}).items():
            values = entry["values"] if isinstance(entry, Mapping) else entry
            metrics[name] = [float(v) for v in values]
        return cls(
            setting=data["setting"],
            kind=data["kind"],
            query_model=data["query_model"],
            gallery_model=data["gallery_model"],
            metrics=metrics,
            extra=dict(data.get("extra", {})),
        )


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(
    rows: Sequence[ResultRow],
    metrics: Sequence[str] = DEFAULT_TABLE_METRICS,
    percent: bool = True,
) -> str:
    """A Markdown table: setting | query side | gallery side | one column per metric | seeds.

    Metric cells are ``"mean ± std"`` over seeds (see :func:`mean_std`), in percent with one decimal when
    ``percent`` (else raw with three decimals); a metric missing from a row shows ``–``.
    """
    header = ["setting", "query side", "gallery side", *metrics, "seeds"]
    lines = [
        "| " + " | ".join(_cell(h) for h in header) + " |",
        "|" + "|".join(["---"] * 3 + ["---:"] * (len(metrics) + 1)) + "|",
    ]
    for row in rows:
        cells = [row.setting, row.query_model, row.gallery_model]
        cells += [format_mean_std(row.metrics.get(m, []), percent) for m in metrics]
        cells.append(str(row.num_seeds))
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_results_json(path: str | os.PathLike, rows: Sequence[ResultRow], meta: Mapping[str, Any]) -> None:
    """Write ``{"format", "meta", "rows"}`` atomically; each row carries per-metric mean, std and values.

    ``meta`` should describe the run (command, machine, date, seeds, library versions, ...).
    """
    payload = {"format": RESULTS_FORMAT, "meta": dict(meta), "rows": [row.to_dict() for row in rows]}
    atomic_write_json(path, payload)


def read_results_json(path: str | os.PathLike) -> tuple[dict[str, Any], list[ResultRow]]:
    """Read a file written by :func:`write_results_json`; returns ``(meta, rows)``."""
    data = json.loads(Path(path).read_text())
    if data.get("format") != RESULTS_FORMAT:
        raise ValueError(f"{path} is not an asymret results file (format={data.get('format')!r})")
    return dict(data.get("meta", {})), [ResultRow.from_dict(item) for item in data.get("rows", [])]


# ---------------------------------------------------------------------------------------------- plots
def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(figure)  # Agg rendering, no pyplot / global backend state
    return figure


def _save_figure(figure, path: str | os.PathLike) -> None:
    """Render to PNG in memory, then write to a temporary file and ``os.replace`` it into place."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def _kind_colours(kinds: Sequence[str]) -> dict[str, str]:
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    colours: dict[str, str] = {}
    spare = 0
    for kind in kinds:
        if kind in colours:
            continue
        if kind in KIND_COLOURS:
            colours[kind] = KIND_COLOURS[kind]
        else:
            colours[kind] = palette(4 + spare % 6)
            spare += 1
    return colours


def plot_recall_bars(
    rows: Sequence[ResultRow], path: str | os.PathLike, metric: str = "recall@1", title: str | None = None
) -> None:
    """Horizontal bar chart of ``metric`` (percent) with sample-std error bars, one bar per row, coloured by kind.

    Rows without the metric are left out; ``ValueError`` if none has it.
    """
    shown = [row for row in rows if row.metrics.get(metric)]
    if not shown:
        raise ValueError(f"no row has values for {metric!r}")
    means = np.array([100 * row.mean(metric) for row in shown])
    stds = np.array([100 * row.std(metric) for row in shown])
    labels = [row.setting for row in shown]  # the setting already names both sides
    colours = _kind_colours([row.kind for row in shown])

    figure = _new_figure(8.0, 1.0 + 0.4 * len(shown))
    axes = figure.add_subplot(1, 1, 1)
    positions = np.arange(len(shown))[::-1]  # first row on top
    axes.barh(positions, means, xerr=stds, color=[colours[row.kind] for row in shown], capsize=3,
              error_kw={"elinewidth": 1})
    for y, m, s in zip(positions, means, stds):
        axes.text(m + s, y, f"  {m:.1f}", va="center", ha="left", fontsize=8)
    axes.set_yticks(positions)
    axes.set_yticklabels(labels, fontsize=8)
    axes.set_xlabel(f"{metric} (%)")
    axes.set_xlim(0, min(100.0, max(float(np.nanmax(means + stds)) * 1.15, 1.0)))
    from matplotlib.patches import Patch

    axes.legend(handles=[Patch(color=c, label=k) for k, c in colours.items()], loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    if title:
        axes.set_title(title)
    axes.grid(axis="x", alpha=0.3)
    _save_figure(figure, path)


def plot_risk_coverage(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    title: str | None = None,
    ylabel: str = "risk (1 − Recall@1)",
) -> None:
    """Risk–coverage curves: ``curves[name] = (coverage, risk_mean, risk_std)``, lines with a shaded ±std band.

    Curves whose name contains "random" are drawn dashed (the random-rejection baseline).
    """
    if not curves:
        raise ValueError("no curves to plot")
    figure = _new_figure(6.0, 4.0)
    axes = figure.add_subplot(1, 1, 1)
    for name, (coverage, mean, std) in curves.items():
        coverage = np.asarray(coverage, dtype=np.float64)
        mean = np.asarray(mean, dtype=np.float64)
        std = np.asarray(std, dtype=np.float64)
        if not (coverage.shape == mean.shape == std.shape):
            raise ValueError(f"curve {name!r}: coverage, mean and std must have the same shape")
        style = "--" if "random" in name.lower() else "-"
        (line,) = axes.plot(coverage, mean, style, marker="o", markersize=3, label=name)
        axes.fill_between(coverage, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    axes.set_xlabel("coverage (fraction of gallery kept)")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    if title:
        axes.set_title(title)
    _save_figure(figure, path)


# ---------------------------------------------------------------------------------------------- reports
class RowRecorder:
    """Collects one seed's metrics into the table rows (one row per setting; values appended per seed)."""

    def __init__(self, rows: dict[str, ResultRow]) -> None:
        self.rows = rows

    def __call__(self, key: str, kind: str, query_name: str, gallery_name: str, metrics: Mapping[str, float], **extra: Any) -> None:
        row = self.rows.setdefault(key, ResultRow(key, kind, query_name, gallery_name, extra={}))
        row.add({k: v for k, v in metrics.items() if not k.startswith("num_")})
        for name, value in extra.items():
            row.extra.setdefault(name, []).append(value)


def run_metadata(command: str, seeds: Sequence[int], start: float, **fields: Any) -> dict[str, Any]:
    """What every results file records: the command, date, machine, seeds and wall time (since ``start``, a
    ``time.perf_counter()`` value), plus the run's own ``fields``."""
    import time
    from datetime import datetime, timezone

    from ..core.machine import machine_description

    return {"command": command, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine_description(), "seeds": list(seeds), "wall_seconds": time.perf_counter() - start, **fields}


def _mean_curve(curves: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    coverage = np.asarray(curves[0]["coverage"])
    values = np.stack([np.asarray(c[key]) for c in curves])
    return coverage, values.mean(axis=0), values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros(len(coverage))


def cost_table(rows: Sequence[ResultRow]) -> str:
    """Markdown table of the query side's FLOPs/params and training seconds (mean over seeds), where recorded;
    a column no row recorded is left out."""
    columns = (("query-side MFLOPs/image", lambda r: r.extra.get("query_flops") or r.extra.get("flops"), lambda v: f"{np.mean(v) / 1e6:.2f}"),
               ("params (M)", lambda r: r.extra.get("params"), lambda v: f"{np.mean(v) / 1e6:.3f}"),
               ("training s (mean over seeds)", lambda r: r.extra.get("train_seconds"), lambda v: f"{np.mean(v):.1f}"))
    kept = [row for row in rows if any(get(row) for name, get, _ in columns if name != "params (M)")]
    columns = tuple(c for c in columns if any(c[1](row) for row in kept))
    if not kept:
        return ""
    lines = ["| setting | " + " | ".join(name for name, _, _ in columns) + " |", "|---|" + "---:|" * len(columns)]
    for row in kept:
        lines.append(f"| {_cell(row.setting)} | " + " | ".join(fmt(get(row)) if get(row) else "–" for _, get, fmt in columns) + " |")
    return "\n".join(lines)


def write_report(rows: Sequence[ResultRow], meta: Mapping[str, Any], curves: Mapping[str, Sequence], out_dir: str | os.PathLike) -> None:
    """results.json, results.md (the tables), recall_at_1.png and, with curves, risk_coverage.png/.json in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_results_json(out_dir / "results.json", rows, meta)
    costs = cost_table(rows)
    text = markdown_table(rows) + ("\n" + costs + "\n" if costs else "")
    validation = meta.get("validation")
    if validation and validation.get("symmetric"):
        text += (f"\nValidation split ({validation['classes']} training classes held out of every model, {validation['images']} "
                 "images; where choices are made), symmetric:\n\n| model | recall@1 | map@r | seeds |\n|---|---:|---:|---:|\n")
        for name, runs in validation["symmetric"].items():
            text += (f"| {_cell(name)} | {format_mean_std([r['recall@1'] for r in runs])} | "
                     f"{format_mean_std([r['map@r'] for r in runs])} | {len(runs)} |\n")
    atomic_write_bytes(out_dir / "results.md", text.encode())
    plot_recall_bars(rows, out_dir / "recall_at_1.png", metric="recall@1")
    if curves:
        plot_curves = {}
        for variant, entries in curves.items():
            label = "" if variant == "gallery_only" else " (uncertain items also dropped as queries)"
            plot_curves[f"uncertainty rejection{label}"] = _mean_curve(entries, "risk_uncertainty")
            plot_curves[f"random rejection{label}"] = _mean_curve(entries, "risk_random")
        plot_risk_coverage(plot_curves, out_dir / "risk_coverage.png")
        summary = {name: {"coverage": c.tolist(), "risk_mean": m.tolist(), "risk_std": sd.tolist()} for name, (c, m, sd) in plot_curves.items()}
        atomic_write_json(out_dir / "risk_coverage.json", summary)
