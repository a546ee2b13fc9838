import json

import pytest

from ragtune.config import SplitConfig
from ragtune.data.beir import BeirDataset, load_corpus
from ragtune.data.split import SPLITS, group_by_document, split_corpus, with_distractors, write_splits
from ragtune.errors import ConfigError


def _corpus(n_docs: int, sizes=None) -> dict:
    corpus = {}
    for d in range(n_docs):
        for c in range(sizes[d] if sizes else 1 + d % 4):
            corpus[f"doc{d}-{c}"] = {"title": f"T{d}", "text": f"text {d} {c}", "doc": f"doc{d}.txt", "chunk": c}
    return corpus


def _docs(split: dict) -> set[str]:
    return {c["doc"] for c in split.values()}


def test_no_document_in_two_splits_and_all_chunks_kept():
    corpus = _corpus(40)
    splits = split_corpus(corpus, SplitConfig(train=0.6, val=0.2, test=0.2, seed=1))
    assert set(splits) == set(SPLITS)
    docs = [_docs(splits[n]) for n in SPLITS]
    assert not (docs[0] & docs[1]) and not (docs[0] & docs[2]) and not (docs[1] & docs[2])
    assert sorted(cid for s in splits.values() for cid in s) == sorted(corpus)
    total = len(corpus)
    for name, frac in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        assert abs(len(splits[name]) / total - frac) < 0.1
    # corpus order is kept inside a split
    order = list(corpus)
    assert list(splits["train"]) == [c for c in order if c in splits["train"]]


def test_seeded():
    corpus = _corpus(30)
    a = split_corpus(corpus, SplitConfig(seed=7))
    assert a == split_corpus(corpus, SplitConfig(seed=7))
    b = split_corpus(corpus, SplitConfig(seed=8))
    assert {n: set(s) for n, s in a.items()} != {n: set(s) for n, s in b.items()}
    # input order does not matter, only the seed
    shuffled = dict(reversed(list(corpus.items())))
    assert {n: set(s) for n, s in split_corpus(shuffled, SplitConfig(seed=7)).items()} == \
        {n: set(s) for n, s in a.items()}


@pytest.mark.parametrize("seed", range(10))
def test_three_documents_fill_every_split(seed):
    splits = split_corpus(_corpus(3, sizes=[30, 1, 1]), SplitConfig(seed=seed))
    assert all(len(_docs(splits[n])) == 1 for n in SPLITS)


def test_val_zero_and_two_documents():
    splits = split_corpus(_corpus(10), SplitConfig(train=0.8, val=0.0, test=0.2))
    assert splits["val"] == {} and splits["train"] and splits["test"]
    two = split_corpus(_corpus(2), SplitConfig())
    assert two["val"] == {} and len(_docs(two["train"])) == 1 and len(_docs(two["test"])) == 1


def test_too_few_documents():
    with pytest.raises(ConfigError, match="single document.*add more documents"):
        split_corpus(_corpus(1, sizes=[50]))
    with pytest.raises(ConfigError, match="empty"):
        split_corpus({})


def test_chunk_without_doc_is_its_own_document():
    corpus = {f"c{i}": {"title": "", "text": str(i)} for i in range(5)}
    assert group_by_document(corpus) == {f"c{i}": [f"c{i}"] for i in range(5)}
    splits = split_corpus(corpus)
    assert sum(len(s) for s in splits.values()) == 5


def test_write_splits(tmp_path):
    cfg = SplitConfig(train=0.8, val=0.0, test=0.2)
    splits = split_corpus(_corpus(12), cfg)
    report = write_splits(splits, tmp_path / "out", cfg)
    for name in SPLITS:
        assert load_corpus(tmp_path / "out" / name / "corpus.jsonl") == splits[name]
        assert report[name] == {"documents": len(_docs(splits[name])), "chunks": len(splits[name])}
    assert json.loads((tmp_path / "out" / "split-report.json").read_text()) == report
    assert report["config"]["seed"] == 42


def test_distractors_join_the_corpus_but_are_never_judged():
    corpus = _corpus(12)
    splits = split_corpus(corpus, SplitConfig())
    val = BeirDataset(splits["val"], {"q": "text"}, {"q": {next(iter(splits["val"])): 1}}, name="val")
    more, added = with_distractors(val, splits["train"], 5, seed=1)
    assert added == 5 and len(more.corpus) == len(val.corpus) + 5
    assert set(more.corpus) - set(val.corpus) <= set(splits["train"])
    assert more.qrels == val.qrels and more.queries == val.queries and more.name == "val"
    assert with_distractors(val, splits["train"], 5, seed=1)[0].corpus == more.corpus  # seeded
    everything, n = with_distractors(val, splits["train"], 10_000)
    assert n == len(splits["train"]) and everything.corpus.keys() == val.corpus.keys() | splits["train"].keys()
    assert with_distractors(val, splits["train"], 0) == (val, 0)
    assert with_distractors(val, val.corpus, 3) == (val, 0)  # nothing new to add
    with pytest.raises(ConfigError, match="distractors"):
        with_distractors(val, splits["train"], -1)
