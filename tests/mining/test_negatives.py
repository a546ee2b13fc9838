"""Hard-negative mining: known positives never come back, the margin guard drops near-duplicates of the positive,
the rank guard candidates above it, BM25 / both / retrieval-spec miners, the teacher guard and its score cache, determinism, and the sampler's negative-aware batches."""

from __future__ import annotations

import gc
import weakref

import pytest

from ragtune.errors import ConfigError
from ragtune.mining import MinedNegatives, TeacherScorer, mine_negatives
from ragtune.train import NoSharedPositiveBatchSampler
from ragtune.train.pairs import Pair

CORPUS = {
    "eiffel": "The Eiffel Tower in Paris was completed in 1889 for the World's Fair.",
    "eiffel-dup": "The Eiffel Tower in Paris was finished in 1889 for the World Fair.",  # a near-duplicate
    "eiffel-copy": "The Eiffel Tower in Paris was completed in 1889 for the World's Fair.",  # the same text
    "liberty": "The Statue of Liberty in New York was dedicated in 1886.",
    "bigben": "Big Ben is the nickname of the great bell of the clock in London.",
    "colosseum": "The Colosseum in Rome was completed in 80 AD under emperor Titus.",
    "photo": "Photosynthesis converts light into chemical energy in plants.",
    "volcano": "A volcano erupts when magma rises through the crust.",
    "tea": "Green tea is brewed with water below boiling point.",
}
PAIRS = [Pair("When was the Eiffel Tower completed?", CORPUS["eiffel"], "eiffel", "eiffel", "q1"),
         Pair("How do plants turn light into energy?", CORPUS["photo"], "photo", "photo", "q2")]


@pytest.fixture(scope="module")
def minilm(minilm_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_path, device="cpu")


def _ids(result: MinedNegatives, qid: str) -> list[str]:
    return [n.doc_id for n in result.negatives[qid]]


def test_dense_mining_skips_positives_and_the_margin_drops_a_near_duplicate(minilm):
    loose = mine_negatives(PAIRS, CORPUS, num_negatives=3, model=minilm, relative_margin=None)
    for qid, pos in (("q1", "eiffel"), ("q2", "photo")):
        assert pos not in _ids(loose, qid) and len(_ids(loose, qid)) == 3
    assert "eiffel-copy" not in _ids(loose, "q1")  # same text as the positive: a positive too
    assert _ids(loose, "q1")[0] == "eiffel-dup"  # without a guard the near-duplicate is the "hardest negative"
    assert loose.stats["positive_skipped"] >= 3 and loose.stats["margin_dropped"] == 0

    guarded = mine_negatives(PAIRS, CORPUS, num_negatives=3, model=minilm, relative_margin=0.05)
    assert "eiffel-dup" not in _ids(guarded, "q1") and guarded.stats["margin_dropped"] >= 1
    scores = [n.score for n in guarded.negatives["q1"]]
    assert scores == sorted(scores, reverse=True)
    assert all(s < guarded.positive_scores["q1"] * 0.95 for s in scores)


def test_absolute_margin_known_positives_and_rank_window():
    kw = {"num_negatives": 2, "method": "bm25", "relative_margin": None, "pad_random": False}
    loose = mine_negatives(PAIRS, CORPUS, **kw)  # BM25 scores: positive 1.65, eiffel-dup 1.10, volcano 0.99
    assert _ids(loose, "q1") == ["eiffel-dup", "volcano"]
    assert _ids(mine_negatives(PAIRS, CORPUS, absolute_margin=0.5, **kw), "q1")[0] == "eiffel-dup"
    assert _ids(mine_negatives(PAIRS, CORPUS, absolute_margin=0.6, **kw), "q1")[0] == "volcano"
    # judged positives from the qrels are excluded too, and range_min skips the best candidates
    judged = mine_negatives(PAIRS, CORPUS, known_positives={"q1": ["eiffel-dup"]}, **kw)
    assert _ids(judged, "q1") == ["volcano", "colosseum"]
    assert _ids(mine_negatives(PAIRS, CORPUS, range_min=1, **kw), "q1") == ["volcano", "colosseum"]
    assert _ids(mine_negatives(PAIRS, CORPUS, range_min=1, range_max=2, **kw), "q1") == ["volcano"]


def test_bm25_and_both_miners(minilm):
    bm25 = mine_negatives(PAIRS, CORPUS, num_negatives=2, method="bm25", relative_margin=None)
    assert _ids(bm25, "q1")[0] == "eiffel-dup" and {n.source for n in bm25.negatives["q1"]} == {"bm25"}
    assert "eiffel" not in _ids(bm25, "q1") and "eiffel-copy" not in _ids(bm25, "q1")
    # "plants turn light into energy" shares no term with any other passage: padded with random passages
    assert {n.source for n in bm25.negatives["q2"]} == {"random"} and bm25.stats["padded"] == 2
    assert "photo" not in _ids(bm25, "q2")
    both = mine_negatives(PAIRS, CORPUS, num_negatives=3, method="both", model=minilm, relative_margin=0.05)
    assert {n.source for n in both.negatives["q1"]} == {"dense", "bm25"}
    assert not {"eiffel", "eiffel-copy", "eiffel-dup"} & set(_ids(both, "q1"))
    with pytest.raises(ConfigError, match="needs the base model"):
        mine_negatives(PAIRS, CORPUS, num_negatives=1, method="dense")


class RuleTeacher:
    """A teacher that rates the Colosseum passage above every positive, and counts its calls."""

    name_or_path = "rule-teacher"

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, pairs, batch_size=32):
        self.calls += 1
        return [12.0 if "Colosseum" in p else 10.0 if p in (CORPUS["eiffel"], CORPUS["photo"]) else 0.0
                for _, p in pairs]


class Broken:
    def predict(self, pairs, batch_size=32):
        raise AssertionError("should have come from the cache")


def test_teacher_drops_a_candidate_it_rates_above_the_positive_and_caches_scores(tmp_path):
    kw = {"num_negatives": 2, "method": "bm25", "relative_margin": None, "pad_random": False}
    plain = mine_negatives(PAIRS, CORPUS, **kw)
    assert _ids(plain, "q1") == ["eiffel-dup", "volcano"]  # BM25 order: eiffel-dup, volcano, colosseum
    teacher = RuleTeacher()
    scorer = TeacherScorer(teacher, cache_path=tmp_path / "t.sqlite", batch_size=4)
    rescored = mine_negatives(PAIRS, CORPUS, teacher=scorer, teacher_margin=0.0, teacher_candidates=3, **kw)
    assert "colosseum" not in _ids(rescored, "q1") and rescored.stats["teacher_dropped"] == 1
    assert rescored.stats["teacher_scored"] == 3
    assert all(n.teacher_score == 0.0 for n in rescored.negatives["q1"])
    margin = mine_negatives(PAIRS, CORPUS, teacher=scorer, teacher_margin=11.0, teacher_candidates=3, **kw)
    assert margin.negatives["q1"] == [] and margin.stats["teacher_dropped"] == 3  # within 11 of the positive
    assert teacher.calls >= 1
    scorer.close()
    again = TeacherScorer(Broken(), name=scorer.name, cache_path=tmp_path / "t.sqlite")  # all cached
    assert again.score([("When was the Eiffel Tower completed?", CORPUS["colosseum"])]) == [12.0]
    assert TeacherScorer(RuleTeacher()).name == "RuleTeacher:rule-teacher"


def test_closing_a_scorer_lets_go_of_its_teacher_and_keeps_its_scores(tmp_path):
    teacher = RuleTeacher()
    alive = weakref.ref(teacher)
    scorer = TeacherScorer(teacher, cache_path=tmp_path / "t.sqlite", batch_size=4)
    question = "When was the Eiffel Tower completed?"
    assert scorer.score([(question, CORPUS["colosseum"])]) == [12.0]
    scorer.close()
    del teacher
    gc.collect()
    assert alive() is None  # an ONNX teacher would hold gigabytes here
    assert scorer.score([(question, CORPUS["colosseum"])]) == [12.0]  # already scored: read from memory
    with pytest.raises(RuntimeError, match="closed and 1 pairs are not in its cache"):
        scorer.score([(question, CORPUS["volcano"])])


def test_a_retrieval_spec_mines_like_the_built_in_dense_miner(minilm, minilm_path):
    builtin = mine_negatives(PAIRS, CORPUS, num_negatives=3, model=minilm, relative_margin=None)
    spec = f"dense:{minilm_path}"
    system = mine_negatives(PAIRS, CORPUS, num_negatives=3, method=spec, relative_margin=None)
    assert _ids(system, "q1") == _ids(builtin, "q1") and _ids(system, "q2") == _ids(builtin, "q2")
    assert {n.source for n in system.negatives["q1"]} == {spec} and system.stats["method"] == spec
    with pytest.raises(ConfigError, match="unknown retriever"):
        mine_negatives(PAIRS, CORPUS, num_negatives=1, method="tfidf")


@pytest.mark.parametrize("guard", ["none", "same-doc", "above"])
def test_rank_guard_drops_candidates_above_the_positive(guard):
    # the judged positive (liberty) shares no term with the query, so every BM25 candidate ranks above it;
    # eiffel-dup was cut from the positive's document
    pairs = [Pair("When was the Eiffel Tower in Paris completed?", CORPUS["liberty"], "liberty", "docA", "q3")]
    kw = {"num_negatives": 3, "method": "bm25", "relative_margin": None, "groups": {"liberty": "docA",
                                                                                      "eiffel-dup": "docA"}}
    candidates = _ids(mine_negatives(pairs, CORPUS, pad_random=False, **{**kw, "num_negatives": 9}), "q3")
    assert {"eiffel", "eiffel-dup", "eiffel-copy"} <= set(candidates) and "liberty" not in candidates
    dropped = {"none": set(), "same-doc": {"eiffel-dup"}, "above": set(candidates)}[guard]
    mined = mine_negatives(pairs, CORPUS, rank_guard=guard, **kw)
    negs = _ids(mined, "q3")
    assert len(negs) == 3 and "liberty" not in negs and not dropped & set(negs)  # padding never takes them back
    assert mined.stats["rank_guard_dropped"] == len(dropped)
    if guard != "above":
        assert "eiffel" in negs  # above the positive but from another document, and not a near copy of it
    else:
        assert {n.source for n in mined.negatives["q3"]} == {"random"}
    with pytest.raises(ConfigError, match="rank_guard"):
        mine_negatives(pairs, CORPUS, rank_guard="below", **kw)


def test_mining_is_deterministic_and_random_sampling_follows_the_seed():
    kw = {"num_negatives": 2, "method": "bm25", "relative_margin": None, "sampling": "random"}
    a = mine_negatives(PAIRS, CORPUS, seed=1, **kw)
    assert a.negatives == mine_negatives(PAIRS, CORPUS, seed=1, **kw).negatives
    assert MinedNegatives.from_dict(a.to_dict()).negatives == a.negatives
    assert len({tuple(_ids(mine_negatives(PAIRS, CORPUS, seed=s, **kw), "q1")) for s in range(6)}) > 1
    assert len({tuple(_ids(mine_negatives(PAIRS, CORPUS, seed=s, **kw), "q2")) for s in range(6)}) > 1  # padding


def test_user_negatives_come_first():
    pairs = [Pair("q", "pos text", "p1", "p1", "q1", ("given negative", "pos text"))]
    corpus = {"p1": "pos text", "x": "other passage", "y": "third passage"}
    mined = mine_negatives(pairs, corpus, num_negatives=2, method="bm25")
    negs = mined.negatives["q1"]
    assert negs[0].text == "given negative" and negs[0].source == "user" and len(negs) == 2
    assert all(n.text != "pos text" for n in negs)


def test_sampler_keeps_a_rows_hard_negative_out_of_the_batch_of_the_row_it_is_positive_for():
    keys = [f"k{i}" for i in range(12)]
    negs = [{f"k{(i + 1) % 12}"} for i in range(12)]  # row i's hard negative is row i+1's positive
    sampler = NoSharedPositiveBatchSampler(keys, batch_size=4, drop_last=False, seed=3, keys=keys,
                                           negative_keys=negs)
    batches = list(sampler)
    assert sum(len(b) for b in batches) >= 8
    for batch in batches:
        positives = {keys[i] for i in batch}
        assert not positives & set().union(*(negs[i] for i in batch))
    with pytest.raises(ValueError, match="negative_keys has 1 entries"):
        NoSharedPositiveBatchSampler(keys, batch_size=4, drop_last=False, keys=keys, negative_keys=[{"a"}])
