"""An AMES-style pair-wise re-ranker: a small transformer scores two images from their local descriptors.

After Suma et al., *AMES: Asymmetric and Memory-Efficient Similarity Estimation for Instance-level Retrieval*
(ECCV 2024), written for asymret (their public code has no training; the facts used are in ``../shared/RERANK.md``):

- each side's descriptors go through their own input projection (Linear → LayerNorm) — the query side and the
  database side may come from *different* models (asymret's asymmetric mode: the light query model's descriptors
  against a gallery model's), and the database side may be stored compactly (:class:`~.codec.DescriptorCodec`);
- the sequence is ``[matching token | query tokens | database tokens]``; every block attends within each image,
  then across the two images; the matching token sees both and every token sees it; there is no positional
  encoding by index, so the score does not depend on the descriptors' order (a descriptor's (x, y) is added as a
  feature);
- the matching token's output, through Linear(d → 1), is the pair's logit;
- trained with the one training loop on pairs mined from training classes: each training image against its
  global shortlist (other training images), positives = same class, BCE with the classes balanced;
- a *universal* model is trained with random budgets per batch and accepts any budget at test time;
- fused with the global similarity: s = λ·g + (1 − λ)·σ(γ·logit), λ and γ chosen on a validation split.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.device import autocast, module_device, on_device
from ..core.manifest import SpaceMismatchError
from ..core.settings import strict_settings
from ..training import TrainConfig, seeded, train
from .base import LearnedReranker, PairSide, Reranker
from .blocks import add_maxsim_prior, attention_block, maxsim

__all__ = ["AMESConfig", "PairTransformer", "AMESReranker", "MaxSimReranker", "maxsim"]  # maxsim: from .blocks


@dataclass(frozen=True)
class AMESConfig:
    """The model (sized for 2 CPU cores: AMES itself is 128-d, 5 layers) and how it is trained."""

    dim: int = 64
    layers: int = 2
    heads: int = 2
    ffn: int = 256
    query_budget: int = 32  # descriptors per query image
    database_budget: int = 16  # descriptors per database image (the memory that counts)
    universal: bool = False  # train with random budgets (1..budget per side and batch): any budget works at test
    # add a learned affine function of the pair's MaxSim score (see :func:`maxsim`) to the logit: the transformer
    # then learns corrections to a training-free matcher instead of discovering matching from scratch, which a
    # 2-core training budget does not afford (asymret's addition; AMES has no such term; needs equal dims per side)
    maxsim_prior: bool = False
    shortlist: int = 20  # training: each training image against this many of its global nearest neighbours
    random_pairs: int = 4  # ... and this many random training images (easy negatives; hard ones come from the shortlist)
    pairs_per_epoch: int = 40_000
    epochs: int = 4
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AMESConfig":
        return cls(**strict_settings(cls, data, "AMES"))


class PairTransformer(nn.Module):
    """[MTC | query tokens | database tokens] → intra-image attention, cross-image attention (× layers) → logit."""

    def __init__(self, query_dim: int, database_dim: int, config: AMESConfig) -> None:
        super().__init__()
        d = config.dim
        self.query_in = nn.Sequential(nn.Linear(query_dim, d), nn.LayerNorm(d))
        self.database_in = nn.Sequential(nn.Linear(database_dim, d), nn.LayerNorm(d))
        self.position = nn.Linear(2, d)  # a descriptor's (x, y): a feature, not an order
        self.side = nn.Parameter(torch.zeros(2, d))
        self.matching_token = nn.Parameter(torch.zeros(1, 1, d))
        nn.init.normal_(self.matching_token, std=0.02)
        nn.init.normal_(self.side, std=0.02)

        self.within = nn.ModuleList(attention_block(config) for _ in range(config.layers))
        self.across = nn.ModuleList(attention_block(config) for _ in range(config.layers))
        self.head = nn.Linear(d, 1)
        self.maxsim_prior = add_maxsim_prior(self, config.maxsim_prior, query_dim, database_dim)

    @staticmethod
    def _masks(nq: int, nd: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Boolean attention masks (True = may *not* attend) for within-image and across-image attention."""
        n = 1 + nq + nd
        image = torch.cat([torch.tensor([-1], device=device), torch.zeros(nq, dtype=torch.long, device=device),
                           torch.ones(nd, dtype=torch.long, device=device)])
        same = image[:, None] == image[None, :]
        to_mtc = (image[None, :] == -1).expand(n, n)
        from_mtc = (image[:, None] == -1).expand(n, n)
        within = ~(same | to_mtc | from_mtc)
        across = ~((~same) | to_mtc | from_mtc)
        across.fill_diagonal_(False)  # a token keeps itself in view (no row without any key)
        return within, across

    def forward(self, q: torch.Tensor, q_xy: torch.Tensor, q_valid: torch.Tensor,
                db: torch.Tensor, db_xy: torch.Tensor, db_valid: torch.Tensor) -> torch.Tensor:
        """Logits (B,) for B pairs: q (B, kq, cq), db (B, kd, cd), their (x, y) and validity."""
        b, nq, nd = q.shape[0], q.shape[1], db.shape[1]
        tokens = torch.cat([
            self.matching_token.expand(b, 1, -1),
            self.query_in(q) + self.position(q_xy) + self.side[0],
            self.database_in(db) + self.position(db_xy) + self.side[1],
        ], dim=1)
        device = q.device
        padding = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=device), ~q_valid, ~db_valid], dim=1)
        within, across = self._masks(nq, nd, device)
        # float masks (−inf where forbidden): the same type for the attention and the padding mask
        within_f = torch.zeros(within.shape, device=device).masked_fill(within, float("-inf"))
        across_f = torch.zeros(across.shape, device=device).masked_fill(across, float("-inf"))
        padding_f = torch.zeros(padding.shape, device=device).masked_fill(padding, float("-inf"))
        for attend_within, attend_across in zip(self.within, self.across):
            tokens = attend_within(tokens, src_mask=within_f, src_key_padding_mask=padding_f)
            tokens = attend_across(tokens, src_mask=across_f, src_key_padding_mask=padding_f)
        logit = self.head(tokens[:, 0]).squeeze(1)
        if self.maxsim_prior:
            logit = logit + self.log_scale.exp() * (maxsim(q, q_valid, db, db_valid) - self.offset)
        return logit


class MaxSimReranker(Reranker):
    """The training-free baseline every learned re-ranker must beat: pairs scored by :func:`maxsim` (as a logit
    ×10, so the fusion grid's γ covers it), same interface as :class:`AMESReranker`."""

    kind = "maxsim"

    @torch.no_grad()
    def score(self, queries: "PairSide", database: "PairSide", candidates: np.ndarray, batch_size: int = 2048) -> np.ndarray:
        if queries.vectors.shape[2] != database.vectors.shape[2]:
            raise SpaceMismatchError(f"MaxSim compares descriptors of one space: {queries.space.name} ({queries.vectors.shape[2]}-d) "
                                     f"vs {database.space.name} ({database.vectors.shape[2]}-d)")
        pair_q = np.repeat(np.arange(len(candidates)), candidates.shape[1])
        pair_d = candidates.reshape(-1)
        out = np.empty(len(pair_q), dtype=np.float32)
        device, precision = self.compute()
        with autocast(device, precision):
            for start in range(0, len(pair_q), batch_size):
                q, _, q_valid = queries.rows(pair_q[start : start + batch_size], device)
                d, _, d_valid = database.rows(pair_d[start : start + batch_size], device)
                out[start : start + batch_size] = 10.0 * maxsim(q, q_valid, d, d_valid).float().cpu().numpy()
        return out.reshape(candidates.shape)


class AMESReranker(LearnedReranker):
    """Fit on training pairs, score (query, candidate) pairs, fuse with the global similarity, save and load."""

    kind = "ames"
    config_class = AMESConfig

    def _build_model(self, dims: dict[str, int]) -> PairTransformer:
        return PairTransformer(dims["query_dim"], dims["database_dim"], self.config)

    def _model_dims(self) -> dict[str, int]:
        return {"query_dim": self.model.query_in[0].in_features, "database_dim": self.model.database_in[0].in_features}

    # ------------------------------------------------------------------ training
    def fit(self, queries: PairSide, database: PairSide, candidates: np.ndarray) -> "AMESReranker":
        """Train on training-class pairs: ``queries`` row i against ``database`` rows ``candidates[i]`` (its global
        shortlist); the label is whether the two images share a class."""
        cfg = self.config
        if queries.labels is None or database.labels is None:
            raise ValueError("training pairs need labels on both sides")
        with seeded(cfg.seed):  # the model's initialisation; the caller's random streams are left alone
            self.model = self._build_model({"query_dim": queries.vectors.shape[2], "database_dim": database.vectors.shape[2]})
        self.query_space, self.database_space = queries.space, database.space
        if cfg.random_pairs:
            extra = np.random.default_rng(cfg.seed).integers(0, len(database.ids), size=(len(candidates), cfg.random_pairs))
            candidates = np.concatenate([candidates, extra], axis=1)
        pair_q = np.repeat(np.arange(len(candidates)), candidates.shape[1])
        pair_d = candidates.reshape(-1)
        keep = queries.ids[pair_q] != database.ids[pair_d]  # never an image against itself
        pair_q, pair_d = pair_q[keep], pair_d[keep]
        targets = (queries.labels[pair_q] == database.labels[pair_d]).astype(np.float32)
        positive_share = float(targets.mean())
        if positive_share in (0.0, 1.0):
            raise ValueError(f"the training shortlists hold {'no' if positive_share == 0 else 'only'} positive pairs: nothing to learn")
        device, precision = self.compute()
        pos_weight = torch.tensor((1.0 - positive_share) / positive_share, device=device)  # the classes weigh equally
        per_epoch = min(cfg.pairs_per_epoch, len(pair_q))
        train_cfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                seed=cfg.seed, warmup_epochs=min(0.5, cfg.epochs / 4), device=str(device), precision=precision)

        def batches(epoch: int, generator: torch.Generator) -> list[tuple[torch.Tensor, tuple[int, int]]]:
            chosen = torch.randperm(len(pair_q), generator=generator)[:per_epoch]
            out = []
            for start in range(0, per_epoch - cfg.batch_size + 1, cfg.batch_size):
                budgets = (cfg.query_budget, cfg.database_budget)
                if cfg.universal:
                    budgets = tuple(int(torch.randint(1, b + 1, (1,), generator=generator)) for b in budgets)
                out.append((chosen[start : start + cfg.batch_size], budgets))
            return out

        def loss(batch) -> torch.Tensor:
            pairs, (kq, kd) = batch
            pairs = pairs.numpy()
            logits = self._logits(queries, pair_q[pairs], database, pair_d[pairs], kq, kd)
            return F.binary_cross_entropy_with_logits(logits.float(), torch.from_numpy(targets[pairs]).to(device), pos_weight=pos_weight)

        with on_device(self.model, device=device):  # the model is kept on the CPU afterwards
            self.history = train(self.model.parameters(), loss, batches, train_cfg, modules=[self.model], description="train AMES re-ranker")
        return self

    def _logits(self, queries: PairSide, q_rows: np.ndarray, database: PairSide, d_rows: np.ndarray,
                query_budget: int | None = None, database_budget: int | None = None) -> torch.Tensor:
        device = module_device(self.model)
        q, q_xy, q_valid = queries.rows(q_rows, device)
        d, d_xy, d_valid = database.rows(d_rows, device)
        if query_budget is not None:
            q, q_xy, q_valid = q[:, :query_budget], q_xy[:, :query_budget], q_valid[:, :query_budget]
        if database_budget is not None:
            d, d_xy, d_valid = d[:, :database_budget], d_xy[:, :database_budget], d_valid[:, :database_budget]
        return self.model(q, q_xy, q_valid, d, d_xy, d_valid)

    # ------------------------------------------------------------------ scoring and fusion
    @torch.no_grad()
    def score(self, queries: PairSide, database: PairSide, candidates: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Logits (Nq, S) of every query against its candidate database rows."""
        self._check(queries, database)
        self.model.eval()
        pair_q = np.repeat(np.arange(len(candidates)), candidates.shape[1])
        pair_d = candidates.reshape(-1)
        out = np.empty(len(pair_q), dtype=np.float32)
        device, precision = self.compute()
        with on_device(self.model, device=device), autocast(device, precision):
            for start in range(0, len(pair_q), batch_size):
                stop = start + batch_size
                out[start:stop] = self._logits(queries, pair_q[start:stop], database, pair_d[start:stop]).float().cpu().numpy()
        return out.reshape(candidates.shape)
