"""Shared helpers of the training benchmarks: document-level train/val splits of a BEIR set, evaluation, tables.

Only the benchmarks import this file; nothing in the package depends on it.
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ragtune.data.beir import BeirDataset, load_beir


def load_train_source(data: Path, source: str, filter_json: str = "") -> BeirDataset:
    """``gen``: the shipped generated questions (gen-queries.jsonl + gen-qrels.tsv); ``train``: real training
    claims (queries.jsonl + qrels_train.tsv). ``filter_json``: FilterConfig fields; only the questions that
    ragtune's filter chain keeps are returned."""
    if source == "gen":
        ds = load_beir(data, queries="gen-queries.jsonl", qrels="gen-qrels.tsv")
    elif source == "train":
        ds = load_beir(data, queries="queries.jsonl", qrels="qrels_train.tsv")
    else:
        raise SystemExit(f"--source {source!r}: choose gen or train")
    return filter_source(ds, json.loads(filter_json)) if filter_json else ds


FILTER_HELP = "FilterConfig fields as JSON: run ragtune's question filter chain over the training questions first"


def filter_source(ds: BeirDataset, fields: dict[str, Any]) -> BeirDataset:
    """``ds`` with only the questions that ragtune's filter chain (``FilterConfig(**fields)``) keeps."""
    from ragtune.generate.filters import FilterConfig, filter_questions

    kept = filter_questions(ds.queries, ds.qrels, ds.corpus, FilterConfig(**fields))
    steps = ", ".join(f"{s.name} -{s.dropped}" for s in kept.report.steps if s.dropped)
    print(f"filter {fields}: {kept.report.kept} of {kept.report.input} questions kept ({steps})", flush=True)
    return BeirDataset(ds.corpus, kept.queries, kept.qrels, name=ds.name)


def validation_documents(ds: BeirDataset, val_fraction: float = 0.1, seed: int = 42) -> set[str]:
    """The documents :func:`split_by_document` holds out for validation."""
    docs = sorted(ds.corpus)
    random.Random(seed).shuffle(docs)
    return set(docs[: max(1, int(len(docs) * val_fraction))])


def ict_validation(ds: BeirDataset, train: BeirDataset, distractors: int) -> tuple[BeirDataset, int]:
    """Validation as ``ragtune run`` builds it: one sentence cut out of each validation document of ``ds``
    (``ragtune.generate.eval_set``), ranked among ``distractors`` documents of ``train``; and how many were added."""
    from ragtune.data.split import with_distractors
    from ragtune.generate.pseudo import eval_set

    val = eval_set({d: ds.corpus[d] for d in sorted(validation_documents(ds))}, name=f"{ds.name}-val-ict")
    return with_distractors(val, train.corpus, distractors)


def with_ict(train: BeirDataset, n_docs: int, exclude: set[str], seed: int = 42) -> BeirDataset:
    """``train`` plus inverse-cloze pseudo-queries for ``n_docs`` documents drawn at random outside ``exclude``
    (:func:`ragtune.generate.with_ict_queries`, which ``RerankerTrainConfig.ict_ratio`` uses too)."""
    from ragtune.generate.pseudo import with_ict_queries

    mixed = with_ict_queries(train, n_docs, exclude, seed)
    print(f"ict: {len(mixed.queries) - len(train.queries)} pseudo-queries from {n_docs} training documents added to "
          f"{len(train.queries)} queries", flush=True)
    return mixed


def split_by_document(ds: BeirDataset, val_fraction: float = 0.1, seed: int = 42, max_pairs: int | None = None,
                      full_val_corpus: bool = False, val_queries: int | None = None) -> tuple[BeirDataset, BeirDataset]:
    """Train / validation sets whose positives lie in disjoint documents (a query goes to validation when any of
    its positives is a validation document). Training keeps the whole corpus (negatives come from it);
    validation ranks the validation documents only (``full_val_corpus`` ranks all). ``ragtune run`` validates
    otherwise: on one sentence cut from each validation chunk (:func:`ragtune.generate.eval_set`), among training
    chunks as distractors (:func:`ragtune.data.split.with_distractors`).

    ``max_pairs`` keeps the first training queries by id and, unless ``val_queries`` says otherwise, a tenth as
    many validation queries (at least 10); ``val_queries`` keeps that many validation queries (0: all of them)."""
    val_docs = validation_documents(ds, val_fraction, seed)
    train_q, val_q = {}, {}
    for qid, judged in ds.qrels.items():
        positives = {d for d, s in judged.items() if s > 0}
        if not positives or qid not in ds.queries:
            continue
        (val_q if positives & val_docs else train_q)[qid] = {d: 1 for d in positives}
    if max_pairs:
        train_q = {q: train_q[q] for q in sorted(train_q)[:max_pairs]}
    n_val = max(10, max_pairs // 10) if val_queries is None and max_pairs else val_queries
    if n_val:
        val_q = {q: val_q[q] for q in sorted(val_q)[:n_val]}
    train = BeirDataset(ds.corpus, {q: ds.queries[q] for q in train_q}, train_q, name=f"{ds.name}-train")
    val_corpus = ds.corpus if full_val_corpus else {d: ds.corpus[d] for d in sorted(val_docs)}
    val = BeirDataset(val_corpus, {q: ds.queries[q] for q in val_q}, val_q, name=f"{ds.name}-val")
    return train, val


def with_validation_questions(ds: BeirDataset, train: BeirDataset) -> BeirDataset:
    """``train`` plus every question of ``ds`` that :func:`split_by_document` held out with its validation
    documents (without ``max_pairs``: all the questions, as LlamaIndex's recipe trains). Validation built from those
    documents then judges a model that was trained on their questions."""
    qrels, val_docs = dict(train.qrels), validation_documents(ds)
    for qid, judged in ds.qrels.items():
        positives = {d for d, s in judged.items() if s > 0}
        if positives & val_docs and qid in ds.queries:  # --max-pairs' cut of the training questions stays
            qrels[qid] = {d: 1 for d in positives}
    print(f"all questions: {len(qrels) - len(train.qrels)} questions of validation documents added to "
          f"{len(train.qrels)} training questions", flush=True)
    return BeirDataset(train.corpus, {q: ds.queries[q] for q in qrels}, qrels, name=f"{ds.name}-all")


def evaluate_models(data: Path, models: dict[str, str], *, batch_size: int = 128, bootstrap: int = 1000,
                    systems_extra: dict[str, str] | None = None) -> dict[str, Any]:
    """nDCG@10 etc. with 95% bootstrap CIs of each ``name -> spec`` (dense:PATH, hybrid:PATH, ...) on ``data``'s
    test qrels, through ragtune's evaluator."""
    from ragtune.config import EvalConfig
    from ragtune.evaluate.harness import evaluate_systems

    cfg = EvalConfig(bootstrap=bootstrap, batch_size=batch_size)
    report = evaluate_systems(load_beir(data), {**models, **(systems_extra or {})}, cfg, baseline=next(iter(models)))
    return report.to_dict(per_query=False)


def peak_memory() -> dict[str, float]:
    """Peak resident memory of this process (MB) and peak CUDA memory allocated (MB) when a GPU was used."""
    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    try:
        import torch

        if torch.cuda.is_available():
            out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    except ImportError:
        pass
    return out


def run_worker(script: str, args: list[str], result_file: Path, log_file: Path) -> dict[str, Any]:
    """Run ``script --worker ...`` in a fresh process (clean peak memory, a failure stays one row) and read the
    JSON it writes."""
    t0 = time.perf_counter()
    with open(log_file, "w") as log:
        proc = subprocess.run([sys.executable, script, *args], stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not result_file.is_file():
        tail = log_file.read_text(errors="replace").splitlines()[-15:]
        return {"error": f"exit {proc.returncode}", "log_tail": tail, "wall_s": round(wall, 1)}
    result = json.loads(result_file.read_text())
    result["wall_s"] = round(wall, 1)
    return result


def fmt_ci(system: dict[str, Any], metric: str = "ndcg@10") -> str:
    mean = system["means"][metric]
    ci = system.get("ci95", {}).get(metric)
    return f"{mean:.4f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{mean:.4f}"


def device_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return f"CPU ({os.cpu_count()} cores)"
