"""Re-rankers in bf16 on the CPU (issue 22): training and scoring under autocast give float32 scores close to fp32's
model, the precision is a runtime setting (not saved), a loaded re-ranker takes one, fp16 on the CPU is refused."""
from __future__ import annotations

import numpy as np
import pytest

from asymret.rerank import (AMESConfig, AMESReranker, LOCOREConfig, LOCOREReranker, MaxSimReranker, PairSide, global_shortlist,
                            load_reranker)

AMES = AMESConfig(dim=16, layers=1, heads=2, ffn=32, query_budget=8, database_budget=4, shortlist=8, pairs_per_epoch=256,
                  epochs=1, batch_size=64, lr=3e-3, seed=0)
LOCORE = LOCOREConfig(dim=16, layers=1, heads=2, ffn=32, query_budget=8, database_budget=4, window=40, stride=20,
                      lists_per_epoch=64, epochs=1, batch_size=8, lr=3e-3, seed=0)


def _sides(sides, split: str, q_budget: int, d_budget: int) -> tuple[PairSide, PairSide]:
    g, local = sides[split]
    aligned = local.align(g.ids)
    return (PairSide.from_local(aligned, q_budget, embeddings=g), PairSide.from_local(aligned, d_budget, embeddings=g))


@pytest.mark.parametrize("kind", ["ames", "locore"])
def test_bf16_trains_and_scores_on_the_cpu(tmp_path, sides, kind):
    cls, cfg = (AMESReranker, AMES) if kind == "ames" else (LOCOREReranker, LOCORE)
    train_q, train_db = _sides(sides, "train", cfg.query_budget, cfg.database_budget)
    candidates = global_shortlist(sides["train"][0], sides["train"][0], 40).candidates
    fp32 = cls(cfg, device="cpu").fit(train_q, train_db, candidates)
    bf16 = cls(cfg, device="cpu", precision="bf16").fit(train_q, train_db, candidates)
    assert np.isfinite(bf16.history.epoch_losses).all()
    assert bf16.history.epoch_losses != fp32.history.epoch_losses  # autocast really ran
    queries, database = _sides(sides, "test", cfg.query_budget, cfg.database_budget)
    test_short = global_shortlist(sides["test"][0], sides["test"][0], 6).candidates
    fp32.save(tmp_path / kind)
    scores = fp32.score(queries, database, test_short)
    loaded = load_reranker(tmp_path / kind, device="cpu", precision="bf16")
    assert loaded.precision == "bf16" and "precision" not in (tmp_path / kind / "manifest.json").read_text()
    scored16 = loaded.score(queries, database, test_short)
    assert scored16.dtype == np.float32 and not np.array_equal(scored16, scores)
    assert np.corrcoef(scored16.ravel(), scores.ravel())[0, 1] > 0.98


def test_maxsim_in_bf16_and_fp16_refused_on_the_cpu(sides):
    queries, _ = _sides(sides, "test", 8, 8)
    short = global_shortlist(sides["test"][0], sides["test"][0], 6).candidates
    fp32 = MaxSimReranker(device="cpu").score(queries, queries, short)
    bf16 = MaxSimReranker(device="cpu", precision="bf16").score(queries, queries, short)
    assert bf16.dtype == np.float32 and np.abs(bf16 - fp32).max() < 0.2  # ×10 logits of cosines in bf16
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        MaxSimReranker(device="cpu", precision="fp16").score(queries, queries, short)
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        AMESReranker(AMES, device="cpu", precision="fp16").fit(*_sides(sides, "train", 8, 4),
                                                               global_shortlist(sides["train"][0], sides["train"][0], 8).candidates)
