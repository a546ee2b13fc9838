from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ragtune.cli.app import app


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def test_eval_json_output_parses(runner, toy_beir, tiny_model_path, tmp_path):
    out = tmp_path / "report.json"
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["-q", "eval", "--data", str(toy_beir), "--system", "bm25",
                                 "--system", f"dense:{tiny_model_path}", "--top-k", "10", "--bootstrap", "50",
                                 "--json", "--output", str(out), "--save-runs", str(runs)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert list(data["systems"]) == ["bm25", f"dense:{tiny_model_path}"]
    assert data["systems"]["bm25"]["means"]["hit@1"] == 1.0
    assert data["num_queries"] == 5
    assert json.loads(out.read_text())["baseline"] == "bm25"
    assert (runs / "bm25.run.json").is_file()
    assert len(list(runs.glob("*.run.json"))) == 2


def test_eval_prints_a_table(runner, toy_beir):
    result = runner.invoke(app, ["-q", "eval", "--data", str(toy_beir), "--system", "bm25", "--top-k", "10",
                                 "--bootstrap", "0"])
    assert result.exit_code == 0, result.output
    assert "ndcg@10" in result.stdout and "bm25" in result.stdout and "1.0000" in result.stdout


def test_eval_bad_system_is_a_config_error(runner, toy_beir):
    from ragtune.errors import ConfigError

    result = runner.invoke(app, ["-q", "eval", "--data", str(toy_beir), "--system", "sparse"])
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError)
    assert "dense:MODEL" in str(result.exception)
