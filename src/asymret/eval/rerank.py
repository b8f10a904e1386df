"""Measuring a re-ranked shortlist, and choosing the fusion of global and re-ranker scores on validation."""
from __future__ import annotations

from itertools import product
from typing import Iterable, Sequence

import numpy as np

from ..rerank.shortlist import Shortlist, fuse
from .metrics import ranking_metrics

__all__ = ["shortlist_metrics", "choose_fusion", "LAMBDAS", "GAMMAS"]

#: the fusion grid searched on a validation split (AMES's published values lie inside it: λ 0.35–0.85, γ 0.1–0.8)
LAMBDAS = tuple(round(float(x), 2) for x in np.linspace(0.0, 1.0, 11))
GAMMAS = (0.1, 0.3, 1.0, 3.0)


def shortlist_metrics(shortlist: Shortlist, order: np.ndarray | None = None, ks: Iterable[int] = (1, 2, 4, 8)) -> dict[str, float]:
    """R@K and MAP@R of the shortlist in its global order, or reordered by ``order`` (Nq, S) column indices —
    :func:`~asymret.eval.metrics.ranking_metrics`, as for every global result.  MAP@R is exact when S ≥ every
    query's R; otherwise the positives beyond the shortlist count as missed."""
    return ranking_metrics(shortlist.relevant(order), shortlist.n_positives, ks)


def choose_fusion(shortlist: Shortlist, logits: np.ndarray, lambdas: Sequence[float] = LAMBDAS, gammas: Sequence[float] = GAMMAS,
                  metric: str = "map@r") -> tuple[dict[str, float], list[dict[str, float]]]:
    """The (λ, γ) with the best ``metric`` on this (validation) shortlist, and every grid point's value.
    Ties go to the larger λ (more weight on the global score: the cheaper, safer choice)."""
    table = []
    for lam, gamma in product(lambdas, gammas):
        measured = shortlist_metrics(shortlist, shortlist.reordered(fuse(shortlist.scores, logits, lam, gamma)), ks=(1,))
        table.append({"lambda": float(lam), "gamma": float(gamma), "recall@1": measured["recall@1"], "map@r": measured["map@r"]})
    best = max(table, key=lambda row: (row[metric], row["lambda"]))
    return {"lambda": best["lambda"], "gamma": best["gamma"]}, table
