"""Does blending a reranker with its first stage beat both? nDCG@10 of ``first>rerank(k=DEPTH,fuse=W):RERANKER``
for a grid of weights W, on a BEIR set's test queries and on a sample of its training queries (the split on which
``ragtune run`` would choose W), each over the full corpus.

The reranker scores each (query, candidate) pair once; every blend is computed from those scores
(:func:`ragtune.retrieval.rerank.fuse_reranked`), so the grid costs one reranking per query set::

    python bench/rerank_fusion.py --data ../shared/evaldata/scifact --reranker msmarco-onnx --depth 20
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import device_name  # noqa: E402

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--reranker", default="msmarco-onnx")
    ap.add_argument("--first", default="hybrid:minilm", help="first-stage spec")
    ap.add_argument("--depth", type=int, default=20, help="candidates reranked per query")
    ap.add_argument("--train-qrels", default="qrels_train.tsv", help="qrels of the query sample W is chosen on")
    ap.add_argument("--train-queries", type=int, default=200, help="size of that sample (a seeded shuffle)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from ragtune.config import EvalConfig
    from ragtune.data.beir import load_beir
    from ragtune.evaluate.metrics import evaluate_run
    from ragtune.retrieval.rerank import fuse_reranked
    from ragtune.retrieval.systems import parse_system

    rows: dict[str, dict[str, float]] = {}
    for name, qrels_file, sample in (("train sample", args.train_qrels, args.train_queries), ("test", None, None)):
        ds = load_beir(args.data, qrels=qrels_file) if qrels_file else load_beir(args.data)
        qids = sorted(ds.qrels)
        if sample:
            random.Random(0).shuffle(qids)
            qids = sorted(qids[:sample])
        queries, qrels = {q: ds.queries[q] for q in qids}, {q: ds.qrels[q] for q in qids}
        system = parse_system(f"{args.first}>rerank(k={args.depth},threads={args.threads}):{args.reranker}",
                              EvalConfig())
        t0 = time.perf_counter()
        system.search(ds.corpus, queries, 100)
        print(f"{name}: {len(queries)} queries reranked in {time.perf_counter() - t0:.0f} s", flush=True)
        ndcg = {"first stage": evaluate_run(qrels, system.first_run, ("ndcg@10",)).means["ndcg@10"]}
        for w in WEIGHTS:
            run = fuse_reranked(system.first_run, system.rerank_run, w)
            ndcg[f"{w:g}"] = evaluate_run(qrels, run, ("ndcg@10",)).means["ndcg@10"]
        rows[f"{name} ({len(queries)})"] = ndcg
    cols = list(next(iter(rows.values())))
    print(f"\ndevice: {device_name()}; {args.first} top {args.depth} > {args.reranker}; nDCG@10 by the weight on "
          "the first stage (0 = reranker alone)\n")
    print("| queries | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
    for name, ndcg in rows.items():
        print(f"| {name} | " + " | ".join(f"{ndcg[c]:.4f}" for c in cols) + " |")


if __name__ == "__main__":
    main()
