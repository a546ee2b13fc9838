import json

import pytest
from typer.testing import CliRunner

from ragtune.cli.app import app
from ragtune.errors import ConfigError, DataFormatError

runner = CliRunner()


@pytest.fixture()
def docs(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    for i in range(6):
        facts = " ".join(f"Fact {j} of document {i} is about topic {i}." for j in range(12))
        (root / f"doc{i}.txt").write_text(facts, encoding="utf-8")
    (root / "notes.md").write_text("# Notes\n\n长城是中国古代的军事防御工程。它东起山海关。\n", encoding="utf-8")
    (root / "empty.txt").write_bytes(b"")
    (root / "blob.bin").write_bytes(b"\x00\x01")
    return root


def test_ingest_table_then_split(docs, tmp_path):
    out = tmp_path / "ingested"
    res = runner.invoke(app, ["ingest", str(docs), "--output", str(out), "--chunk-tokens", "40",
                              "--overlap-tokens", "8"])
    assert res.exit_code == 0, res.output
    for expected in ("files parsed", "chunks", "duplicate chunks removed", "empty.txt", "empty",
                     "blob.bin", "unsupported extension .bin"):
        assert expected in res.output
    assert (out / "corpus.jsonl").is_file() and (out / "ingest-report.json").is_file()

    split_out = tmp_path / "split"
    res = runner.invoke(app, ["split", "--data", str(out), "--output", str(split_out), "--seed", "3",
                              "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert sum(report[n]["documents"] for n in ("train", "val", "test")) == 7
    assert report["config"]["seed"] == 3
    assert all((split_out / n / "corpus.jsonl").is_file() for n in ("train", "val", "test"))


def test_ingest_json_and_config_flags(docs, tmp_path):
    out = tmp_path / "o"
    res = runner.invoke(app, ["ingest", str(docs), "-o", str(out), "--json", "--max-file-mb", "0.0001"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["files_parsed"] == 1 and report["chunks"] >= 1  # only notes.md is under 100 bytes
    assert {s["path"] for s in report["skipped"]} == {"blob.bin", "empty.txt"} | {f"doc{i}.txt" for i in range(6)}
    assert report["languages"] == {"zh": report["chunks"]}


def test_output_inside_input_is_not_reingested(docs):
    out = docs / "out"
    assert runner.invoke(app, ["ingest", str(docs), "-o", str(out)]).exit_code == 0
    res = runner.invoke(app, ["ingest", str(docs), "-o", str(out), "--json"])
    assert not any(s["path"].startswith("out/") for s in json.loads(res.stdout)["skipped"])
    assert json.loads(res.stdout)["files_parsed"] == 7


def test_bad_arguments(tmp_path, docs):
    res = runner.invoke(app, ["ingest", str(tmp_path / "nope"), "--output", str(tmp_path / "o")])
    assert isinstance(res.exception, ConfigError) and "DIR" in str(res.exception)
    res = runner.invoke(app, ["ingest", str(docs), "-o", str(docs)])
    assert isinstance(res.exception, ConfigError) and "--output" in str(res.exception)
    res = runner.invoke(app, ["ingest", str(docs), "-o", str(tmp_path / "o"), "--overlap-tokens", "500"])
    assert isinstance(res.exception, ConfigError) and "overlap_tokens" in str(res.exception)
    res = runner.invoke(app, ["split", "--data", str(tmp_path), "--output", str(tmp_path / "s")])
    assert isinstance(res.exception, DataFormatError) and "--data" in str(res.exception)
    res = runner.invoke(app, ["split", "--data", str(docs), "--output", str(tmp_path / "s"), "--train", "0.9"])
    assert isinstance(res.exception, ConfigError) and "sum to 1" in str(res.exception)


def test_example_command(tmp_path):
    res = runner.invoke(app, ["example", str(tmp_path / "ex")])
    assert res.exit_code == 0, res.output
    assert f"ragtune run {tmp_path / 'ex'}" in res.output.replace("\n", "")
    assert len(list((tmp_path / "ex").glob("*.txt"))) > 50
