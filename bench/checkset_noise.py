"""How much of a model's change on ragtune's general check set is noise: paired bootstrap of the per-query nDCG@10
change against the base, on all the check set's queries and on its first N (the set's first, smaller version).

    python bench/checkset_noise.py --model ft=/tmp/bench-mon/train/lr5e5x4/train/model \\
        --model mix=/tmp/bench-mon/train/lr5e5x4/guard/model --first 160
"""

from __future__ import annotations

import argparse

import numpy as np

from ragtune.config import EvalConfig
from ragtune.data.checkset import load_checkset
from ragtune.evaluate.harness import evaluate_systems
from ragtune.models import resolve_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, help="NAME=PATH of a fine-tuned model (repeatable)")
    ap.add_argument("--base", default="minilm")
    ap.add_argument("--language", default="en")
    ap.add_argument("--first", type=int, default=160, help="also score the first N queries alone (file order)")
    ap.add_argument("--resamples", type=int, default=2000)
    args = ap.parse_args()
    ds = load_checkset(args.language)
    models = dict(m.split("=", 1) for m in args.model)
    specs = {"base": f"dense:{resolve_model(args.base)}", **{n: f"dense:{p}" for n, p in models.items()}}
    per_query = evaluate_systems(ds, specs, EvalConfig(bootstrap=0)).to_dict(per_query=True)["systems"]
    scores = {n: per_query[n]["per_query"]["ndcg@10"] for n in specs}
    qids = list(ds.queries)
    rng = np.random.default_rng(0)
    print("| queries scored | base nDCG@10 | " + " | ".join(f"{n}: Δ pt [95%] | sd" for n in models) + " |")
    print("|---" * (2 + 2 * len(models)) + "|")
    for label, subset in ((f"the first {args.first}", qids[:args.first]), (f"all {len(qids)}", qids)):
        cells = [f"{np.mean([scores['base'][q] for q in subset]):.4f}"]
        for name in models:
            diff = np.array([scores[name][q] - scores["base"][q] for q in subset])
            boots = diff[rng.integers(0, len(diff), (args.resamples, len(diff)))].mean(axis=1) * 100
            lo, hi = np.percentile(boots, [2.5, 97.5])
            cells += [f"{diff.mean() * 100:+.2f} [{lo:+.2f}, {hi:+.2f}]", f"{boots.std():.2f}"]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
