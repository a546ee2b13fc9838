"""The forgetting guard's trade-off, mix by mix, for one fine-tuned embedding model and its base.

Every weight mix ``alpha * finetuned + (1 - alpha) * base``, every layer mix (the fine-tuned embeddings and
lowest ``k`` layers under the base's upper layers), every module mix (the fine-tuned model with the base's
attention or feed-forward weights from layer ``k`` up) and every sparse mix (the base plus the largest share of each
weight's changes) is scored on what the guard sees (the validation split
of the training source, ragtune's general-domain check set) and on what it cannot see (the set's test qrels and a
set from another domain, ``--cross``), so one table shows whether the mix the guard chose is the one the test set
would have chosen and what a looser ``max_general_drop`` would have bought::

    python bench/guard_curve.py --data ../shared/evaldata/scifact --cross ../shared/evaldata/cranfield \
        --model /tmp/bench-emb5/train/lr5e5x3/train/model --source train --out /tmp/guard-curve

The validation split is the one ``bench/embedding_recipes.py`` trains against (same seed, same fraction), so the
model must come from that benchmark (or from training on the same split). ``--distractors N`` adds up to N
training documents to its corpus, as ``ragtune run`` does (``generate.val_distractors``, 2,000). ``--only`` scores
just some candidates on the test sets (``--only chosen,fine-tuned``; ``chosen`` is the guard's choice), as each
costs a full encoding of the test corpora.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import device_name, evaluate_models, fmt_ci, load_train_source, split_by_document  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="BEIR dir with the training source and test qrels")
    ap.add_argument("--model", required=True, help="the fine-tuned sentence-transformers directory")
    ap.add_argument("--source", default="train", help="training source the model saw: gen or train")
    ap.add_argument("--cross", help="a BEIR dir from another domain")
    ap.add_argument("--base", default="minilm", help="the base the model was fine-tuned from")
    ap.add_argument("--alphas", default=None, help="comma-separated shares of fine-tuned weights "
                                                   "(default: the guard's own grid)")
    ap.add_argument("--distractors", type=int, default=0, help="training documents added to the validation corpus "
                                                               "(ragtune run adds 2000)")
    ap.add_argument("--sparse", default=None, help="comma-separated shares for the guard's sparse mixes, e.g. "
                                                   "0.1,0.2,0.3,0.5 (default: the guard's own, none)")
    ap.add_argument("--only", help="comma-separated candidates scored on the test sets, e.g. chosen,fine-tuned,"
                                   "sparse=0.2 (default: all; the base always)")
    ap.add_argument("--out", default="/tmp/ragtune-bench/guard-curve")
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()

    from ragtune.data.split import with_distractors
    from ragtune.models import load_sentence_transformer, resolve_model
    from ragtune.train.guard import GuardConfig, guard_model
    from ragtune.train.mixing import (
        count_layers,
        interpolate_weights,
        mix_lower_layers,
        module_mix,
        sparse_mix,
    )

    base = resolve_model(args.base)
    out = Path(args.out)
    cfg = GuardConfig(measure_all=True,  # every mix on both sets, not only up to the first that passes
                      **({"alphas": [float(a) for a in args.alphas.split(",")]} if args.alphas else {}),
                      **({"sparse_mixes": [float(x) for x in args.sparse.split(",")]} if args.sparse else {}))
    train, val = split_by_document(load_train_source(Path(args.data), args.source))
    val, added = with_distractors(val, train.corpus, args.distractors)
    print(f"validation: {len(val.qrels)} queries over {len(val.corpus)} documents ({added} distractors)", flush=True)
    t0 = time.perf_counter()
    guard = guard_model(base, args.model, val, out / "guard", cfg)
    print(f"[{time.strftime('%H:%M:%S')}] guard: {guard.message} ({time.perf_counter() - t0:.0f} s)", flush=True)

    builders = {f"alpha={a:g}": lambda a=a: interpolate_weights(base, args.model, a, out / f"mix-{a:g}")
                for a in cfg.alphas}
    n_layers = count_layers(load_sentence_transformer(args.model, device="cpu"))
    builders.update({f"lower-layers={k}": lambda k=k: mix_lower_layers(base, args.model, k, out / f"lower-{k}")
                     for k in range(1, n_layers if cfg.layer_mixes else 1)})
    builders.update({f"base-{kind}-from={k}": lambda kind=kind, k=k: module_mix(base, args.model, kind, k,
                                                                               out / f"module-{kind}-{k}")
                     for kind in cfg.module_mixes for k in range(1, n_layers)})
    builders.update({f"sparse={x:g}": lambda x=x: sparse_mix(base, args.model, x, out / f"sparse-{x:g}")
                     for x in cfg.sparse_mixes})
    builders["fine-tuned"] = lambda: args.model
    wanted = set(builders) if not args.only else {guard.candidate if n == "chosen" else n
                                                    for n in args.only.split(",")}
    unknown = wanted - set(builders) - {"base"}
    if unknown:
        raise SystemExit(f"--only {args.only}: no candidate named {', '.join(sorted(unknown))}; the candidates are "
                         f"chosen, base, {', '.join(builders)}")
    systems = {"base": f"dense:{base}"}
    systems.update({name: f"dense:{build()}" for name, build in builders.items() if name in wanted})
    evals = {}
    for split, path in (("test", args.data), ("cross", args.cross)):
        if path:
            evals[split] = evaluate_models(Path(path), systems, bootstrap=args.bootstrap)["systems"]
            print(f"[{time.strftime('%H:%M:%S')}] scored {split}", flush=True)
    summary = {"device": device_name(), "guard": guard.to_dict(), "evals": evals}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(table(summary, guard.metric))


def table(summary: dict, metric: str) -> str:
    guard, evals = summary["guard"], summary["evals"]
    chosen = guard.get("candidate") or {"fine-tuned": "fine-tuned", "base": "base"}.get(
        guard["decision"], f"alpha={guard['alpha']:g}")  # summaries written before layer mixes have no candidate
    head = f"| model | validation {metric} | check set {metric} (Δ) | test {metric} [95% CI] |" + \
        (f" cross-domain {metric} [95% CI] (Δ) |" if "cross" in evals else "")
    lines = [f"device: {summary['device']}", "", head, "|" + "---|" * (head.count("|") - 1)]
    base_general = guard["scores"]["base"]["general"][metric]
    for name, system in evals["test"].items():
        seen = guard["scores"].get(name)
        val = f"{seen['val'][metric]:.4f}" if seen else "-"
        general = seen["general"][metric] if seen else None
        gen = f"{general:.4f} ({100 * (general - base_general):+.1f})" if seen else "-"
        mark = " **(guard's choice)**" if name == chosen else ""
        row = f"| {name}{mark} | {val} | {gen} | {fmt_ci(system, metric)} |"
        if "cross" in evals:
            c, b = evals["cross"][name]["means"][metric], evals["cross"]["base"]["means"][metric]
            row += f" {fmt_ci(evals['cross'][name], metric)} ({100 * (c - b):+.2f}) |"
        lines.append(row)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
