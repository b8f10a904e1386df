"""Re-rankers on an explicit device (issue 22): training and scoring on the CPU named explicitly are the default
run's, the model is kept on the CPU between calls, and a device that is not there is refused in one line."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from asymret.core.device import module_device
from asymret.rerank import AMESConfig, AMESReranker, MaxSimReranker, PairSide, global_shortlist

SMALL = AMESConfig(dim=16, layers=1, heads=2, ffn=32, query_budget=8, database_budget=4, shortlist=8, pairs_per_epoch=256,
                   epochs=1, batch_size=64, lr=3e-3, seed=0)


def test_ames_and_maxsim_on_an_explicit_cpu(sides):
    (g_train, l_train), (g_test, l_test) = sides["train"], sides["test"]
    short = global_shortlist(g_train, g_train, SMALL.shortlist)
    q_side = PairSide.from_local(l_train.align(g_train.ids), SMALL.query_budget)
    d_side = PairSide.from_local(l_train.align(g_train.ids), SMALL.database_budget)
    default = AMESReranker(SMALL).fit(q_side, d_side, short.candidates)
    explicit = AMESReranker(SMALL, device="cpu").fit(q_side, d_side, short.candidates)
    assert default.history.epoch_losses == explicit.history.epoch_losses
    assert module_device(explicit.model) == torch.device("cpu")
    test_short = global_shortlist(g_test, g_test, 6)
    queries = PairSide.from_local(l_test.align(g_test.ids), SMALL.query_budget)
    database = PairSide.from_local(l_test.align(g_test.ids), SMALL.database_budget)
    np.testing.assert_array_equal(default.score(queries, database, test_short.candidates),
                                  explicit.score(queries, database, test_short.candidates))
    np.testing.assert_array_equal(MaxSimReranker().score(queries, queries, test_short.candidates),
                                  MaxSimReranker(device="cpu").score(queries, queries, test_short.candidates))


def test_a_missing_gpu_is_refused(monkeypatch, sides):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (g_test, l_test) = sides["test"]
    queries = PairSide.from_local(l_test.align(g_test.ids), 4)
    with pytest.raises(ValueError, match="device 'cuda' is not available"):
        MaxSimReranker(device="cuda").score(queries, queries, np.zeros((len(queries.ids), 2), dtype=np.int64))
