"""How far fine-tuning moved a model's embeddings from its base, text by text: the mean (and 90th percentile)
cosine distance ``1 - cos(model(t), base(t))`` over a sample of a dataset's queries and passages and over ragtune's
general check set. It shows where a recipe changes the model, e.g. that ``anchor_weight`` holds the passages still.

    python bench/embedding_drift.py --data ../shared/evaldata/scifact \\
        --model fa3x4=/tmp/s9/bench-fa3x4/train/fa3x4/train/model --model anc2=/tmp/s10/bench-anc/train/anc2/train/model
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np

from ragtune.data.beir import load_beir
from ragtune.data.checkset import load_checkset
from ragtune.models import load_sentence_transformer, resolve_model
from ragtune.retrieval.bm25 import doc_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="BEIR directory (its test queries and corpus)")
    ap.add_argument("--model", action="append", required=True, help="NAME=PATH of a fine-tuned model (repeatable)")
    ap.add_argument("--base", default="minilm")
    ap.add_argument("--language", default="en", help="check set language")
    ap.add_argument("--sample", type=int, default=300, help="queries and passages drawn from --data")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    ds, check = load_beir(args.data), load_checkset(args.language)
    rng = random.Random(args.seed)
    sets = {
        f"{ds.name or args.data.name} queries": rng.sample(list(ds.queries.values()), min(args.sample, len(ds.queries))),
        f"{ds.name or args.data.name} passages": [doc_text(d) for d in rng.sample(list(ds.corpus.values()),
                                                                                  min(args.sample, len(ds.corpus)))],
        "check-set queries": list(check.queries.values()),
        "check-set passages": [doc_text(d) for d in check.corpus.values()],
    }
    base = load_sentence_transformer(resolve_model(args.base), device="cpu")
    targets = {name: base.encode(texts, normalize_embeddings=True, batch_size=64) for name, texts in sets.items()}
    models = dict(m.split("=", 1) for m in args.model)
    print("| model | " + " | ".join(f"{name} (n={len(texts)})" for name, texts in sets.items()) + " |")
    print("|---" * (1 + len(sets)) + "|")
    for name, path in models.items():
        model = load_sentence_transformer(path, device="cpu")
        cells = []
        for set_name, texts in sets.items():
            dist = 1 - (model.encode(texts, normalize_embeddings=True, batch_size=64) * targets[set_name]).sum(axis=1)
            cells.append(f"{dist.mean():.4f} / {np.percentile(dist, 90):.4f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("cells: mean / 90th percentile of 1 - cos(model, base)")


if __name__ == "__main__":
    main()
