from __future__ import annotations

import pytest

from ragtune.data.beir import BeirDataset
from ragtune.errors import DataFormatError
from ragtune.retrieval.bm25 import doc_text
from ragtune.train.reranker import RerankerTrainConfig
from ragtune.train.reranker_examples import build_examples, given_negatives, mine_negatives, query_positives

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(("guard", "dropped"), [("same-doc", {"sibling", "near"}), ("none", set()),
                                                ("above", {"sibling", "near", "other"})])
def test_false_negative_guard_and_positive_skipping(guard, dropped, guard_set):
    ds = guard_set
    from ragtune.retrieval.systems import parse_system

    ranked = list(parse_system("bm25").search(ds.corpus, ds.queries, 6)["q"])
    above = set(ranked[:ranked.index("pos")])
    assert {"sibling", "near", "other"} <= above  # the crafted candidates really rank above the positive
    cfg = RerankerTrainConfig(first_stage="bm25", negatives=5, false_negative_guard=guard, mine_top_k=6)
    negs, stats = mine_negatives(ds, cfg)
    assert "pos" not in negs["q"] and stats["positive_skipped"] == 1
    assert not (set(negs["q"]) - {"far"}) & (dropped & above)
    assert (above - dropped) <= set(negs["q"])
    assert stats["rank_guard_dropped"] == len(dropped & above)


def test_a_bare_dense_first_stage_mines_with_the_packaged_minilm(guard_set):
    negs, stats = mine_negatives(guard_set, RerankerTrainConfig(first_stage="dense", negatives=2))
    assert len(negs["q"]) == 2 and "pos" not in negs["q"] and stats["method"] == "dense:minilm"


def test_examples_for_each_loss(guard_set):
    ds = guard_set
    pos, negs = {"q": ["pos"]}, {"q": ["far", "below"]}
    bce = build_examples(ds.corpus, ds.queries, pos, negs, "bce")
    assert sorted(bce["label"]) == [0.0, 0.0, 1.0] and set(bce) == {"query", "passage", "label"}
    listwise = build_examples(ds.corpus, ds.queries, pos, negs, "lambda")
    assert listwise["labels"] == [[1.0, 0.0, 0.0]] and listwise["docs"][0][0] == doc_text(ds.corpus["pos"])


def test_positives_need_query_text_and_a_judged_document_in_the_corpus(guard_set):
    queries = {"q": "alpha", "blank": "  ", "lost": "omega", "unjudged": "zeta"}
    qrels = {"q": {"pos": 1, "far": 0}, "blank": {"pos": 1}, "lost": {"not-in-corpus": 1}, "unjudged": {"near": 0}}
    ds = BeirDataset(guard_set.corpus, queries, qrels, name="t")
    assert query_positives(ds) == {"q": ["pos"]}


def test_given_negatives_drop_positives_and_keep_at_most_n(guard_set, caplog):
    positives = {"q": ["pos"], "q2": ["near"]}
    negs, stats = given_negatives(guard_set, positives, {"q": ["pos", "far", "below", "other"]}, 2)
    assert negs == {"q": ["far", "below"], "q2": []}
    assert stats == {"given": True, "queries": 2, "kept": 2}
    assert "1 of 2 training queries have none" in caplog.text
    with pytest.raises(DataFormatError, match="not in the training corpus"):
        given_negatives(guard_set, positives, {"q": ["nope"]}, 2)
