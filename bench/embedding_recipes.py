"""Embedding fine-tuning recipes side by side: ragtune's recipe vs LlamaIndex's, same data, same base, one run.

For each training source of a BEIR set (``gen``: the shipped generated questions; ``train``: real training claims)
every recipe starts from the same base model (default: the packaged all-MiniLM-L6-v2), trains, and is scored by
ragtune's evaluator on the set's test qrels and on a set from another domain (``--cross``), with 95% bootstrap CIs.

- ``llamaindex``: LlamaIndex's ``SentenceTransformersFinetuneEngine`` recipe, executed through the same
  sentence-transformers call it makes (``model.fit`` with MultipleNegativesRankingLoss over a DataLoader of
  InputExamples, batch 10, 2 epochs, 10% warmup, no evaluator), on all the pairs, as its users run it.
- ``ragtune``: ``ragtune.train_embedding`` with ragtune's default recipe (GTE's loss with hardness-weighted mined
  negatives, an anchor to the base, the top layers' attention frozen; validation on a document-level split, best
  checkpoint) followed by the forgetting guard.
- more ragtune variants with ``--variant NAME='{"loss": "kl", ...}'`` (EmbeddingTrainConfig fields).
- ``--validation ict`` (the default) validates as ``ragtune run`` does, for early stopping and for the guard: one
  sentence cut out of each validation document (``ragtune.generate.eval_set``), ranked among ``--distractors``
  training documents (default 2,000, as ``generate.val_distractors``). ``--validation gen`` validates on the
  validation documents' own questions (``--val-queries`` of them) ranked among the validation documents alone, as
  the runs recorded before 2026-12-03 (seventeenth session) did; ``--full-val-corpus`` ranks those against the
  whole corpus instead.
- ``--monitor`` also scores, at every validation step, what the checkpoint choice cannot see: the validation claims
  against the whole corpus, the test set, ragtune's general check set and the ``--cross`` set (logged in the
  training log and printed as one curve per recipe; they never pick the checkpoint).
- ``--ict N`` adds inverse-cloze pseudo-queries (sentences of N training documents, ragtune's no-LLM generator)
  to the training questions of ragtune's rows: declarative sentences beside the generator's questions.
- ``--keep-last`` trains without validation and keeps the last step (the guard still checks on validation).
- ``--all-questions`` trains ragtune's rows on every question, those of the validation documents too, as
  LlamaIndex's recipe does; the guard's validation score then is not held out (its check set still is).
- ``--reuse`` takes the model an earlier run trained into ``--out`` (its ``result.json``; copy one there) and runs
  only the guard again, into ``guard-VALIDATION``.
- ``--unguarded`` also scores the fine-tuned model itself whenever the guard handed over a weight mix or the base,
  so the table shows what the guard traded away on the test set for what it kept on the general check set.

Each recipe runs in its own process, so its runtime and peak memory are its own::

    python bench/embedding_recipes.py --data ../shared/evaldata/scifact --cross ../shared/evaldata/cranfield \
        --out /tmp/ragtune-bench/emb --sources gen,train
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
    with_validation_questions,
)

LI_BATCH, LI_EPOCHS = 10, 2


def li_recipe(args: argparse.Namespace, out: Path) -> dict:
    """LlamaIndex's recipe (llama_index.finetuning.SentenceTransformersFinetuneEngine.finetune)."""
    from sentence_transformers import InputExample, SentenceTransformer, losses
    from torch.utils.data import DataLoader

    from ragtune.train.pairs import passage_text

    ds = load_train_source(Path(args.data), args.source, args.filter)
    examples = []
    for qid, judged in ds.qrels.items():
        for did, score in judged.items():
            if score > 0 and qid in ds.queries and did in ds.corpus:
                examples.append(InputExample(texts=[ds.queries[qid], passage_text(ds.corpus[did])]))
                break  # LlamaIndex takes the first relevant doc of each query
    if args.max_pairs:
        examples = examples[: args.max_pairs]
    model = SentenceTransformer(args.base)
    loader = DataLoader(examples, batch_size=LI_BATCH)
    loss = losses.MultipleNegativesRankingLoss(model)
    model.fit(train_objectives=[(loader, loss)], epochs=LI_EPOCHS, warmup_steps=int(len(loader) * LI_EPOCHS * 0.1),
              output_path=str(out / "model"), show_progress_bar=False)
    return {"model": str(out / "model"), "pairs": len(examples)}


def ragtune_recipe(args: argparse.Namespace, out: Path) -> dict:
    from ragtune.config import EmbeddingTrainConfig
    from ragtune.train.embedding import train_embedding
    from ragtune.train.guard import GuardConfig, guard_model

    ds = load_train_source(Path(args.data), args.source, args.filter)
    train, val = split_by_document(ds, max_pairs=args.max_pairs, full_val_corpus=args.full_val_corpus,
                                   val_queries=args.val_queries)
    if args.validation == "ict":  # as `ragtune run`: a sentence cut from each validation document, among distractors
        val, added = ict_validation(ds, train, args.distractors)
        print(f"validation (ict): {len(val.queries)} sentences over {len(val.corpus)} documents ({added} "
              "distractors)", flush=True)
    if args.reuse and (out / "result.json").is_file():  # only the guard again, on this run's validation
        info = json.loads((out / "result.json").read_text())
        print(f"reusing {info['trained_model']}", flush=True)
        guard = guard_model(args.base, info["trained_model"], val, out / f"guard-{args.validation}", GuardConfig())
        return {**info, "model": str(guard.model_dir), "guard": guard.decision, "alpha": guard.alpha,
                "validation": args.validation, "guard_s": round(guard.seconds, 1), "guard_message": guard.message,
                "guard_scores": guard.scores}
    if args.all_questions:  # as LlamaIndex trains: the validation documents' questions too
        train = with_validation_questions(ds, train)
    if args.ict:
        train = with_ict(train, args.ict, validation_documents(ds))
    overrides = json.loads(args.config or "{}")
    if args.teacher and "teacher" not in overrides and overrides.get("loss") in ("margin-mse", "kl"):
        overrides["teacher"] = args.teacher
    cfg = EmbeddingTrainConfig(base=args.base, **overrides)
    monitor = {}
    if args.monitor:
        from ragtune.data.beir import BeirDataset, load_beir
        from ragtune.data.checkset import load_checkset

        test = load_beir(Path(args.data))
        monitor = {"val_full": BeirDataset(ds.corpus, val.queries, val.qrels, name="val-full"),
                   "test": BeirDataset(ds.corpus, test.queries, test.qrels, name="test"),  # one corpus encoding
                   "check": load_checkset("en"), **({"cross": load_beir(Path(args.cross))} if args.cross else {})}
    # --keep-last: no checkpoint choice (the last step is kept); the guard still checks on the validation split
    result = train_embedding(train, cfg, out / "train", val=None if args.keep_last else val, monitor=monitor)
    guard = guard_model(args.base, str(result.model_dir), val, out / "guard", GuardConfig())
    return {"model": str(guard.model_dir), "trained_model": str(result.model_dir), "pairs": result.n_pairs,
            "guard_message": guard.message, "guard_scores": guard.scores,
            "steps": result.steps, "validation": args.validation,
            "config": cfg.model_dump(mode="json"), "guard": guard.decision, "alpha": guard.alpha,
            "best_step": getattr(result, "best_step", None), "mining": getattr(result, "mining", None),
            "evals": result.evals}


def worker(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    info = li_recipe(args, out) if args.worker == "llamaindex" else ragtune_recipe(args, out)
    if args.reuse and "train_s" in info:  # the earlier run's training cost stays; this run's cost beside it
        info["rerun"] = {"seconds": round(time.perf_counter() - t0, 1), **peak_memory()}
    else:
        info["train_s"] = round(time.perf_counter() - t0, 1)
        info.update(peak_memory())
    (out / "result.json").write_text(json.dumps(info, indent=2, default=str))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="BEIR dir with gen-* files, qrels_train.tsv and test qrels")
    ap.add_argument("--cross", help="a BEIR dir from another domain, evaluated before and after")
    ap.add_argument("--out", default="/tmp/ragtune-bench/emb")
    ap.add_argument("--base", default=None, help="base model (default: the packaged MiniLM)")
    ap.add_argument("--sources", default="gen,train")
    ap.add_argument("--recipes", default="llamaindex,ragtune")
    ap.add_argument("--variant", action="append", default=[], help="NAME=JSON of EmbeddingTrainConfig fields")
    ap.add_argument("--teacher", help="cross-encoder for distillation variants (dir, .onnx, msmarco-onnx)")
    ap.add_argument("--teacher-by-source", action="append", default=[], help="SOURCE=PATH (overrides --teacher)")
    ap.add_argument("--max-pairs", type=int, help="cap training pairs (smoke tests)")
    ap.add_argument("--filter", default="", help=FILTER_HELP)
    ap.add_argument("--val-queries", type=int,
                    help="validation questions of ragtune's rows (0: all; default: a tenth of --max-pairs, at least "
                         "10, or all without it)")
    ap.add_argument("--ict", type=int, default=0,
                    help="ragtune rows only: add inverse-cloze pseudo-queries of this many training documents "
                         "(drawn at random) to the training questions; validation stays as it is")
    ap.add_argument("--validation", choices=("ict", "gen"), default="ict",
                    help="what early stopping and the guard validate on: one inverse-cloze sentence cut from each "
                         "validation document among --distractors training documents (ict, as ragtune run "
                         "validates) or the validation documents' own questions (gen; runs recorded before "
                         "2026-12-03, seventeenth session)")
    ap.add_argument("--distractors", type=int, default=2000,
                    help="with --validation ict: training documents added to the validation corpus")
    ap.add_argument("--reuse", action="store_true",
                    help="run only the guard again on the model an earlier run trained into --out")
    ap.add_argument("--full-val-corpus", action="store_true",
                    help="validation (early stopping and the guard) ranks against every document of the set, "
                         "not only the validation documents")
    ap.add_argument("--monitor", action="store_true",
                    help="at every validation step also score the validation claims against the whole corpus, the "
                         "test set, the general check set and --cross (logged only; printed as a curve)")
    ap.add_argument("--keep-last", action="store_true",
                    help="train without validation, keeping the last step (the guard still uses validation)")
    ap.add_argument("--all-questions", action="store_true",
                    help="ragtune rows also train on the validation documents' questions, as LlamaIndex's recipe "
                         "trains on every question; validation still comes from those documents, so the guard's "
                         "validation score is no longer held out (its check set still is)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--unguarded", action="store_true",
                    help="also score the fine-tuned model the forgetting guard did not hand over (a weight mix or "
                         "the base was kept), as row 'RECIPE/SOURCE unguarded'")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--source", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.base is None:
        from ragtune.models import resolve_model

        args.base = resolve_model("minilm")
    if args.worker:
        worker(args)
        return

    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    variants = {"ragtune": "{}"}
    for v in args.variant:
        name, _, cfg = v.partition("=")
        variants[name] = cfg
    teachers = dict(t.split("=", 1) for t in args.teacher_by_source)
    recipes = [r for r in args.recipes.split(",") if r] + [v for v in variants if v != "ragtune"]
    results: dict[str, dict] = {}
    summary: dict = {"device": device_name(), "data": args.data, "cross": args.cross, "results": results,
                     "evals": {"test": {"systems": {}}, **({"cross": {"systems": {}}} if args.cross else {})}}
    base = {"base": f"dense:{args.base}"}
    for source in args.sources.split(","):
        for recipe in recipes:
            key = f"{recipe}/{source}"
            out = root / source / recipe
            cmd = [str(Path(__file__).resolve()), "--worker", "llamaindex" if recipe == "llamaindex" else "ragtune",
                   "--data", args.data, "--source", source, "--out", str(out), "--base", args.base,
                   "--config", variants.get(recipe, "{}")]
            teacher = teachers.get(source, args.teacher)
            if teacher:
                cmd += ["--teacher", teacher]
            if args.max_pairs:
                cmd += ["--max-pairs", str(args.max_pairs)]
            if args.filter:
                cmd += ["--filter", args.filter]
            if args.val_queries is not None:
                cmd += ["--val-queries", str(args.val_queries)]
            if args.ict and recipe != "llamaindex":
                cmd += ["--ict", str(args.ict)]
            if args.full_val_corpus:
                cmd.append("--full-val-corpus")
            if recipe != "llamaindex":
                cmd += ["--validation", args.validation, "--distractors", str(args.distractors)]
                if args.reuse:
                    cmd.append("--reuse")
            if args.keep_last:
                cmd.append("--keep-last")
            if args.all_questions and recipe != "llamaindex":
                cmd.append("--all-questions")
            if args.monitor:
                cmd += ["--monitor", *(["--cross", args.cross] if args.cross else [])]
            print(f"[{time.strftime('%H:%M:%S')}] training {key}", flush=True)
            results[key] = run_worker(cmd[0], cmd[1:], out / "result.json", root / f"{source}-{recipe}.log")
            if "error" in results[key]:
                print(f"  FAILED: {results[key]}", flush=True)
                continue
            # each model is scored (with the base beside it, for the paired test) as soon as it exists, so an
            # interrupted run still has every finished row
            pair = {**base, key: f"dense:{results[key]['model']}"}
            if args.unguarded and results[key].get("guard") not in (None, "fine-tuned"):
                pair[f"{key} unguarded"] = f"dense:{results[key]['trained_model']}"
            for split, path in (("test", args.data), ("cross", args.cross)):
                if path:
                    ev = evaluate_models(Path(path), pair, bootstrap=args.bootstrap)
                    summary["evals"][split]["systems"].update(ev["systems"])
            (root / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
            print(table(summary), flush=True)
            if results[key].get("evals") and args.monitor:
                print(curve(key, results[key]), flush=True)
    if not results:
        for split, path in (("test", args.data), ("cross", args.cross)):
            if path:
                summary["evals"][split]["systems"].update(
                    evaluate_models(Path(path), base, bootstrap=args.bootstrap)["systems"])
    (root / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(table(summary))


def curve(key: str, result: dict) -> str:
    """One row per validation step of ``key``: nDCG@10 of validation (which picks the checkpoint) and of each
    monitored set."""
    names = ["val"] + list(dict.fromkeys(k.split("_", 2)[2].rsplit("_cosine", 1)[0] for e in result["evals"]
                                         for k in e if k.startswith("eval_monitor_") and k.endswith("cosine_ndcg@10")))
    lines = [f"\n{key}: nDCG@10 at each validation step (best step {result.get('best_step')})\n",
             "| step | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for e in result["evals"]:
        cells = [e.get("eval_val_cosine_ndcg@10") if n == "val" else e.get(f"eval_monitor_{n}_cosine_ndcg@10")
                 for n in names]
        lines.append(f"| {e['step']} | " + " | ".join("" if c is None else f"{c:.4f}" for c in cells) + " |")
    return "\n".join(lines)


def table(summary: dict) -> str:
    by_name = {k: ev["systems"] for k, ev in summary["evals"].items()}
    cross = "cross" in by_name
    head = "| recipe | test nDCG@10 [95% CI] | p vs base |" + (" cross-domain nDCG@10 [95% CI] | Δ cross |"
                                                                  if cross else "") + \
        " guard | train s | peak MB (GPU / RSS) |"
    lines = [f"device: {summary['device']}", "", head, "|" + "---|" * (head.count("|") - 1)]
    for name, system in by_name["test"].items():
        r = summary["results"].get(name, {})
        p = system.get("p_values", {}).get("ndcg@10")
        row = f"| {name} | {fmt_ci(system)} | {p:.3g} |" if p is not None else f"| {name} | {fmt_ci(system)} | |"
        if cross:
            c = by_name["cross"][name]
            delta = c["means"]["ndcg@10"] - by_name["cross"]["base"]["means"]["ndcg@10"]
            row += f" {fmt_ci(c)} | {delta * 100:+.2f} pt |"
        guard = r.get("guard") or ("none (the fine-tuned model)" if name.endswith(" unguarded") else "")
        if r.get("alpha") is not None and guard == "interpolated":
            guard += f" α={r['alpha']}"
        mem = f"{r.get('peak_cuda_mb', '-')} / {r.get('peak_rss_mb', '-')}" if r else ""
        row += f" {guard} | {r.get('train_s', '')} | {mem} |"
        lines.append(row)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
