"""``ragtune run``: documents in, fine-tuned model and a report out, every step resumable.

Steps (each one a folder of the run directory, see :mod:`ragtune.workspace`)::

    ingest    DOCS_DIR -> ingest/corpus.jsonl (+ ingest-report.json listing skipped files)
    split     by source document -> split/{train,val,test}/corpus.jsonl
    generate  train: gen-queries.jsonl + gen-qrels.tsv; val/test: BEIR evaluation sets
    train     embedding model fine-tuned on the train split -> train/embedding/model
    guard     forgetting guard: fine-tuned, a weight mix with the base, or the base -> guard/model (+ guard.json)
    adapter   (optional) a query-side adapter on the frozen base -> train/adapter
    rerank    cross-encoder reranker trained on the train split -> train/reranker/model; on the validation split
              the best of hybrid, hybrid + fine-tuned reranker, (when the base was a reranker already)
              hybrid + base reranker, and each reranker blended with the hybrid scores is the pipeline to serve
              (pipeline.json)
    eval      BM25, base, fine-tuned, hybrid (+ reranker) on the test split -> eval/test.json
    report    report.md + report.json (+ report.html)

A step whose marker exists with the same config key is skipped on rerun; the keys chain, so changing the chunking
redoes everything after ingest, while changing the learning rate redoes only train, eval and report.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragtune._io import atomic_write_text, file_sha256
from ragtune.config import RunConfig
from ragtune.errors import ConfigError
from ragtune.workspace import Workspace, config_key

logger = logging.getLogger(__name__)

CPU_RERANK_BUDGET_S = 600  # reranker training time on a machine without a GPU, unless the config sets one
CPU_RERANK_K = 20  # candidates reranked per query on a machine without a GPU, unless eval.rerank_k sets it
FUSE_WEIGHTS = (0.2, 0.4, 0.6, 0.8)  # weights on the first stage tried for a reranker blend on the validation split
STEPS = ("ingest", "split", "generate", "train", "guard", "adapter", "rerank", "eval", "report")


@dataclass
class RunResult:
    run_dir: Path
    model_dir: Path | None
    report: dict[str, Any]


def _docs_fingerprint(docs_dir: Path) -> list[tuple[str, int, int]]:
    """(path, size, mtime) of every file under ``docs_dir``: a change to any of them redoes ingest."""
    out = []
    for p in sorted(docs_dir.rglob("*")):
        if p.is_file():
            st = p.stat()
            out.append((p.relative_to(docs_dir).as_posix(), st.st_size, int(st.st_mtime)))
    return out


def run_pipeline(docs_dir: str | Path, run_dir: str | Path, config: RunConfig | None = None,
                 *, stop_after: str | None = None) -> RunResult:
    """Run every step of the main job on ``docs_dir`` inside ``run_dir`` (resuming finished steps)."""
    config = config or RunConfig()
    docs = Path(docs_dir)
    if not docs.is_dir():
        raise ConfigError(f"DOCS_DIR {docs}: not a directory. Give the folder that holds your documents "
                          "(txt, md, html, pdf, docx, jsonl), e.g. `ragtune example docs && ragtune run docs`.")
    if stop_after is not None and stop_after not in STEPS:
        raise ConfigError(f"--stop-after {stop_after!r}: choose one of {', '.join(STEPS)}")
    ws = Workspace(Path(run_dir))
    ws.manifest.update({"docs_dir": str(docs.resolve()), "config": config.model_dump(mode="json")})
    atomic_write_text(ws.path("config.yaml"), config.to_yaml())
    t_start = time.perf_counter()

    k_ingest = config_key([config.ingest.model_dump(), _docs_fingerprint(docs)])
    ws.step("ingest", k_ingest, lambda: _ingest(docs, ws, config))
    if stop_after == "ingest":
        return RunResult(ws.root, None, {})

    k_split = config_key([k_ingest, config.split.model_dump()])
    ws.step("split", k_split, lambda: _split(ws, config))
    if stop_after == "split":
        return RunResult(ws.root, None, {})

    k_gen = config_key([k_split, config.generate.model_dump(), config.llm.identity()])
    ws.step("generate", k_gen, lambda: _generate(ws, config))
    if stop_after == "generate":
        return RunResult(ws.root, None, {})

    k_train = config_key([k_gen, config.embedding.model_dump(mode="json")])
    ws.step("train", k_train, lambda: _train(ws, config))
    model_dir = ws.path("train", "embedding", "model")
    if stop_after == "train":
        return RunResult(ws.root, model_dir, {})

    k_guard = config_key([k_train, config.guard.model_dump(mode="json")])
    if config.guard.enabled:
        ws.step("guard", k_guard, lambda: _guard(ws, config))
        if ws.path("guard", "model").is_dir():
            model_dir = ws.path("guard", "model")
    if stop_after == "guard":
        return RunResult(ws.root, model_dir, {})

    k_adapter = config_key([k_gen, config.adapter.model_dump() if config.adapter else None])
    if config.adapter is not None:
        ws.step("adapter", k_adapter, lambda: _adapter(ws, config))
    if stop_after == "adapter":
        return RunResult(ws.root, model_dir, {})

    k_rerank = config_key([k_guard, config.reranker.model_dump(mode="json") if config.reranker else None,
                           config.eval.rerank_k])
    if config.reranker is not None:
        ws.step("rerank", k_rerank, lambda: _rerank(ws, config, model_dir))
    if stop_after == "rerank":
        return RunResult(ws.root, model_dir, {})

    k_eval = config_key([k_guard, k_adapter, k_rerank, config.eval.model_dump()])
    ws.step("eval", k_eval, lambda: _evaluate(ws, config, model_dir))
    if stop_after == "eval":
        return RunResult(ws.root, model_dir, {})

    ws.manifest["total_seconds_this_invocation"] = round(time.perf_counter() - t_start, 1)
    ws.step("report", config_key([k_eval, time.time()]), lambda: _report(ws))
    from ragtune.report import load_report_data

    return RunResult(ws.root, model_dir, load_report_data(ws.root))


# --- steps ----------------------------------------------------------------------------------------------------


def _ingest(docs: Path, ws: Workspace, config: RunConfig) -> dict[str, Any]:
    from ragtune.data.ingest import ingest, write_ingest

    result = ingest(docs, config.ingest, exclude=[ws.root])  # a run dir inside DOCS_DIR is not a document
    if not result.corpus:
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in result.skipped[:10]) or "the folder is empty"
        raise ConfigError(f"no text could be read from {docs} ({reasons}). Add txt, md, html, pdf, docx or "
                          "jsonl files.")
    out = ws.path("ingest")
    write_ingest(result, out)
    ws.manifest.setdefault("data_hashes", {})["ingest/corpus.jsonl"] = file_sha256(out / "corpus.jsonl")
    return {"documents": len(result.documents), "chunks": len(result.corpus),
            "skipped": len(result.skipped), "duplicates_removed": result.duplicates_removed}


def _split(ws: Workspace, config: RunConfig) -> dict[str, Any]:
    from ragtune.data.beir import load_corpus
    from ragtune.data.split import split_corpus, write_splits

    corpus = load_corpus(ws.path("ingest", "corpus.jsonl"))
    splits = split_corpus(corpus, config.split)
    write_splits(splits, ws.path("split"))
    return {name: len(part) for name, part in splits.items()}


def _generate(ws: Workspace, config: RunConfig) -> dict[str, Any]:
    from ragtune.data.beir import load_corpus, write_beir, write_corpus
    from ragtune.data.split import with_distractors
    from ragtune.generate import eval_set, generate_queries, write_generated

    info: dict[str, Any] = {}
    train_corpus = load_corpus(ws.path("split", "train", "corpus.jsonl"))
    gen = generate_queries(train_corpus, config.generate, llm=config.llm, cache_dir=ws.path("generate", "llm-cache"))
    # generate/train is a complete BEIR directory: the train corpus beside the generated queries and qrels.
    write_corpus(ws.path("generate", "train", "corpus.jsonl"), train_corpus)
    write_generated(gen, ws.path("generate", "train"))
    info["train_queries"] = len(gen.queries)
    info["method"] = gen.method
    if gen.note:
        info["note"] = gen.note
    if gen.info.get("stats"):
        info["llm"] = {k: gen.info.get(k) for k in ("model", "prompt_hash", "language", "stats")}
        ws.manifest["cost"] = gen.info["stats"]
    for split in ("val", "test"):
        path = ws.path("split", split, "corpus.jsonl")
        corpus = load_corpus(path) if path.is_file() else {}
        if not corpus:
            info[f"{split}_queries"] = 0
            continue
        ds = eval_set(corpus, per_chunk=config.generate.eval_per_chunk, seed=config.generate.seed)
        if split == "val":  # training chunks as distractors: validation then ranks the way the full index does
            ds, info["val_distractors"] = with_distractors(ds, train_corpus, config.generate.val_distractors,
                                                           seed=config.generate.seed)
        write_beir(ws.path("generate", split), ds)
        info[f"{split}_queries"] = len(ds.queries)
    if not info.get("test_queries"):
        raise ConfigError("the test split has no evaluation queries: the documents are too short to cut a "
                          "sentence out of. Add more or longer documents, or raise split.test.")
    return info


def _train(ws: Workspace, config: RunConfig) -> dict[str, Any]:
    from ragtune.data.beir import load_beir
    from ragtune.train.embedding import train_embedding

    train = load_beir(ws.path("generate", "train"), queries="gen-queries.jsonl", qrels="gen-qrels.tsv")
    val = None
    if ws.path("generate", "val", "corpus.jsonl").is_file():
        val = load_beir(ws.path("generate", "val"))
    monitor = {}
    if val is not None and config.guard.enabled:  # the guard's check set, logged at every evaluation
        from ragtune.train.guard import general_check_set

        monitor["general"] = general_check_set(config.guard, val)[0]
    result = train_embedding(train, config.embedding, ws.path("train", "embedding"), val=val, monitor=monitor,
                             save_steps=config.embedding.save_steps,
                             save_every_s=config.embedding.checkpoint_every_s)
    return {"model": str(result.model_dir), "steps": result.steps, "pairs": result.n_pairs,
            "seconds": result.seconds, "schedule": result.schedule}


def _val_set(ws: Workspace):
    from ragtune.data.beir import load_beir

    return load_beir(ws.path("generate", "val")) if ws.path("generate", "val", "corpus.jsonl").is_file() else None


def _guard(ws: Workspace, config: RunConfig) -> dict[str, Any]:
    """Hand over the fine-tuned model only if it beats the base on validation without forgetting (see
    :func:`ragtune.train.guard.guard_model`); without a validation split the fine-tuned model is kept as is."""
    import shutil

    from ragtune.train.guard import guard_model

    val = _val_set(ws)
    if val is None or not val.qrels:
        logger.warning("no validation queries: the forgetting guard is skipped and the fine-tuned model is kept")
        shutil.rmtree(ws.path("guard"), ignore_errors=True)
        return {"decision": "skipped (no validation split)"}
    result = guard_model(config.embedding.base, ws.path("train", "embedding", "model"), val, ws.path("guard"),
                         config.guard)
    ws.manifest["guard"] = {k: v for k, v in result.to_dict().items() if not isinstance(v, dict)}
    return {"decision": result.decision, "alpha": result.alpha, "layers": result.layers, "keep": result.keep,
            "module": result.module, "message": result.message}


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _reranked(first: str, reranker: str | Path, config: RunConfig, corpus_size: int, fuse: float = 0.0) -> str:
    """``first>rerank:RERANKER`` at depth ``eval.rerank_k`` (default: ``top_k`` with a GPU, ``CPU_RERANK_K``
    without); a depth beyond the corpus is left to the stage, which caps it at the corpus size. ``fuse`` blends the
    first stage's scores in (see :func:`ragtune.retrieval.rerank.fuse_reranked`)."""
    from ragtune.retrieval.rerank import rerank_spec

    depth = config.eval.rerank_k or (config.eval.top_k if _has_cuda() else CPU_RERANK_K)
    return rerank_spec(first, reranker, k=depth if depth < corpus_size else None, fuse=fuse)


def _pipeline_specs(first: str, rerankers: dict[str, str | Path], config: RunConfig, corpus_size: int,
                    weights: tuple[float, ...] = FUSE_WEIGHTS) -> dict[str, str]:
    """``first`` alone, ``first`` + each reranker, and each reranker blended with ``first`` at each of ``weights``,
    simplest first (a blend is named ``NAME(fuse=W)``)."""
    specs = {"hybrid": first}
    for name, path in rerankers.items():
        specs[name] = _reranked(first, path, config, corpus_size)
        specs.update({f"{name}(fuse={w:g})": _reranked(first, path, config, corpus_size, fuse=w) for w in weights})
    return specs


def _default_ict_ratio(ws: Workspace) -> float:
    """1 (one inverse-cloze pseudo-query per question, see :class:`ragtune.train.reranker.RerankerTrainConfig`)
    when an LLM wrote the training questions; 0 when they are pseudo-queries already."""
    from ragtune.generate.pseudo import load_generated

    method = load_generated(ws.path("generate", "train")).method
    if method == "llm":
        logger.info("rerank: one inverse-cloze pseudo-query per LLM question joins the reranker's training "
                    "queries (reranker.ict_ratio sets another ratio; 0 turns it off)")
        return 1.0
    return 0.0


def _rerank(ws: Workspace, config: RunConfig, model_dir: Path) -> dict[str, Any]:
    """Train a cross-encoder on the train split (negatives mined by the hybrid first stage over the fine-tuned
    model), then serve whichever of ``hybrid``, ``hybrid>rerank``, ``hybrid>rerank:BASE`` (when the base was a
    cross-encoder already) and their blends with the hybrid scores does best on the validation split."""
    from ragtune._io import atomic_write_json
    from ragtune.data.beir import load_beir
    from ragtune.evaluate.harness import evaluate_systems
    from ragtune.train.reranker import train_reranker

    assert config.reranker is not None
    train = load_beir(ws.path("generate", "train"), queries="gen-queries.jsonl", qrels="gen-qrels.tsv")
    val = _val_set(ws)
    first = f"hybrid:{model_dir}"
    rcfg = config.reranker
    if rcfg.first_stage == "hybrid":
        rcfg = rcfg.model_copy(update={"first_stage": first})
    if rcfg.ict_ratio is None:
        rcfg = rcfg.model_copy(update={"ict_ratio": _default_ict_ratio(ws)})
    if rcfg.max_seconds is None and rcfg.max_steps is None and not _has_cuda():
        rcfg = rcfg.model_copy(update={"max_seconds": CPU_RERANK_BUDGET_S})
        logger.info("rerank: no GPU, so reranker training stops after %d s (reranker.max_seconds sets another "
                    "budget)", CPU_RERANK_BUDGET_S)
    if config.eval.rerank_k is None and not _has_cuda():
        logger.info("rerank: no GPU, so rerankers rescore the first stage's top %d (eval.rerank_k sets the "
                    "depth; 100 is the usual one)", CPU_RERANK_K)
    result = train_reranker(train, rcfg, ws.path("train", "reranker"), val=val)
    size = len(val.corpus) if val is not None else len(train.corpus)
    rerankers: dict[str, str | Path] = {"hybrid+rerank": result.model_dir}
    choice: dict[str, Any] = {"first_stage": first, "reranked": _reranked(first, result.model_dir, config, size),
                              "reranker": str(result.model_dir),
                              "training_queries": {"judged": result.n_queries - result.ict_queries,
                                                   "inverse_cloze": result.ict_queries}}
    choice["chosen"] = choice["reranked"]
    if result.fresh_head is False and result.base_path:  # the base was a reranker already: it must be beaten too
        choice["base_reranker"] = result.base_path
        rerankers["hybrid+base-rerank"] = result.base_path
    if val is not None and val.qrels:
        specs = _pipeline_specs(first, rerankers, config, size)
        report = evaluate_systems(val, specs, config.eval.model_copy(update={"bootstrap": 0}))
        scores = {name: report.systems[name].means["ndcg@10"] for name in specs}
        best = max(scores, key=lambda name: scores[name])  # ties go to the simpler pipeline (listed first)
        choice.update({"candidates": specs, "val_ndcg@10": scores, "chosen": specs[best], "chosen_name": best})
        shown = ", ".join(f"{name} {score:.4f}" for name, score in scores.items())
        blend = best.partition("(")[2].rstrip(")")
        served = f" blended with the hybrid scores ({blend})" if blend else ""
        choice["message"] = {
            "hybrid+rerank": f"the fine-tuned reranker wins on validation (nDCG@10: {shown}): the pipeline to serve "
                             f"is hybrid + the fine-tuned reranker{served}",
            "hybrid+base-rerank": f"fine-tuning did not improve the reranker on validation (nDCG@10: {shown}): the "
                                  f"pipeline to serve is hybrid + the base reranker, not fine-tuned{served}",
            "hybrid": f"no reranker beats the first stage on validation (nDCG@10: {shown}): the pipeline to serve is "
                      "hybrid retrieval alone"}[best.partition("(")[0]]
        if not best.startswith("hybrid+rerank"):
            logger.warning("rerank: %s", choice["message"])
    else:
        choice["message"] = "no validation split: the reranked pipeline is kept without a check"
    atomic_write_json(ws.path("rerank", "pipeline.json"), choice)
    ws.manifest["pipeline"] = choice
    return {"steps": result.steps, "best_step": result.best_step, "ict_queries": result.ict_queries,
            "chosen": choice["chosen"], "message": choice["message"]}


def _adapter(ws: Workspace, config: RunConfig) -> dict[str, Any]:
    """A query-side adapter on the frozen base model: the document index stays as it is."""
    from ragtune.adapters import train_adapter
    from ragtune.data.beir import load_beir

    train = load_beir(ws.path("generate", "train"), queries="gen-queries.jsonl", qrels="gen-qrels.tsv")
    val = load_beir(ws.path("generate", "val")) if ws.path("generate", "val", "corpus.jsonl").is_file() else None
    result = train_adapter(train, config.adapter, ws.path("train", "adapter"), val=val,
                           cache=ws.path("train", "adapter-cache.sqlite"))
    return {"kind": result.kind, "side": result.side, "epochs": result.epochs_run, "steps": result.steps,
            "val_base": result.val_base, "val_best": result.val_best}


def _evaluate(ws: Workspace, config: RunConfig, model_dir: Path) -> dict[str, Any]:
    from ragtune.data.beir import load_beir, write_run
    from ragtune.evaluate.harness import evaluate_systems
    from ragtune.models import resolve_model

    test = load_beir(ws.path("generate", "test"))
    specs = {"bm25": "bm25", "base": f"dense:{resolve_model(config.embedding.base)}",
             "fine-tuned": f"dense:{model_dir}"}
    if config.adapter is not None:
        specs["base+adapter"] = f"adapter:{ws.path('train', 'adapter')}"
    if config.reranker is not None and ws.path("train", "reranker", "model").is_dir():
        chosen_file = ws.path("rerank", "pipeline.json")
        chosen = json.loads(chosen_file.read_text(encoding="utf-8")) if chosen_file.is_file() else {}
        rerankers: dict[str, str | Path] = {"hybrid+rerank": ws.path("train", "reranker", "model")}
        if chosen.get("base_reranker"):
            rerankers["hybrid+base-rerank"] = chosen["base_reranker"]
        # the blend served (if one was chosen on validation) is tested at its weight; the others are not shown
        served = chosen.get("chosen_name", "")
        weight = served.partition("(fuse=")[2].rstrip(")")
        pipelines = _pipeline_specs(f"hybrid:{model_dir}", rerankers, config, len(test.corpus),
                                    weights=(float(weight),) if weight else ())
        specs.update({name: spec for name, spec in pipelines.items() if "(fuse=" not in name or name == served})
    ws.manifest["systems"] = specs  # the report shows the short names; the specs are kept here
    report = evaluate_systems(test, specs, config.eval, baseline="base", keep_runs=True)
    for name, run in report.runs.items():
        write_run(ws.path("eval", "runs", f"{name}.json"), run)
    report.save(ws.path("eval", "test.json"))
    atomic_write_text(ws.path("eval", "test.md"), report.to_markdown())
    return {"queries": len(test.queries), "documents": len(test.corpus)}


def _report(ws: Workspace) -> dict[str, Any]:
    from ragtune.report import write_report

    paths = write_report(ws.root)
    return {"files": [str(p) for p in paths]}
