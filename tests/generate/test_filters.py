"""The filter chain: each step drops what it should, says why, and leaves the rest (and the inputs) alone."""

from __future__ import annotations

import pytest

from ragtune.generate import GeneratedSet
from ragtune.generate.filters import (
    FilterConfig,
    copy_overlap,
    filter_questions,
    filter_set,
    near_duplicates,
)

CORPUS = {
    "plants": {"title": "Photosynthesis", "text": "Plants turn sunlight, water and carbon dioxide into glucose "
                                                  "and oxygen. Chlorophyll in the leaves absorbs the light."},
    "volcano": {"title": "Volcanoes", "text": "A volcano erupts when magma rises through the crust. Lava flows "
                                              "and ash clouds follow the eruption."},
    "tea": {"title": "Tea", "text": "Green tea is made from unoxidised leaves of Camellia sinensis, brewed "
                                    "below boiling point."},
    "nile": {"title": "Rivers", "text": "The Nile flows north through Egypt into the Mediterranean Sea."},
}
ZH_CORPUS = {
    "wall": {"title": "长城", "text": "长城是中国古代的军事防御工程。它东起山海关，西至嘉峪关。"},
    "tea": {"title": "绿茶", "text": "绿茶是不发酵的茶，用低于沸点的水冲泡，口感清爽。"},
}
# Only the steps named are on; everything else off.
OFF = dict(language=False, standalone=False, max_copy_overlap=None, dedupe=False, near_duplicate=None, roundtrip="none",
           min_words=1, max_words=1000)


def run(queries, sources, config=None, corpus=CORPUS, **kw):
    qrels = {q: {sources[q]: 1} for q in queries}
    return filter_questions(queries, qrels, corpus, config, **kw)


def step(out, name):
    return next(s for s in out.report.steps if s.name == name)


def test_length_bounds_in_words_and_chinese_characters() -> None:
    out = run({"a": "Why?", "b": "How do plants make sugar?", "c": " ".join(["word"] * 12) + "?"},
              dict.fromkeys("abc", "plants"), FilterConfig(**{**OFF, "min_words": 3, "max_words": 10}))
    assert list(out.queries) == ["b"]
    assert dict(step(out, "length").reasons) == {"shorter than 3 words": 1, "longer than 10 words": 1}
    zh = run({"a": "长城？", "b": "长城东起哪里？"}, {"a": "wall", "b": "wall"},
             FilterConfig(**{**OFF, "min_chars_zh": 4}), corpus=ZH_CORPUS)
    assert list(zh.queries) == ["b"] and "characters" in zh.report.dropped["a"]["reason"]


def test_language_step_drops_questions_in_another_language() -> None:
    out = run({"en": "How do plants make sugar?", "zh": "植物如何制造糖分？"}, {"en": "plants", "zh": "plants"},
              FilterConfig(**{**OFF, "language": True}))
    assert list(out.queries) == ["en"]
    assert out.report.dropped["zh"]["reason"] == "not en (zh)"
    zh = run({"en": "Where does the Great Wall start?", "zh": "长城东起哪里？"}, {"en": "wall", "zh": "wall"},
             FilterConfig(**{**OFF, "language": True}), corpus=ZH_CORPUS)
    assert list(zh.queries) == ["zh"]


@pytest.mark.parametrize("text,dropped", [
    ("What does the passage say about chlorophyll?", True),
    ("The passage discusses the effects of light on leaves.", True),
    ("According to this study, how fast do plants grow?", True),
    ("What did the authors measure?", True),
    ("How does this finding relate to tolerance?", True),
    ("文中提到长城东起哪里？", True),
    ("What did the study find about leaves?", True),
    ("What was the study's main finding?", True),
    ("What did this study on mice show?", True),
    ("Based on the context information, when do leaves fall?", True),
    ("How do plants use light to make sugar?", False),
    ("Which text editor supports Python?", False),  # 'text' alone is fine
    ("What is the role of chlorophyll in the context of drought?", False),  # names its subject
    ("What was the main finding of the study on leaf colour in autumn?", False),
    ("What did the paper by Calvin show about carbon fixation?", False),
])
def test_standalone_step_drops_questions_that_point_at_their_text(text, dropped) -> None:
    out = run({"q": text}, {"q": "plants"}, FilterConfig(**{**OFF, "standalone": True}))
    assert (not out.queries) == dropped
    if dropped:
        assert out.report.dropped["q"]["reason"].startswith("refers to its source text")


def test_copy_step_drops_questions_lifted_from_the_chunk() -> None:
    q = {"copy": "Plants turn sunlight, water and carbon dioxide into glucose?",
         "own": "How do green plants make sugar from light?"}
    out = run(q, dict.fromkeys(q, "plants"), FilterConfig(**{**OFF, "max_copy_overlap": 0.6}))
    assert list(out.queries) == ["own"]
    assert "copied from the chunk" in out.report.dropped["copy"]["reason"]
    assert out.metadata["own"]["filters"]["copy_overlap"] < 0.6
    assert copy_overlap("长城是中国古代的军事防御工程吗？", ZH_CORPUS["wall"]["text"], 4, zh=True) > 0.8
    assert copy_overlap("长城东起哪里？", ZH_CORPUS["wall"]["text"], 4, zh=True) == 0.0


def test_exact_and_near_duplicates() -> None:
    q = {"a": "How do plants make sugar from light?", "b": "how do plants make SUGAR from light",
         "c": "How do plants make sugar out of light?", "d": "What makes a volcano erupt?"}
    out = run(q, dict.fromkeys(q, "plants"), FilterConfig(**{**OFF, "dedupe": True, "near_duplicate": 0.6}))
    assert list(out.queries) == ["a", "d"]
    assert out.report.dropped["b"] == {"text": q["b"], "step": "exact-dup", "reason": "same as a",
                                       "source": ["plants"]}
    assert out.report.dropped["c"]["step"] == "near-dup"


def test_near_duplicates_prefix_join_matches_brute_force() -> None:
    import random

    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(30)]
    queries = {f"q{i}": " ".join(rng.sample(vocab, rng.randint(3, 8))) for i in range(300)}
    found = near_duplicates(queries, 0.5)
    sets = {k: set(v.split()) for k, v in queries.items()}
    ids = list(queries)
    for i, qid in enumerate(ids):  # brute force: is there an earlier, kept question with Jaccard >= 0.5?
        kept_before = [o for o in ids[:i] if o not in found]
        has = any(len(sets[qid] & sets[o]) / len(sets[qid] | sets[o]) >= 0.5 for o in kept_before)
        assert has == (qid in found), qid


def test_roundtrip_with_bm25_and_with_a_callable() -> None:
    q = {"good": "Why does a volcano erupt when magma rises?", "bad": "Which river flows through Egypt?"}
    sources = {"good": "volcano", "bad": "tea"}  # "bad" is judged against the wrong chunk
    cfg = FilterConfig(**{**OFF, "roundtrip": "bm25", "roundtrip_k": 1})
    out = run(q, sources, cfg)
    assert list(out.queries) == ["good"]
    assert out.metadata["good"]["filters"]["roundtrip_rank"] == 1
    assert out.report.dropped["bad"]["reason"] == "source chunk not in the retriever's top 1"

    def always_tea(queries, k):  # a custom retriever returning a run
        return {qid: {"tea": 1.0, "nile": 0.5} for qid in queries}

    custom = run(q, sources, cfg, retriever=always_tea)
    assert list(custom.queries) == ["bad"]


def test_roundtrip_chinese_uses_jieba_tokens() -> None:
    q = {"a": "长城东起哪里？", "b": "绿茶用什么温度的水冲泡？"}
    out = run(q, {"a": "wall", "b": "tea"}, FilterConfig(**{**OFF, "roundtrip": "bm25", "roundtrip_k": 1}),
              corpus=ZH_CORPUS)
    assert list(out.queries) == ["a", "b"]


def test_report_counts_parse_failures_and_renders() -> None:
    out = run({"a": "How do plants make sugar?"}, {"a": "plants"}, FilterConfig(**OFF),
              parse_failures={"tea": "unparseable reply"})
    parse = step(out, "parse")
    assert parse.dropped == 1 and parse.examples == ["tea"]
    md = out.report.to_markdown()
    assert "| parse | 1 | unparseable reply (1) |" in md and "**1** of 1" in md
    assert out.report.to_dict()["kept"] == 1


def test_inputs_untouched_and_disabled_chain_keeps_everything() -> None:
    q = {"a": "Why?", "b": "Why?"}
    meta = {"a": {"method": "x"}}
    out = run(q, {"a": "plants", "b": "plants"}, FilterConfig(enabled=False), metadata=meta)
    assert out.queries == q and out.report.kept == 2
    assert meta == {"a": {"method": "x"}}


@pytest.mark.parametrize("field", ["queries", "qrels", "metadata"])
def test_filter_set_works_on_pseudo_query_sets(field: str) -> None:
    gs = GeneratedSet(method="ict")
    gs.add("q1", "Chlorophyll in the leaves absorbs the light.", "plants", {"method": "ict"})
    gs.add("q2", "Chlorophyll in the leaves absorbs the light.", "plants", {"method": "ict"})
    cfg = FilterConfig(max_copy_overlap=None, roundtrip="none")  # ICT queries copy their chunk by design
    out, report = filter_set(gs, CORPUS, cfg)
    assert isinstance(out, GeneratedSet) and out.method == "ict"
    assert list(getattr(out, field)) == ["q1"]
    assert report.kept == 1
