from __future__ import annotations

import pytest

from ragtune.data.beir import load_beir
from ragtune.errors import ConfigError
from ragtune.retrieval.bm25 import doc_text
from ragtune.retrieval.dense import DenseRetriever


@pytest.fixture(scope="module")
def tiny_model(tiny_model_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(tiny_model_path, device="cpu")


@pytest.fixture()
def toy(toy_beir):
    return load_beir(toy_beir)


def _ranked(run):
    return {q: sorted(docs, key=lambda d: (-docs[d], d)) for q, docs in run.items()}


def test_block_streaming_matches_one_block(tiny_model, toy):
    one = DenseRetriever(tiny_model, batch_size=4, block_size=1000).search(toy.corpus, toy.queries, top_k=3)
    streamed = DenseRetriever(tiny_model, batch_size=4, block_size=2).search(toy.corpus, toy.queries, top_k=3)
    assert _ranked(one) == _ranked(streamed)
    for qid in one:
        assert len(one[qid]) == 3
        for did, score in one[qid].items():
            assert streamed[qid][did] == pytest.approx(score, abs=1e-5)


def test_scores_are_cosine_similarities_of_title_plus_text(tiny_model, toy):
    import torch

    query = toy.queries["q1"]
    run = DenseRetriever(tiny_model, block_size=4).search(toy.corpus, {"q1": query}, top_k=10)
    assert len(run["q1"]) == len(toy.corpus)  # top_k is clamped to the corpus size
    doc_ids = list(toy.corpus)
    q = torch.nn.functional.normalize(tiny_model.encode([query], convert_to_tensor=True), dim=-1)
    d = tiny_model.encode([f"{toy.corpus[i]['title']} {toy.corpus[i]['text']}" for i in doc_ids],
                          convert_to_tensor=True)
    expected = (q @ torch.nn.functional.normalize(d, dim=-1).T)[0].tolist()
    for did, score in zip(doc_ids, expected, strict=True):
        assert run["q1"][did] == pytest.approx(score, abs=1e-4)
    assert doc_text(toy.corpus["d1"]).startswith("Photosynthesis Plants turn")


def test_cache_embeddings_encodes_the_corpus_once(tiny_model, toy, monkeypatch):
    retriever = DenseRetriever(tiny_model, block_size=2, cache_embeddings=True)
    calls = []
    original = retriever.encode_corpus
    monkeypatch.setattr(retriever, "encode_corpus", lambda texts: calls.append(len(texts)) or original(texts))
    first = retriever.search(toy.corpus, toy.queries, top_k=2)
    second = retriever.search(toy.corpus, toy.queries, top_k=2)
    assert calls == [2, 2, 2]
    assert _ranked(first) == _ranked(second)
    changed = {**toy.corpus, "d7": {"title": "", "text": "a new document"}}
    retriever.search(changed, toy.queries, top_k=2)
    assert len(calls) == 7  # a different corpus is encoded again


def test_loads_a_model_by_path(tiny_model_path, toy):
    retriever = DenseRetriever(tiny_model_path, block_size=3)
    run = retriever.search(toy.corpus, {"q": "volcano"}, top_k=2)
    assert len(run["q"]) == 2
    assert {"load_s", "index_s", "search_s"} <= set(retriever.timings)


def test_invalid_arguments_raise_config_error(tiny_model, toy):
    with pytest.raises(ConfigError, match="block_size"):
        DenseRetriever(tiny_model, block_size=0)
    with pytest.raises(ConfigError, match="empty"):
        DenseRetriever(tiny_model).search({}, toy.queries)
    assert DenseRetriever(tiny_model).search(toy.corpus, {}) == {}


def test_max_length_sets_how_many_tokens_of_each_text_are_read(tiny_model_path):
    shared = "volcanic ash covered the town " * 8  # far more than 16 tokens, the same in both documents
    corpus = {"a": {"title": "", "text": shared + "glaciers melt in spring"},
              "b": {"title": "", "text": shared + "markets fell on friday"}}
    queries = {"q": "glaciers melt"}
    cut = DenseRetriever(tiny_model_path, max_length=16)
    short = cut.search(corpus, queries, top_k=2)
    assert cut.model.max_seq_length == 16
    assert short["q"]["a"] == pytest.approx(short["q"]["b"], abs=1e-6)  # both cut inside the shared words
    whole = DenseRetriever(tiny_model_path).search(corpus, queries, top_k=2)  # the fixture's own 128 tokens
    assert abs(whole["q"]["a"] - whole["q"]["b"]) > 1e-4
    longer = DenseRetriever(tiny_model_path, max_length=512)
    assert longer.search(corpus, queries, top_k=2)["q"] == pytest.approx(whole["q"])  # both read every token
    assert longer.model.max_seq_length == 512  # the encoder's whole position table
    with pytest.raises(ConfigError, match=r"max_length=513: .*tiny-bert.* has 512 positions.*at most 512"):
        DenseRetriever(tiny_model_path, max_length=513).search(corpus, queries)
    with pytest.raises(ConfigError, match="max_length=0"):
        DenseRetriever(tiny_model_path, max_length=0)
