"""Where a fine-tuned embedding model's forgetting sits: swap groups of weights (the embeddings, the lower half of
the layers, the upper half) between the base and the fine-tuned model and score each hybrid on ragtune's general
check set and on a BEIR test set.

    python bench/layer_swap.py --model /tmp/bench-last/train/lr5e5x3last/train/model \\
        --data ../shared/evaldata/scifact --out /tmp/layer-swap

``--graded 3:0.2,3:0.35`` adds graded mixes: the fine-tuned embeddings and lowest ``k`` layers as trained, and
the layers above them (with the heads) at share ``beta`` of the fine-tuned weights (``beta = 0`` is the guard's
``lower-layers=k`` mix).

``--modules ffn@3,attn@0,ffn+norm@3`` adds module swaps: the fine-tuned model with the base's weights of one kind
of sub-layer (``attn``: query, key, value and the attention output projection; ``ffn``: the feed-forward pair;
``norm``: the layer norms; join kinds with ``+``) in every layer from ``K`` up. ``attn@3:0.5`` puts those weights
only half-way back: ``0.5 * ft + 0.5 * base`` (the share after the colon is the fine-tuned one, as in ``--graded``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ragtune.config import EvalConfig
from ragtune.data.beir import load_beir
from ragtune.data.checkset import load_checkset
from ragtune.evaluate.harness import evaluate_systems
from ragtune.models import load_sentence_transformer, resolve_model
from ragtune.train.mixing import (
    SUBLAYER_KINDS,
    _mix,
    count_layers,
    kept_change,
    layer_depths,
    layer_of,
    sublayer_kind,
    take_weights,
)


def graded_mix(base, ft, k: int, beta: float):
    """The fine-tuned weights up to depth ``k`` (embeddings, layers 0 … k-1), ``beta * ft + (1 - beta) * base``
    above: the guard's uniform mix with its lower layers taken from the fine-tuned model."""
    depths = layer_depths(ft.state_dict())
    return take_weights(_mix(base, ft, beta), ft, lambda key: depths[key] <= k)


def _share(text: str) -> bool:
    return text.replace(".", "", 1).isdigit() and 0 <= float(text) <= 1


def parse_module_swap(spec: str) -> tuple[tuple[str, ...], int, float]:
    """``"ffn+norm@3"`` -> ``(("ffn", "norm"), 3, 0.0)``, ``"attn@3:0.5"`` -> ``(("attn",), 3, 0.5)``; raises
    ValueError naming the spec when it is malformed."""
    kinds, _, rest = spec.partition("@")
    k, _, beta = rest.partition(":")
    names = tuple(kinds.split("+"))
    if not set(names) <= set(SUBLAYER_KINDS) or not k.isdigit() or (beta and not _share(beta)):
        raise ValueError(f"--modules {spec!r}: each swap is KIND[+KIND]@K[:BETA] with KIND one of "
                         f"{', '.join(SUBLAYER_KINDS)}, K a layer number and BETA a share in [0, 1], e.g. ffn@3")
    return names, int(k), float(beta or 0.0)


def module_swap(base, ft, kinds: tuple[str, ...], k: int, beta: float = 0.0):
    """The fine-tuned model with the base's weights of the given sub-layer kinds in layers ``k`` and up (one kind:
    the guard's module mix, :func:`ragtune.train.mixing.module_mix`); with ``beta`` those weights are
    ``beta * ft + (1 - beta) * base`` instead."""
    source = _mix(base, ft, beta) if beta else base
    return take_weights(source, ft, lambda key: sublayer_kind(key) not in kinds or layer_of(key) < k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="the fine-tuned sentence-transformers directory")
    ap.add_argument("--base", default="minilm")
    ap.add_argument("--data", help="a BEIR dir whose test qrels are scored too")
    ap.add_argument("--graded", default="", help="comma-separated K:BETA graded mixes, e.g. 3:0.2,2:0.3")
    ap.add_argument("--modules", default="", help="comma-separated KIND[+KIND]@K module swaps, e.g. ffn@3,attn@0")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    graded = []
    for spec in filter(None, args.graded.split(",")):
        k, _, beta = spec.partition(":")
        if not (k.isdigit() and _share(beta)):
            ap.error(f"--graded {spec!r}: each mix is K:BETA, a layer count and a share in [0, 1], e.g. 3:0.2")
        graded.append((int(k), float(beta)))
    try:
        swaps = [parse_module_swap(spec) for spec in filter(None, args.modules.split(","))]
    except ValueError as err:
        ap.error(str(err))
    base_path = resolve_model(args.base)
    base, ft = load_sentence_transformer(base_path, device="cpu"), load_sentence_transformer(args.model, device="cpu")
    half = count_layers(ft) // 2

    def emb(key: str) -> bool:
        return ".embeddings." in key

    def low(key: str) -> bool:
        layer = layer_of(key)
        return layer is not None and layer < half

    def high(key: str) -> bool:
        layer = layer_of(key)
        return layer is not None and layer >= half

    takes = {"fine-tuned embeddings only": emb, f"fine-tuned layers {half}+ only": high,
             f"fine-tuned embeddings + layers <{half}": lambda k: emb(k) or low(k),
             "fine-tuned all but the embeddings": lambda k: not emb(k)}
    specs = {"base": f"dense:{base_path}", "fine-tuned": f"dense:{args.model}"}
    builds = {name: lambda take=take: take_weights(base, ft, take) for name, take in takes.items()}
    for k, beta in graded:
        builds[f"fine-tuned embeddings + layers <{k}, {beta:.0%} above"] = \
            lambda k=k, beta=beta: graded_mix(base, ft, k, beta)
    for kinds, k, beta in swaps:
        share = f" at {1 - beta:.0%}" if beta else ""
        builds[f"fine-tuned, base {'+'.join(kinds)} in layers {k}+{share}"] = \
            lambda kinds=kinds, k=k, beta=beta: module_swap(base, ft, kinds, k, beta)
    kept = {"base": 0.0, "fine-tuned": 1.0}
    for i, (name, build) in enumerate(builds.items()):
        path = Path(args.out) / f"swap-{i}"
        model = build()
        model.save(str(path))
        specs[name], kept[name] = f"dense:{path}", kept_change(base, model, ft)
    sets = {"check set": load_checkset("en"), **({"test": load_beir(args.data)} if args.data else {})}
    means = {s: evaluate_systems(ds, specs, EvalConfig(bootstrap=0)).to_dict()["systems"] for s, ds in sets.items()}
    print("| weights | change kept | " + " | ".join(f"{s} nDCG@10 (Δ pt)" for s in sets) + " |")
    print("|---|---|" + "---|" * len(sets))
    for name in specs:
        cells = []
        for s in sets:
            v, b = means[s][name]["means"]["ndcg@10"], means[s]["base"]["means"]["ndcg@10"]
            cells.append(f"{v:.4f} ({100 * (v - b):+.2f})")
        print(f"| {name} | {kept[name]:.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
