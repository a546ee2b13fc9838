"""The anchor to the base model (learning without forgetting): its two loss parts, what it holds still, training
with it through the API and the CLI, and the settings it refuses."""

from __future__ import annotations

import json

import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from ragtune.config import EmbeddingTrainConfig
from ragtune.errors import ConfigError
from ragtune.generate import ict_queries
from ragtune.train.anchor import AnchoredLoss
from ragtune.train.embedding import train_embedding

QUERIES = ["what opens topic one", "which number closes topic two", "a remark on item nine"]
PASSAGES = ["Topic one opens with a fact.", "Topic two closes with number fourteen.", "A remark on item nine."]
CORPUS = {f"c{i}": {"title": f"Topic {i}", "text": f"Topic {i} opens with fact {i}. A second remark on item {i * 3}. "
                                                   f"It closes with number {i * 7}."} for i in range(12)}


def _cos_distance(a: SentenceTransformer, b: SentenceTransformer, texts: list[str]) -> float:
    ea, eb = (m.encode(texts, convert_to_tensor=True, normalize_embeddings=True) for m in (a, b))
    return float((1 - (ea * eb).sum(-1)).mean())


def _value(t: torch.Tensor) -> float:
    return float(t.detach())


def _batch(model: SentenceTransformer) -> list[dict]:
    return [model.tokenize(QUERIES), model.tokenize(PASSAGES)]


def test_the_anchor_is_zero_at_the_base_and_measures_drift_after(tiny_model_path):
    student = SentenceTransformer(tiny_model_path, device="cpu")
    base = SentenceTransformer(tiny_model_path, device="cpu")
    ranking = MultipleNegativesRankingLoss(student)
    loss = AnchoredLoss(student, ranking, base, weight=3.0)
    # the frozen copy is outside the module tree: not trained, not saved, not switched to training mode
    assert sum(p.numel() for p in loss.parameters()) == sum(p.numel() for p in student.parameters())
    loss.train()
    assert not base.training and not any(p.requires_grad for p in base.parameters())

    student.eval()  # no dropout, so the two parts can be checked against plain encodes
    parts = loss(_batch(student), None)
    assert set(parts) == {"ranking", "anchor"}
    assert _value(parts["anchor"]) == pytest.approx(0.0, abs=1e-6)
    assert _value(parts["ranking"]) == pytest.approx(_value(ranking(_batch(student), None)), rel=1e-5)

    torch.manual_seed(0)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    parts = loss(_batch(student), None)
    drift = _cos_distance(student, base, PASSAGES)  # the passages only: the query column is not held by default
    assert drift > 1e-3 and _value(parts["anchor"]) == pytest.approx(3.0 * drift, rel=1e-4)
    parts["anchor"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in base.parameters())

    both = AnchoredLoss(student, ranking, base, weight=1.0, texts="all")(_batch(student), None)
    expected = (_cos_distance(student, base, QUERIES) + drift) / 2
    assert _value(both["anchor"]) == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ValueError, match="passages, all"):
        AnchoredLoss(student, ranking, base, weight=1.0, texts="queries")


def test_a_heavy_anchor_keeps_the_trained_model_near_its_base(tiny_model_path, tmp_path):
    gs = ict_queries(CORPUS, per_chunk=2, mask_prob=0.5, seed=0)
    data = (CORPUS, gs.queries, gs.qrels, gs.metadata)
    texts = [d["text"] for d in CORPUS.values()]
    base = SentenceTransformer(tiny_model_path, device="cpu")
    drift = {}
    for name, weight in (("free", 0.0), ("held", 50.0)):
        config = EmbeddingTrainConfig(base=tiny_model_path, batch_size=4, max_steps=6, learning_rate=1e-3,
                                      max_seq_length=64, negatives=1, anchor_weight=weight)
        result = train_embedding(data, config, tmp_path / name, save_every_s=None)
        drift[name] = _cos_distance(SentenceTransformer(str(result.model_dir), device="cpu"), base, texts)
        log = json.loads(result.log_path.read_text())
        if weight:
            assert result.loss == "AnchoredLoss(MultipleNegativesRankingLoss)"
            assert all({"ranking", "anchor"} <= set(entry) for entry in log["losses"])
            assert log["config"]["anchor_weight"] == 50.0 and log["config"]["anchor_texts"] == "passages"
        else:
            assert result.loss == "MultipleNegativesRankingLoss" and "anchor" not in log["losses"][0]
    assert drift["free"] > 0 and drift["held"] < drift["free"] / 2, drift


@pytest.mark.parametrize("kw, message", [
    ({"anchor_weight": 1.0, "loss": "cached-mnrl"}, "drop one of them"),
    ({"anchor_weight": 1.0, "matryoshka_dims": [32, 16]}, "and matryoshka_dims"),
    ({"anchor_texts": "all", "anchor_weight": 0.0}, "anchor_weight is 0"),
    ({"anchor_weight": -1.0}, "anchor_weight"),
])
def test_config_refuses_what_the_anchor_cannot_do(kw, message):
    from ragtune.config import RunConfig

    with pytest.raises(ConfigError, match=message):
        RunConfig.load(overrides={f"embedding.{k}": v for k, v in kw.items()})


@pytest.mark.parametrize("kw", [{"loss": "cached-mnrl"}, {"matryoshka_dims": [32, 16]}])
def test_the_default_anchor_is_left_out_where_it_cannot_work(kw, tiny_model_path):
    from ragtune.train.losses import build_loss

    config = EmbeddingTrainConfig(base=tiny_model_path, **kw)
    assert config.anchor_weight == 2.0 and config.anchor_in_use == 0.0
    loss = build_loss(SentenceTransformer(tiny_model_path, device="cpu"), config)
    assert type(loss).__name__ != "AnchoredLoss" and type(getattr(loss, "loss", loss)).__name__ != "AnchoredLoss"


def test_cli_trains_with_an_anchor(tiny_model_path, tmp_path):
    from typer.testing import CliRunner

    from ragtune.cli.app import app

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"query": f"what is fact {i}", "positive": f"Fact {i} is about item {i * 3}."})
                             + "\n" for i in range(8)), encoding="utf-8")
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["-q", "train", "embedding", "--pairs", str(pairs), "--base", tiny_model_path,
                                      "--output", str(out), "--max-steps", "2", "--batch-size", "4",
                                      "--anchor-weight", "3", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["loss"] == "AnchoredLoss(MultipleNegativesRankingLoss)"
    assert json.loads((out / "train-log.json").read_text())["config"]["anchor_weight"] == 3.0
