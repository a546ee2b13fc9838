from __future__ import annotations

import json

import pytest

from ragtune.config import EvalConfig
from ragtune.data.beir import BeirDataset, load_beir
from ragtune.errors import ConfigError
from ragtune.evaluate.harness import EvalReport, evaluate_systems
from ragtune.retrieval.systems import RetrievalSystem


class Oracle(RetrievalSystem):
    """Ranks the judged documents first: every metric is 1."""

    name = "oracle"

    def __init__(self, qrels):
        super().__init__()
        self.qrels = qrels

    def _search(self, corpus, queries, top_k, cache):
        self.timings = {"index_s": 0.0, "search_s": 0.01}
        return {q: {d: 1.0 for d in self.qrels[q]} for q in queries}


class Worst(RetrievalSystem):
    """Returns only unjudged documents: every metric is 0."""

    name = "worst"

    def _search(self, corpus, queries, top_k, cache):
        return {q: {"nope": 1.0} for q in queries}


@pytest.fixture()
def dataset() -> BeirDataset:
    corpus = {f"d{i}": {"title": "", "text": f"document {i}"} for i in range(40)}
    queries = {f"q{i}": f"query {i}" for i in range(20)}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(20)}
    return BeirDataset(corpus, queries, qrels, name="synthetic")


def test_report_means_cis_and_p_values(dataset):
    report = evaluate_systems(dataset, [Oracle(dataset.qrels), Worst()], EvalConfig(bootstrap=200),
                              keep_runs=True)
    assert isinstance(report, EvalReport)
    assert list(report.systems) == ["oracle", "worst"] and report.baseline == "oracle"
    assert report.means["oracle"]["ndcg@10"] == 1.0 and report.means["worst"]["ndcg@10"] == 0.0
    assert report.systems["oracle"].ci["hit@1"] == (1.0, 1.0)
    assert report.systems["oracle"].p_values == {}
    assert report.systems["worst"].p_values["ndcg@10"] < 0.001
    assert set(report.runs) == {"oracle", "worst"}
    timings = report.systems["oracle"].timings
    assert timings["queries_per_s"] == pytest.approx(20 / 0.01)
    assert report.num_queries == 20 and report.num_docs == 40


def test_report_serialises(dataset, tmp_path):
    report = evaluate_systems(dataset, [Oracle(dataset.qrels), Worst()], EvalConfig(bootstrap=100),
                              baseline="worst")
    data = json.loads(json.dumps(report.to_dict()))
    assert data["baseline"] == "worst"
    assert data["systems"]["oracle"]["per_query"]["ndcg@10"]["q3"] == 1.0
    assert data["systems"]["oracle"]["ci95"]["mrr@10"] == [1.0, 1.0]
    assert data["config"]["bootstrap"] == 100
    path = report.save(tmp_path / "out" / "report.json")
    assert json.loads(path.read_text())["dataset"] == "synthetic"
    md = report.to_markdown()
    assert md.splitlines()[0].startswith("| system | hit@1 |")
    assert "| oracle | 1.0000 [1.000, 1.000] * |" in md
    assert "baseline" in md and "p < 0.05" in md


def test_no_bootstrap_means_no_intervals(dataset):
    report = evaluate_systems(dataset, [Worst()], EvalConfig(bootstrap=0))
    assert report.systems["worst"].ci == {}
    assert "[" not in report.cell("worst", "ndcg@10")


def test_real_systems_on_the_toy_set(toy_beir, tiny_model_path):
    ds = load_beir(toy_beir)
    report = evaluate_systems(ds, ["bm25", f"dense:{tiny_model_path}"], EvalConfig(top_k=10, bootstrap=100))
    assert list(report.systems) == ["bm25", f"dense:{tiny_model_path}"]
    assert report.means["bm25"]["hit@1"] == 1.0  # every toy query shares words with its document
    for result in report.systems.values():
        assert set(result.per_query["ndcg@10"]) == set(ds.qrels)
        low, high = result.ci["ndcg@10"]
        assert low <= result.means["ndcg@10"] <= high


def test_errors_name_the_argument(dataset):
    with pytest.raises(ConfigError, match="systems is empty"):
        evaluate_systems(dataset, [])
    with pytest.raises(ConfigError, match="more than once"):
        evaluate_systems(dataset, [Worst(), Worst()])
    with pytest.raises(ConfigError, match="baseline='bm25'"):
        evaluate_systems(dataset, [Worst()], baseline="bm25")
    with pytest.raises(ConfigError, match="unknown retriever"):
        evaluate_systems(dataset, ["sparse"])


@pytest.mark.slow
def test_packaged_minilm_beats_a_random_model(toy_beir, minilm_path, tiny_model_path):
    ds = load_beir(toy_beir)
    report = evaluate_systems(ds, [f"dense:{tiny_model_path}", f"dense:{minilm_path}", f"hybrid:{minilm_path}"],
                              EvalConfig(top_k=10, bootstrap=100))
    tiny, minilm = report.means[f"dense:{tiny_model_path}"], report.means[f"dense:{minilm_path}"]
    assert minilm["ndcg@10"] > tiny["ndcg@10"]
    assert minilm["hit@1"] >= 0.8
    assert report.means[f"hybrid:{minilm_path}"]["hit@5"] == 1.0
