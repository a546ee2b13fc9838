"""``ragtune train embedding``: fine-tuning from the command line on a generated set."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from ragtune.cli.app import app
from ragtune.errors import ConfigError, DataFormatError

runner = CliRunner()


def test_train_embedding_on_generated_queries_with_validation(toy_beir, tiny_model_path, tmp_path):
    assert runner.invoke(app, ["generate", "--data", str(toy_beir), "--method", "ict"]).exit_code == 0
    assert runner.invoke(app, ["generate", "--data", str(toy_beir), "--output", str(tmp_path / "val"),
                               "--eval-set"]).exit_code == 0
    out = tmp_path / "model"
    result = runner.invoke(app, ["-q", "train", "embedding", "--data", str(toy_beir), "--base", tiny_model_path,
                                 "--output", str(out), "--max-steps", "2", "--batch-size", "64", "--lr", "1e-4",
                                 "--val", str(tmp_path / "val"), "--json",
                                 "--max-general-drop", "0.02"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["steps"] == 2 and summary["batch_size"] == 6  # clamped to the 6 chunks
    assert summary["evals"] and "eval_val_cosine_ndcg@10" in summary["evals"][-1]
    assert "eval_monitor_general_cosine_ndcg@10" in summary["evals"][-1]  # the guard's check set, watched
    assert (out / "model" / "modules.json").is_file() and (out / "train-log.json").is_file()
    # with --val the forgetting guard decides what is handed over, and says so
    guard = summary["guard"]
    assert guard["decision"] in ("fine-tuned", "interpolated", "base") and guard["check_set"] == "ragtune-checkset-en"
    assert guard["max_general_drop"] == 0.02
    assert (out / "guard" / "guard.json").is_file() and (out / "guard" / "model" / "modules.json").is_file()
    assert guard["paths"]["model"] == str(out / "guard" / "model")


def test_train_embedding_without_guard_hands_over_the_trained_model(toy_beir, tiny_model_path, tmp_path):
    assert runner.invoke(app, ["generate", "--data", str(toy_beir), "--method", "ict"]).exit_code == 0
    assert runner.invoke(app, ["generate", "--data", str(toy_beir), "--output", str(tmp_path / "val"),
                               "--eval-set"]).exit_code == 0
    out = tmp_path / "model"
    result = runner.invoke(app, ["-q", "train", "embedding", "--data", str(toy_beir), "--base", tiny_model_path,
                                 "--output", str(out), "--max-steps", "1", "--val", str(tmp_path / "val"),
                                 "--no-guard", "--monitor", f"toy={toy_beir}", "--monitor", "chinese = zh"])
    assert result.exit_code == 0, result.output
    evals = json.loads((out / "train-log.json").read_text())["evals"]
    assert {k for k in evals[-1] if k.endswith("cosine_ndcg@10")} == {
        "eval_val_cosine_ndcg@10", "eval_monitor_toy_cosine_ndcg@10", "eval_monitor_chinese_cosine_ndcg@10"}
    assert f"model: {out / 'model'}" in " ".join(result.stdout.split()) and not (out / "guard").exists()
    no_val = runner.invoke(app, ["-q", "train", "embedding", "--data", str(toy_beir), "--base", tiny_model_path,
                                 "--output", str(tmp_path / "m2"), "--max-steps", "1", "--freeze-upper-layers", "1",
                                 "--layer-lr-decay", "0.5", "--lora-rank", "2", "--freeze-modules", "ffn@1",
                                 "--hardness-mode", "none", "--anchor-weight", "0"])
    assert no_val.exit_code == 0, no_val.output
    assert "no forgetting guard: it needs --val" in no_val.stdout
    config = json.loads((tmp_path / "m2" / "train-log.json").read_text())["config"]
    assert (config["freeze_upper_layers"], config["layer_lr_decay"], config["lora_rank"]) == (1, 0.5, 2)
    assert config["freeze_modules"] == ["ffn@1"]
    assert (config["hardness_mode"], config["hardness_strength"], config["anchor_weight"]) == (None, 0.0, 0.0)
    plain = runner.invoke(app, ["-q", "train", "embedding", "--data", str(toy_beir), "--base", tiny_model_path,
                                "--output", str(tmp_path / "m4"), "--max-steps", "1", "--freeze-modules", "none",
                                "--directions", "query_to_doc", "--json"])
    assert plain.exit_code == 0, plain.output
    config = json.loads((tmp_path / "m4" / "train-log.json").read_text())["config"]
    assert config["freeze_modules"] == [] and config["directions"] == ["query_to_doc"]
    too_many = runner.invoke(app, ["-q", "train", "embedding", "--data", str(toy_beir), "--base", tiny_model_path,
                                   "--output", str(tmp_path / "m3"), "--max-steps", "1", "--freeze-upper-layers",
                                   "2"])
    assert isinstance(too_many.exception, ConfigError) and "has 2 transformer layers" in str(too_many.exception)


def test_train_embedding_reports_missing_queries(toy_beir, tmp_path):
    result = runner.invoke(app, ["train", "embedding", "--data", str(toy_beir), "--queries", "nope.jsonl",
                                 "--output", str(tmp_path / "m")])
    assert isinstance(result.exception, DataFormatError) and "nope.jsonl" in str(result.exception)


def test_train_embedding_rejects_a_bad_monitor_spec(toy_beir, tmp_path):
    from ragtune.errors import ConfigError

    for spec, message in (("toy", "expected NAME=DIR"), ("toy=/no/such/dir", "not a BEIR directory"),
                          ("=en", "expected NAME=DIR")):
        result = runner.invoke(app, ["train", "embedding", "--data", str(toy_beir), "--output", str(tmp_path / "m"),
                                     "--monitor", spec])
        assert isinstance(result.exception, ConfigError) and message in str(result.exception), spec
    twice = runner.invoke(app, ["train", "embedding", "--data", str(toy_beir), "--output", str(tmp_path / "m"),
                                "--monitor", "a=en", "--monitor", "a=zh"])
    assert isinstance(twice.exception, ConfigError) and "given twice" in str(twice.exception)
    assert not (tmp_path / "m").exists()  # nothing was trained


def test_train_help_lists_embedding():
    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0 and "embedding" in result.stdout
