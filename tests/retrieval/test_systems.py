from __future__ import annotations

import pytest

from ragtune.config import EvalConfig
from ragtune.errors import ConfigError
from ragtune.retrieval.systems import (
    BM25System,
    DenseSystem,
    HybridSystem,
    parse_system,
    reciprocal_rank_fusion,
)


@pytest.fixture()
def toy(toy_beir):
    from ragtune.data.beir import load_beir

    return load_beir(toy_beir)


@pytest.mark.parametrize(("spec", "cls", "name"), [
    ("bm25", BM25System, "bm25"),
    (" BM25 ", BM25System, "bm25"),
    ("dense", DenseSystem, "dense:minilm"),
    ("dense:minilm", DenseSystem, "dense:minilm"),
    ("dense:/abs/path/model", DenseSystem, "dense:/abs/path/model"),
    ("dense:C:/models/with:colon", DenseSystem, "dense:C:/models/with:colon"),
    ("hybrid", HybridSystem, "hybrid:minilm"),
    ("hybrid:/abs/path", HybridSystem, "hybrid:/abs/path"),
    ("dense(max_length=512):x", DenseSystem, "dense(max_length=512):x"),
    ("hybrid(max_length=512):x", HybridSystem, "hybrid(max_length=512):x"),
    ("hybrid(alpha=0.7, max_length=384):x", HybridSystem, "hybrid(alpha=0.7,max_length=384):x"),
])
def test_parse_valid_specs(spec, cls, name):
    system = parse_system(spec)
    assert isinstance(system, cls)
    assert system.name == name


def test_parse_uses_eval_config_for_dense():
    system = parse_system("dense:x", EvalConfig(batch_size=8, block_size=2000))
    assert (system.batch_size, system.block_size) == (8, 2000)
    assert parse_system(system) is system


@pytest.mark.parametrize(("spec", "message"), [
    ("bm42", "unknown retriever 'bm42'"),
    ("", "empty"),
    ("dense:", "nothing after 'dense:'"),
    ("bm25:k1", "bm25 takes no argument"),
    ("bm25>shuffle:x", "unknown pipeline stage 'shuffle'"),
    ("hybrid:minilm>rerank", "name the reranker after .rerank:."),
    ("dense(max_length=0):x", "max_length='0' must be a positive number of tokens"),
    ("hybrid(max_length=long):x", "max_length='long' must be a positive number of tokens"),
    ("dense(alpha=0.5):x", r"dense has no parameter \['alpha'\]; use max_length"),
    ("bm25(max_length=512)", "bm25 takes no parameters"),
])
def test_parse_invalid_specs_name_the_valid_forms(spec, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_system(spec)
    if "rerank" not in spec:
        assert "dense:MODEL" in str(info.value)


def test_reciprocal_rank_fusion_by_hand():
    a = {"q": {"x": 3.0, "y": 2.0, "z": 1.0}}
    b = {"q": {"y": 0.9, "w": 0.5}}
    fused = reciprocal_rank_fusion([a, b], k=60)
    assert fused["q"]["y"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["q"]["x"] == pytest.approx(1 / 61)
    assert fused["q"]["w"] == pytest.approx(1 / 62)
    assert list(reciprocal_rank_fusion([a, b], top_k=2)["q"]) == ["y", "x"]


def test_hybrid_reuses_component_runs_from_the_cache(tiny_model_path, toy):
    cache: dict = {}
    bm25_run = BM25System().search(toy.corpus, toy.queries, 5, cache=cache)
    hybrid = parse_system(f"hybrid:{tiny_model_path}")
    run = hybrid.search(toy.corpus, toy.queries, 5, cache=cache)
    assert cache["bm25"][0] is bm25_run
    assert f"dense:{tiny_model_path}" in cache and hybrid.name in cache
    assert set(run) == set(toy.queries)
    assert all(len(docs) <= 5 for docs in run.values())
    assert hybrid.timings["search_s"] >= 0 and "load_s" in hybrid.timings
    dense_run = cache[f"dense:{tiny_model_path}"][0]
    assert run == reciprocal_rank_fusion([bm25_run, dense_run], top_k=5)


def test_max_length_reaches_the_dense_search_and_its_cache_entry(tiny_model_path, toy):
    cache: dict = {}
    hybrid = parse_system(f"hybrid(max_length=16):{tiny_model_path}")
    assert hybrid.dense.max_length == 16 and parse_system(f"dense:{tiny_model_path}").max_length is None
    hybrid.search(toy.corpus, toy.queries, 5, cache=cache)
    assert hybrid.dense._retriever.model.max_seq_length == 16
    assert f"dense(max_length=16):{tiny_model_path}" in cache and f"dense:{tiny_model_path}" not in cache
