"""The OpenAI-compatible path end to end against a real HTTP server on loopback (no mocks of our client):
concurrency, retries, exact resume (also after kill -9), budget, accounting, rate limits and the output files."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_llm_server import FakeLLMServer

from ragtune.data.beir import load_beir, write_corpus
from ragtune.errors import ConfigError
from ragtune.generate.filters import FilterConfig
from ragtune.generate.llm import LLMConfig, ResultCache, generate_llm_questions, write_llm_result
from ragtune.generate.llm.limits import RateLimiter

WORDS = ["photosynthesis", "chlorophyll", "volcano", "magma", "glacier", "estuary", "tectonic", "monsoon",
         "mangrove", "aquifer", "basalt", "tundra", "savanna", "plankton", "coral", "lichen"]


def corpus_of(n: int) -> dict[str, dict]:
    """``n`` chunks, each with its own rare words, so questions about them are distinct."""
    return {f"c{i}": {"title": "", "text": f"The {WORDS[i % 16]} note {i}: zeta{i}word and kappa{i}term "
                                           f"describe {WORDS[(i + 5) % 16]} behaviour in region {i}."}
            for i in range(n)}


@pytest.fixture()
def fake_llm_server():
    """Start a fake OpenAI-compatible server on a free 127.0.0.1 port: ``fake_llm_server(latency=..., ...)``."""
    servers: list[FakeLLMServer] = []

    def start(**kwargs) -> FakeLLMServer:
        kwargs.setdefault("timeout_sleep", 3.0)  # well past the client timeout, even on a slow machine
        srv = FakeLLMServer(**kwargs)
        srv.start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


def cfg(srv: FakeLLMServer, **kw) -> LLMConfig:
    base = dict(base_url=srv.base_url, model="fake", api_key="sk-test", concurrency=8, timeout=0.5,
                backoff_base=0.01, backoff_max=0.05, filters=FilterConfig(enabled=False))
    return LLMConfig(**{**base, **kw})


def test_concurrency_overlaps_requests(fake_llm_server, tmp_path) -> None:
    srv = fake_llm_server(latency=0.2)
    res = generate_llm_questions(corpus_of(24), cfg(srv, concurrency=8), tmp_path, progress=False)
    assert len(res.queries) == 48 and res.stats.succeeded == 24
    # One at a time would take 24 x 0.2 = 4.8 s; 8 at a time about 0.6 s (bound loose for a busy CI machine).
    assert res.stats.seconds < 24 * 0.2 / 2, res.stats.seconds
    assert srv.max_in_flight == 8


def test_retries_recover_from_injected_faults(fake_llm_server, tmp_path) -> None:
    srv = fake_llm_server(fault_rate=0.3, seed=2)  # seed 2: every fault kind occurs
    res = generate_llm_questions(corpus_of(30), cfg(srv, max_retries=8, timeout=1.0), tmp_path,
                                 progress=False)
    stats = srv.stats()
    assert set(stats["faults"]) == {"429", "500", "timeout", "garbage"}  # every kind was injected ...
    assert res.stats.succeeded == 30 and not res.failed  # ... and every chunk still got its questions
    assert res.stats.sent == stats["requests"] == 30 + res.stats.retries
    assert res.stats.retries >= sum(stats["faults"].values())  # (more only if a slow machine timed out)


def test_gives_up_after_max_retries_and_lists_the_chunk(fake_llm_server, tmp_path) -> None:
    srv = fake_llm_server(fault_rate=1.0, faults=("500",))
    res = generate_llm_questions(corpus_of(3), cfg(srv, max_retries=2), tmp_path, progress=False)
    assert set(res.failed) == {"c0", "c1", "c2"} and res.failed["c0"].startswith("500: HTTP 500")
    assert set(srv.requests.values()) == {3}  # 1 try + 2 retries, then it stops
    assert not res.queries and res.note and "3 chunks failed" in res.note
    garbage = fake_llm_server(fault_rate=1.0, faults=("garbage",))
    res = generate_llm_questions(corpus_of(2), cfg(garbage, max_retries=1), tmp_path / "g", progress=False)
    assert res.failed["c0"].startswith("parse: no question found")
    parse = res.report.steps[0]
    assert parse.name == "parse" and parse.dropped == 2


def test_rerun_sends_nothing_and_returns_the_same_set(fake_llm_server, tmp_path) -> None:
    srv = fake_llm_server()
    corpus = corpus_of(10)
    corpus["dup"] = dict(corpus["c3"])  # same text: one request, judged relevant to both chunks
    first = generate_llm_questions(corpus, cfg(srv), tmp_path, progress=False)
    assert srv.stats()["requests"] == 10 and first.stats.requests == 10
    assert all(v == {"c3": 1, "dup": 1} for q, v in first.qrels.items() if v.get("c3"))
    srv.reset()
    again = generate_llm_questions(corpus, cfg(srv), tmp_path, progress=False)
    assert srv.stats()["requests"] == 0 and again.stats.cached == 10 and again.stats.sent == 0
    assert again.queries == first.queries and again.qrels == first.qrels
    generate_llm_questions(corpus, cfg(srv, per_chunk=3), tmp_path, progress=False)
    assert srv.stats()["requests"] == 10  # another prompt is another request


_CHILD = """
import json, sys
from ragtune.generate.filters import FilterConfig
from ragtune.generate.llm import LLMConfig, generate_llm_questions
corpus = json.load(open(sys.argv[1]))
cfg = LLMConfig(base_url=sys.argv[2], model="fake", api_key="x", concurrency=4, filters=FilterConfig(enabled=False))
generate_llm_questions(corpus, cfg, sys.argv[3], progress=False)
"""


def test_kill_9_mid_run_then_rerun_loses_nothing_and_repeats_nothing(fake_llm_server, tmp_path) -> None:
    srv = fake_llm_server(latency=0.05)
    corpus = corpus_of(120)
    (tmp_path / "corpus.json").write_text(json.dumps(corpus))
    cache_dir = tmp_path / "cache"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path / "corpus.json"), srv.base_url,
                              str(cache_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while sum(srv.completed.values()) < 30 and child.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, child.stderr.read().decode()[-2000:]
    with ResultCache(cache_dir) as cache:
        finished = {k: r.questions for k, r in cache.get_many(_all_keys(cache)).items()}
    assert 10 <= len(finished) < 120
    sent_before = dict(srv.requests)
    srv.reset()
    res = generate_llm_questions(corpus, cfg(srv, concurrency=16), cache_dir, progress=False)
    assert res.stats.cached == len(finished) and res.stats.sent == 120 - len(finished)
    assert srv.stats()["requests"] == 120 - len(finished)  # only the unfinished ones went out again
    resent = [p for p in srv.requests if p in sent_before]
    assert len(resent) <= 4  # at most the child's in-flight requests, whose replies it never stored
    assert len(res.queries) == 240  # nothing lost: every chunk has its questions
    kept = {q for qs in finished.values() for q in qs}
    assert kept <= set(res.queries.values())


def _all_keys(cache: ResultCache) -> list[str]:
    return [r[0] for r in cache._db.execute("SELECT key FROM results")]


def test_budget_cap_stops_cleanly_and_resumes(fake_llm_server, tmp_path) -> None:
    srv = fake_llm_server()
    corpus = corpus_of(20)
    priced = dict(price_prompt_per_1m=100.0, price_completion_per_1m=100.0, max_tokens=64, concurrency=2)
    # ~50 prompt words + ~15 reply words a request at $100 per 1M tokens: ~$0.0065 per request.
    res = generate_llm_questions(corpus, cfg(srv, budget_usd=0.04, **priced), tmp_path, progress=False)
    assert res.stats.stopped == "budget" and res.stats.cost_usd <= 0.04
    assert 1 <= res.stats.succeeded < 20 and len(res.pending) == 20 - res.stats.succeeded
    assert res.stats.not_sent == len(res.pending)
    assert res.stats.cost_usd == pytest.approx(
        (res.stats.prompt_tokens + res.stats.completion_tokens) * 100 / 1e6)
    done = res.stats.succeeded
    srv.reset()
    rest = generate_llm_questions(corpus, cfg(srv, budget_usd=10.0, **priced), tmp_path, progress=False)
    assert rest.stats.stopped is None and srv.stats()["requests"] == 20 - done and not rest.pending


def test_bad_key_stops_the_run_with_a_config_error(fake_llm_server, tmp_path) -> None:
    srv = fake_llm_server(fault_rate=1.0, faults=("401",))
    with pytest.raises(ConfigError, match="refused the API key"):
        generate_llm_questions(corpus_of(10), cfg(srv), tmp_path, progress=False)
    assert srv.stats()["requests"] <= 8  # the in-flight ones, not all ten


def test_rate_limiter_spaces_requests() -> None:
    async def go() -> float:
        limiter = RateLimiter(rpm=5, tpm=None, period=0.5)
        t0 = time.perf_counter()
        for _ in range(15):
            await limiter.acquire(1)
        return time.perf_counter() - t0

    assert asyncio.run(go()) >= 0.8  # 5 at once, then 10 more at 10/s


def test_chinese_corpus_gets_chinese_prompt_and_output_files(fake_llm_server, tmp_path) -> None:
    srv = fake_llm_server()
    corpus = {"wall": {"title": "长城", "text": "长城是中国古代的军事防御工程。它东起山海关，西至嘉峪关。"},
              "tea": {"title": "绿茶", "text": "绿茶是不发酵的茶，用低于沸点的水冲泡，口感清爽。"}}
    res = generate_llm_questions(corpus, cfg(srv, filters=FilterConfig(roundtrip_k=2)), tmp_path / "c",
                                 progress=False)
    assert all("<passage>" in p and "问题" in p for p in srv.requests)
    assert res.language == "zh" and len(res.queries) == 4 and res.report.kept == 4
    out = tmp_path / "out"
    write_corpus(out / "corpus.jsonl", corpus)
    write_llm_result(res, out)
    ds = load_beir(out, queries="gen-queries.jsonl", qrels="gen-qrels.tsv")  # the trainer's reader
    assert set(ds.queries) == set(res.queries)
    meta = next(iter(ds.query_metadata.values()))
    assert meta["model"] == "fake" and meta["prompt_hash"] == res.prompt_hash and meta["filters"]["passed"]
    info = json.loads((out / "gen-info.json").read_text())
    assert info["method"] == "llm" and info["filters"]["kept"] == 4 and info["stats"]["succeeded"] == 2
    assert Path(out / "gen-dropped.jsonl").is_file()
