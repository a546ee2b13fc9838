from __future__ import annotations

import pytest

from ragtune.errors import ConfigError
from ragtune.retrieval.bm25 import BM25Retriever, Tokenizer, doc_text

CORPUS = {
    "d1": {"title": "Photosynthesis", "text": "Plants turn sunlight and water into glucose."},
    "d2": {"title": "Volcanoes", "text": "A volcano erupts when magma rises through the crust."},
    "d3": {"title": "Rivers", "text": "The Nile flows north through Egypt."},
    "d4": {"title": "长城", "text": "长城是中国古代的军事防御工程。它东起山海关，西至嘉峪关。"},
}
ZH_CORPUS = {
    "z1": {"title": "长城", "text": "长城是中国古代的军事防御工程，东起山海关，西至嘉峪关。"},
    "z2": {"title": "黄河", "text": "黄河是中国第二长河，发源于青藏高原，流入渤海。"},
    "z3": {"title": "熊猫", "text": "大熊猫生活在四川的竹林里，主要以竹子为食。"},
}


def test_doc_text_joins_title_and_text():
    assert doc_text({"title": "T", "text": "body"}) == "T body"
    assert doc_text({"title": "", "text": " body "}) == "body"


def test_english_tokenizer_lowercases_drops_stopwords_and_stems():
    tok = Tokenizer("en")
    assert tok("The Rivers are Flowing into the sea") == ["river", "flow", "sea"]
    assert Tokenizer("en", stopwords=False, stem=False)("The rivers") == ["the", "rivers"]


def test_chinese_tokenizer_uses_jieba_words():
    tokens = Tokenizer("zh")("长城东起山海关。")
    assert "长城" in tokens and "山海关" in tokens
    assert "。" not in tokens


def test_english_tokenizer_still_cuts_cjk_runs():
    assert "长城" in Tokenizer("en")("The 长城是中国古代的军事防御工程")


@pytest.mark.parametrize(("query", "expected"), [
    ("how do plants make glucose", "d1"),
    ("what happens when magma rises", "d2"),
    ("which river flows through egypt", "d3"),
    ("长城 东起 哪里", "d4"),
])
def test_bm25_ranks_the_matching_document_first(query, expected):
    retriever = BM25Retriever().index(CORPUS)
    assert retriever.resolved_language == "en"
    run = retriever.search({"q": query}, top_k=10)
    assert max(run["q"], key=run["q"].get) == expected


def test_bm25_detects_chinese_and_searches_it():
    retriever = BM25Retriever().index(ZH_CORPUS)
    assert retriever.resolved_language == "zh"
    run = retriever.search({"a": "熊猫吃什么", "b": "黄河流入哪里"}, top_k=3)
    assert max(run["a"], key=run["a"].get) == "z3"
    assert max(run["b"], key=run["b"].get) == "z2"


def test_bm25_leaves_out_non_matching_documents_and_clamps_top_k():
    run = BM25Retriever().index(CORPUS).search({"q": "volcano", "none": "zzzz qqqq", "stop": "the and of"},
                                              top_k=100)
    assert list(run["q"]) == ["d2"]
    assert run["none"] == {} and run["stop"] == {}


def test_bm25_errors_name_the_problem():
    with pytest.raises(ConfigError, match="language"):
        BM25Retriever(language="fr")
    with pytest.raises(ConfigError, match="before index"):
        BM25Retriever().search({"q": "x"})
    with pytest.raises(ConfigError, match="empty"):
        BM25Retriever().index({})
