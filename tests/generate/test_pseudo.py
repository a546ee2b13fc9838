"""Offline pseudo-queries: inverse cloze, random crop, the evaluation set, the dispatcher and the files."""

from __future__ import annotations

import logging

import pytest

from ragtune.config import GenerateConfig
from ragtune.data.beir import BeirDataset, load_beir, load_corpus
from ragtune.errors import ConfigError, DataFormatError
from ragtune.generate import (
    GeneratedSet,
    crop_queries,
    cut_spans,
    eval_set,
    generate_queries,
    ict_queries,
    load_generated,
    sentence_spans,
    with_ict_queries,
    write_generated,
)

CORPUS = {
    "a": {"title": "Plants", "text": "Plants turn sunlight into sugar. Chlorophyll absorbs the light.\n\n"
                                     "Leaves are green and flat. Roots take up water from the soil."},
    "b": {"title": "", "text": "长城是中国古代的军事防御工程。它东起山海关，西至嘉峪关。城墙总长度超过两万公里。"},
    "c": {"title": "", "text": "a single sentence without a full stop but with plenty of words to crop from"},
    "d": {"title": "", "text": "tiny"},
}


@pytest.mark.parametrize("text, expected", [
    ("One here. Two there! Three?", ["One here.", "Two there!", "Three?"]),
    ("It uses e.g. lists. Then it stops.", ["It uses e.g. lists.", "Then it stops."]),
    ("第一句。第二句！第三句？", ["第一句。", "第二句！", "第三句？"]),
    ("Para one\nwraps here.\n\nPara two.", ["Para one\nwraps here.", "Para two."]),
])
def test_sentence_spans_point_into_the_text(text, expected):
    assert [text[s:e] for s, e in sentence_spans(text)] == expected


def test_cut_spans_removes_and_tidies():
    text = "One here. Two there. Three."
    (s1, e1), (s2, e2), _ = sentence_spans(text)
    assert cut_spans(text, [(s2, e2)]) == "One here. Three."
    assert cut_spans(text, [(s1, e1)]) == "Two there. Three."
    assert cut_spans("第一句。第二句。", [(0, 4)]) == "第二句。"


def test_ict_queries_are_sentences_of_their_chunk():
    gs = ict_queries(CORPUS, per_chunk=2, mask_prob=0.5, seed=1)
    assert isinstance(gs, GeneratedSet) and gs.method == "ict"
    for qid, text in gs.queries.items():
        (chunk,) = gs.qrels[qid]
        meta = gs.metadata[qid]
        assert qid.startswith(f"{chunk}-{meta['method']}")
        if meta["method"] == "ict":
            s, e = meta["span"]
            assert " ".join(CORPUS[chunk]["text"][s:e].split()) == text
            assert isinstance(meta["mask"], bool)
    assert {q for q in gs.queries if q.startswith("a-")} == {"a-ict0", "a-ict1"}
    assert {q for q in gs.queries if q.startswith("b-")} == {"b-ict0", "b-ict1"}
    assert gs.metadata["c-crop0"]["method"] == "crop"  # one sentence: falls back to a crop
    assert not any(q.startswith("d-") for q in gs.queries)  # too short for anything


def test_ict_is_deterministic_and_stable_per_chunk():
    one = ict_queries(CORPUS, 2, 0.9, seed=7)
    assert one.queries == ict_queries(CORPUS, 2, 0.9, seed=7).queries
    only_a = ict_queries({"a": CORPUS["a"]}, 2, 0.9, seed=7)
    assert only_a.queries == {q: t for q, t in one.queries.items() if q.startswith("a-")}
    masks = ict_queries({f"x{i}": CORPUS["a"] for i in range(200)}, 1, 0.9, seed=3).metadata.values()
    assert 0.8 < sum(m["mask"] for m in masks) / 200 <= 1.0
    assert not any(m["mask"] for m in ict_queries(CORPUS, 1, 0.0).metadata.values())


def test_crop_queries_lengths_and_chinese_characters():
    gs = crop_queries(CORPUS, per_chunk=3, min_words=3, max_words=5, seed=0)
    assert gs.method == "crop" and "d-crop0" not in gs.queries
    for qid, text in gs.queries.items():
        chunk = next(iter(gs.qrels[qid]))
        if chunk == "b":
            assert 3 <= len(text) <= 5 and " " not in text
            assert text in CORPUS["b"]["text"]
        else:
            assert 3 <= len(text.split()) <= 5
            assert text in " ".join(CORPUS[chunk]["text"].split())
    with pytest.raises(DataFormatError, match="min_words"):
        crop_queries(CORPUS, min_words=9, max_words=4)


def test_eval_set_removes_the_query_sentence_and_keeps_distractors():
    ds = eval_set(CORPUS, per_chunk=1, seed=0)
    assert set(ds.corpus) == set(CORPUS)  # every chunk stays, queried or not
    assert set(ds.queries) == {"a-ict0", "b-ict0"}  # c has one sentence, d none
    for qid, text in ds.queries.items():
        (chunk,) = ds.qrels[qid]
        assert text not in ds.corpus[chunk]["text"]
        assert ds.corpus[chunk]["text"]  # something is left to find
    assert ds.corpus["c"] == CORPUS["c"]
    two = eval_set(CORPUS, per_chunk=5)
    assert len([q for q in two.queries if q.startswith("b-")]) == 2  # never all three sentences
    with pytest.raises(DataFormatError, match="two or more sentences"):
        eval_set({"x": {"title": "", "text": "no sentences here"}})


def test_with_ict_queries_adds_one_sentence_per_drawn_document_outside_the_excluded():
    corpus = {f"{k}{i}": CORPUS[k] for k in ("a", "b") for i in range(5)}
    ds = BeirDataset(corpus, {"q1": "how do plants eat"}, {"q1": {"a0": 1}}, {"q1": {"method": "llm"}}, name="t")
    mixed = with_ict_queries(ds, 4, exclude={"a1", "b1", "b2"}, seed=5)
    added = [q for q in mixed.queries if q != "q1"]
    assert len(added) == 4 and mixed.name == "t+ict" and mixed.query_metadata["q1"] == {"method": "llm"}
    docs = [d for q in added for d in mixed.qrels[q]]
    assert len(set(docs)) == 4 and not set(docs) & {"a1", "b1", "b2"}
    for q in added:
        (doc,) = mixed.qrels[q]
        assert q == f"{doc}-ict0" and mixed.queries[q] in corpus[doc]["text"]  # the sentence stays in its document
        assert mixed.query_metadata[q]["method"] == "ict"
    assert mixed.queries == with_ict_queries(ds, 4, exclude={"a1", "b1", "b2"}, seed=5).queries
    assert ds.queries == {"q1": "how do plants eat"}  # the input is left as it was
    assert len(with_ict_queries(ds, 100).queries) == 1 + len(corpus)  # at most one per document
    taken = BeirDataset(corpus, {"a0-ict0": "kept"}, {"a0-ict0": {"a0": 1}}, name="t")
    assert with_ict_queries(taken, 100).queries["a0-ict0"] == "kept"  # an id in use keeps its query
    assert with_ict_queries(ds, 0).queries == ds.queries
    with pytest.raises(DataFormatError, match="n_docs"):
        with_ict_queries(ds, -1)


def test_generate_queries_dispatch(caplog, monkeypatch):
    for var in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "RAGTUNE_LLM_MODEL"):
        monkeypatch.delenv(var, raising=False)
    assert generate_queries(CORPUS, GenerateConfig(method="crop")).method == "crop"
    assert generate_queries(CORPUS, GenerateConfig(method="ict")).note is None
    with caplog.at_level(logging.WARNING, logger="ragtune"):
        auto = generate_queries(CORPUS, GenerateConfig(method="auto"))
    assert auto.method == "ict" and "no LLM configured" in auto.note
    assert "no LLM configured" in caplog.text
    with pytest.raises(ConfigError, match="method='llm' but no LLM configured"):
        generate_queries(CORPUS, GenerateConfig(method="llm"))


def test_write_and_load_generated_round_trip(toy_beir):
    corpus = load_corpus(toy_beir / "corpus.jsonl")
    gs = generate_queries(corpus, GenerateConfig(method="auto", per_chunk=1))
    write_generated(gs, toy_beir)
    back = load_generated(toy_beir)
    assert back.queries == gs.queries and back.qrels == gs.qrels and back.metadata == gs.metadata
    assert back.method == "ict" and back.note == gs.note
    ds = load_beir(toy_beir, queries="gen-queries.jsonl", qrels="gen-qrels.tsv")
    assert set(ds.queries) == set(gs.queries) and ds.query_metadata == gs.metadata
