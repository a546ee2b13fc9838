"""Short reranker runs side by side: does a recipe learn at all, before paying for a full benchmark?

Splits a BEIR set's training queries by document (as ``reranker_pipeline.py`` does), mines the negatives once
(BM25, same-doc guard), then for each recipe trains a few steps and reranks BM25's top ``--depth`` for the first
``--val-queries`` validation queries over the full corpus. A recipe is ``loss,lr,batch,steps,base``; ``steps`` 0
scores ``base`` as it is (zero-shot)::

    python bench/reranker_quick.py --data ../shared/evaldata/scifact \\
        0,0,0,0,msmarco listnet,1e-5,4,40,msmarco bce,2e-5,16,80,msmarco bce,2e-5,16,80,minilm
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_train_source, split_by_document  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--source", default="train", help="gen (shipped generated questions) or train (real queries)")
    ap.add_argument("--out", default="/tmp/ragtune-bench/rerank-quick")
    ap.add_argument("--val-queries", type=int, default=50)
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("recipes", nargs="+")
    args = ap.parse_args()

    import torch

    from ragtune.evaluate.metrics import evaluate_run
    from ragtune.retrieval.bm25 import doc_text
    from ragtune.retrieval.rerank import load_scorer
    from ragtune.retrieval.systems import parse_system
    from ragtune.train.reranker import RerankerTrainConfig, train_reranker
    from ragtune.train.reranker_examples import mine_negatives, query_positives

    torch.set_num_threads(args.threads)
    ds = load_train_source(Path(args.data), args.source)
    train, val = split_by_document(ds)
    negatives, _ = mine_negatives(train, RerankerTrainConfig(first_stage="bm25"), query_positives(train))
    queries = {q: val.queries[q] for q in sorted(val.queries) if q in val.qrels}
    queries = dict(list(queries.items())[:args.val_queries])
    qrels = {q: val.qrels[q] for q in queries}
    first = parse_system("bm25").search(ds.corpus, queries, top_k=args.depth)

    def score(model: str) -> float:
        scorer = load_scorer(model, device="cpu", max_length=args.max_length)
        run = {}
        for q, cands in first.items():
            ids = list(cands)
            scores = scorer.predict([(queries[q], doc_text(ds.corpus[d])) for d in ids])
            run[q] = {d: float(x) for d, x in zip(ids, scores, strict=True)}
        return evaluate_run(qrels, run).means["ndcg@10"]

    rows = [("bm25 order", "", "", f"{evaluate_run(qrels, first).means['ndcg@10']:.4f}", "")]
    for recipe in args.recipes:
        loss, lr, batch, steps, base = recipe.split(",")
        t0 = time.perf_counter()
        if int(steps) == 0:
            rows.append((f"{base} (zero-shot)", "", "", f"{score(base):.4f}", ""))
            continue
        cfg = RerankerTrainConfig(base=base, first_stage="bm25", loss=loss, learning_rate=float(lr),
                                  batch_size=int(batch), max_steps=int(steps), max_length=args.max_length)
        result = train_reranker(train, cfg, Path(args.out) / recipe.replace(",", "_"), negatives=negatives)
        losses = [e["loss"] for e in result.losses]
        rows.append((base, f"{loss}, lr {lr}, {steps} x {batch}", f"{losses[0]:.3f} -> {losses[-1]:.3f}",
                     f"{score(str(result.model_dir)):.4f}", f"{time.perf_counter() - t0:.0f}"))
        print(rows[-1], flush=True)
    print(f"\n{len(queries)} validation queries of {args.data} ({args.source}), reranking BM25's top {args.depth}\n")
    print("| base | recipe | loss first -> last log | val nDCG@10 | seconds |\n|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
