"""Side-by-side: ragtune's evaluation harness vs the peers it must agree with, on one BEIR directory.

- dense: ragtune ``dense:minilm`` vs sentence-transformers' ``InformationRetrievalEvaluator`` (packaged MiniLM,
  corpus text ``title + " " + text``). The evaluator treats every judged document as relevance 1, so on graded
  qrels (cranfield) the comparison uses ragtune's run scored on binarised qrels; the graded number is shown too.
- bm25: ragtune ``bm25`` vs ``bm25s`` used directly (``bm25s.tokenize`` with English stopwords, k1 0.9, b 0.4),
  with and without PyStemmer's English stemmer, scored with pytrec_eval.
- hybrid: ragtune ``hybrid:minilm`` (RRF k=60 of ``bm25`` and ``dense:minilm``) has no peer; the README's fusion
  reference (0.6931 on scifact) fused *unstemmed* bm25s with MiniLM, so the same fusion of ragtune's
  ``bm25-nostem`` and ``dense:minilm`` runs is shown against it.

Usage::

    python bench/eval_reference.py --data ../shared/evaldata/scifact [--json bench/results/scifact.json]

Seconds exclude model loading on both sides (ragtune: index + search; peers: their evaluate/retrieve calls).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

# README of the eval data: packaged all-MiniLM-L6-v2 with ST's evaluator, bm25s, fusion (nDCG@10).
REFERENCE = {
    "scifact": {"dense:minilm": 0.6451, "bm25-nostem": 0.6569, "bm25": 0.665, "rrf-nostem": 0.6931},
    "cranfield": {"dense:minilm": 0.3995},
}


def _ndcg10(qrels: dict, run: dict) -> float:
    import pytrec_eval

    res = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    return sum(res.get(q, {}).get("ndcg_cut_10", 0.0) for q in qrels) / len(qrels)


def peer_bm25s(ds, stem: bool) -> tuple[float, float]:
    import bm25s
    import Stemmer

    start = time.perf_counter()
    stemmer = Stemmer.Stemmer("english") if stem else None
    ids = list(ds.corpus)
    texts = [f"{ds.corpus[d]['title']} {ds.corpus[d]['text']}" for d in ids]
    retriever = bm25s.BM25(k1=0.9, b=0.4)
    retriever.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False),
                    show_progress=False)
    qids = list(ds.queries)
    q_tokens = bm25s.tokenize([ds.queries[q] for q in qids], stopwords="en", stemmer=stemmer, show_progress=False)
    docs, scores = retriever.retrieve(q_tokens, k=min(100, len(ids)), show_progress=False)
    run = {q: {ids[i]: float(s) for i, s in zip(d_row, s_row, strict=True)}
           for q, d_row, s_row in zip(qids, docs.tolist(), scores.tolist(), strict=True)}
    seconds = time.perf_counter() - start
    return _ndcg10(ds.qrels, run), seconds


def peer_st_evaluator(ds, batch_size: int) -> tuple[float, float]:
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    from ragtune.models import load_sentence_transformer

    model = load_sentence_transformer("minilm", device="cpu")
    corpus = {d: f"{doc['title']} {doc['text']}".strip() for d, doc in ds.corpus.items()}
    relevant = {q: {d for d, g in docs.items() if g > 0} for q, docs in ds.qrels.items()}
    evaluator = InformationRetrievalEvaluator(ds.queries, corpus, relevant, name="peer", batch_size=batch_size,
                                              write_csv=False)
    start = time.perf_counter()
    result = evaluator(model)
    return float(result["peer_cosine_ndcg@10"]), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="BEIR directory, e.g. ../shared/evaldata/scifact")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from ragtune.config import EvalConfig
    from ragtune.data.beir import load_beir
    from ragtune.evaluate import evaluate_run, evaluate_systems
    from ragtune.retrieval.systems import BM25System, reciprocal_rank_fusion

    ds = load_beir(args.data)
    graded = any(g > 1 for docs in ds.qrels.values() for g in docs.values())
    binary_qrels = {q: {d: int(g > 0) for d, g in docs.items()} for q, docs in ds.qrels.items()}
    systems = [BM25System(), BM25System(stem=False, name="bm25-nostem"), "dense:minilm", "hybrid:minilm"]
    report = evaluate_systems(ds, systems, EvalConfig(batch_size=args.batch_size, bootstrap=args.bootstrap),
                              keep_runs=True)

    def ours(name: str, binary: bool = False) -> tuple[float, float]:
        r = report.systems[name]
        value = evaluate_run(binary_qrels, r.run).means["ndcg@10"] if binary else r.means["ndcg@10"]
        return value, r.timings["index_s"] + r.timings["search_s"]

    ref = REFERENCE.get(ds.name, {})
    rows = []
    for name, peer_name, peer in (
        ("bm25", "bm25s + PyStemmer", lambda: peer_bm25s(ds, stem=True)),
        ("bm25-nostem", "bm25s", lambda: peer_bm25s(ds, stem=False)),
        ("dense:minilm", "ST InformationRetrievalEvaluator", lambda: peer_st_evaluator(ds, args.batch_size)),
        ("hybrid:minilm", "(reference only)", None),
    ):
        label = name + (" (binary qrels)" if graded and name == "dense:minilm" else "")
        value, seconds = ours(name, binary=graded and name == "dense:minilm")
        peer_value, peer_seconds = peer() if peer else (None, None)
        rows.append({"system": label, "peer": peer_name, "ragtune": value, "peer_value": peer_value,
                     "reference": ref.get(name), "ragtune_s": seconds, "peer_s": peer_seconds})
        if graded and name == "dense:minilm":
            rows.append({"system": "dense:minilm (graded qrels)", "peer": "", "ragtune": ours(name)[0],
                         "peer_value": None, "reference": None, "ragtune_s": seconds, "peer_s": None})
    # The README's fusion reference fused plain bm25s (no stemmer) with MiniLM: same fusion, other BM25 input.
    fused = reciprocal_rank_fusion([report.systems["bm25-nostem"].run, report.systems["dense:minilm"].run],
                                   top_k=100)
    rows.append({"system": "RRF(bm25-nostem, dense:minilm)", "peer": "(reference only)",
                 "ragtune": evaluate_run(ds.qrels, fused).means["ndcg@10"], "peer_value": None,
                 "reference": ref.get("rrf-nostem"), "ragtune_s": None, "peer_s": None})

    def fmt(v, spec=".4f"):
        return "—" if v is None else format(v, spec)

    lines = [f"### {ds.name}: {len(ds.qrels)} queries, {len(ds.corpus)} documents"
             f"{' (graded qrels)' if graded else ''}", "",
             "| system | peer | ragtune nDCG@10 | peer nDCG@10 | diff | reference | ragtune s | peer s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = None if r["peer_value"] is None else r["ragtune"] - r["peer_value"]
        lines.append(f"| {r['system']} | {r['peer']} | {fmt(r['ragtune'])} | {fmt(r['peer_value'])} | "
                     f"{fmt(diff, '+.4f')} | {fmt(r['reference'])} | {fmt(r['ragtune_s'], '.1f')} | "
                     f"{fmt(r['peer_s'], '.1f')} |")
    print("\n".join(lines))
    print()
    print("ragtune eval, all metrics:")
    print()
    print(report.to_markdown())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "report": report.to_dict(per_query=False)}, indent=2))


if __name__ == "__main__":
    main()
