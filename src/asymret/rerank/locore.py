"""A LOCORE-style list-wise re-ranker: the query and a window of shortlisted images in one sequence, scored together.

After Xiao et al., *LOCORE: Image Re-ranking with Long-Context Sequence Modeling* (CVPR 2025), written for asymret
(the facts used are in ``../shared/RERANK.md``; no code was taken from the public repository):

- per image the tokens ``[global][local_1 … local_k][SEP]``: the query's first, then the W candidates'; each
  side's global embedding and local descriptors go through their own input projections (the query side and the
  database side may come from different models: asymret's asymmetric mode), plus token-kind, role and (x, y)
  features;
- the encoder alternates attention *within* each image (every token also sees the query's global token) with
  attention across the *whole list* — every candidate's tokens see every other candidate's, so a candidate's score
  depends on the list it is in.  LOCORE uses a Longformer over ~5,000 tokens; asymret's windows of 20 images × 18
  tokens (~400) fit a plain transformer on 2 CPU cores, as the issue allows.  No token carries its candidate's
  rank: the model is equivariant to the candidates' order by construction (LOCORE shuffles the order in training
  to the same end; the shuffle is kept);
- a per-token relevance loss on every candidate token (query tokens ignored), label = the candidate shares the
  query's class; a candidate's score is its SEP token's logit (LOCORE's "max-end");
- at test a sliding window over the shortlist: windows of W candidates every ``stride`` positions, applied from
  the end to the start, each window's candidates reordered by their fused score λ·g + (1 − λ)·σ(γ·logit) before
  the next window — so a good candidate far down the shortlist can climb to the top in one pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.device import autocast, module_device, on_device
from ..core.settings import strict_settings
from ..training import TrainConfig, seeded, train
from .base import LearnedReranker, PairSide
from .blocks import add_maxsim_prior, attention_block, maxsim
from .shortlist import Shortlist

__all__ = ["LOCOREConfig", "ListTransformer", "LOCOREReranker", "sliding_windows"]


@dataclass(frozen=True)
class LOCOREConfig:
    """The model (sized for 2 CPU cores) and how it is trained and applied."""

    dim: int = 64
    layers: int = 2
    heads: int = 2
    ffn: int = 256
    query_budget: int = 32  # local descriptors of the query image
    database_budget: int = 16  # local descriptors per candidate (what the database stores)
    window: int = 20  # candidates per list: the training lists and every test window
    stride: int = 10  # test: a window every `stride` positions of the shortlist, from the end to the start
    # add a learned affine function of each candidate's MaxSim with the query to its tokens' logits (as AMES's
    # option: the transformer learns list-wise corrections to a training-free matcher; needs equal dims per side)
    maxsim_prior: bool = False
    lists_per_epoch: int = 2_000
    epochs: int = 3
    batch_size: int = 16  # lists per step
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ValueError(f"a list-wise window holds at least 2 candidates (got {self.window})")
        if not 1 <= self.stride <= self.window:
            raise ValueError(f"the stride must lie in 1..window={self.window} so that windows overlap or touch (got {self.stride})")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LOCOREConfig":
        return cls(**strict_settings(cls, data, "LOCORE"))


def sliding_windows(depth: int, window: int, stride: int) -> list[int]:
    """The start positions of the windows over a shortlist of ``depth`` candidates, in the order they are applied:
    from the end to the start (LOCORE: window 100, stride 50 over 400 → 300, 250, …, 0).  The last window is moved
    back to end at ``depth`` when the stride does not land there, so every candidate is in at least one window."""
    if depth <= window:
        return [0]
    starts = list(range(0, depth - window + 1, stride))
    if starts[-1] != depth - window:
        starts.append(depth - window)
    return starts[::-1]


class ListTransformer(nn.Module):
    """[query: global | locals | SEP] [candidate 1: …] … [candidate W: …] → per-token logits of the candidates."""

    KINDS = 3  # global, local, SEP

    def __init__(self, query_dim: int, database_dim: int, query_global_dim: int, database_global_dim: int, config: LOCOREConfig) -> None:
        super().__init__()
        d = config.dim
        self.query_local_in = nn.Sequential(nn.Linear(query_dim, d), nn.LayerNorm(d))
        self.database_local_in = nn.Sequential(nn.Linear(database_dim, d), nn.LayerNorm(d))
        self.query_global_in = nn.Sequential(nn.Linear(query_global_dim, d), nn.LayerNorm(d))
        self.database_global_in = nn.Sequential(nn.Linear(database_global_dim, d), nn.LayerNorm(d))
        self.position = nn.Linear(2, d)
        self.kind = nn.Parameter(torch.zeros(self.KINDS, d))
        self.role = nn.Parameter(torch.zeros(2, d))  # query, candidate
        self.separator = nn.Parameter(torch.zeros(d))
        for parameter in (self.kind, self.role, self.separator):
            nn.init.normal_(parameter, std=0.02)

        self.within = nn.ModuleList(attention_block(config) for _ in range(config.layers))
        self.across = nn.ModuleList(attention_block(config) for _ in range(config.layers))
        self.head = nn.Linear(d, 1)
        self.maxsim_prior = add_maxsim_prior(self, config.maxsim_prior, query_dim, database_dim)

    def _image(self, global_vec: torch.Tensor, local: torch.Tensor, xy: torch.Tensor, role: int, global_in: nn.Module,
               local_in: nn.Module) -> torch.Tensor:
        """Tokens (..., k + 2, d) of images: their global token, their local tokens, their SEP."""
        g = global_in(global_vec) + self.kind[0]
        loc = local_in(local) + self.position(xy) + self.kind[1]
        sep = (self.separator + self.kind[2]).expand(*g.shape)
        return torch.cat([g.unsqueeze(-2), loc, sep.unsqueeze(-2)], dim=-2) + self.role[role]

    def forward(self, q_global: torch.Tensor, q: torch.Tensor, q_xy: torch.Tensor, q_valid: torch.Tensor,
                c_global: torch.Tensor, c: torch.Tensor, c_xy: torch.Tensor, c_valid: torch.Tensor,
                present: torch.Tensor) -> torch.Tensor:
        """Per-token logits (B, W, kd + 2) of B lists: the query's global (B, gq) and locals (B, kq, cq) with (x, y)
        and validity; W candidates' globals (B, W, gd), locals (B, W, kd, cd) with (x, y) and validity; ``present``
        (B, W): which candidate slots hold an image (a short window's last slots may not)."""
        b, w, kd = c.shape[0], c.shape[1], c.shape[2]
        nq, per = q.shape[1] + 2, kd + 2
        query = self._image(q_global, q, q_xy, 0, self.query_global_in, self.query_local_in)
        cands = self._image(c_global, c, c_xy, 1, self.database_global_in, self.database_local_in).reshape(b, w * per, -1)
        yes = torch.ones(b, 1, dtype=torch.bool, device=q.device)
        q_pad = ~torch.cat([yes, q_valid, yes], dim=1)
        c_pad = ~torch.cat([present[..., None], c_valid & present[..., None], present[..., None]], dim=2)  # (B, W, per)
        # within-image attention runs on each image's own tokens (the candidates as a batch of B·W short sequences, each
        # with the query's global token in front, as context) — far cheaper than one long sequence under a mask
        c_pad_within = torch.cat([torch.zeros(b * w, 1, dtype=torch.bool, device=q.device), c_pad.reshape(b * w, per)], dim=1)
        padding = torch.cat([q_pad, c_pad.reshape(b, w * per)], dim=1)
        # no mask where nothing is padded: the same result, and torch's fused attention path (~4× faster on CPU)
        q_pad, c_pad_within, padding = (mask if bool(mask.any()) else None for mask in (q_pad, c_pad_within, padding))
        for attend_within, attend_across in zip(self.within, self.across):
            query = attend_within(query, src_key_padding_mask=q_pad)
            context = query[:, :1, None].expand(b, w, 1, -1)
            cands = attend_within(torch.cat([context, cands.reshape(b, w, per, -1)], dim=2).reshape(b * w, per + 1, -1),
                                  src_key_padding_mask=c_pad_within)[:, 1:].reshape(b, w * per, -1)
            tokens = attend_across(torch.cat([query, cands], dim=1), src_key_padding_mask=padding)
            query, cands = tokens[:, :nq], tokens[:, nq:]
        logits = self.head(cands).reshape(b, w, per)
        if self.maxsim_prior:
            pairs = maxsim(q.repeat_interleave(w, 0), q_valid.repeat_interleave(w, 0), c.reshape(b * w, kd, -1), c_valid.reshape(b * w, kd))
            logits = logits + (self.log_scale.exp() * (pairs.reshape(b, w) - self.offset))[..., None]
        return logits


class LOCOREReranker(LearnedReranker):
    """Fit on training lists, score windows of candidates together, re-rank a shortlist with sliding windows."""

    kind = "locore"
    config_class = LOCOREConfig

    def _build_model(self, dims: dict[str, int]) -> ListTransformer:
        return ListTransformer(dims["query_dim"], dims["database_dim"], dims["query_global_dim"], dims["database_global_dim"], self.config)

    def _model_dims(self) -> dict[str, int]:
        m = self.model
        return {"query_dim": m.query_local_in[0].in_features, "database_dim": m.database_local_in[0].in_features,
                "query_global_dim": m.query_global_in[0].in_features, "database_global_dim": m.database_global_in[0].in_features}

    def _lists(self, queries: PairSide, q_rows: np.ndarray, database: PairSide, candidates: np.ndarray) -> torch.Tensor:
        """Per-token logits (B, W, kd + 2) of queries ``q_rows`` with their candidate rows (B, W) (−1: empty slot)."""
        present = candidates >= 0
        rows = np.maximum(candidates, 0)
        device = module_device(self.model)
        q, q_xy, q_valid = queries.rows(q_rows, device)
        c, c_xy, c_valid = database.rows(rows, device)
        return self.model(queries.global_rows(q_rows, device), q, q_xy, q_valid, database.global_rows(rows, device), c, c_xy, c_valid,
                          torch.from_numpy(present).to(device))

    def fit(self, queries: PairSide, database: PairSide, candidates: np.ndarray) -> "LOCOREReranker":
        """Train on training-class lists: ``queries`` row i with the first ``window`` of ``database`` rows
        ``candidates[i]`` (its global shortlist, itself excluded), in a random order; every candidate token's label
        is whether its image shares the query's class."""
        cfg = self.config
        if queries.labels is None or database.labels is None:
            raise ValueError("training lists need labels on both sides")
        if candidates.shape[1] < cfg.window:
            raise ValueError(f"training shortlists of {candidates.shape[1]} candidates are shorter than the window ({cfg.window})")
        candidates = candidates[:, : cfg.window]
        targets = (queries.labels[:, None] == database.labels[np.maximum(candidates, 0)]) & (candidates >= 0)
        positive_share = float(targets.mean())
        if positive_share in (0.0, 1.0):
            raise ValueError(f"the training lists hold {'no' if positive_share == 0 else 'only'} positives: nothing to learn")
        with seeded(cfg.seed):  # the model's initialisation; the caller's random streams are left alone
            self.model = self._build_model({"query_dim": queries.vectors.shape[2], "database_dim": database.vectors.shape[2],
                                            "query_global_dim": queries.global_rows(np.arange(1)).shape[1],
                                            "database_global_dim": database.global_rows(np.arange(1)).shape[1]})
        self.query_space, self.database_space = queries.space, database.space
        device, precision = self.compute()
        pos_weight = torch.tensor((1.0 - positive_share) / positive_share, device=device)
        per_epoch = min(cfg.lists_per_epoch, len(candidates))
        train_cfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                seed=cfg.seed, warmup_epochs=min(0.5, cfg.epochs / 4), device=str(device), precision=precision)

        def batches(epoch: int, generator: torch.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
            chosen = torch.randperm(len(candidates), generator=generator)[:per_epoch].numpy()
            shuffles = torch.argsort(torch.rand(per_epoch, cfg.window, generator=generator), dim=1).numpy()  # LOCORE's shuffle
            return [(chosen[s : s + cfg.batch_size], shuffles[s : s + cfg.batch_size])
                    for s in range(0, per_epoch - cfg.batch_size + 1, cfg.batch_size)]

        def loss(batch) -> torch.Tensor:
            rows, shuffle = batch
            lists = np.take_along_axis(candidates[rows], shuffle, axis=1)
            labels = np.take_along_axis(targets[rows], shuffle, axis=1)
            logits = self._lists(queries, rows, database, lists).float()
            c_valid = torch.from_numpy(database.valid[np.maximum(lists, 0)]).to(device)  # validity only: no second descriptor copy
            ones = torch.ones(*lists.shape, 1, dtype=torch.bool, device=device)
            counted = torch.cat([ones, c_valid, ones], dim=2)
            counted &= torch.from_numpy(lists >= 0).to(device)[..., None]
            per_token = torch.from_numpy(labels.astype(np.float32)).to(device)[..., None].expand_as(logits)
            losses = F.binary_cross_entropy_with_logits(logits, per_token, pos_weight=pos_weight, reduction="none")
            return (losses * counted).sum() / counted.sum().clamp(min=1)

        with on_device(self.model, device=device):  # the model is kept on the CPU afterwards
            self.history = train(self.model.parameters(), loss, batches, train_cfg, modules=[self.model], description="train LOCORE re-ranker")
        return self

    @torch.no_grad()
    def score(self, queries: PairSide, database: PairSide, candidates: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """SEP logits (Nq, W) of every query's candidates, scored as one list (−1: an empty slot, scored −inf)."""
        self._check(queries, database)
        self.model.eval()
        out = np.empty(candidates.shape, dtype=np.float32)
        device, precision = self.compute()
        with on_device(self.model, device=device), autocast(device, precision):
            for start in range(0, len(candidates), batch_size):
                rows = np.arange(start, min(start + batch_size, len(candidates)))
                out[rows] = self._lists(queries, rows, database, candidates[rows])[..., -1].float().cpu().numpy()
        return np.where(candidates >= 0, out, -np.inf).astype(np.float32)

    def fusion_logits(self, queries: PairSide, database: PairSide, shortlist: Shortlist) -> tuple[Shortlist, np.ndarray]:
        """The fusion is chosen on the first window alone (the shortlist's head), as each test window applies it."""
        head = shortlist.head(self.config.window)
        return head, self.score(queries, database, head.candidates)

    def rerank(self, queries: PairSide, database: PairSide, shortlist: Shortlist) -> tuple[np.ndarray, np.ndarray]:
        """Sliding windows from the end of the shortlist to its start, each window's candidates scored as one list,
        fused with their global scores and reordered in place before the next window."""
        n, depth = shortlist.candidates.shape
        order = np.tile(np.arange(depth), (n, 1))
        fused = shortlist.scores.astype(np.float32).copy()
        for start in sliding_windows(depth, self.config.window, self.config.stride):
            columns = order[:, start : start + self.config.window]
            logits = self.score(queries, database, np.take_along_axis(shortlist.candidates, columns, axis=1))
            window_fused = self.fuse(np.take_along_axis(shortlist.scores, columns, axis=1), logits)
            np.put_along_axis(fused, columns, window_fused, axis=1)
            order[:, start : start + self.config.window] = np.take_along_axis(
                columns, np.argsort(-window_fused, axis=1, kind="stable"), axis=1)
        return order, fused
