"""``ragtune run`` end to end on a tiny random model: outputs, resume, the optional adapter step, bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ragtune.cli.app import app
from ragtune.config import RunConfig
from ragtune.errors import ConfigError
from ragtune.pipeline import FUSE_WEIGHTS, run_pipeline

TOPICS = ["glacier", "volcano", "orchard", "harbour", "comet", "desert", "reef", "prairie", "canyon", "delta"]
FACTS = ["{t} number {i} lies {n} kilometres from the coast.", "Visitors to the {t} report {n} sunny days a year.",
         "The {t} was first mapped in {y} by a survey team.", "Scientists measured {n} species living near the {t}.",
         "A local guide says the {t} changes colour every {i} weeks.", "The oldest record of the {t} dates from {y}."]


def make_docs(folder: Path) -> Path:
    rng = random.Random(3)
    folder.mkdir(parents=True)
    for t in TOPICS:
        text = " ".join(rng.choice(FACTS).format(t=t.title(), i=rng.randint(2, 9), n=rng.randint(10, 900),
                                                 y=rng.randint(1800, 2000)) for _ in range(12))
        (folder / f"{t}.txt").write_text(text + "\n", encoding="utf-8")
    (folder / "empty.md").write_text("", encoding="utf-8")
    return folder


def small_config(model: str, **extra) -> RunConfig:
    return RunConfig.load(None, {"ingest.chunk_tokens": 48, "ingest.overlap_tokens": 8, "embedding.base": model,
                                 "embedding.max_steps": 2, "embedding.batch_size": 4, "eval.bootstrap": 20,
                                 "reranker.base": model, "reranker.max_steps": 2, "reranker.batch_size": 4,
                                 "reranker.negatives": 2, **extra})


def test_run_resume_and_adapter(tmp_path, tiny_model_path):
    docs = make_docs(tmp_path / "docs")
    run_dir = tmp_path / "run"
    result = run_pipeline(docs, run_dir, small_config(tiny_model_path))
    for name in ("report.md", "report.json", "report.html", "manifest.json", "config.yaml", "eval/test.json",
                 "train/embedding/model/modules.json", "ingest/corpus.jsonl", "split/test/corpus.jsonl",
                 "guard/guard.json", "guard/model/modules.json", "train/reranker/model/config.json",
                 "rerank/pipeline.json"):
        assert (run_dir / name).is_file(), name
    systems = result.report["evaluation"]["systems"]
    pipeline = json.loads((run_dir / "rerank/pipeline.json").read_text())
    served = [pipeline["chosen_name"]] if "(fuse=" in pipeline["chosen_name"] else []
    assert list(systems) == ["bm25", "base", "fine-tuned", "hybrid", "hybrid+rerank", *served]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["steps"]["train"]["status"] == "done" and "ingest/corpus.jsonl" in manifest["data_hashes"]
    # the guard decided which model is "fine-tuned", and the evaluation used that one
    guard = json.loads((run_dir / "guard/guard.json").read_text())
    assert guard["decision"] in ("fine-tuned", "interpolated", "base") and result.report["guard"]["verdict"]
    assert manifest["systems"]["fine-tuned"] == f"dense:{run_dir / 'guard' / 'model'}"
    # a reranked pipeline (alone or blended with hybrid) is kept only if it beats its first stage on validation
    val = pipeline["val_ndcg@10"]
    assert list(val) == ["hybrid", "hybrid+rerank", *(f"hybrid+rerank(fuse={w:g})" for w in FUSE_WEIGHTS)]
    best = max(val, key=lambda name: val[name])
    assert pipeline["chosen_name"] == best and pipeline["chosen"] == pipeline["candidates"][best]
    blend = pipeline["candidates"]["hybrid+rerank(fuse=0.4)"]
    assert blend.startswith(pipeline["first_stage"] + ">rerank(") and "fuse=0.4" in blend
    assert blend.endswith(f"):{pipeline['reranker']}")
    assert "first_stage" in systems["hybrid+rerank"]
    assert any(s["path"] == "empty.md" for s in result.report["ingest"]["skipped"])
    test_docs = {json.loads(line)["doc"] for line in (run_dir / "split/test/corpus.jsonl").open()}
    train_docs = {json.loads(line)["doc"] for line in (run_dir / "split/train/corpus.jsonl").open()}
    assert test_docs and train_docs and not test_docs & train_docs
    # validation ranks its chunks among training chunks (distractors, never judged), as the full index would
    val_corpus = {json.loads(line)["_id"] for line in (run_dir / "generate/val/corpus.jsonl").open()}
    val_chunks = {json.loads(line)["_id"] for line in (run_dir / "split/val/corpus.jsonl").open()}
    train_chunks = {json.loads(line)["_id"] for line in (run_dir / "split/train/corpus.jsonl").open()}
    assert val_chunks < val_corpus and val_corpus - val_chunks <= train_chunks
    assert manifest["steps"]["generate"]["val_distractors"] == len(val_corpus - val_chunks)
    judged = {d for line in (run_dir / "generate/val/qrels/test.tsv").open().readlines()[1:] for d in [line.split()[1]]}
    assert judged <= val_chunks
    train_log = json.loads((run_dir / "train/embedding/train-log.json").read_text())
    assert "eval_monitor_general_cosine_ndcg@10" in train_log["evals"][-1]  # the guard's check set, watched
    assert manifest["steps"]["rerank"]["ict_queries"] == 0  # its questions are pseudo-queries already

    # A rerun with an adapter added: everything up to training is reused, the adapter is trained and evaluated.
    result2 = run_pipeline(docs, run_dir, small_config(tiny_model_path, **{"adapter.kind": "linear",
                                                                           "adapter.epochs": 2}))
    steps = json.loads((run_dir / "manifest.json").read_text())["steps"]
    assert all(steps[s].get("skipped_on_resume") for s in ("ingest", "split", "generate", "train", "guard", "rerank"))
    assert steps["adapter"]["status"] == "done" and not steps["adapter"].get("skipped_on_resume")
    assert "base+adapter" in result2.report["evaluation"]["systems"]

    # Changing the learning rate redoes training but not ingest/split/generate.
    run_pipeline(docs, run_dir, small_config(tiny_model_path, **{"embedding.learning_rate": 5e-5}),
                 stop_after="train")
    steps = json.loads((run_dir / "manifest.json").read_text())["steps"]
    assert steps["generate"].get("skipped_on_resume") and steps["train"]["status"] == "done"
    assert not steps["train"].get("skipped_on_resume")


def test_a_reranker_base_competes_with_its_fine_tuned_self(tmp_path, tiny_model_path, tiny_cross_encoder_path):
    """When the reranker starts from a cross-encoder, fine-tuning has to beat it too: three pipelines are compared
    on validation, the best is served, and the test evaluation shows all three."""
    docs = make_docs(tmp_path / "docs")
    run_dir = tmp_path / "run"
    result = run_pipeline(docs, run_dir, small_config(tiny_model_path, **{"reranker.base": tiny_cross_encoder_path,
                                                                          "embedding.max_steps": 1,
                                                                          "generate.method": "crop",
                                                                          "reranker.ict_ratio": 0.5}))
    pipeline = json.loads((run_dir / "rerank/pipeline.json").read_text())
    assert pipeline["base_reranker"] == tiny_cross_encoder_path
    log = json.loads((run_dir / "train/reranker/train-log.json").read_text())  # an explicit ratio is followed
    assert log["config"]["ict_ratio"] == 0.5 and 0 < log["ict_queries"] <= (log["n_queries"] + 2) // 3
    assert pipeline["training_queries"] == {"judged": log["n_queries"] - log["ict_queries"],
                                            "inverse_cloze": log["ict_queries"]}
    said = f"{log['ict_queries']:,} inverse-cloze pseudo-queries"
    assert said in (run_dir / "report.md").read_text() and said in (run_dir / "report.html").read_text()
    val = pipeline["val_ndcg@10"]
    blends = [f"(fuse={w:g})" for w in FUSE_WEIGHTS]
    assert list(val) == ["hybrid", "hybrid+rerank", *(f"hybrid+rerank{b}" for b in blends),
                         "hybrid+base-rerank", *(f"hybrid+base-rerank{b}" for b in blends)]
    base_spec = pipeline["candidates"]["hybrid+base-rerank"]  # rerank(k=N) when the depth is below the corpus size
    assert base_spec.startswith(f"{pipeline['first_stage']}>rerank") and "fuse" not in base_spec
    assert base_spec.endswith(f":{tiny_cross_encoder_path}")
    best = max(val, key=lambda name: val[name])
    phrase = {"hybrid": "no reranker beats", "hybrid+rerank": "the fine-tuned reranker wins",
              "hybrid+base-rerank": "fine-tuning did not improve"}[best.partition("(")[0]]
    assert pipeline["chosen"] == pipeline["candidates"][best] and phrase in pipeline["message"]
    tested = [name for name in pipeline["candidates"] if "(fuse=" not in name or name == best]  # + the served blend
    assert list(result.report["evaluation"]["systems"])[3:] == tested


def test_the_reranker_mixes_in_pseudo_queries_only_beside_llm_questions(tmp_path):
    from ragtune.generate import GeneratedSet, write_generated
    from ragtune.pipeline import _default_ict_ratio
    from ragtune.workspace import Workspace

    ws = Workspace(tmp_path / "run")
    for method, ratio in (("llm", 1.0), ("ict", 0.0), ("crop", 0.0)):
        write_generated(GeneratedSet({"q": "a question"}, {"q": {"d": 1}}, {"q": {}}, method=method),
                        ws.path("generate", "train"))
        assert _default_ict_ratio(ws) == ratio, method


def test_run_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="not a directory"):
        run_pipeline(tmp_path / "missing", tmp_path / "run")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "blob.txt").write_bytes(b"\x00\x01binary")
    with pytest.raises(ConfigError, match="no text could be read"):
        run_pipeline(tmp_path / "docs", tmp_path / "run")
    with pytest.raises(ConfigError, match="--stop-after"):
        run_pipeline(tmp_path / "docs", tmp_path / "run2", stop_after="lunch")


def test_run_cli_stop_after_split_and_bad_config(tmp_path):
    docs = make_docs(tmp_path / "docs")
    runner = CliRunner()
    res = runner.invoke(app, ["run", str(docs), "--output", str(tmp_path / "run"), "--stop-after", "split"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "split" / "test" / "corpus.jsonl").is_file()
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text(encoding="utf-8"))
    assert written["reranker"] is not None and written["guard"]["enabled"] is True  # both on by default
    res = runner.invoke(app, ["run", str(docs), "--output", str(tmp_path / "run"), "--stop-after", "split",
                              "--no-rerank", "--no-guard"])
    assert res.exit_code == 0, res.output
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text(encoding="utf-8"))
    assert written["reranker"] is None and written["guard"]["enabled"] is False
    cfg = tmp_path / "ragtune.yaml"
    cfg.write_text("embedding:\n  epoch: 3\n", encoding="utf-8")
    res = runner.invoke(app, ["run", str(docs), "--config", str(cfg)])
    assert isinstance(res.exception, ConfigError) and "embedding.epoch" in str(res.exception)


def test_rerank_depth_follows_the_config_and_the_machine(monkeypatch):
    import ragtune.pipeline as pl

    cfg = RunConfig.load(None, {"eval.rerank_k": 30})
    assert pl._reranked("hybrid:m", "r", cfg, 500) == "hybrid:m>rerank(k=30):r"
    assert pl._reranked("hybrid:m", "r", cfg, 30) == "hybrid:m>rerank:r"  # the stage caps it at the corpus
    default = RunConfig.load(None, {})
    monkeypatch.setattr(pl, "_has_cuda", lambda: False)
    assert pl._reranked("hybrid:m", "r", default, 500) == f"hybrid:m>rerank(k={pl.CPU_RERANK_K}):r"
    monkeypatch.setattr(pl, "_has_cuda", lambda: True)
    assert pl._reranked("hybrid:m", "r", default, 500) == "hybrid:m>rerank(k=100):r"
    assert pl._reranked("hybrid:m", "r", default, 500, fuse=0.25) == "hybrid:m>rerank(k=100,fuse=0.25):r"
    assert pl._reranked("hybrid:m", "r", cfg, 30, fuse=0.5) == "hybrid:m>rerank(fuse=0.5):r"
