"""The building blocks the learned re-rankers share: a transformer block, the MaxSim matcher and its prior.

AMES (:mod:`.ames`) and LOCORE (:mod:`.locore`) build their models from these; they are functions, not modules
holding parameters of their own, so a model's parameter names (what a saved re-ranker's state dict holds) are
the same whichever module defines them.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["attention_block", "add_maxsim_prior", "maxsim"]


def attention_block(config) -> nn.TransformerEncoderLayer:
    """One pre-built transformer block of a re-ranker (``config``: dim, heads, ffn)."""
    return nn.TransformerEncoderLayer(config.dim, config.heads, config.ffn, dropout=0.0, batch_first=True)


def add_maxsim_prior(module: nn.Module, wanted: bool, query_dim: int, database_dim: int) -> bool:
    """Give ``module`` the MaxSim prior's parameters — logit += exp(log_scale)·(maxsim − offset), starting as a sharp
    matcher — when ``wanted``; it needs descriptors of one dimension on both sides."""
    if wanted and query_dim != database_dim:
        raise ValueError(f"maxsim_prior needs descriptors of one dimension on both sides (got {query_dim} and {database_dim})")
    if wanted:
        module.log_scale = nn.Parameter(torch.tensor(float(np.log(10.0))))
        module.offset = nn.Parameter(torch.tensor(0.5))
    return wanted


def maxsim(q: torch.Tensor, q_valid: torch.Tensor, db: torch.Tensor, db_valid: torch.Tensor) -> torch.Tensor:
    """Chamfer / MaxSim similarity of B pairs: each valid query descriptor's best cosine among the database's valid
    descriptors, averaged over the query's — a training-free local matcher (ColBERT's late interaction)."""
    sims = torch.einsum("bkc,blc->bkl", F.normalize(q, dim=-1), F.normalize(db, dim=-1))
    sims = sims.masked_fill(~db_valid[:, None, :], -2.0)
    best = sims.max(dim=2).values.clamp(min=-1.0)  # a query descriptor facing no valid one scores −1
    weights = q_valid.float()
    return (best * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
