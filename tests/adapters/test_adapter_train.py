"""train_adapter end to end: on cached vectors, over a loopback endpoint or a tiny ST model, CLI and systems."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from ragtune.adapters import (
    AdaptedEncoder,
    AdapterConfig,
    EmbeddingCache,
    EndpointEncoder,
    build_adapter,
    fit_adapter,
    mine_negatives,
    train_adapter,
)
from ragtune.adapters.fit import VectorSet, evaluate_vectors
from ragtune.cli.app import app
from ragtune.data.beir import BeirDataset, load_beir
from ragtune.errors import ConfigError, DataFormatError
from ragtune.retrieval.systems import DenseSystem, parse_system


def _synthetic(n_docs: int = 500, n_queries: int = 300, dim: int = 24, seed: int = 0):
    """Queries are a fixed random linear distortion of their document plus noise: the frozen space is poor."""
    g = torch.Generator().manual_seed(seed)
    docs = F.normalize(torch.randn(n_docs, dim, generator=g), dim=-1)
    mix = 0.6 * torch.eye(dim) + torch.randn(dim, dim, generator=g) / dim ** 0.5
    targets = torch.randint(0, n_docs, (n_queries,), generator=g)
    queries = F.normalize(docs[targets] @ mix.T + 0.1 * torch.randn(n_queries, dim, generator=g), dim=-1)
    return queries, docs, [[int(t)] for t in targets]


def _vset(q, d, pos, prefix="q"):
    return VectorSet(q, d, pos, [f"{prefix}{i}" for i in range(len(q))], [f"d{i}" for i in range(len(d))])


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_fit_moves_retrieval_and_early_stopping_keeps_the_best(kind):
    q, d, pos = _synthetic()
    train, val = _vset(q[:240], d, pos[:240]), _vset(q[240:], d, pos[240:], "v")
    cfg = AdapterConfig(kind=kind, epochs=12, batch_size=32, learning_rate=1e-2, patience=2)
    adapter = build_adapter(kind, 24)
    result = fit_adapter(adapter, train, cfg, val, show_progress=False)
    assert result.val_base["ndcg@10"] < 0.5 < 0.85 < result.val_best["ndcg@10"]
    assert evaluate_vectors(result.adapter, val)["ndcg@10"] == pytest.approx(result.val_best["ndcg@10"])
    assert result.best_epoch >= 1 and result.epochs_run <= 12


def test_without_signal_the_guard_keeps_the_identity(caplog):
    """Training queries unrelated to validation ones: whatever training does, the frozen encoder is kept."""
    q, d, pos = _synthetic()
    g = torch.Generator().manual_seed(1)
    noise = F.normalize(torch.randn(240, 24, generator=g), dim=-1)  # queries with no relation to their positive
    train, val = _vset(noise, d, pos[:240]), _vset(q[240:], d, pos[240:], "v")
    adapter = build_adapter("linear", 24)
    with caplog.at_level(logging.WARNING, logger="ragtune"):
        result = fit_adapter(adapter, train, AdapterConfig(epochs=4, learning_rate=1e-2), val, show_progress=False)
    assert result.best_epoch == 0 and result.val_best == result.val_base
    assert torch.equal(adapter(torch.eye(24)), torch.eye(24)) and "left at the identity" in caplog.text
    unguarded = fit_adapter(build_adapter("linear", 24), train,
                            AdapterConfig(epochs=4, learning_rate=1e-2, significance=None, min_delta=0.0,
                                          patience=4), val, show_progress=False)
    assert unguarded.epochs_run == 4 and len(unguarded.history) == 5  # epoch 0 (frozen) + 4 epochs


def test_mined_negatives_skip_positives_and_near_duplicates():
    d = F.normalize(torch.tensor([[1.0, 0, 0], [0.99, 0.1, 0], [0.8, 0.6, 0], [0, 1.0, 0], [0, 0, 1.0]]), dim=-1)
    q = d[:1].clone()
    pool = mine_negatives(q, d, [[0]], top_k=3, margin=0.05)
    assert pool.tolist() == [[2, 3, 4]]  # doc 1 scores above 0.95 x the positive: a likely false negative
    assert mine_negatives(q, d, [[0]], top_k=6, margin=0.0).tolist() == [[1, 2, 3, 4, -1, -1]]


def _endpoint_dataset(n_docs: int = 30) -> BeirDataset:
    words = ["river", "tea", "volcano", "python", "plant", "glucose", "magma", "egypt", "leaf", "ash"]
    corpus = {f"d{i}": {"title": f"t{i}", "text": f"{words[i % 10]} {words[(i * 3) % 10]} item{i} note{i}"}
              for i in range(n_docs)}
    queries, qrels = {}, {}
    for j in range(2 * n_docs):
        i = j % n_docs
        queries[f"q{j}"] = f"which {words[i % 10]} item{i} {'please' if j >= n_docs else ''}".strip()
        qrels[f"q{j}"] = {f"d{i}": 1}
    return BeirDataset(corpus, queries, qrels, name="endpoint-toy")


def test_train_over_an_endpoint_exports_a_wrapper_and_a_system(embedding_server, tmp_path, monkeypatch):
    monkeypatch.setenv("RAGTUNE_CACHE_DIR", str(tmp_path / "user-cache"))
    ds = _endpoint_dataset()
    cfg = AdapterConfig(endpoint=embedding_server.base_url, endpoint_model="fake", endpoint_input_type=True,
                        endpoint_batch_size=16, max_retries=0, epochs=3)
    out = tmp_path / "adapter"
    result = train_adapter(ds, cfg, out, cache=tmp_path / "c.sqlite")
    assert result.model_dir is None and result.n_queries == 54 and result.val_base is not None
    assert result.embedded == {"texts": 90, "new": 90, "cached": 0, "requests": 6}
    saved = json.loads((out / "adapter_config.json").read_text())
    assert saved["encoder"]["type"] == "openai" and saved["side"] == "query" and saved["dim"] == 16
    assert (out / "adapter.safetensors").is_file() and (out / "train-log.json").is_file()

    again = train_adapter(ds, cfg, tmp_path / "adapter2", cache=tmp_path / "c.sqlite")  # all cached
    assert again.embedded["new"] == 0 and again.embedded["requests"] == 0

    wrapped = AdaptedEncoder.load(out, cache=tmp_path / "c.sqlite")
    requests = embedding_server.requests
    qv = wrapped.encode_query(list(ds.queries.values())[:5])
    assert qv.shape == (5, 16) and embedding_server.requests == requests  # served from the cache
    np.testing.assert_allclose(np.linalg.norm(qv, axis=1), 1.0, atol=1e-5)

    system = parse_system(f"adapter:{out}")
    run = system.search(ds.corpus, dict(list(ds.queries.items())[:4]), top_k=5)
    assert len(run) == 4 and all(len(r) == 5 for r in run.values())
    assert (tmp_path / "user-cache" / "embeddings.sqlite").is_file()  # endpoint systems cache by default


def test_adapted_encoder_refuses_another_dimension(embedding_server, tmp_path):
    from ragtune.adapters import save_adapter

    save_adapter(build_adapter("linear", 8), tmp_path / "a",
                 extra={"side": "query", "encoder": EndpointEncoder(embedding_server.base_url, "m").describe()})
    wrapped = AdaptedEncoder.load(tmp_path / "a")
    with pytest.raises(ConfigError, match="returned 16-d vectors where 8-d were expected"):
        wrapped.encode_query(["hello world"])


def test_train_with_a_sentence_transformers_base(toy_beir, tiny_model_path, tmp_path, caplog):
    ds = load_beir(toy_beir)
    cfg = AdapterConfig(base=tiny_model_path, kind="mlp", side="both", epochs=2, batch_size=4)
    with caplog.at_level(logging.WARNING, logger="ragtune"):
        result = train_adapter(ds, cfg, tmp_path / "ad", cache=False)
    assert "re-embedded" in caplog.text and result.reembed_documents
    assert (result.model_dir / "modules.json").is_file() and result.val_base is None  # 5 queries: no val split
    run = DenseSystem(str(result.model_dir)).search(ds.corpus, ds.queries, top_k=3)
    assert set(run) == set(ds.queries)


def test_empty_or_unusable_training_sets_are_clear_errors(toy_beir, tmp_path):
    ds = load_beir(toy_beir)
    with pytest.raises(DataFormatError, match="no usable \\(query, positive document\\) pair"):
        train_adapter(BeirDataset(ds.corpus, ds.queries, {"q1": {"missing": 1}}), AdapterConfig(), cache=False)
    with pytest.raises(DataFormatError, match="needs at least 2"):
        train_adapter(BeirDataset(ds.corpus, ds.queries, {"q1": {"d1": 1}}), AdapterConfig(), cache=False)
    with pytest.raises(ConfigError, match="not registered"):
        train_adapter(ds, AdapterConfig(kind="nope"), cache=False)


def test_config_validation():
    with pytest.raises(ValueError, match="endpoint_model is not"):
        AdapterConfig(endpoint="http://x/v1")
    with pytest.raises(ValueError, match="extra"):
        AdapterConfig(epoch=3)


def test_cli_train_adapter_over_an_endpoint(embedding_server, toy_beir, tmp_path):
    runner = CliRunner()
    args = ["-q", "train", "adapter", "--data", str(toy_beir), "--queries", "queries.jsonl", "--qrels",
            "test.tsv", "--endpoint", embedding_server.base_url, "--endpoint-model", "fake", "--epochs", "2",
            "--cache", str(tmp_path / "c.sqlite"), "--output", str(tmp_path / "out"), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["kind"] == "linear.v1" and summary["embedded"]["new"] == 11
    assert summary["timings"]["train_s"] < 10
    bad = runner.invoke(app, [*args[:-1], "--kind", "nope"])
    assert isinstance(bad.exception, ConfigError)
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    assert cache.count() == 11
