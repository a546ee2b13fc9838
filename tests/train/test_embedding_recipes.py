"""Embedding recipes: each loss with mined negatives and a cross-encoder teacher, Matryoshka, early stopping on
validation, cached negatives / teacher scores across a resume, supervised pairs, config validation and the CLI."""

from __future__ import annotations

import json

import pytest
from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

from ragtune.config import EmbeddingTrainConfig
from ragtune.data.beir import BeirDataset
from ragtune.errors import ConfigError, DataFormatError
from ragtune.generate import ict_queries
from ragtune.train import validation
from ragtune.train.embedding import load_pairs, train_embedding

CORPUS = {f"c{i}": {"title": f"Topic {i}", "text": f"Topic {i} opens with fact {i}. A second remark on item {i * 3}. "
                                                   f"It closes with number {i * 7}."} for i in range(12)}


def _data():
    gs = ict_queries(CORPUS, per_chunk=2, mask_prob=0.5, seed=0)
    return CORPUS, gs.queries, gs.qrels, gs.metadata


def _config(base, **kw) -> EmbeddingTrainConfig:
    kw = {"batch_size": 4, "max_steps": 2, "learning_rate": 1e-3, "max_seq_length": 64, **kw}
    return EmbeddingTrainConfig(base=base, **kw)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, minilm_path):
    """A tiny random cross-encoder (1-layer BERT, one logit) with MiniLM's tokenizer."""
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-ce")
    tok = AutoTokenizer.from_pretrained(minilm_path)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512, num_labels=1)
    BertForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return CrossEncoder(str(path), device="cpu", max_length=96)


@pytest.mark.parametrize("loss, extra, loss_class", [
    ("mnrl", {"negatives": 2, "mine_with": "dense"}, "MultipleNegativesRankingLoss"),
    ("cached-mnrl", {"negatives": 1, "mine_with": "bm25", "mini_batch_size": 2},
     "CachedMultipleNegativesRankingLoss"),
    ("mnrl", {"negatives": 1, "mine_with": "bm25", "directions": ["query_to_doc", "query_to_query", "doc_to_query"],
              "hardness_mode": "hard_negatives", "hardness_strength": 5.0}, "MultipleNegativesRankingLoss"),
    ("margin-mse", {"negatives": 2, "mine_with": "bm25"}, "MarginMSELoss"),
    ("kl", {"negatives": 2, "mine_with": "both", "relative_margin": None, "teacher_margin": -1.0},
     "DistillKLDivLoss"),
])
def test_each_loss_trains_and_writes_a_loadable_model(loss, extra, loss_class, tiny_model_path, teacher, tmp_path):
    from sentence_transformers import SentenceTransformer

    uses_teacher = loss in ("margin-mse", "kl")
    config = _config(tiny_model_path, loss=loss, teacher=teacher if uses_teacher else None, **extra)
    result = train_embedding(_data(), config, tmp_path / "run", save_every_s=None)
    if loss != "cached-mnrl":  # the default recipe anchors to the base wherever the anchor works
        loss_class = f"AnchoredLoss({loss_class})"
    assert result.steps == 2 and result.loss == loss_class
    model = SentenceTransformer(str(result.model_dir), device="cpu")
    assert model.encode(["a question"]).shape == (1, 32)
    log = json.loads(result.log_path.read_text())
    assert log["loss"] == loss_class and log["negatives"] == extra["negatives"]
    assert log["mining"]["queries"] == 24 and log["mining"]["kept"] + log["mining"]["padded"] == 24 * extra[
        "negatives"]
    assert log["config"]["loss"] == loss and (tmp_path / "run" / "mined-negatives.json").is_file()
    assert (tmp_path / "run" / "teacher-scores.sqlite").is_file() == uses_teacher
    if loss == "kl":
        assert log["config"]["teacher"].startswith("CrossEncoder:")
        # the tiny teacher's sigmoid scores lie in (0, 1): a margin of -1 drops none of the 2 * 2 + 2 rescored
        assert log["mining"]["teacher_scored"] == 24 * 6 and log["mining"]["teacher_dropped"] == 0


def test_ranking_options_reach_the_loss_and_change_it(tiny_model_path):
    import torch

    from ragtune.models import load_sentence_transformer
    from ragtune.train.losses import build_loss

    model = load_sentence_transformer(tiny_model_path, device="cpu")
    torch.manual_seed(0)
    embeddings = [torch.randn(4, 32) for _ in range(3)]  # queries, positives, one negative each
    plain_mnrl = {"directions": ["query_to_doc"], "hardness_mode": None, "hardness_strength": 0.0}
    plain = build_loss(model, _config(tiny_model_path, negatives=1, anchor_weight=0.0, **plain_mnrl))
    default = build_loss(model, _config(tiny_model_path, negatives=1)).loss  # the recipe: GTE's loss, hardness 5
    assert tuple(default.directions) == ("query_to_doc", "query_to_query", "doc_to_query")
    assert default.hardness_mode == "hard_negatives" and default.hardness_strength == 5.0
    values = {}
    for name, extra in {"gte": {"directions": ["query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"]},
                        "symmetric": {"directions": ["query_to_doc", "doc_to_query"],
                                      "partition_mode": "per_direction"},
                        "hard": {"hardness_mode": "all_negatives", "hardness_strength": 9.0}}.items():
        loss = build_loss(model, _config(tiny_model_path, negatives=1, anchor_weight=1.0,
                                         **{**plain_mnrl, **extra})).loss
        assert tuple(loss.directions) == tuple(extra.get("directions", ["query_to_doc"]))
        assert loss.partition_mode == extra.get("partition_mode", "joint")
        assert loss.hardness_mode == extra.get("hardness_mode") and loss.hardness_strength == extra.get(
            "hardness_strength", 0.0)
        values[name] = float(loss.compute_loss_from_embeddings(embeddings, None))
    assert plain.directions == ("query_to_doc",) and plain.hardness_mode is None
    base = float(plain.compute_loss_from_embeddings(embeddings, None))
    assert all(abs(v - base) > 1e-4 for v in values.values()), (base, values)
    cached = build_loss(model, _config(tiny_model_path, loss="cached-mnrl", directions=["query_to_doc",
                                                                                        "doc_to_query"]))
    assert tuple(cached.directions) == ("query_to_doc", "doc_to_query")


def test_ranking_options_an_older_sentence_transformers_lacks_fail_with_a_fix(tiny_model_path, caplog):
    from ragtune.train.losses import _ranking_options

    class OldMNRL:  # the signature of sentence-transformers' MNRL before the directions / hardness options
        def __init__(self, model, scale=20.0, similarity_fct=None):
            pass

    with caplog.at_level("WARNING", logger="ragtune.train.losses"):
        assert _ranking_options(OldMNRL, _config(tiny_model_path)) == {}  # the default recipe's: plain MNRL there
    assert "training with plain MNRL there" in caplog.text
    with pytest.raises(ConfigError, match="directions, partition_mode: OldMNRL of sentence-transformers .* "
                                          "upgrade it"):
        _ranking_options(OldMNRL, _config(tiny_model_path, directions=["query_to_doc", "doc_to_query"]))
    with pytest.raises(ConfigError, match="hardness_mode, hardness_strength"):
        _ranking_options(OldMNRL, _config(tiny_model_path, hardness_mode="in_batch_negatives",
                                          hardness_strength=9.0))


def test_resume_reuses_mined_negatives_and_teacher_scores(tiny_model_path, teacher, tmp_path, monkeypatch,
                                                         interrupted_after):
    from sentence_transformers import CrossEncoder

    out = tmp_path / "run"
    config = _config(tiny_model_path, loss="margin-mse", teacher=teacher, negatives=2, mine_with="dense",
                     max_steps=4)
    with interrupted_after(3):
        train_embedding(_data(), config, out, save_steps=2, save_every_s=None)

    def no_more(*args, **kwargs):
        raise AssertionError("recomputed instead of read from the cache")

    monkeypatch.setattr("ragtune.mining.mine_negatives", no_more)
    monkeypatch.setattr(CrossEncoder, "predict", no_more)
    result = train_embedding(_data(), config, out, save_steps=2, save_every_s=None)
    assert result.resumed_from_step == 2 and result.steps == 4 and result.mining["kept"] > 0


def test_matryoshka_dims_are_sorted_and_checked_against_the_model(tiny_model_path, tmp_path):
    # training with them (and loading the model truncated) is in test_cli_trains_from_pairs_with_the_new_flags
    assert EmbeddingTrainConfig(matryoshka_dims=[8, 32, 16]).matryoshka_dims == [32, 16, 8]
    with pytest.raises(ConfigError, match="matryoshka_dims=.*up to 32"):
        train_embedding(_data(), _config(tiny_model_path, matryoshka_dims=[64, 32]), tmp_path / "x")


def test_gradient_checkpointing_recomputes_layers_and_trains_the_same_weights(tiny_model_path, tmp_path,
                                                                             monkeypatch):
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import modeling_utils

    calls = []
    checkpoint = modeling_utils.checkpoint

    def counted(*args, **kwargs):
        calls.append(kwargs.get("use_reentrant"))
        return checkpoint(*args, **kwargs)

    monkeypatch.setattr(modeling_utils, "checkpoint", counted)
    weights = {}
    for on in (False, True):  # the anchored recipe: a mined negative, upper attention frozen, an anchor
        config = _config(tiny_model_path, negatives=1, freeze_modules=["attn@1"], anchor_weight=2.0,
                         gradient_checkpointing=on)
        result = train_embedding(_data(), config, tmp_path / f"gc-{on}", save_every_s=None)
        assert json.loads(result.log_path.read_text())["config"]["gradient_checkpointing"] is on
        weights[on] = dict(SentenceTransformer(str(result.model_dir), device="cpu").named_parameters())
        assert bool(calls) is on  # every layer's forward went through checkpoint, and only when asked
    assert set(calls) == {False}
    base = dict(SentenceTransformer(tiny_model_path, device="cpu").named_parameters())
    assert any(not torch.equal(base[n], p) for n, p in weights[True].items())
    for name, param in weights[True].items():  # recomputing (dropout included) changes no gradient
        torch.testing.assert_close(param, weights[False][name], rtol=1e-5, atol=1e-6, msg=name)


class ScriptedEvaluator(SentenceEvaluator):
    """Returns scripted nDCG@10 values and remembers a weight checksum of the model at each evaluation."""

    def __init__(self, values):
        super().__init__()
        self.values, self.calls = list(values), []
        self.name, self.primary_metric = "val", "cosine_ndcg@10"

    def __call__(self, model, output_path=None, epoch=-1, steps=-1):
        self.calls.append((steps, sum(float(p.detach().sum()) for p in model.parameters())))
        return {"val_cosine_ndcg@10": self.values[len(self.calls) - 1]}


def test_early_stopping_keeps_the_best_model(tiny_model_path, tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformer

    scripted = ScriptedEvaluator([0.30, 0.50, 0.40, 0.45, 0.20, 0.90, 0.95])
    monkeypatch.setattr(validation, "ir_evaluator", lambda val, batch_size, name="val": scripted)
    val = BeirDataset(CORPUS, {"v": "fact 3"}, {"v": {"c3": 1}})
    config = _config(tiny_model_path, max_steps=None, epochs=2, evals_per_epoch=6, patience=3)
    result = train_embedding(_data(), config, tmp_path / "es", val=val, save_every_s=None)
    assert result.stopped_early and result.steps == 5  # best at step 2, then 3 evaluations without improvement
    assert (result.best_step, result.best_metric) == (2, 0.5)
    log = json.loads(result.log_path.read_text())
    assert [e["step"] for e in log["evals"]] == [1, 2, 3, 4, 5]
    assert log["best_step"] == 2 and log["stopped_early"] is True
    written = SentenceTransformer(str(result.model_dir), device="cpu")
    checksum = sum(float(p.detach().sum()) for p in written.parameters())
    assert checksum == pytest.approx(dict(scripted.calls)[2], rel=1e-6)  # the step-2 weights, not the last
    assert checksum != pytest.approx(dict(scripted.calls)[5], rel=1e-6)
    assert not (tmp_path / "es" / "checkpoints").exists()


def test_a_small_set_trains_longer_at_half_the_rate_and_writes_the_last_step(tiny_model_path, tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformer

    scripted = ScriptedEvaluator([0.90, 0.10, 0.05])
    monkeypatch.setattr(validation, "ir_evaluator", lambda val, batch_size, name="val": scripted)
    val = BeirDataset(CORPUS, {"v": "fact 3"}, {"v": {"c3": 1}})
    # 24 pairs over 12 chunks in batches of 4: 6 steps an epoch, so 10 steps take 2 epochs
    config = _config(tiny_model_path, max_steps=None, learning_rate=1e-4, small_set_steps=10, patience=1)
    result = train_embedding(_data(), config, tmp_path / "small", val=val, save_every_s=None)
    assert result.schedule == {"epochs": 2.0, "learning_rate": 5e-5, "keep": "last", "small_set": True}
    assert result.steps == 12 and not result.stopped_early  # validation fell, but it does not stop this schedule
    assert [step for step, _ in scripted.calls] == [6, 12]  # once per epoch
    assert result.best_step is None and result.best_metric is None
    assert max(e["learning_rate"] for e in result.losses) <= 5e-5
    log = json.loads(result.log_path.read_text())
    assert log["schedule"]["keep"] == "last" and log["config"]["learning_rate"] == 1e-4
    written = SentenceTransformer(str(result.model_dir), device="cpu")
    checksum = sum(float(p.detach().sum()) for p in written.parameters())
    assert checksum == pytest.approx(dict(scripted.calls)[12], rel=1e-6)  # the last step, not the best
    assert checksum != pytest.approx(dict(scripted.calls)[6], rel=1e-6)


@pytest.mark.parametrize(("overrides", "steps_per_epoch", "small"), [
    ({}, 13, True), ({}, 50, False), ({"small_set_steps": 0}, 13, False), ({"epochs": 4}, 13, False),
    ({"epochs": 2}, 13, False), ({"learning_rate": 2e-5}, 13, False), ({"max_steps": 30}, 13, False)])
def test_the_small_set_schedule_applies_only_to_the_default_epochs_and_rate(overrides, steps_per_epoch, small):
    from ragtune.train.embedding import training_schedule

    config = EmbeddingTrainConfig(**overrides)
    schedule = training_schedule(config, steps_per_epoch)
    if small:
        assert schedule.small_set and schedule.keep == "last"
        assert schedule.epochs * steps_per_epoch >= config.small_set_steps > (schedule.epochs - 1) * steps_per_epoch
        assert schedule.learning_rate == config.learning_rate / 2
    else:
        assert (schedule.epochs, schedule.learning_rate, schedule.keep) == (config.epochs, config.learning_rate,
                                                                            "best")


def test_monitored_sets_are_logged_but_never_pick_the_checkpoint(tiny_model_path, tmp_path, monkeypatch):
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    encoded: list[int] = []
    original = InformationRetrievalEvaluator.embed_inputs

    def counting(self, model, sentences, encode_fn_name=None, **kw):
        if encode_fn_name == "document":
            encoded.append(len(sentences))
        return original(self, model, sentences, encode_fn_name=encode_fn_name, **kw)

    monkeypatch.setattr(InformationRetrievalEvaluator, "embed_inputs", counting)
    val = BeirDataset(CORPUS, {"v": "fact 3", "w": "item 12"}, {"v": {"c3": 1}, "w": {"c4": 1}})
    same_corpus = BeirDataset(val.corpus, {"t": "number 35"}, {"t": {"c5": 1}})
    general = BeirDataset({"g1": {"title": "", "text": "Rivers flow to the sea."},
                           "g2": {"title": "", "text": "Bees dance to show where nectar is."}},
                          {"gq": "how bees share where flowers are"}, {"gq": {"g2": 1}})
    config = _config(tiny_model_path, max_steps=4, evals_per_epoch=2, patience=None)
    result = train_embedding(_data(), config, tmp_path / "mon", val=val,
                             monitor={"test": same_corpus, "general": general}, save_every_s=None)
    steps = [e["step"] for e in result.evals]
    assert steps and steps[-1] == 4
    for e in result.evals:
        assert {"eval_val_cosine_ndcg@10", "eval_monitor_test_cosine_ndcg@10",
                "eval_monitor_general_cosine_ndcg@10"} <= set(e)
        assert e["eval_monitor_general_cosine_ndcg@10"] in (1.0, pytest.approx(0.6309, abs=1e-4))
    best = max(result.evals, key=lambda e: e["eval_val_cosine_ndcg@10"])
    assert result.best_metric == best["eval_val_cosine_ndcg@10"]  # chosen by val alone
    # one corpus encoding per evaluation for val and 'test' (the same corpus object), one for 'general'
    assert encoded == [len(CORPUS), 2] * len(steps)

    with pytest.raises(ConfigError, match="monitor name 'a b'"):
        train_embedding(_data(), config, tmp_path / "bad", monitor={"a b": general})
    with pytest.raises(ConfigError, match="monitor set 'x'"):
        train_embedding(_data(), config, tmp_path / "bad", monitor={"x": "not a dataset"})


def _write_pairs(path, bad_line: str | None = None):
    lines = [json.dumps({"query": f"what is fact {i}", "positive": f"Fact {i} is about item {i * 3}.",
                         **({"negatives": [f"Fact {i + 1} is about item {(i + 1) * 3}."]} if i % 2 else {})})
             for i in range(10)]
    if bad_line is not None:
        lines.insert(2, bad_line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_supervised_pairs_load_and_bad_lines_name_file_and_line(tmp_path):
    # training on them (through the CLI) is in test_cli_trains_from_pairs_with_the_new_flags
    pairs = load_pairs(_write_pairs(tmp_path / "pairs.jsonl"))
    assert len(pairs) == 10 and pairs[1].negatives == ("Fact 2 is about item 6.",)
    assert pairs[1].negatives[0] == pairs[2].positive and pairs[0].positive_id != pairs[1].positive_id
    assert pairs[2].query_id == load_pairs(tmp_path / "pairs.jsonl")[2].query_id  # ids follow the texts
    for bad, msg in [('{"query": "x"', "invalid JSON"), ('{"query": "x", "positive": ""}', '"positive" must be'),
                     ('{"query": "x", "positive": "y", "negatives": "z"}', '"negatives" must be a list'),
                     ('{"q": "x", "positive": "y"}', "unknown field")]:
        path = _write_pairs(tmp_path / "bad.jsonl", bad)
        with pytest.raises(DataFormatError, match=f"bad.jsonl:3: {msg}"):
            load_pairs(path)
    (tmp_path / "qrels_train.tsv").write_text("q\td\t1\n")
    with pytest.raises(DataFormatError, match="--data DIR --qrels FILE"):
        load_pairs(tmp_path / "qrels_train.tsv")


@pytest.mark.parametrize("kw, message", [
    ({"loss": "margin-mse", "negatives": 2}, "set teacher"),
    ({"loss": "kl", "teacher": "msmarco-onnx", "negatives": 0}, "needs negatives >= 1"),
    ({"teacher": "msmarco-onnx", "negatives": 2}, "set negatives >= 1 and teacher_margin"),
    ({"teacher_margin": 0.0}, "teacher_margin is set but teacher is not"),
    ({"negatives": 40}, "raise mine_range_max"),
    ({"mine_range_min": 30}, "mine_range_min"),
    ({"matryoshka_dims": [64, 64]}, "distinct positive sizes"),
    ({"teacher": 42}, "spec string"),
    ({"directions": ["doc_to_query"]}, "include 'query_to_doc'"),
    ({"directions": ["query_to_doc", "query_to_doc"]}, "list each direction once"),
    ({"directions": ["query_to_doc", "query_to_query"], "partition_mode": "per_direction"},
     "cannot rank query_to_query"),
    ({"hardness_strength": 0.0}, "set both"),
    ({"negatives": 0, "hardness_strength": 9.0}, "weighs the mined negatives, but negatives=0"),
    ({"loss": "kl", "teacher": "msmarco-onnx", "negatives": 2, "directions": ["query_to_doc", "doc_to_query"]},
     "directions shape the MNRL loss"),
])
def test_config_rejects_bad_combinations_with_a_fix(kw, message):
    from ragtune.config import RunConfig

    with pytest.raises(ConfigError, match=message):
        RunConfig.load(overrides={f"embedding.{k}": v for k, v in kw.items()})
    ok = EmbeddingTrainConfig(loss="kl", teacher="msmarco-onnx", negatives=4)
    assert ok.model_dump(mode="json")["teacher"] == "msmarco-onnx" and ok.patience == 3


def test_cli_trains_from_pairs_with_the_new_flags(tiny_model_path, tmp_path):
    from sentence_transformers import SentenceTransformer
    from typer.testing import CliRunner

    from ragtune.cli.app import app

    runner = CliRunner()
    _write_pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / "cli"
    result = runner.invoke(app, ["-q", "train", "embedding", "--pairs", str(tmp_path / "pairs.jsonl"), "--base",
                                 tiny_model_path, "--output", str(out), "--max-steps", "2", "--batch-size", "4",
                                 "--loss", "cached-mnrl", "--mini-batch-size", "2", "--negatives", "1",
                                 "--mine-with", "bm25", "--matryoshka-dims", "32,16", "--patience", "0",
                                 "--directions", "query_to_doc, doc_to_query", "--partition-mode", "per_direction",
                                 "--hardness-mode", "in_batch_negatives", "--hardness-strength", "9",
                                 "--gradient-checkpointing", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["loss"] == "MatryoshkaLoss(CachedMultipleNegativesRankingLoss)" and summary["negatives"] == 1
    assert summary["n_pairs"] == 10 and summary["mining"]["user"] == 5  # the pairs' own negatives come first
    log = json.loads((out / "train-log.json").read_text())
    assert log["config"]["mini_batch_size"] == 2 and log["config"]["patience"] is None
    assert log["config"]["matryoshka_dims"] == [32, 16] and log["config"]["gradient_checkpointing"] is True
    assert log["config"]["directions"] == ["query_to_doc", "doc_to_query"] and log["config"]["partition_mode"] == (
        "per_direction") and (log["config"]["hardness_mode"], log["config"]["hardness_strength"]) == (
        "in_batch_negatives", 9.0)
    model = SentenceTransformer(str(out / "model"), device="cpu", truncate_dim=16)
    assert model.encode(["a question"]).shape == (1, 16)
    bad = runner.invoke(app, ["train", "embedding", "--pairs", str(tmp_path / "pairs.jsonl"), "--output",
                              str(out), "--loss", "margin-mse", "--negatives", "2"])
    assert isinstance(bad.exception, ConfigError) and "set teacher" in str(bad.exception)
    both = runner.invoke(app, ["train", "embedding", "--output", str(out)])
    assert isinstance(both.exception, ConfigError) and "--pairs FILE" in str(both.exception)
