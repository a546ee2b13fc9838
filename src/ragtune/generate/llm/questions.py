"""Orchestration: chunks in, filtered questions out, every request sent at most once across runs.

1. One request per distinct prompt (chunks with the same text share it), keyed by :func:`cache.request_key`.
2. Requests already in the cache are not sent again; the rest go out through ``concurrency`` async workers,
   each request passing the rate limiter, the budget check and the retry policy, and its result is committed to
   the cache the moment it arrives.
3. The questions of every finished request become a generated set in the BEIR shapes, and the filter chain runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ragtune.data.beir import Corpus, Qrels, Queries
from ragtune.errors import ConfigError
from ragtune.generate.filters import FilterReport, Retriever, filter_questions
from ragtune.generate.llm.cache import CachedResult, GroupCommitWriter, ResultCache, request_key
from ragtune.generate.llm.clients import LLMClient, Messages, make_client
from ragtune.generate.llm.config import LLMConfig
from ragtune.generate.llm.limits import (
    RateLimiter,
    RequestError,
    RetryPolicy,
    TransientError,
    estimate_tokens,
)
from ragtune.generate.llm.parsing import ParseError, parse_or_raise
from ragtune.generate.llm.prompts import PromptBuilder, choose_language

logger = logging.getLogger(__name__)


@dataclass
class RunStats:
    """Accounting of one call: requests, retries, tokens, estimated cost, and why it stopped early (if it did)."""

    requests: int = 0          # distinct requests the corpus needs
    cached: int = 0            # of them, already finished in an earlier run
    sent: int = 0              # HTTP calls made by this run, retries included
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    not_sent: int = 0          # left for a later run (budget reached, or the run was aborted)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    stopped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cost_usd": round(self.cost_usd, 6), "seconds": round(self.seconds, 3)}


@dataclass
class LLMGenerationResult:
    """A generated set (same fields as ``GeneratedSet``) plus the filter report, the accounting and failures."""

    queries: Queries = field(default_factory=dict)
    qrels: Qrels = field(default_factory=dict)
    metadata: dict[str, dict] = field(default_factory=dict)
    method: str = "llm"
    note: str | None = None
    report: FilterReport = field(default_factory=FilterReport)
    stats: RunStats = field(default_factory=RunStats)
    failed: dict[str, str] = field(default_factory=dict)     # chunk_id -> why its request failed
    pending: list[str] = field(default_factory=list)         # chunk_ids whose request was not sent
    model: str = ""
    prompt_hash: str = ""
    language: str = "en"

    def __len__(self) -> int:
        return len(self.queries)

    def to_generated_set(self) -> Any:
        """The same questions as a :class:`ragtune.generate.GeneratedSet`, with :meth:`info` in its ``info``."""
        from ragtune.generate import GeneratedSet

        return GeneratedSet(dict(self.queries), dict(self.qrels), dict(self.metadata), self.method, self.note,
                            info=self.info())

    def info(self) -> dict[str, Any]:
        return {"method": self.method, "note": self.note, "model": self.model, "prompt_hash": self.prompt_hash,
                "language": self.language, "queries": len(self.queries), "stats": self.stats.to_dict(),
                "filters": self.report.to_dict(), "failed": self.failed, "pending": self.pending}


@dataclass
class _Request:
    messages: Messages
    chunk_ids: list[str]
    tokens: int


def generate_llm_questions(corpus: Corpus, config: LLMConfig | None = None,
                           cache_dir: str | Path = ".ragtune-cache", *, client: LLMClient | None = None,
                           retriever: Retriever | None = None, progress: bool | None = None) -> LLMGenerationResult:
    """Ask an LLM ``config.per_chunk`` questions about each chunk of ``corpus``, then filter them.

    ``cache_dir`` holds the result database (``llm-cache.sqlite``): rerun with the same directory to resume.
    ``client`` replaces the one built from ``config``; ``retriever`` replaces BM25 in the round-trip filter.
    """
    config = config or LLMConfig()
    if not corpus:
        raise ConfigError("generate_llm_questions: the corpus is empty; nothing to ask questions about")
    language = choose_language((_chunk_text(d) for d in corpus.values()), config.language)
    builder = PromptBuilder.from_config(config, language)
    own = client is None
    client = client or make_client(config)
    requests = plan_requests(corpus, builder, client, config.max_chunk_chars)
    stats = RunStats(requests=len(requests))
    t0 = time.perf_counter()
    with ResultCache(cache_dir) as cache:
        done = cache.get_many(requests)
        todo = [k for k in requests if not (k in done and done[k].ok)]
        stats.cached = len(requests) - len(todo)
        logger.info("LLM questions with %s: %d requests, %d already done, %d to send", client.name,
                    len(requests), stats.cached, len(todo))
        runner = _Runner(client, config, cache, requests, builder.hash, stats, progress)
        try:
            _run_coroutine(runner.run(todo, close_client=own))
        finally:
            stats.seconds = time.perf_counter() - t0
            cache.record_run({"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **stats.to_dict()})
        done.update(runner.results)
    result = _assemble(requests, done, client.name, builder.hash, language, stats)
    filtered = filter_questions(result.queries, result.qrels, corpus, config.filters, metadata=result.metadata,
                                language=language, retriever=retriever, parse_failures=_parse_failures(result))
    result.queries, result.qrels, result.metadata = filtered.queries, filtered.qrels, filtered.metadata
    result.report = filtered.report
    logger.info("LLM questions: %d kept of %d; %d requests sent (%d retries), %d+%d tokens, ~$%.4f, %.1f s%s",
                filtered.report.kept, filtered.report.input, stats.sent, stats.retries, stats.prompt_tokens,
                stats.completion_tokens, stats.cost_usd, stats.seconds,
                f"; stopped: {stats.stopped}" if stats.stopped else "")
    return result


def plan_requests(corpus: Corpus, builder: PromptBuilder, client: LLMClient,
                  max_chars: int = 6000) -> dict[str, _Request]:
    """One request per distinct prompt, in corpus order, with the chunk ids that share it."""
    out: dict[str, _Request] = {}
    for cid, doc in corpus.items():
        text = _chunk_text(doc)[:max_chars]
        messages = builder.messages(text)
        key = request_key(messages, client.name, client.params)
        if key in out:
            out[key].chunk_ids.append(cid)
        else:
            out[key] = _Request(messages, [cid], sum(estimate_tokens(m["content"]) for m in messages))
    return out


def _chunk_text(doc: dict) -> str:
    title = str(doc.get("title") or "").strip()
    text = str(doc.get("text") or "").strip()
    return f"{title}\n{text}" if title and not text.startswith(title) else text


class _Runner:
    """Sends the requests of one call with ``concurrency`` workers; results land in the cache as they arrive."""

    def __init__(self, client: LLMClient, config: LLMConfig, cache: ResultCache, requests: dict[str, _Request],
                 prompt_hash: str, stats: RunStats, progress: bool | None):
        self.client, self.config, self.cache, self.requests = client, config, cache, requests
        self.prompt_hash, self.stats, self.progress = prompt_hash, stats, progress
        self.results: dict[str, CachedResult] = {}
        self.fatal: BaseException | None = None
        self._reserved = 0.0
        self.policy = RetryPolicy(config.max_retries, config.backoff_base, config.backoff_max,
                                  on_retry=lambda exc, n: self._count_retry())
        if config.budget_usd and not (config.price_prompt_per_1m or config.price_completion_per_1m):
            logger.warning("budget_usd=%s is set but both prices are 0, so it can never be reached: set "
                           "price_prompt_per_1m and price_completion_per_1m", config.budget_usd)

    def _count_retry(self) -> None:
        self.stats.retries += 1

    async def run(self, keys: list[str], close_client: bool = False) -> None:
        try:
            if keys:
                await self._run(keys)
        finally:
            if close_client:
                await self.client.aclose()

    async def _run(self, keys: list[str]) -> None:
        from tqdm.auto import tqdm

        self.limiter = RateLimiter(self.config.rpm, self.config.tpm)
        self.bar = tqdm(total=len(keys), desc="LLM questions", unit="req", dynamic_ncols=True,
                        disable=None if self.progress is None else not self.progress)
        self.writer = GroupCommitWriter(self.cache)
        workers = max(1, min(len(keys), max(self.config.concurrency, self.client.preferred_concurrency)))
        queue = iter(keys)
        try:
            await asyncio.gather(*(self._worker(queue) for _ in range(workers)))
        finally:
            self.bar.close()
            self.writer.close()
        if self.fatal is not None:
            raise self.fatal

    async def _worker(self, queue: Any) -> None:
        for key in queue:
            if self.fatal is not None or self.stats.stopped:
                self.stats.not_sent += 1
                continue
            result = await self._request(key)
            if result is None:
                self.stats.not_sent += 1
                continue
            await self.writer.put(result)  # durable before it counts as finished
            self.results[key] = result
            if result.ok:
                self.stats.succeeded += 1
            else:
                self.stats.failed += 1
            self.bar.update(1)
            self.bar.set_postfix(tokens=self.stats.prompt_tokens + self.stats.completion_tokens,
                                 usd=f"{self.stats.cost_usd:.4f}", failed=self.stats.failed, refresh=False)

    def _fits_budget(self, estimate: float) -> bool:
        budget = self.config.budget_usd
        if budget is None or self.stats.cost_usd + self._reserved + estimate <= budget:
            return True
        if not self.stats.stopped:
            self.stats.stopped = "budget"
            logger.warning("budget of $%.4f reached (spent ~$%.4f): no new requests; rerun with a higher "
                           "budget_usd to finish (finished requests are kept)", budget, self.stats.cost_usd)
        return False

    async def _request(self, key: str) -> CachedResult | None:
        """Send one request with retries: a stored result, or None when it was not (fully) sent."""
        req, cfg = self.requests[key], self.config
        estimate = cfg.cost(req.tokens, cfg.max_tokens)
        attempts, raw = 0, ""
        usage = [0, 0]
        try:
            async for attempt in self.policy.retrying():
                with attempt:
                    await self.limiter.acquire(req.tokens + cfg.max_tokens)
                    # no await between the budget check and the reservation: workers cannot both pass
                    if self.fatal is not None or not self._fits_budget(estimate):
                        return None
                    attempts += 1
                    self._reserved += estimate
                    self.stats.sent += 1
                    try:
                        comp = await self.client.complete(req.messages)
                    finally:
                        self._reserved -= estimate
                    self._account(comp.prompt_tokens, comp.completion_tokens, usage)
                    raw = comp.text
                    questions = parse_or_raise(comp.text, cfg.per_chunk)
        except ConfigError as exc:
            self.fatal = self.fatal or exc
            return None
        except (TransientError, RequestError, ParseError) as exc:
            kind = "parse" if isinstance(exc, ParseError) else getattr(exc, "kind", "request")
            logger.debug("request %s for %s failed after %d tries: %s", key[:10], req.chunk_ids[0], attempts, exc)
            return self._result(key, "failed", [], raw, f"{kind}: {exc}", usage, attempts)
        return self._result(key, "ok", questions, raw, None, usage, attempts)

    def _account(self, prompt: int, completion: int, usage: list[int]) -> None:
        usage[0] += prompt
        usage[1] += completion
        self.stats.prompt_tokens += prompt
        self.stats.completion_tokens += completion
        self.stats.cost_usd += self.config.cost(prompt, completion)

    def _result(self, key: str, status: str, questions: list[str], raw: str, error: str | None,
                usage: list[int], attempts: int) -> CachedResult:
        return CachedResult(key, status, questions, raw, error, usage[0], usage[1], attempts, self.client.name,
                            self.prompt_hash)


def _assemble(requests: dict[str, _Request], done: dict[str, CachedResult], model: str, prompt_hash: str,
              language: str, stats: RunStats) -> LLMGenerationResult:
    out = LLMGenerationResult(model=model, prompt_hash=prompt_hash, language=language, stats=stats)
    for key, req in requests.items():
        r = done.get(key)
        if r is None:
            out.pending.extend(req.chunk_ids)
            continue
        if not r.ok:
            for cid in req.chunk_ids:
                out.failed[cid] = r.error or "failed"
            continue
        for i, q in enumerate(r.questions):
            qid = f"llm-{key[:12]}-{i}"
            out.queries[qid] = q
            out.qrels[qid] = {cid: 1 for cid in req.chunk_ids}
            out.metadata[qid] = {"method": "llm", "mask": False, "model": model, "prompt_hash": r.prompt_hash
                                 or prompt_hash, "request_key": key[:16], "language": language}
    if out.failed or out.pending:
        out.note = (f"{len(out.failed)} chunks failed and {len(out.pending)} were not sent; rerun with the same "
                    "cache to retry them")
    return out


def _parse_failures(result: LLMGenerationResult) -> dict[str, str]:
    return {cid: "unparseable reply" for cid, why in result.failed.items() if why.startswith("parse:")}


def _run_coroutine(coro: Coroutine[Any, Any, Any]) -> Any:
    """``asyncio.run``, also from inside a running loop (Jupyter): then in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="ragtune-llm")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def write_llm_result(result: LLMGenerationResult, out_dir: str | Path) -> Path:
    """Write ``gen-queries.jsonl`` (with metadata), ``gen-qrels.tsv`` and ``gen-info.json`` (stats, filter report,
    failures) in the layout of :func:`ragtune.generate.write_generated`; dropped questions go to
    ``gen-dropped.jsonl``."""
    from ragtune._io import atomic_open, atomic_write_json
    from ragtune.data.beir import write_qrels, write_queries

    out = Path(out_dir)
    write_queries(out / "gen-queries.jsonl", result.queries, result.metadata)
    write_qrels(out / "gen-qrels.tsv", result.qrels)
    info = result.info()
    info["chunks"] = len({d for docs in result.qrels.values() for d in docs})
    atomic_write_json(out / "gen-info.json", info)
    with atomic_open(out / "gen-dropped.jsonl") as fh:
        for qid, why in result.report.dropped.items():
            fh.write(json.dumps({"_id": qid, **why}, ensure_ascii=False) + "\n")
    return out
