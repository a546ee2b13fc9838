"""ragtune's adapters vs LlamaIndex's EmbeddingAdapterFinetuneEngine on SciFact, MiniLM frozen, CPU, one run.

Same pairs (the first 1,000 lines of scifact/gen-qrels.tsv with their gen-queries), same base (the packaged
all-MiniLM-L6-v2), same epochs (2) and batch (10). Both are evaluated by ragtune's evaluator on the SciFact test
queries (qrels.tsv, 300) over the full corpus (5,183). Then ragtune's defaults on all 10,132 generated pairs.

    python bench/adapter_vs_llamaindex.py --out /tmp/ragtune-bench/scifact [--li-python /tmp/li-venv/bin/python]

LlamaIndex runs in its own venv (``--li-python``), as a subprocess of this file (``--li-worker``), so both sides
are timed the same way: a fresh process from start to adapter on disk. Nothing at module level imports ragtune,
because the LlamaIndex venv does not have it.
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
    """The 1,000 pairs as a BEIR dir twice (positive documents only, as LlamaIndex's dataset holds; and the full
    corpus, which ragtune's mined negatives use) plus LlamaIndex's dataset JSON."""
    from ragtune.data.beir import BeirDataset, load_beir, load_qrels, write_beir
    from ragtune.retrieval.bm25 import doc_text

    full = load_beir(SCIFACT, queries="gen-queries.jsonl", qrels="gen-qrels.tsv")
    order = list(load_qrels(SCIFACT / "gen-qrels.tsv"))[:N_PAIRS]  # file order
    qrels = {q: full.qrels[q] for q in order}
    queries = {q: full.queries[q] for q in order}
    pos_docs = {d for r in qrels.values() for d in r}
    write_beir(out / "pairs-posdocs", BeirDataset({d: full.corpus[d] for d in pos_docs}, queries, qrels))
    write_beir(out / "pairs-fullcorpus", BeirDataset(full.corpus, queries, qrels))
    li = {"queries": queries, "corpus": {d: doc_text(full.corpus[d]) for d in pos_docs},
          "relevant_docs": {q: list(r) for q, r in qrels.items()}}
    (out / "li-pairs.json").write_text(json.dumps(li))
    return full, len(pos_docs)


def _run(cmd: list[str], env: dict | None = None) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t


def _cli_train(data: Path, out: Path, cache: Path, extra: list[str]) -> tuple[float, dict]:
    cmd = ["ragtune", "-q", "train", "adapter", "--data", str(data), "--queries", "queries.jsonl", "--qrels",
           "test.tsv", "--output", str(out), "--cache", str(cache), "--epochs", str(EPOCHS), "--batch-size",
           str(BATCH), "--json", *extra]
    wall = _run(cmd)
    return wall, json.loads((out / "train-log.json").read_text())


class VectorsSystem:
    """A retrieval system over cached vectors (for LlamaIndex's adapter, applied as its AdapterEmbeddingModel
    does: W q on the normalised query, cosine similarity)."""

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


def main_bench(args: argparse.Namespace) -> None:
    import torch

    from ragtune.adapters import AdapterConfig, AdapterSystem, EmbeddingCache, SentenceTransformerEncoder
    from ragtune.adapters.encoders import embed_texts, normalize
    from ragtune.adapters.train import train_adapter
    from ragtune.config import EvalConfig
    from ragtune.data.beir import load_beir
    from ragtune.evaluate import evaluate_systems
    from ragtune.models import packaged_minilm_path
    from ragtune.retrieval.bm25 import doc_text

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res: dict = {"machine": f"{os.cpu_count()} CPU cores (shared with other jobs), torch {torch.__version__}"}
    full, n_pos_docs = _write_pairs(out)
    test = load_beir(SCIFACT)
    res["pairs"] = {"pairs": N_PAIRS, "distinct_positive_docs": n_pos_docs}

    # 1. LlamaIndex, a fresh process
    li_out = out / "li-adapter"
    if not (li_out / "li-timings.json").is_file() or args.rerun_li:
        wall = _run([args.li_python, __file__, "--li-worker", str(out / "li-pairs.json"), packaged_minilm_path(),
                     str(li_out)])
        res["li_process_wall_s"] = wall
    res["llamaindex"] = json.loads((li_out / "li-timings.json").read_text())
    print("llamaindex", res["llamaindex"], flush=True)

    # 2. ragtune cold, a fresh process each, empty cache: LlamaIndex's recipe, then ragtune's default recipe
    li_recipe = ["--lr", "2e-5", "--config", str(_yaml(out, "li-recipe", {"bias": False, "mined_negatives": 0,
                                                                          "val_fraction": 0.0,
                                                                          "weight_decay": 0.01,
                                                                          "warmup_ratio": 0.1}))]
    runs = {"ragtune, LlamaIndex's recipe": ("pairs-posdocs", "li-recipe", li_recipe),
            "ragtune linear (defaults, 2 epochs)": ("pairs-fullcorpus", "rt-linear", ["--kind", "linear"]),
            "ragtune mlp (defaults, 2 epochs)": ("pairs-fullcorpus", "rt-mlp", ["--kind", "mlp"])}
    res["ragtune"] = {}
    for name, (data, tag, extra) in runs.items():
        cold_cache = out / f"cold-{tag}.sqlite"
        for p in out.glob(f"cold-{tag}.sqlite*"):
            p.unlink()
        cold_wall, log = _cli_train(out / data, out / tag, cold_cache, extra)
        warm_wall, warm_log = _cli_train(out / data, out / tag, cold_cache, extra)  # same cache, now warm
        res["ragtune"][name] = {"cold_process_s": cold_wall, "cold": log["timings"], "embedded": log["embedded"],
                                "warm_process_s": warm_wall, "warm": warm_log["timings"],
                                "epochs_run": log["epochs_run"], "best_epoch": log["best_epoch"],
                                "steps": log["steps"]}
        print(name, res["ragtune"][name], flush=True)

    # 3. the training step alone, cache warm, in one process (after a warm-up call that pays one-time imports)
    cache = EmbeddingCache(out / "cold-rt-linear.sqlite")
    ds = load_beir(out / "pairs-fullcorpus", queries="queries.jsonl", qrels="test.tsv")
    cfg = AdapterConfig(kind="linear", epochs=EPOCHS, batch_size=BATCH)
    train_adapter(ds, cfg, None, cache=cache)
    warm = [train_adapter(ds, cfg, None, cache=cache).timings for _ in range(3)]
    res["ragtune_train_step_warm"] = warm
    print("warm in-process", warm, flush=True)

    # 4. ragtune defaults on all 10,132 generated pairs (early stopping on 10% of them)
    eval_cache = EmbeddingCache(out / "eval.sqlite")
    enc = SentenceTransformerEncoder("minilm")
    t = time.perf_counter()
    doc_ids = list(test.corpus)
    docs = torch.from_numpy(normalize(embed_texts(enc, [doc_text(test.corpus[d]) for d in doc_ids], "document",
                                                  eval_cache)))
    res["eval_corpus_embed_s"] = time.perf_counter() - t
    res["full"] = {}
    for kind in ("linear", "mlp"):
        r = train_adapter(full, AdapterConfig(kind=kind), out / f"full-{kind}", cache=eval_cache)
        res["full"][kind] = {"timings": r.timings, "embedded": r.embedded, "epochs_run": r.epochs_run,
                             "best_epoch": r.best_epoch, "val_base": r.val_base, "val_best": r.val_best,
                             "pairs": r.n_pairs}
        print("full", kind, res["full"][kind], flush=True)

    # 5. everything on SciFact test, one evaluator
    def q_vecs(texts):
        return torch.from_numpy(normalize(embed_texts(enc, texts, "query", eval_cache)))

    li_state = torch.load(li_out / "pytorch_model.bin", map_location="cpu")
    li_w = li_state["linear.weight"]
    li_b = li_state.get("linear.bias")
    res["li_adapter_distance_from_identity"] = float(torch.linalg.norm(li_w - torch.eye(li_w.shape[0])))

    def li_vecs(texts):
        v = q_vecs(texts) @ li_w.T
        return v + li_b if li_b is not None else v

    systems = [VectorsSystem("MiniLM frozen", docs, doc_ids, q_vecs),
               VectorsSystem("LlamaIndex linear adapter (1,000 pairs)", docs, doc_ids, li_vecs)]
    for name, (_, tag, _) in runs.items():
        systems.append(AdapterSystem(out / tag, name=name + " (1,000 pairs)", cache=eval_cache))
    for kind in ("linear", "mlp"):
        systems.append(AdapterSystem(out / f"full-{kind}", name=f"ragtune {kind} (10,132 pairs, defaults)",
                                     cache=eval_cache))
    if args.verify_st:
        systems.append(f"dense:{out / 'full-linear' / 'model'}")
    report = evaluate_systems(test, systems, EvalConfig(bootstrap=1000))
    print(report.to_markdown())
    res["eval"] = {"markdown": report.to_markdown(), **report.to_dict(per_query=False)}
    for name, (_, tag, _) in runs.items():
        res["ragtune"][name]["distance_from_identity"] = _distance(out / tag)
    (out / "results.json").write_text(json.dumps(res, indent=1, default=str))


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
