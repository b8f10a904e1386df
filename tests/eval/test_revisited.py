"""Revisited Oxford/Paris protocol: Easy/Medium/Hard mAP and mP@k on hand-computed rankings.

Notation in the comments: positions are 0-based *after* ignored images are removed; for the j-th positive at
position r, revisitop's trapezoid adds (p0 + p1) / 2 / #positives with p0 = 1 if r == 0 else j / r and
p1 = (j + 1) / (r + 1).  mP@k: 1-based positions P, kq = min(max(P), k), P@k = #(P <= kq) / kq.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from asymret.data import RevisitedGroundTruth
from asymret.eval import evaluate_revisited, protocol_sets, revisited_metrics, trapezoidal_average_precision


def test_junk_above_positives_is_removed_not_penalised() -> None:
    # easy {2, 4}, junk {0}; ranking 0 2 5 4 1 3.  Removing junk 0 leaves 2 5 4 1 3: positives at r = 0 and 2.
    #   j=0, r=0: (1 + 1/1) / 2 / 2             = 0.5
    #   j=1, r=2: (1/2 + 2/3) / 2 / 2           = 7/24
    #   AP = 19/24.  (Counting junk as a miss would give positives at 1 and 3: 0.125 + 5/24 = 1/3.)
    # mP@k: P = {1, 3}; k=1: kq=1 -> 1/1; k=5: kq=min(3,5)=3 -> 2/3; k=10: kq=3 -> 2/3.
    gnd = [{"easy": [2, 4], "hard": [], "junk": [0]}]
    with_junk_first = revisited_metrics([[0, 2, 5, 4, 1, 3]], gnd).easy
    junk_last = revisited_metrics([[2, 5, 4, 1, 3, 0]], gnd).easy
    assert with_junk_first.mean_average_precision == pytest.approx(19 / 24)
    assert junk_last.mean_average_precision == pytest.approx(19 / 24)
    assert with_junk_first.mean_precision_at_k == pytest.approx({1: 1.0, 5: 2 / 3, 10: 2 / 3})


def test_three_protocols_hard_positives_ignored_under_easy_and_query_without_positive_excluded() -> None:
    # Database of 4.  Query 0: easy {1}, hard {0}.  Ranking 0 3 1 2.
    #   Easy   (pos {1}, ignored {0}):   3 1 2 -> r = 1:    AP = (0/1 + 1/2) / 2 / 1 = 1/4
    #                                     P = {2}: P@1 = 0 (kq=1), P@5 = P@10 = 1/2 (kq=2)
    #   Medium (pos {0, 1}, ignored {}): r = 0, 2:          AP = 1/2 + 7/24 = 19/24
    #                                     P = {1, 3}: P@1 = 1, P@5 = P@10 = 2/3
    #   Hard   (pos {0}, ignored {1}):   r = 0:             AP = 1, P@k = 1
    # Query 1: easy {0}, no hard.  Ranking 2 0 1 3.
    #   Easy = Medium (pos {0}): r = 1: AP = 1/4; P@1 = 0, P@5 = P@10 = 1/2
    #   Hard: no positive -> NaN, excluded from the Hard means (which are query 0's alone).
    gnd = [{"easy": [1], "hard": [0], "junk": []}, {"easy": [0], "hard": [], "junk": []}]
    scores = revisited_metrics([[0, 3, 1, 2], [2, 0, 1, 3]], gnd)

    assert scores.easy.average_precision.tolist() == pytest.approx([0.25, 0.25])
    assert scores.medium.average_precision.tolist() == pytest.approx([19 / 24, 0.25])
    assert scores.hard.average_precision[0] == pytest.approx(1.0) and math.isnan(scores.hard.average_precision[1])

    flat = scores.as_dict()
    assert flat["map_easy"] == pytest.approx(0.25)
    assert flat["mp@1_easy"] == pytest.approx(0.0)
    assert flat["mp@5_easy"] == pytest.approx(0.5)
    assert flat["map_medium"] == pytest.approx((19 / 24 + 1 / 4) / 2)  # 25/48
    assert flat["mp@1_medium"] == pytest.approx(0.5)
    assert flat["mp@5_medium"] == pytest.approx((2 / 3 + 1 / 2) / 2)  # 7/12
    assert flat["map_hard"] == pytest.approx(1.0)  # not 0.5: the empty query is left out
    assert flat["mp@10_hard"] == pytest.approx(1.0)
    assert flat["num_queries_without_positives_hard"] == 1
    assert flat["num_queries_without_positives_easy"] == 0
    assert flat["num_queries"] == 2


def test_precision_at_k_beyond_the_positives_is_cut_at_the_last_positive() -> None:
    # positives {4, 7} ranked first of 10: P = {1, 2}; k=5 and k=10: kq = min(2, k) = 2 -> 2/2 = 1 (not 2/5, 2/10)
    gnd = [{"easy": [4, 7], "hard": [], "junk": []}]
    ranking = [[4, 7, 0, 1, 2, 3, 5, 6, 8, 9]]
    easy = revisited_metrics(ranking, gnd).easy
    assert easy.mean_precision_at_k == pytest.approx({1: 1.0, 5: 1.0, 10: 1.0})
    assert easy.mean_average_precision == pytest.approx(1.0)


def test_truncated_ranking_missing_positive_adds_zero() -> None:
    # positives {0, 5}; ranking shows only 0 1 2: r = 0 -> (1 + 1) / 2 / 2 = 1/2; positive 5 never retrieved adds 0.
    # P = {1}: kq = min(1, k) = 1 -> P@k = 1 for every k (revisitop's rule).  A row with no positive scores 0.
    gnd = [{"easy": [0, 5], "hard": [], "junk": []}, {"easy": [5], "hard": [], "junk": []}]
    easy = revisited_metrics([[0, 1, 2], [0, 1, 2]], gnd).easy
    assert easy.average_precision.tolist() == pytest.approx([0.5, 0.0])
    assert easy.precision_at_k[:, 1].tolist() == pytest.approx([1.0, 0.0])


def test_trapezoid_differs_from_uninterpolated_ap() -> None:
    # one positive at r = 1: trapezoid (0/1 + 1/2) / 2 = 1/4; the usual AP (precision at the hit) would be 1/2
    assert trapezoidal_average_precision(np.array([1]), 1) == pytest.approx(0.25)
    # positives at r = 0, 1, 4 of 3: (2 + 2 + (2/4 + 3/5)) / 2 / 3 = (4 + 1.1) / 6 = 0.85
    assert trapezoidal_average_precision(np.array([0, 1, 4]), 3) == pytest.approx(0.85)


def test_protocol_sets() -> None:
    query = RevisitedGroundTruth.from_gnd([{"easy": [3, 1], "hard": [2], "junk": [5]}], 6).queries[0]
    assert [a.tolist() for a in protocol_sets(query, "easy")] == [[1, 3], [2, 5]]
    assert [a.tolist() for a in protocol_sets(query, "medium")] == [[1, 2, 3], [5]]
    assert [a.tolist() for a in protocol_sets(query, "hard")] == [[2], [1, 3, 5]]
    with pytest.raises(ValueError, match="protocol must be one of"):
        protocol_sets(query, "extreme")


def test_evaluate_revisited_ranks_by_inner_product() -> None:
    # database vectors at angles 0, 10, ..., 50 degrees; the query at 0 degrees ranks them 0 1 2 3 4 5, so with
    # db row order permuted as below the ranking is 0 2 5 4 1 3 -> the junk case above: Easy AP = 19/24.
    angles = np.radians([0, 40, 10, 50, 30, 20])  # row i's angle = its place in the ranking 0 2 5 4 1 3
    db = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    query = np.array([[1.0, 0.0]], dtype=np.float32)
    truth = RevisitedGroundTruth.from_gnd([{"easy": [2, 4], "hard": [], "junk": [0]}], num_database=6)
    scores = evaluate_revisited(query, db, truth)
    assert scores.easy.mean_average_precision == pytest.approx(19 / 24)
    with pytest.raises(ValueError, match="5 database vectors for a database of 6 images"):
        evaluate_revisited(query, db[:5], truth)


@pytest.mark.parametrize(
    "ranks, message",
    [
        ([[0, 1], [1, 0], [0, 1]], r"ranks has 3 rows for 2 queries"),
        ([[0, 0, 1], [1, 2, 3]], "row 0 lists a database image twice"),
        ([[0, -1], [1, 2]], "negative index"),
        ([[0, 4], [1, 2]], r"index 4 outside the database \(0..3\)"),
        ([[0.0, 1.0], [1.0, 2.0]], "integer database indices"),
    ],
)
def test_bad_ranks_are_one_clear_error(ranks, message: str) -> None:
    truth = RevisitedGroundTruth.from_gnd([{"easy": [0]}, {"easy": [1]}], num_database=4)
    with pytest.raises(ValueError, match=message):
        revisited_metrics(ranks, truth)


def test_transposed_ranks_get_a_hint() -> None:
    truth = RevisitedGroundTruth.from_gnd([{"easy": [0]}, {"easy": [1]}], num_database=4)
    with pytest.raises(ValueError, match=r"pass ranks\.T"):
        revisited_metrics(np.array([[0, 1], [1, 0], [2, 3], [3, 2]]), truth)
