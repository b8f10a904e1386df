"""Evaluation: retrieval metrics (Recall@K, MAP@R, risk–coverage, TAR@FAR) and result reporting."""
from .metrics import evaluate_embeddings, evaluate_index, ranked_neighbors, ranking_metrics, retrieval_metrics, risk_coverage, tar_at_far
from .report import (
    ResultRow,
    format_mean_std,
    markdown_table,
    mean_std,
    plot_recall_bars,
    plot_risk_coverage,
    read_results_json,
    write_results_json,
)

__all__ = [
    "evaluate_embeddings",
    "evaluate_index",
    "ranking_metrics",
    "ranked_neighbors",
    "retrieval_metrics",
    "risk_coverage",
    "tar_at_far",
    "ResultRow",
    "format_mean_std",
    "markdown_table",
    "mean_std",
    "plot_recall_bars",
    "plot_risk_coverage",
    "read_results_json",
    "write_results_json",
]
