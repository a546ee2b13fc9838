"""Where a fine-tuned embedding gains: test queries whose relevant documents training saw, against the rest.

A model trained on (query, document) pairs can learn two things: how to match a kind of query to a kind of
document, and which documents get asked about. The second shows up as gains on test queries whose relevant
documents were positives in training and none on the others. This script splits the test queries of a BEIR set
that way, for the training pairs ``bench/embedding_recipes.py`` used (same source, same document-level split,
same ``--max-pairs``), and prints each system's nDCG@10 on both halves beside the first system's.

    ragtune eval --data ../shared/evaldata/scifact -s dense:BASE -s dense:MODEL -o /tmp/eval.json
    python bench/coverage_split.py --data ../shared/evaldata/scifact --eval /tmp/eval.json --source gen --max-pairs 1600
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_train_source, split_by_document  # noqa: E402
from ragtune.data.beir import load_beir  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="BEIR folder (test qrels and the training source)")
    ap.add_argument("--eval", type=Path, required=True, help="JSON of `ragtune eval -o` (it has per-query scores)")
    ap.add_argument("--source", default="gen", help="training source, as in bench/embedding_recipes.py: gen | train")
    ap.add_argument("--max-pairs", type=int, default=0, help="the first N training queries by id, as that run took")
    ap.add_argument("--metric", default="ndcg@10")
    args = ap.parse_args()

    report = json.loads(args.eval.read_text(encoding="utf-8"))
    systems = report.get("systems") or {}
    if not systems or "per_query" not in next(iter(systems.values())):
        sys.exit(f"{args.eval}: no per-query scores; write it with `ragtune eval ... -o FILE`")
    train, _ = split_by_document(load_train_source(args.data, args.source), max_pairs=args.max_pairs or None)
    seen = {d for judged in train.qrels.values() for d in judged}
    test = load_beir(args.data)
    groups: dict[str, list[str]] = {"seen": [], "unseen": []}
    for qid, judged in test.qrels.items():
        positives = {d for d, s in judged.items() if s > 0}
        if positives:
            groups["seen" if positives & seen else "unseen"].append(qid)
    print(f"training: {len(train.queries)} queries over {len(seen)} documents; test queries citing one of them: "
          f"{len(groups['seen'])}, citing none: {len(groups['unseen'])}")
    base_scores = next(iter(systems.values()))["per_query"][args.metric]
    rows = []
    for i, (name, result) in enumerate(systems.items()):
        scores = result["per_query"][args.metric]
        cells = []
        for group in ("seen", "unseen"):
            qids = [q for q in groups[group] if q in scores]
            mean = sum(scores[q] for q in qids) / max(1, len(qids))
            delta = mean - sum(base_scores.get(q, 0.0) for q in qids) / max(1, len(qids))
            cells.append(f"{mean:.4f}" if i == 0 else f"{mean:.4f} ({delta * 100:+.2f} pt)")
        rows.append(f"| {name} | {cells[0]} | {cells[1]} |")
    print(f"\n| system | {args.metric}, seen ({len(groups['seen'])}) | {args.metric}, unseen "
          f"({len(groups['unseen'])}) |\n|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
