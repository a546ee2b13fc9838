"""ragtune's adapters vs LlamaIndex's EmbeddingAdapterFinetuneEngine on SciFact, MiniLM frozen, CPU, one run.

Same base (the packaged all-MiniLM-L6-v2), same epochs (2), same batch (10), two training sets:

- ``gen1000``: the first 1,000 lines of scifact/gen-qrels.tsv with their gen-queries (the reference condition);
- ``real``: SciFact's own training claims (qrels_train.tsv), a set whose signal an adapter can pick up.

Everything is evaluated by ragtune's evaluator on the SciFact test claims (qrels.tsv, 300) over the full corpus
(5,183 abstracts). Then ragtune's defaults (early stopping, no epoch cap) on all 10,132 generated pairs and on
all the real training claims.

    python bench/adapter_vs_llamaindex.py --out /tmp/ragtune-bench/scifact --verify-st

LlamaIndex runs in its own venv (``--li-python``, default /tmp/li-venv/bin/python) as a subprocess of this file
(``--li-worker``) and ragtune through its CLI, so both are timed the same way: a fresh process from start to adapter
on disk. Nothing at module level imports ragtune, because the LlamaIndex venv does not have it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

EVALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "evaldata"
SCIFACT = EVALDATA / "scifact"
N_PAIRS, EPOCHS, BATCH = 1000, 2, 10


# --- the LlamaIndex side (runs inside the LlamaIndex venv) ------------------------------------------------------


def li_worker(pairs_file: str, model_path: str, out_dir: str) -> None:
    t0 = time.perf_counter()
    import torch
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.finetuning import EmbeddingAdapterFinetuneEngine
    from llama_index.finetuning.embeddings.common import EmbeddingQAFinetuneDataset

    calls = {"query": 0, "text": 0}

    class Counting(HuggingFaceEmbedding):
        def _get_query_embedding(self, query):
            calls["query"] += 1
            return super()._get_query_embedding(query)

        def _get_text_embedding(self, text):
            calls["text"] += 1
            return super()._get_text_embedding(text)

    data = json.loads(Path(pairs_file).read_text())
    dataset = EmbeddingQAFinetuneDataset(queries=data["queries"], corpus=data["corpus"],
                                         relevant_docs=data["relevant_docs"])
    t_imports = time.perf_counter()
    embed = Counting(model_name=model_path, device="cpu")
    t_load = time.perf_counter()
    engine = EmbeddingAdapterFinetuneEngine(dataset, embed, epochs=EPOCHS, batch_size=BATCH,
                                            model_output_path=out_dir, device="cpu")
    t_init = time.perf_counter()
    engine.finetune()
    t_done = time.perf_counter()
    Path(out_dir, "li-timings.json").write_text(json.dumps({
        "imports_s": t_imports - t0, "load_s": t_load - t_imports, "init_s": t_init - t_load,
        "finetune_s": t_done - t_init, "process_s": t_done - t0, "encoder_calls": calls,
        "torch_threads": torch.get_num_threads()}))


# --- the ragtune side -----------------------------------------------------------------------------------------


def _write_pairs(out: Path):
    """The 1,000 generated pairs as BEIR dirs (positive documents only, as LlamaIndex's dataset holds them; and the
    full corpus, which ragtune's mined negatives use), and LlamaIndex datasets for them and for the real claims."""
    from ragtune.data.beir import BeirDataset, load_beir, load_qrels, write_beir
    from ragtune.retrieval.bm25 import doc_text

    full = load_beir(SCIFACT, queries="gen-queries.jsonl", qrels="gen-qrels.tsv")
    order = list(load_qrels(SCIFACT / "gen-qrels.tsv"))[:N_PAIRS]  # file order
    qrels = {q: full.qrels[q] for q in order}
    queries = {q: full.queries[q] for q in order}
    pos_docs = {d for r in qrels.values() for d in r}
    write_beir(out / "gen1000-posdocs", BeirDataset({d: full.corpus[d] for d in pos_docs}, queries, qrels))
    write_beir(out / "gen1000-fullcorpus", BeirDataset(full.corpus, queries, qrels))
    real = load_beir(SCIFACT, qrels="qrels_train.tsv")
    for name, ds in (("gen1000", BeirDataset(full.corpus, queries, qrels)), ("real", real)):
        docs = {d for r in ds.qrels.values() for d in r}
        li = {"queries": ds.queries, "corpus": {d: doc_text(ds.corpus[d]) for d in docs},
              "relevant_docs": {q: list(r) for q, r in ds.qrels.items()}}
        (out / f"li-{name}.json").write_text(json.dumps(li))
    return full, real, len(pos_docs)


def _run(cmd: list[str], env: dict | None = None) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t


def _cli_train(data: Path, qfile: str, qrels: str, out: Path, cache: Path, extra: list[str]) -> tuple[float, dict]:
    cmd = ["ragtune", "-q", "train", "adapter", "--data", str(data), "--queries", qfile, "--qrels", qrels,
           "--output", str(out), "--cache", str(cache), "--epochs", str(EPOCHS), "--batch-size", str(BATCH),
           "--json", *extra]
    wall = _run(cmd)
    return wall, json.loads((out / "train-log.json").read_text())


class VectorsSystem:
    """A retrieval system over cached vectors (for LlamaIndex's adapter, applied as its AdapterEmbeddingModel
    does: W q on the normalised query, then cosine similarity)."""

    def __new__(cls, name, docs, doc_ids, query_vecs):
        import torch

        from ragtune.retrieval.systems import RetrievalSystem

        class _System(RetrievalSystem):
            def _search(self, corpus, queries, top_k, cache):
                q = torch.nn.functional.normalize(query_vecs(list(queries.values())), dim=-1)
                vals, idx = torch.topk(q @ docs.T, top_k, dim=1)
                return {qid: {doc_ids[i]: float(v) for i, v in zip(ir, vr, strict=True)}
                        for qid, ir, vr in zip(queries, idx.tolist(), vals.tolist(), strict=True)}

        system = _System()
        system.name = name
        return system


def _li_run(args, out: Path, name: str) -> dict:
    from ragtune.models import packaged_minilm_path

    li_out = out / f"li-{name}"
    if not (li_out / "li-timings.json").is_file() or args.rerun_li:
        wall = _run([args.li_python, __file__, "--li-worker", str(out / f"li-{name}.json"), packaged_minilm_path(),
                     str(li_out)])
        timings = json.loads((li_out / "li-timings.json").read_text())
        timings["process_wall_s"] = wall
        (li_out / "li-timings.json").write_text(json.dumps(timings))
    return json.loads((li_out / "li-timings.json").read_text())


def main_bench(args: argparse.Namespace) -> None:
    import torch

    from ragtune.adapters import AdapterConfig, AdapterSystem, EmbeddingCache, SentenceTransformerEncoder
    from ragtune.adapters.encoders import embed_texts, normalize
    from ragtune.adapters.train import train_adapter
    from ragtune.config import EvalConfig
    from ragtune.data.beir import load_beir
    from ragtune.evaluate import evaluate_systems
    from ragtune.retrieval.bm25 import doc_text

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res: dict = {"machine": f"{os.cpu_count()} CPU cores shared with other jobs (timings under load), "
                            f"torch {torch.__version__}"}
    full, real, n_pos_docs = _write_pairs(out)
    test = load_beir(SCIFACT)
    res["pairs"] = {"gen1000": N_PAIRS, "gen1000_distinct_docs": n_pos_docs,
                    "real_claims": len(real.qrels), "real_pairs": sum(len(r) for r in real.qrels.values())}

    # 1. LlamaIndex: a fresh process per data set
    res["llamaindex"] = {name: _li_run(args, out, name) for name in ("gen1000", "real")}
    print("llamaindex", res["llamaindex"], flush=True)

    # 2. ragtune through its CLI, a fresh process each; cold = empty cache, then the same command warm
    unguarded = _yaml(out, "unguarded", {"significance": None, "min_delta": 0.0})
    li_recipe = ["--lr", "2e-5", "--config", str(_yaml(out, "li-recipe", {
        "bias": False, "mined_negatives": 0, "val_fraction": 0.0, "warmup_ratio": 0.1}))]
    runs = {  # name: (data dir, queries, qrels, output tag, extra flags, cold?)
        "gen1000 ragtune, LlamaIndex's recipe": (out / "gen1000-posdocs", "queries.jsonl", "test.tsv", "gen-li",
                                                 li_recipe, True),
        "gen1000 ragtune linear defaults": (out / "gen1000-fullcorpus", "queries.jsonl", "test.tsv", "gen-linear",
                                            [], True),
        "gen1000 ragtune linear, guard off": (out / "gen1000-fullcorpus", "queries.jsonl", "test.tsv",
                                              "gen-linear-unguarded", ["--config", str(unguarded)], False),
        "real ragtune linear defaults": (SCIFACT, "queries.jsonl", "qrels_train.tsv", "real-linear", [], False),
    }
    res["ragtune"] = {}
    warm_cache = out / "cold-gen-linear.sqlite"
    for name, (data, qf, qr, tag, extra, cold) in runs.items():
        row: dict = {}
        cache = out / f"cold-{tag}.sqlite" if cold else warm_cache
        if cold:
            for p in out.glob(f"cold-{tag}.sqlite*"):
                p.unlink()
            row["cold_process_s"], log = _cli_train(data, qf, qr, out / tag, cache, extra)
            row.update(cold=log["timings"], embedded_cold=log["embedded"])
        else:
            _cli_train(data, qf, qr, out / tag, cache, extra)  # fills the cache with what is missing
        row["warm_process_s"], log = _cli_train(data, qf, qr, out / tag, cache, extra)
        row.update(warm=log["timings"], embedded_warm=log["embedded"], epochs_run=log["epochs_run"],
                   best_epoch=log["best_epoch"], steps=log["steps"], val_base=log["val_base"],
                   val_best=log["val_best"])
        res["ragtune"][name] = row
        print(name, row, flush=True)

    # 3. the training step alone, cache warm, in one process (after a warm-up call that pays one-time imports)
    cache = EmbeddingCache(warm_cache)
    ds = load_beir(out / "gen1000-fullcorpus", queries="queries.jsonl", qrels="test.tsv")
    cfg = AdapterConfig(epochs=EPOCHS, batch_size=BATCH)
    train_adapter(ds, cfg, None, cache=cache)
    res["ragtune_train_step_warm"] = [train_adapter(ds, cfg, None, cache=cache).timings for _ in range(3)]
    print("warm in-process", res["ragtune_train_step_warm"], flush=True)

    # 4. ragtune defaults, no epoch cap, on all 10,132 generated pairs and on the real training claims
    eval_cache = EmbeddingCache(out / "eval.sqlite")
    enc = SentenceTransformerEncoder("minilm")
    t = time.perf_counter()
    doc_ids = list(test.corpus)
    docs = torch.from_numpy(normalize(embed_texts(enc, [doc_text(test.corpus[d]) for d in doc_ids], "document",
                                                  eval_cache)))
    res["eval_corpus_embed_s"] = time.perf_counter() - t
    res["full"] = {}
    for data_name, ds in (("gen", full), ("real", real)):
        for kind in ("linear", "mlp"):
            r = train_adapter(ds, AdapterConfig(kind=kind), out / f"full-{data_name}-{kind}", cache=eval_cache)
            res["full"][f"{data_name}/{kind}"] = {
                "timings": r.timings, "embedded": r.embedded, "epochs_run": r.epochs_run,
                "best_epoch": r.best_epoch, "val_base": r.val_base, "val_best": r.val_best, "pairs": r.n_pairs}
            print("full", data_name, kind, res["full"][f"{data_name}/{kind}"], flush=True)
    r = train_adapter(full, AdapterConfig(kind="linear", significance=None, min_delta=0.0),
                      out / "full-gen-linear-unguarded", cache=eval_cache)
    res["full"]["gen/linear unguarded"] = {"best_epoch": r.best_epoch, "val_base": r.val_base,
                                           "val_best": r.val_best}

    # 5. everything on SciFact test (300 claims, 5,183 abstracts), one evaluator
    def q_vecs(texts):
        return torch.from_numpy(normalize(embed_texts(enc, texts, "query", eval_cache)))

    def li_system(name: str, label: str):
        state = torch.load(out / f"li-{name}" / "pytorch_model.bin", map_location="cpu")
        w, b = state["linear.weight"], state.get("linear.bias")
        res.setdefault("distance_from_identity", {})[f"LlamaIndex {name}"] = float(
            torch.linalg.norm(w - torch.eye(w.shape[0])))
        return VectorsSystem(label, docs, doc_ids, lambda texts: q_vecs(texts) @ w.T + (b if b is not None else 0))

    systems = [VectorsSystem("MiniLM frozen", docs, doc_ids, q_vecs),
               li_system("gen1000", "LlamaIndex linear, gen1000, 2 ep"),
               li_system("real", "LlamaIndex linear, real claims, 2 ep")]
    for name, (_, _, _, tag, _, _) in runs.items():
        systems.append(AdapterSystem(out / tag, name=name + ", 2 ep", cache=eval_cache))
        res.setdefault("distance_from_identity", {})[name] = _distance(out / tag)
    for tag in ("gen-linear", "gen-mlp", "gen-linear-unguarded", "real-linear", "real-mlp"):
        systems.append(AdapterSystem(out / f"full-{tag}", name=f"ragtune {tag} (all pairs, early stopping)",
                                     cache=eval_cache))
    if args.verify_st:
        st = parse_verify(out / "full-real-linear" / "model")
        systems.append(st)
    report = evaluate_systems(test, systems, EvalConfig(bootstrap=1000), keep_runs=True)
    print(report.to_markdown())
    res["eval"] = {"markdown": report.to_markdown(), **report.to_dict(per_query=False)}
    res["seen_unseen"] = _seen_unseen(report, test, real)
    print(json.dumps(res["seen_unseen"], indent=1))
    (out / "results.json").write_text(json.dumps(res, indent=1, default=str))


def parse_verify(model_dir: Path):
    """The exported ST directory through the ordinary dense system (re-encodes the corpus with it)."""
    from ragtune.retrieval.systems import parse_system

    system = parse_system(f"dense:{model_dir}")
    system.name = "dense:full-real-linear/model (plain SentenceTransformer dir)"
    return system


def _seen_unseen(report, test, real) -> dict:
    """nDCG@10 on test claims whose relevant abstracts were / were not positives of a training claim."""
    seen = {d for r in real.qrels.values() for d in r}
    groups = {"seen": [q for q, r in test.qrels.items() if set(r) <= seen],
              "unseen": [q for q, r in test.qrels.items() if not set(r) & seen]}
    out = {}
    for name, result in report.systems.items():
        per = result.per_query["ndcg@10"]
        out[name] = {g: round(sum(per[q] for q in qs) / len(qs), 4) for g, qs in groups.items()}
    out["queries"] = {g: len(qs) for g, qs in groups.items()}
    return out


def _distance(folder: Path) -> float:
    """Frobenius norm of (the adapter's linear part - identity); exact for linear adapters."""
    import torch

    from ragtune.adapters import load_adapter

    adapter, _ = load_adapter(folder)
    x = torch.eye(adapter.dim)
    with torch.no_grad():
        return float(torch.linalg.norm(adapter(x) - adapter(torch.zeros(1, adapter.dim)) - x))


def _yaml(out: Path, name: str, section: dict) -> Path:
    import yaml

    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"adapter": section}))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/ragtune-bench/scifact")
    ap.add_argument("--li-python", default="/tmp/li-venv/bin/python")
    ap.add_argument("--rerun-li", action="store_true")
    ap.add_argument("--verify-st", action="store_true", help="also evaluate the exported ST directory with "
                                                             "dense:DIR (re-encodes the corpus)")
    ap.add_argument("--li-worker", nargs=3, metavar=("PAIRS", "MODEL", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.li_worker:
        li_worker(*args.li_worker)
        return
    main_bench(args)


if __name__ == "__main__":
    sys.exit(main())
