"""Question generation throughput: ragtune vs LlamaIndex's ``generate_qa_embedding_pairs``, same chunks, same server.

A fake OpenAI-compatible server runs on loopback (``tests/generate/fake_llm_server.py``, its own process): every
reply takes ``--latency`` seconds and holds 2 questions built from words of the passage. Scenarios:

1. throughput: the same ``--n`` chunks through ragtune (two concurrency settings) and through LlamaIndex (run in
   its own venv, ``--peer-python``); questions per second side by side.
2. faults: 30 % of requests fail (429, 500, timeout, garbage reply); every chunk must end answered or listed as
   failed. LlamaIndex runs the same for comparison (its garbage "questions" are counted).
3. kill -9: ragtune is killed mid-run in a child process, then rerun; the server counts requests per prompt to
   show that no finished request is sent twice and no result is lost.

    python bench/generate_throughput.py --data ../shared/evaldata/scifact --peer-python /tmp/li-venv/bin/python

Prints one markdown table (and ``--json FILE`` writes the numbers).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "tests" / "generate" / "fake_llm_server.py"
GARBAGE = "I am sorry, I cannot help with that."

PEER = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
from llama_index.core.schema import TextNode
from llama_index.finetuning import generate_qa_embedding_pairs
from llama_index.llms.openai_like import OpenAILike
corpus = json.load(open(sys.argv[1]))
nodes = [TextNode(id_=k, text=v) for k, v in corpus.items()]
llm = OpenAILike(model="fake", api_base=sys.argv[2], api_key="x", is_chat_model=True, timeout=float(sys.argv[3]),
                 max_tokens=256, temperature=0.7)
t = time.perf_counter()
ds = generate_qa_embedding_pairs(nodes, llm, num_questions_per_chunk=2, output_path=sys.argv[4], verbose=False)
secs = time.perf_counter() - t
chunks = {d for docs in ds.relevant_docs.values() for d in docs}
print(json.dumps({"seconds": secs, "questions": len(ds.queries), "chunks": len(chunks),
                  "garbage": sum(q.strip() == sys.argv[5] for q in ds.queries.values())}))
"""

CHILD = r"""
import json, sys
from ragtune.generate.filters import FilterConfig
from ragtune.generate.llm import LLMConfig, generate_llm_questions
corpus = json.load(open(sys.argv[1]))
cfg = LLMConfig(base_url=sys.argv[2], model="fake", api_key="x", concurrency=int(sys.argv[4]),
                filters=FilterConfig(enabled=False))
generate_llm_questions(corpus, cfg, sys.argv[3], progress=False)
"""


def load_chunks(data: str | None, n: int) -> dict[str, str]:
    if data:
        root = Path(data)
        path = root / "corpus.jsonl" if (root / "corpus.jsonl").is_file() else root / "corpus.jsonl.gz"
        opener = gzip.open if path.suffix == ".gz" else open
        out = {}
        with opener(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                out[str(rec["_id"])] = (f"{rec.get('title') or ''}\n{rec['text']}").strip()
                if len(out) == n:
                    break
        return out
    topics = ["photosynthesis", "volcanoes", "glaciers", "estuaries", "monsoons", "coral reefs", "aquifers"]
    return {f"s{i}": f"Note {i} on {topics[i % 7]}: measurement {i} shows that sample{i} differs from control{i} "
                     f"by {i % 13} percent under condition{i % 5}." for i in range(n)}


class Server:
    def __init__(self, latency: float, fault_rate: float = 0.0, timeout_sleep: float = 30.0):
        self.proc = subprocess.Popen([sys.executable, str(SERVER), "--latency", str(latency), "--fault-rate",
                                      str(fault_rate), "--timeout-sleep", str(timeout_sleep)],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()
        assert line and line[0] == "READY", line
        self.url = line[1]

    def stats(self) -> dict:
        with urllib.request.urlopen(self.url.removesuffix("/v1") + "/stats") as r:
            return json.load(r)

    def reset(self) -> None:
        req = urllib.request.Request(self.url.removesuffix("/v1") + "/reset", method="POST")
        urllib.request.urlopen(req).read()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def run_ragtune(chunks: dict[str, str], url: str, cache: Path, **kw) -> dict:
    from ragtune.generate.filters import FilterConfig
    from ragtune.generate.llm import LLMConfig, generate_llm_questions

    kw.setdefault("filters", FilterConfig(enabled=False))
    cfg = LLMConfig(base_url=url, model="fake", api_key="x", **kw)
    corpus = {k: {"title": "", "text": v} for k, v in chunks.items()}
    t = time.perf_counter()
    res = generate_llm_questions(corpus, cfg, cache, progress=False)
    secs = time.perf_counter() - t
    answered = {d for docs in res.qrels.values() for d in docs}
    raw = res.report.input
    return {"seconds": secs, "questions": raw, "kept": len(res.queries), "chunks": len(answered),
            "failed": len(res.failed), "pending": len(res.pending), "retries": res.stats.retries,
            "sent": res.stats.sent, "report": res.report, "result": res}


def run_peer(python: str, chunks: dict[str, str], url: str, tmp: Path, timeout: float) -> dict:
    (tmp / "peer.py").write_text(PEER)
    (tmp / "chunks.json").write_text(json.dumps(chunks))
    # a fresh output path: LlamaIndex resumes from an existing one, which would skip every request
    out_path = Path(tempfile.mkdtemp(dir=tmp)) / "peer-out.json"
    out = subprocess.run([python, str(tmp / "peer.py"), str(tmp / "chunks.json"), url, str(timeout),
                          str(out_path), GARBAGE], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def kill_and_resume(chunks: dict[str, str], latency: float, tmp: Path, concurrency: int) -> dict:
    from ragtune.generate.llm import LLMConfig, ResultCache, plan_requests
    from ragtune.generate.llm.clients import OpenAICompatibleClient
    from ragtune.generate.llm.prompts import PromptBuilder

    srv = Server(latency)
    try:
        cache = tmp / "kill-cache"
        (tmp / "chunks-corpus.json").write_text(json.dumps({k: {"title": "", "text": v} for k, v in chunks.items()}))
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp / "chunks-corpus.json"), srv.url,
                                  str(cache), str(concurrency)], stderr=subprocess.DEVNULL)
        while srv.stats()["completed"] < len(chunks) * 0.4 and child.poll() is None:
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        before = _prompt_counts(srv)
        builder = PromptBuilder.from_config(LLMConfig(), "en")
        client = OpenAICompatibleClient(srv.url, "x", "fake")
        plan = plan_requests({k: {"title": "", "text": v} for k, v in chunks.items()}, builder, client)
        with ResultCache(cache) as rc:
            stored = {k: r for k, r in rc.get_many(plan).items() if r.ok}
        stored_prompts = {plan[k].messages[-1]["content"] for k in stored}
        srv.reset()
        res = run_ragtune(chunks, srv.url, cache, concurrency=max(concurrency, 32))
        after = _prompt_counts(srv)
        final = set(res["result"].queries.values())
        return {"finished_before_kill": len(stored), "requests_before_kill": sum(before.values()),
                "sent_on_rerun": sum(after.values()),
                "duplicates_of_finished": sum(1 for p in after if p in stored_prompts),
                "resent_inflight": sum(1 for p in after if p in before),
                "lost": sum(1 for r in stored.values() for q in r.questions if q not in final),
                "chunks_answered": res["chunks"], "questions": res["questions"]}
    finally:
        srv.close()


def _prompt_counts(srv: Server) -> dict[str, int]:
    with urllib.request.urlopen(srv.url.removesuffix("/v1") + "/prompts") as r:
        return json.load(r)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="BEIR directory; its first --n documents are the chunks (default: synthetic)")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--latency", type=float, default=0.5)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[16, 128])
    ap.add_argument("--fault-rate", type=float, default=0.3)
    ap.add_argument("--repeat", type=int, default=3, help="ragtune runs per setting; the median is reported")
    ap.add_argument("--kill-concurrency", type=int, default=8, help="low enough that the kill lands mid-run")
    ap.add_argument("--peer-python", help="python of a venv with llama-index-finetuning + llama-index-llms-openai-like")
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()
    chunks = load_chunks(args.data, args.n)
    rows: list[list[str]] = []
    results: dict = {"n": len(chunks), "latency": args.latency, "data": args.data}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        srv = Server(args.latency)
        try:
            # warm-up: imports and first connection, so that only generation is timed (as for the peer)
            run_ragtune(dict(list(chunks.items())[:2]), srv.url, tmp / "warmup", concurrency=2)
            srv.reset()
            for c in args.concurrency:
                runs = [run_ragtune(chunks, srv.url, tmp / f"cache-c{c}-{i}", concurrency=c)
                        for i in range(args.repeat)]
                r = sorted(runs, key=lambda x: x["seconds"])[len(runs) // 2]  # the median run
                results[f"ragtune_c{c}"] = {k: v for k, v in r.items() if k not in ("report", "result")}
                rows.append([f"throughput, {args.latency}s latency", f"ragtune (concurrency {c}, median of "
                             f"{args.repeat})",
                             f"{r['chunks']}/{len(chunks)}", str(r["questions"]), f"{r['seconds']:.2f}",
                             f"{r['questions'] / r['seconds']:.1f}", ""])
            if args.peer_python:
                srv.reset()
                p = run_peer(args.peer_python, chunks, srv.url, tmp, timeout=60.0)
                results["llamaindex"] = p
                rows.append([f"throughput, {args.latency}s latency", "LlamaIndex generate_qa_embedding_pairs",
                             f"{p['chunks']}/{len(chunks)}", str(p["questions"]), f"{p['seconds']:.2f}",
                             f"{p['questions'] / p['seconds']:.1f}", ""])
                best = max(results[f"ragtune_c{c}"]["questions"] / results[f"ragtune_c{c}"]["seconds"]
                           for c in args.concurrency)
                results["speedup"] = best / (p["questions"] / p["seconds"])
                rows[-1][-1] = f"ragtune is {results['speedup']:.0f}x faster"
        finally:
            srv.close()

        srv = Server(args.latency, args.fault_rate, timeout_sleep=30.0)
        try:
            c = max(args.concurrency)
            r = run_ragtune(chunks, srv.url, tmp / "cache-faults", concurrency=c, timeout=2.0, max_retries=6)
            s = srv.stats()
            results["faults_ragtune"] = {**{k: v for k, v in r.items() if k not in ("report", "result")},
                                         "server": s}
            rows.append([f"faults {args.fault_rate:.0%} (429/500/timeout/garbage)", f"ragtune (concurrency {c})",
                         f"{r['chunks']}/{len(chunks)}", str(r["questions"]), f"{r['seconds']:.2f}",
                         f"{r['questions'] / r['seconds']:.1f}",
                         f"{r['failed']} listed failed, {r['retries']} retries; injected {s['faults']}"])
            if args.peer_python:
                srv.reset()
                p = run_peer(args.peer_python, chunks, srv.url, tmp, timeout=2.0)
                results["faults_llamaindex"] = {**p, "server": srv.stats()}
                rows.append([f"faults {args.fault_rate:.0%} (429/500/timeout/garbage)",
                             "LlamaIndex generate_qa_embedding_pairs", f"{p['chunks']}/{len(chunks)}",
                             str(p["questions"]), f"{p['seconds']:.2f}", f"{p['questions'] / p['seconds']:.1f}",
                             f"{p['garbage']} refusals kept as questions"])
        finally:
            srv.close()

        k = kill_and_resume(chunks, args.latency, tmp, args.kill_concurrency)
        results["kill9"] = k
        rows.append([f"kill -9 mid-run (concurrency {args.kill_concurrency}), then rerun", "ragtune", f"{k['chunks_answered']}/{len(chunks)}",
                     str(k["questions"]), "", "",
                     f"killed after {k['finished_before_kill']} finished ({k['requests_before_kill']} received); rerun "
                     f"sent {k['sent_on_rerun']} ({k['resent_inflight']} were in flight at the kill); finished "
                     f"requests sent again: {k['duplicates_of_finished']}; results lost: {k['lost']}"])
    header = ["scenario", "system", "chunks answered", "questions", "seconds", "questions/s", "notes"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
