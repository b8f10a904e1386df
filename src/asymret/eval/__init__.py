"""Evaluation: retrieval metrics (Recall@K, MAP@R, risk–coverage, TAR@FAR, revisited Oxford/Paris) and reporting."""
from .metrics import evaluate_embeddings, ranked_neighbors, retrieval_metrics, risk_coverage, tar_at_far
from .revisited import (
    PROTOCOLS,
    ProtocolScores,
    RevisitedScores,
    evaluate_revisited,
    protocol_sets,
    revisited_metrics,
    trapezoidal_average_precision,
)
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
    "ranked_neighbors",
    "retrieval_metrics",
    "risk_coverage",
    "tar_at_far",
    "PROTOCOLS",
    "ProtocolScores",
    "RevisitedScores",
    "evaluate_revisited",
    "protocol_sets",
    "revisited_metrics",
    "trapezoidal_average_precision",
    "ResultRow",
    "format_mean_std",
    "markdown_table",
    "mean_std",
    "plot_recall_bars",
    "plot_risk_coverage",
    "read_results_json",
    "write_results_json",
]
