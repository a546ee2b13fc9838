import gzip
import json

import pytest

from ragtune.data.beir import (
    BeirDataset,
    DataIssue,
    load_beir,
    load_corpus,
    load_qrels,
    load_queries,
    load_run,
    write_corpus,
    write_qrels,
    write_run,
)
from ragtune.errors import DataFormatError


def test_load_toy_beir(toy_beir):
    ds = load_beir(toy_beir)
    assert len(ds.corpus) == 6 and len(ds.queries) == 5
    assert ds.qrels["q1"] == {"d1": 1}
    assert ds.corpus["d6"]["title"] == "长城"
    assert ds.issues == []


def test_corpus_problems_are_reported_with_file_and_line(tmp_path):
    p = tmp_path / "corpus.jsonl"
    p.write_text('{"_id": "a", "text": "ok"}\n{not json}\n{"text": "no id"}\n{"_id": "a", "text": "dup"}\n'
                 '{"_id": "b", "title": null, "text": "fine"}\n', encoding="utf-8")
    issues: list[DataIssue] = []
    corpus = load_corpus(p, issues=issues)
    assert list(corpus) == ["a", "b"] and corpus["a"]["text"] == "ok" and corpus["b"]["title"] == ""
    lines = [(i.line, i.message.split()[0]) for i in issues]
    assert lines == [(2, "invalid"), (3, "missing"), (4, "duplicate")]
    assert str(issues[0]).startswith(f"{p}:2:")
    with pytest.raises(DataFormatError, match=":2: invalid JSON"):
        load_corpus(p, strict=True)


def test_gzip_and_bom(tmp_path):
    p = tmp_path / "corpus.jsonl.gz"
    with gzip.open(p, "wt", encoding="utf-8") as fh:
        fh.write("\ufeff" + json.dumps({"_id": "x", "text": "t"}) + "\n")
    assert load_corpus(p) == {"x": {"title": "", "text": "t"}}


@pytest.mark.parametrize(
    "content",
    ["query-id\tcorpus-id\tscore\nq1\td1\t1\n", "q1\td1\t1\n", "q1 0 d1 1\n", "q1\td1\t1.0\n"],
)
def test_qrels_formats(tmp_path, content):
    p = tmp_path / "qrels.tsv"
    p.write_text(content, encoding="utf-8")
    assert load_qrels(p) == {"q1": {"d1": 1}}


def test_qrels_pointing_at_unknown_ids_are_dropped_and_named(toy_beir):
    with open(toy_beir / "qrels" / "test.tsv", "a", encoding="utf-8") as fh:
        fh.write("q1\tmissing-doc\t1\nq404\td1\t1\nq2\td2\tbad\n")
    ds = load_beir(toy_beir)
    assert ds.qrels["q1"] == {"d1": 1} and "q404" not in ds.qrels
    msgs = " | ".join(str(i) for i in ds.issues)
    assert "missing-doc" in msgs and "q404" in msgs and "test.tsv:9" in msgs


def test_queries_metadata_and_empty_text(tmp_path):
    p = tmp_path / "q.jsonl"
    p.write_text('{"_id": "1", "text": "hi", "metadata": {"m": 1}}\n{"_id": "2", "text": " "}\n',
                 encoding="utf-8")
    meta: dict = {}
    issues: list = []
    assert load_queries(p, metadata=meta, issues=issues) == {"1": "hi"}
    assert meta == {"1": {"m": 1}} and issues[0].line == 2


def test_roundtrip_and_runs(tmp_path):
    corpus = {"a": {"title": "T", "text": "x", "doc": "f.txt"}}
    write_corpus(tmp_path / "c.jsonl", corpus)
    assert load_corpus(tmp_path / "c.jsonl") == corpus
    write_qrels(tmp_path / "q.tsv", {"q": {"a": 2}})
    assert load_qrels(tmp_path / "q.tsv") == {"q": {"a": 2}}
    run = {"q": {"a": 0.5, "b": 0.25}}
    for name in ("run.json", "run.trec"):
        write_run(tmp_path / name, run)
        assert load_run(tmp_path / name) == run


def test_missing_files_and_empty_corpus(tmp_path):
    with pytest.raises(DataFormatError, match="not a directory"):
        load_beir(tmp_path / "nope")
    with pytest.raises(DataFormatError, match="no corpus file"):
        load_beir(tmp_path)
    with pytest.raises(DataFormatError, match="corpus is empty"):
        BeirDataset({}, {}, {})
