from __future__ import annotations

import math

import pytest

from ragtune.errors import ConfigError
from ragtune.evaluate.metrics import METRICS, evaluate_run, truncate_run

QRELS = {"q1": {"d1": 1}, "q2": {"d2": 1, "d3": 1}, "q3": {"d4": 1}}
RUN = {
    "q1": {"d1": 0.9, "x": 0.5},
    "q2": {"x": 0.9, "d2": 0.8, "y": 0.7, "d3": 0.6},
    # q3 is missing: it must count as 0, not be dropped
}


def test_metric_names():
    assert METRICS == ("hit@1", "hit@5", "hit@10", "mrr@10", "ndcg@10", "recall@100", "map@100")


def test_hand_computed_per_query_values():
    scores = evaluate_run(QRELS, RUN)
    pq = scores.per_query
    assert pq["hit@1"] == {"q1": 1.0, "q2": 0.0, "q3": 0.0}
    assert pq["hit@5"] == {"q1": 1.0, "q2": 1.0, "q3": 0.0}
    assert pq["mrr@10"]["q2"] == pytest.approx(0.5)
    ideal = 1 + 1 / math.log2(3)
    assert pq["ndcg@10"]["q2"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / ideal)
    assert pq["ndcg@10"]["q1"] == pytest.approx(1.0)
    assert pq["recall@100"]["q2"] == pytest.approx(1.0)
    assert pq["map@100"]["q2"] == pytest.approx((1 / 2 + 2 / 4) / 2)


def test_missing_and_empty_queries_count_as_zero():
    scores = evaluate_run(QRELS, {**RUN, "q3": {}})
    assert scores.query_ids == ["q1", "q2", "q3"]
    for metric in METRICS:
        assert scores.per_query[metric]["q3"] == 0.0
    assert scores.means["hit@1"] == pytest.approx(1 / 3)
    assert scores.means["mrr@10"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert evaluate_run(QRELS, {}).means["ndcg@10"] == 0.0


def test_mrr_is_cut_at_rank_10_but_hit_and_recall_are_not():
    docs = {f"n{i:02d}": 1.0 - i / 100 for i in range(10)}
    docs["rel"] = 0.5  # rank 11
    scores = evaluate_run({"q": {"rel": 1}}, {"q": docs})
    assert scores.means["mrr@10"] == 0.0
    assert scores.means["hit@10"] == 0.0
    assert scores.means["recall@100"] == 1.0
    assert scores.means["map@100"] == pytest.approx(1 / 11)


def test_graded_ndcg_uses_the_grades():
    qrels = {"q": {"a": 2, "b": 1}}
    right = evaluate_run(qrels, {"q": {"a": 2.0, "b": 1.0}}).means["ndcg@10"]
    swapped = evaluate_run(qrels, {"q": {"b": 2.0, "a": 1.0}}).means["ndcg@10"]
    assert right == pytest.approx(1.0)
    # trec_eval's ndcg: gain = grade, discount = log2(rank + 1)
    assert swapped == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))


def test_queries_outside_the_qrels_are_ignored():
    scores = evaluate_run({"q1": {"d1": 1}}, {"q1": {"d1": 1.0}, "other": {"d1": 1.0}})
    assert scores.query_ids == ["q1"] and scores.means["ndcg@10"] == 1.0


def test_truncate_run_follows_trec_eval_order():
    run = {"q": {"a": 1.0, "b": 3.0, "c": 1.0, "d": 2.0}}
    assert list(truncate_run(run, 3)["q"]) == ["b", "d", "c"]  # ties: higher doc id first, like trec_eval


def test_errors():
    with pytest.raises(ConfigError, match="unknown"):
        evaluate_run(QRELS, RUN, metrics=["p@5"])
    with pytest.raises(ConfigError, match="empty"):
        evaluate_run({}, RUN)
