"""``ragtune generate``: pseudo-queries and evaluation sets from the command line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ragtune.cli.app import app
from ragtune.data.beir import load_beir
from ragtune.errors import ConfigError
from ragtune.generate import load_generated

runner = CliRunner()


def test_generate_writes_the_generated_layout(toy_beir):
    result = runner.invoke(app, ["generate", "--data", str(toy_beir), "--method", "ict", "--per-chunk", "1",
                                 "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "ict queries for 6 chunks" in result.stdout
    gs = load_generated(toy_beir)
    assert gs.method == "ict" and len(gs) == 6
    ds = load_beir(toy_beir, queries="gen-queries.jsonl", qrels="gen-qrels.tsv")
    assert ds.query_metadata == gs.metadata


def test_generate_auto_records_the_fallback_and_prints_json(toy_beir, tmp_path):
    out = tmp_path / "gen"
    result = runner.invoke(app, ["generate", "--data", str(toy_beir / "corpus.jsonl"), "--output", str(out),
                                 "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["method"] == "ict" and "no LLM configured" in summary["note"]
    assert (out / "gen-queries.jsonl").is_file() and (out / "gen-qrels.tsv").is_file()


def test_generate_eval_set_writes_a_beir_directory(toy_beir, tmp_path):
    out = tmp_path / "val"
    result = runner.invoke(app, ["generate", "--data", str(toy_beir), "--output", str(out), "--eval-set"])
    assert result.exit_code == 0, result.output
    ds = load_beir(out)
    assert len(ds.corpus) == 6 and ds.queries
    for qid, text in ds.queries.items():
        assert text not in ds.corpus[next(iter(ds.qrels[qid]))]["text"]


def test_generate_eval_set_adds_distractors_that_are_never_judged(toy_beir, tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"_id": f"x{i}", "title": "", "text": f"Unrelated note number {i}."}) + "\n"
                            for i in range(5)), encoding="utf-8")
    out = tmp_path / "val"
    result = runner.invoke(app, ["generate", "--data", str(toy_beir), "--output", str(out), "--eval-set",
                                 "--distractors", str(pool), "--max-distractors", "3"])
    assert result.exit_code == 0, result.output
    assert "3 chunks of" in result.stdout
    ds = load_beir(out)
    extra = set(ds.corpus) - {json.loads(line)["_id"] for line in (toy_beir / "corpus.jsonl").open()}
    assert len(extra) == 3 and extra <= {f"x{i}" for i in range(5)}
    assert not extra & {d for docs in ds.qrels.values() for d in docs}


@pytest.mark.parametrize("args, message", [
    (["--method", "llm"], "method='llm' but no LLM configured"),
    (["--eval-set"], "give an --output"),
    (["--distractors", "somewhere"], "go with --eval-set"),
    (["--per-chunk", "0"], "generate.per_chunk"),
])
def test_generate_rejects_bad_arguments(toy_beir, args, message, monkeypatch):
    for var in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "RAGTUNE_LLM_MODEL"):
        monkeypatch.delenv(var, raising=False)
    result = runner.invoke(app, ["generate", "--data", str(toy_beir), *args])
    assert isinstance(result.exception, ConfigError)
    assert message in str(result.exception)


def test_generate_needs_a_corpus(tmp_path):
    result = runner.invoke(app, ["generate", "--data", str(tmp_path)])
    assert isinstance(result.exception, ConfigError) and "no corpus.jsonl" in str(result.exception)
