"""Report data from run directories: full runs, runs missing stages, and the keys later stages will fill."""

from __future__ import annotations

import json
import time

import pytest
from report_helpers import HOSTILE, ZH_MARKER, make_docs

from ragtune.report import build_report_data, write_report
from ragtune.report.compare import recall_curve
from ragtune.report.data import funnel
from ragtune.report.html import render_html


def test_a_full_run_has_every_section(small_run):
    data = build_report_data(small_run)
    for key in ("ingest", "split", "generation", "training", "evaluation", "verdict", "examples", "recall_curves",
                "timings", "manifest", "config"):
        assert key in data, key
    ev = data["evaluation"]
    pipeline = data["pipeline"]
    served = [pipeline["chosen_name"]] if "(fuse=" in pipeline["chosen_name"] else []  # a blend is tested too
    assert list(ev["systems"]) == ["bm25", "base", "fine-tuned", "hybrid", "hybrid+rerank", *served]
    assert data["guard"]["verdict"] in ("pass", "warn", "fail") and data["guard"]["message"]
    assert pipeline["chosen"] == pipeline["candidates"][pipeline["chosen_name"]]
    verdict = data["verdict"]
    assert verdict["baseline"] == "base" and verdict["candidate"] == "fine-tuned"
    assert verdict["status"] in ("better", "worse", "inconclusive") and verdict["message"]
    assert verdict["winner"] in ev["systems"]
    ex = data["examples"]
    assert len(ex["deltas"]) == ev["num_queries"] == sum(ex["wins_ties_losses"])
    assert ex["deltas"] == sorted(ex["deltas"])
    assert all(e["delta"] < 0 for e in ex["regressions"]) and all(e["delta"] > 0 for e in ex["gains"])
    for e in ex["regressions"] + ex["gains"]:
        assert e["expected"] and set(e["returned"]) == set(ev["systems"])
    curves = data["recall_curves"]
    assert set(curves["systems"]) == set(ev["systems"])
    for name, curve in curves["systems"].items():
        assert len(curve) == len(curves["k"]) and curve == sorted(curve)  # recall@k never falls as k grows
        assert curve[-1] == pytest.approx(ev["systems"][name]["means"]["recall@100"], abs=1e-3)
    assert data["generation"]["samples_by_verdict"]["kept"]
    assert "cost" not in data  # not made by this run (no LLM): left out, not empty


def test_recall_curve_counts_every_relevant_passage():
    qrels = {"q1": {"d1": 1}, "q2": {"d3": 1, "d4": 1, "d9": 0}, "q3": {"d7": 0}}
    run = {"q1": {"d2": 0.9, "d1": 0.8, "d3": 0.1}, "q2": {"d3": 0.9, "d9": 0.8, "d4": 0.7}}
    assert recall_curve(qrels, run, 4) == [0.25, 0.75, 1.0, 1.0]  # q3 has no relevant passage: not counted
    assert recall_curve({"q1": {"d1": 1}}, {}, 3) == [0.0, 0.0, 0.0]


def test_funnel_from_a_filter_report():
    raw = {"input": 100, "kept": 70, "steps": [
        {"name": "parse", "dropped": 4, "reasons": {"no JSON": 4}, "examples": []},
        {"name": "length", "dropped": 10, "reasons": {"too short": 10}},
        {"name": "roundtrip", "dropped": 20, "reasons": {"not in top 10": 20}}]}
    steps = funnel(raw)
    assert [s["step"] for s in steps] == ["generated", "parse", "length", "roundtrip"]
    assert [s["kept"] for s in steps] == [100, 100, 90, 70]  # failed replies never became questions
    assert steps[-1]["reasons"] == {"not in top 10": 20}
    assert funnel([{"step": "a", "kept": 3, "dropped": 1}])[0]["reasons"] == {}
    assert funnel(None) is None and funnel({"unrelated": 1}) is None


def test_a_run_that_stopped_after_split_renders(tmp_path):
    from ragtune.config import RunConfig
    from ragtune.pipeline import run_pipeline

    run_dir = tmp_path / "run"
    run_pipeline(make_docs(tmp_path / "docs"), run_dir, RunConfig(), stop_after="split")
    paths = write_report(run_dir)
    assert [p.name for p in paths] == ["report.json", "report.md", "report.html"]
    data = json.loads(paths[0].read_text(encoding="utf-8"))
    assert "ingest" in data and "split" in data
    assert not {"evaluation", "verdict", "examples", "training", "generation", "recall_curves"} & set(data)
    html = paths[2].read_text(encoding="utf-8")
    assert "no evaluation yet" in html and "ingest, split" in html
    assert 'id="data"' in html and 'id="manifest"' in html
    assert 'id="results"' not in html and 'id="plots"' not in html and 'id="examples"' not in html


def test_an_almost_empty_run_directory_renders(tmp_path):
    (tmp_path / "manifest.json").write_text("{}", encoding="utf-8")
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "test.json").write_text("{not json", encoding="utf-8")  # unreadable: left out
    paths = write_report(tmp_path)
    html = paths[2].read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>") and "no evaluation yet" in html


def _add_later_stages(run_dir):
    """What the LLM generator, the forgetting guard and cost accounting will leave in a run directory."""
    gen = run_dir / "generate" / "train"
    info = json.loads((gen / "gen-info.json").read_text(encoding="utf-8"))
    info.update(model="qwen-test", filters={"input": 50, "kept": 41, "steps": [
        {"name": "length", "dropped": 3, "reasons": {"too short": 3}},
        {"name": "roundtrip", "dropped": 6, "reasons": {f"chunk not in top 10 {HOSTILE}": 6}}]},
        stats={"prompt_tokens": 12000, "completion_tokens": 3400, "cost_usd": 0.0123, "sent": 25})
    (gen / "gen-info.json").write_text(json.dumps(info), encoding="utf-8")
    source = next(iter(json.loads(line)["_id"] for line in (gen / "corpus.jsonl").open(encoding="utf-8")))
    with open(gen / "gen-dropped.jsonl", "w", encoding="utf-8") as fh:
        fh.write(json.dumps({"_id": "x1", "text": "short?", "step": "length", "reason": "too short",
                             "source": [source]}) + "\n")
        fh.write(json.dumps({"_id": "x2", "text": f"龙井 {HOSTILE}", "step": "roundtrip",
                             "reason": "chunk not in top 10", "source": [source]}, ensure_ascii=False) + "\n")
    (run_dir / "eval" / "guard.json").write_text(json.dumps({
        "verdict": "warn", "message": f"general retrieval fell a little {HOSTILE}", "dataset": "toy",
        "base": 0.61, "fine_tuned": 0.58, "delta": -0.03, "threshold": -0.05}), encoding="utf-8")


def test_later_stages_render_when_present(run_copy):
    _add_later_stages(run_copy)
    write_report(run_copy)
    data = json.loads((run_copy / "report.json").read_text(encoding="utf-8"))
    gen = data["generation"]
    assert [s["kept"] for s in gen["filters"]] == [50, 47, 41]
    assert set(gen["samples_by_verdict"]) == {"kept", "length", "roundtrip"}
    assert gen["samples_by_verdict"]["length"][0]["reason"] == "too short"
    assert gen["samples_by_verdict"]["length"][0]["passage"]  # the source chunk is shown
    assert data["guard"]["verdict"] == "warn"
    assert data["cost"] == {"prompt_tokens": 12000, "completion_tokens": 3400, "usd": 0.0123, "requests": 25}
    html = (run_copy / "report.html").read_text(encoding="utf-8")
    for needle in ('id="guard"', "Filter funnel", "Dropped by roundtrip", "qwen-test", "$0.0123", "12,000",
                   "general retrieval fell a little"):
        assert needle in html, needle
    assert "<script" not in html


def test_cost_in_the_manifest_wins(run_copy):
    manifest = json.loads((run_copy / "manifest.json").read_text(encoding="utf-8"))
    manifest["cost"] = {"prompt_tokens": 5, "completion_tokens": 7, "usd": 1.5, "model": "gpt-test"}
    (run_copy / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    data = build_report_data(run_copy)
    assert data["cost"] == {"prompt_tokens": 5, "completion_tokens": 7, "usd": 1.5, "model": "gpt-test"}


def test_chinese_text_survives_every_format(run_copy):
    paths = write_report(run_copy)
    data = json.loads(paths[0].read_text(encoding="utf-8"))
    assert ZH_MARKER in json.dumps(data, ensure_ascii=False)
    html = paths[2].read_text(encoding="utf-8")
    assert '<meta charset="utf-8">' in html
    assert ZH_MARKER in html and 'lang="zh-Hans"' in html  # raw UTF-8, tagged so CJK fonts are picked
    assert "Noto Sans CJK SC" in html and "Microsoft YaHei" in html


def test_the_report_step_is_fast(run_copy):
    start = time.perf_counter()
    write_report(run_copy)
    assert time.perf_counter() - start < 5.0
    assert len(render_html(build_report_data(run_copy))) > 10_000
