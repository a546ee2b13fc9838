"""Gather everything a run left in its directory into one JSON-able report-data object (what ``report.json`` holds).

Every part is optional: a run that stopped early, or a stage that does not exist yet, leaves its key out, and the
renderers skip what is missing. Keys, and the file each comes from (later stages fill the ones marked *later*)::

    title, created, run_dir, docs_dir
    ingest        ingest/ingest-report.json: files_parsed, files_skipped, chunks, duplicates_removed, languages,
                  documents, skipped
    split         split/split-report.json: {split: {documents, chunks}}
    generation    generate/train/ (+ the manifest's generate step):
                    method, note, model, train_queries, val_queries, test_queries
                    samples            kept questions: [{query, doc_id, passage}]
                    samples_by_verdict {"kept" | filter step name: [{query, doc_id, passage, reason}]}; dropped
                                       questions come from gen-dropped.jsonl ({_id, text, step, reason, source})
                    filters            the filter funnel, a list [{step, kept, dropped, reasons: {why: n}}] whose
                                       first entry is {"step": "generated", "kept": <input>}; read from the
                                       "filters" of gen-info.json (FilterReport.to_dict: {input, kept, steps}) or
                                       from filter-report.json (that shape, or the list itself)
    training      train/embedding/train-log.json: steps, seconds, final_loss, losses [{step, loss}],
                  evals [{step, eval_val_*}] (an ``eval_val_loss`` entry is drawn as the validation loss)
    evaluation    eval/test.json (EvalReport.to_dict, per-query scores included); any number of systems
                  (bm25, base, fine-tuned, *later* +adapter, +rerank, ...) in the order they were evaluated
    verdict       metric, baseline, candidate, winner, scores, delta_vs_base, relative_change, delta_ci95,
                  p_value, significant, status ("better" | "worse" | "inconclusive"), message
    examples      the candidate against the baseline per query (see :func:`ragtune.report.compare.examples`)
    recall_curves {"k": [1..K], "systems": {name: [recall@1..]}} from eval/runs/<system>.json + the test qrels
    guard         *later* the forgetting guard, eval/guard.json or manifest["guard"]:
                  {verdict: "pass" | "warn" | "fail", message: str, ...any scalar details (dataset, base,
                  fine_tuned, delta, threshold)}
    pipeline      rerank/pipeline.json or manifest["pipeline"]: {first_stage, reranked, chosen (the spec to serve),
                  chosen_name, reranker, base_reranker, message, candidates: {name: spec}, val_ndcg@10: {name: score}}
                  (names: hybrid, hybrid+rerank, hybrid+base-rerank, and NAME(fuse=W) for blends)
    cost          *later* manifest["cost"], else the "stats" of generate/train/gen-info.json:
                  {prompt_tokens: int, completion_tokens: int, usd: float, model?: str, requests?: int}
    timings       {steps: {step: seconds}, total_s, systems: {name: {load_s, index_s, search_s, queries_per_s}}}
    manifest      manifest.json without its config: versions, platform, data_hashes, systems (name -> spec), ...
    config        the resolved run configuration
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from ragtune.report import compare

logger = logging.getLogger(__name__)

PRIMARY = "ndcg@10"
SAMPLE_QUERIES = 12
SAMPLES_PER_VERDICT = 6
SIGNIFICANCE = 0.05


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        logger.warning("%s: unreadable JSON (%s); section left out of the report", path, exc)
        return None


def _read_jsonl(path: Path) -> list[dict]:
    out: list[dict] = []
    if not path.is_file():
        return out
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("%s:%d: not JSON; line left out of the report", path, lineno)
    return out


def _read_qrels(directory: Path) -> dict[str, dict[str, int]]:
    from ragtune.data.beir import load_qrels

    qrels: dict[str, dict[str, int]] = {}
    for path in sorted(directory.glob("*.tsv")):
        for qid, docs in load_qrels(path).items():
            qrels.setdefault(qid, {}).update(docs)
    return qrels


def _clip(text: Any, limit: int = 400) -> str:
    text = str(text or "")
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _spread(items: list, n: int) -> list:
    """Up to ``n`` items evenly spread over ``items`` (first one included), so samples cover every document."""
    if len(items) <= n:
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


# --- generation ------------------------------------------------------------------------------------------------


def funnel(raw: Any) -> list[dict[str, Any]] | None:
    """The filter funnel as ``[{step, kept, dropped, reasons}]`` from a FilterReport dict (or the list itself)."""
    if isinstance(raw, list):
        return [{"step": str(s.get("step", "")), "kept": int(s.get("kept", 0)), "dropped": int(s.get("dropped", 0)),
                 "reasons": dict(s.get("reasons") or {})} for s in raw if isinstance(s, dict)] or None
    if not isinstance(raw, dict) or "steps" not in raw:
        return None
    alive = int(raw.get("input", 0))
    out = [{"step": "generated", "kept": alive, "dropped": 0, "reasons": {}}]
    for step in raw["steps"]:
        dropped = int(step.get("dropped", 0))
        if step.get("name") != "parse":  # failed replies never became questions: reported, not subtracted
            alive -= dropped
        out.append({"step": str(step.get("name", "")), "kept": alive, "dropped": dropped,
                    "reasons": dict(step.get("reasons") or {})})
    return out


def _generation(run_dir: Path, manifest: dict) -> dict[str, Any] | None:
    gen_dir = run_dir / "generate" / "train"
    if not gen_dir.is_dir():
        return None
    info = dict(manifest.get("steps", {}).get("generate", {}))
    gen_info = _read_json(gen_dir / "gen-info.json") or {}
    queries = _read_jsonl(gen_dir / "gen-queries.jsonl")
    corpus = {d.get("_id"): d for d in _read_jsonl(gen_dir / "corpus.jsonl")}
    qrels = _read_qrels(gen_dir)  # gen-qrels.tsv

    def sample(qid: str, text: str, doc_id: str | None, reason: str | None = None) -> dict[str, Any]:
        doc_id = doc_id or next(iter(qrels.get(qid, {})), "")
        out = {"query": text, "doc_id": doc_id, "passage": _clip(corpus.get(doc_id, {}).get("text", ""))}
        if reason:
            out["reason"] = reason
        return out

    kept = [sample(q["_id"], q.get("text", ""), None) for q in _spread(queries, SAMPLE_QUERIES)]
    by_verdict: dict[str, list[dict[str, Any]]] = {"kept": _spread(kept, SAMPLES_PER_VERDICT)} if kept else {}
    for rec in _read_jsonl(gen_dir / "gen-dropped.jsonl"):
        bucket = by_verdict.setdefault(str(rec.get("step", "dropped")), [])
        if len(bucket) < SAMPLES_PER_VERDICT:
            source = rec.get("source") or [None]
            bucket.append(sample(str(rec.get("_id", "")), rec.get("text", ""), source[0], rec.get("reason")))
    return {
        "method": gen_info.get("method", info.get("method")),
        "note": gen_info.get("note", info.get("note")),
        "model": gen_info.get("model") or None,
        "train_queries": info.get("train_queries", len(queries)),
        "val_queries": info.get("val_queries"),
        "test_queries": info.get("test_queries"),
        "samples": kept,
        "samples_by_verdict": by_verdict,
        "filters": funnel(gen_info.get("filters") or _read_json(gen_dir / "filter-report.json")),
    }


def _cost(run_dir: Path, manifest: dict) -> dict[str, Any] | None:
    raw = manifest.get("cost")
    if not isinstance(raw, dict):
        stats = (_read_json(run_dir / "generate" / "train" / "gen-info.json") or {}).get("stats")
        if not isinstance(stats, dict):
            return None
        raw = {"prompt_tokens": stats.get("prompt_tokens", 0), "completion_tokens": stats.get("completion_tokens", 0),
               "usd": stats.get("cost_usd", 0.0), "requests": stats.get("sent")}
    out = {"prompt_tokens": int(raw.get("prompt_tokens") or 0),
           "completion_tokens": int(raw.get("completion_tokens") or 0),
           "usd": float(raw.get("usd", raw.get("cost_usd")) or 0.0)}
    out.update({k: v for k, v in raw.items() if k not in out and k != "cost_usd" and v is not None})
    return out


# --- evaluation ------------------------------------------------------------------------------------------------


def _candidate(evaluation: dict) -> str | None:
    systems = evaluation.get("systems", {})
    baseline = evaluation.get("baseline")
    if "fine-tuned" in systems and baseline != "fine-tuned":
        return "fine-tuned"
    others = [n for n in systems if n != baseline]
    return max(others, key=lambda n: systems[n]["means"].get(PRIMARY, 0.0)) if others else None


def _verdict(evaluation: dict, examples: dict[str, Any]) -> dict[str, Any] | None:
    systems = evaluation.get("systems", {})
    if not systems:
        return None
    means = {n: s["means"].get(PRIMARY, 0.0) for n, s in systems.items()}
    out: dict[str, Any] = {"metric": PRIMARY, "winner": max(means, key=means.get), "scores": means}
    baseline, candidate = evaluation.get("baseline"), _candidate(evaluation)
    if baseline not in systems or candidate is None:
        return out
    delta = means[candidate] - means[baseline]
    p = systems[candidate].get("p_values", {}).get(PRIMARY)
    significant = p is not None and p < SIGNIFICANCE
    status = ("better" if delta > 0 else "worse") if significant else "inconclusive"
    out.update({"baseline": baseline, "candidate": candidate, "delta_vs_base": delta, "p_value": p,
                "relative_change": delta / means[baseline] if means[baseline] else None,
                "delta_ci95": examples.get("mean_delta_ci95"), "significant": significant, "status": status})
    p_text = "n/a" if p is None else f"{p:.2g}"
    if status == "better":
        out["message"] = (f"The {candidate} model beats the {baseline} model by {delta:+.4f} {PRIMARY} on held-out "
                          f"documents (p = {p_text}).")
    elif delta > 0:
        out["message"] = (f"The {candidate} model is ahead of the {baseline} model by {delta:+.4f} {PRIMARY}, but "
                          f"the difference is not significant (p = {p_text}); more data would settle it.")
    elif delta == 0:
        out["message"] = (f"The {candidate} model scores the same as the {baseline} model on {PRIMARY}; "
                          f"keep the {baseline} model for this corpus.")
    else:
        out["message"] = (f"The {candidate} model is not better than the {baseline} model ({delta:+.4f} {PRIMARY}, "
                          f"p = {p_text}); keep the {baseline} model for this corpus.")
    return out


def _evaluation_parts(run_dir: Path, evaluation: dict) -> dict[str, Any]:
    """Examples, verdict and recall curves: the parts that need the test set and the saved runs."""
    from ragtune.data.beir import load_run

    test_dir = run_dir / "generate" / "test"
    systems = evaluation.get("systems", {})
    runs = {}
    for name in systems:
        path = run_dir / "eval" / "runs" / f"{name}.json"
        if path.is_file():
            runs[name] = load_run(path)
    qrels = _read_qrels(test_dir / "qrels")
    parts: dict[str, Any] = {}
    baseline, candidate = evaluation.get("baseline"), _candidate(evaluation)
    examples: dict[str, Any] = {}
    if baseline in systems and candidate is not None:
        queries = {q["_id"]: q.get("text", "") for q in _read_jsonl(test_dir / "queries.jsonl")}
        corpus = {d["_id"]: d for d in _read_jsonl(test_dir / "corpus.jsonl")}
        examples = compare.examples(evaluation, baseline, candidate, queries=queries, corpus=corpus, qrels=qrels,
                                    runs=runs, metric=PRIMARY,
                                    resamples=min(1000, int(evaluation.get("config", {}).get("bootstrap", 1000))))
        parts["examples"] = examples
    parts["verdict"] = _verdict(evaluation, examples)
    curves = compare.recall_curves(qrels, runs)
    if curves:
        parts["recall_curves"] = curves
    return parts


def _timings(manifest: dict, evaluation: dict | None) -> dict[str, Any]:
    steps = {n: s["seconds"] for n, s in manifest.get("steps", {}).items()
             if isinstance(s, dict) and isinstance(s.get("seconds"), (int, float)) and n != "report"}
    out: dict[str, Any] = {"steps": steps, "total_s": round(sum(steps.values()), 2)}
    if evaluation:
        out["systems"] = {n: s.get("timings", {}) for n, s in evaluation.get("systems", {}).items()}
    return out


def build_report_data(run_dir: str | Path) -> dict[str, Any]:
    """Read a run directory and return the report data (what ``report.json`` holds)."""
    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    manifest = _read_json(run_dir / "manifest.json") or {}
    data: dict[str, Any] = {
        "title": f"ragtune run: {Path(manifest.get('docs_dir') or run_dir.resolve()).name}",
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "run_dir": str(run_dir.resolve()),
        "docs_dir": manifest.get("docs_dir"),
    }
    for key, path in (("ingest", "ingest/ingest-report.json"), ("split", "split/split-report.json"),
                      ("training", "train/embedding/train-log.json")):
        value = _read_json(run_dir / path)
        if value is not None:
            data[key] = value
    generation = _generation(run_dir, manifest)
    if generation is not None:
        data["generation"] = generation
    evaluation = _read_json(run_dir / "eval" / "test.json")
    if isinstance(evaluation, dict) and evaluation.get("systems"):
        data["evaluation"] = evaluation
        data.update(_evaluation_parts(run_dir, evaluation))
    guard = _read_json(run_dir / "eval" / "guard.json") or manifest.get("guard")
    if isinstance(guard, dict) and guard.get("verdict"):
        data["guard"] = guard
    pipeline = _read_json(run_dir / "rerank" / "pipeline.json") or manifest.get("pipeline")
    if isinstance(pipeline, dict) and pipeline.get("chosen"):
        data["pipeline"] = pipeline
    cost = _cost(run_dir, manifest)
    if cost is not None:
        data["cost"] = cost
    data["timings"] = _timings(manifest, data.get("evaluation"))
    data["manifest"] = {k: v for k, v in manifest.items() if k != "config"}
    data["config"] = manifest.get("config")
    logger.info("report data of %s gathered in %.2f s", run_dir, time.perf_counter() - t0)
    return data


def trained_on(counts: dict[str, int]) -> str:
    """A reranker's ``training_queries`` in words: ``{"judged": 700, "inverse_cloze": 700}`` is "700 training
    queries + 700 inverse-cloze pseudo-queries"."""
    text = f"{counts.get('judged', 0):,} training queries"
    if counts.get("inverse_cloze"):
        text += f" + {counts['inverse_cloze']:,} inverse-cloze pseudo-queries"
    return text


def load_report_data(run_dir: str | Path) -> dict[str, Any]:
    """``report.json`` of a finished run, or freshly built data when it is missing."""
    return _read_json(Path(run_dir) / "report.json") or build_report_data(run_dir)
