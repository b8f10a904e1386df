"""Evaluation: retrieval metrics (Recall@K, MAP@R, instance recall, risk–coverage, TAR@FAR, Revisited
Oxford/Paris) computed from the rankings an index returns, and result reporting."""
from .metrics import (
    evaluate,
    ranked_neighbors,
    ranking_metrics,
    retrieval_metrics,
    risk_coverage,
    tar_at_far,
)
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
    "evaluate",
    "ranking_metrics",
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
