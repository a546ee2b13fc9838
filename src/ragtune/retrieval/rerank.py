"""Second-stage reranking: a cross-encoder rescores the first stage's top ``k`` and keeps the best ``n``.

The scorers (CrossEncoder directories, ONNX models, ``msmarco`` / ``msmarco-onnx``) live in
:mod:`ragtune.retrieval.scorers` and are re-exported here.

Pipeline spec (see :mod:`ragtune.retrieval.systems`): ``FIRST>rerank:MODEL`` or ``FIRST>rerank(k=100,n=10):MODEL``.
``k`` = candidates taken from the first stage (default: the evaluation's ``top_k``, 100, capped at the corpus size;
an explicit ``k`` larger than the corpus is an error), ``n`` = documents kept after reranking (default ``k``),
``fuse`` = weight kept on the first stage's scores (default 0: the reranker's order; see :func:`fuse_reranked`), and
``batch_size`` / ``max_length`` tune the scorer. MODEL is everything after the first ``:`` (paths with ``:`` work).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ragtune.data.beir import Corpus, Queries, Run
from ragtune.errors import ConfigError, DataFormatError
from ragtune.retrieval.bm25 import doc_text
from ragtune.retrieval.scorers import (  # noqa: F401  (re-exported: the scorers used to live here)
    _FIX,
    DEFAULT_MAX_LENGTH,
    MSMARCO,
    MSMARCO_ONNX,
    CrossEncoderScorer,
    OnnxCrossEncoder,
    Scorer,
    check_cross_encoder_dir,
    load_scorer,
    msmarco_onnx_dir,
)
from ragtune.retrieval.systems import RetrievalSystem, RunCache, weighted_fusion

logger = logging.getLogger(__name__)


# --- the pipeline stage -------------------------------------------------------------------------------------------


def check_queries(queries: Queries) -> None:
    """Raise :class:`DataFormatError` naming the first queries whose text is empty."""
    empty = [q for q, text in queries.items() if not isinstance(text, str) or not text.strip()]
    if empty:
        raise DataFormatError(f"query {empty[0]!r} is empty" + (f" (and {len(empty) - 1} more: {empty[1:4]})"
                                                               if len(empty) > 1 else "")
                              + "; give every query some text or drop it from the queries file and the qrels")


def stage_name(model: str, k: int | None, n: int | None, extra: dict[str, Any] | None = None) -> str:
    params = {"k": k, "n": n, **(extra or {})}
    shown = ",".join(f"{key}={value}" for key, value in params.items() if value is not None)
    return f"rerank({shown}):{model}" if shown else f"rerank:{model}"


class RerankSystem(RetrievalSystem):
    """``first`` retrieves ``k`` candidates per query; ``reranker`` rescores them; the top ``n`` are returned.

    With ``fuse`` > 0 the top ``n`` are taken from a blend of both stages' scores (:func:`fuse_reranked`).

    After :meth:`search`, ``first_run`` holds the first stage's run (so an evaluation can score both stages),
    ``rerank_run`` the reranker's own scores of every candidate, and ``query_latency_s`` the latency of each query:
    its share of the first stage's batch search time plus the time the reranker took on that query's candidates
    (each query is scored in one ``predict`` call; a query whose pairs an earlier system of the same evaluation
    scored with the same reranker keeps the time they took then).
    """

    def __init__(self, first: RetrievalSystem, reranker: Any, *, k: int | None = None, n: int | None = None,
                 fuse: float = 0.0, batch_size: int = 32, max_length: int = DEFAULT_MAX_LENGTH,
                 device: str | None = None, threads: int | None = None, name: str | None = None) -> None:
        super().__init__()
        if not isinstance(fuse, int | float) or not 0.0 <= fuse < 1.0:
            raise ConfigError(f"rerank fuse={fuse!r}: the weight kept on the first stage's scores must be in [0, 1) "
                              "(0 = rank by the reranker alone, e.g. 0.3 to blend)")
        for arg, value in (("k", k), ("n", n), ("batch_size", batch_size), ("max_length", max_length)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"rerank {arg}={value!r}: must be a positive integer")
        if k is not None and n is not None and n > k:
            raise ConfigError(f"rerank n={n} is larger than k={k}: the reranker can only return the k candidates it "
                              "was given; lower n or raise k")
        self.first, self.k, self.n, self.fuse = first, k, n, float(fuse)
        self.batch_size, self.max_length, self.device, self.threads = batch_size, max_length, device, threads
        is_spec = isinstance(reranker, str | Path)
        self.reranker = str(reranker) if is_spec else type(reranker).__name__
        self._scorer = None if is_spec else load_scorer(reranker)
        self._scores_key = f"rerank-scores:{self.reranker if is_spec else id(self._scorer)}@{max_length}"
        extra: dict[str, Any] = {"fuse": f"{self.fuse:g}"} if self.fuse else {}
        if max_length != DEFAULT_MAX_LENGTH:
            extra["max_length"] = max_length
        self.name = name or f"{first.name}>{stage_name(self.reranker, k, n, extra)}"
        self.first_run: Run = {}
        self.rerank_run: Run = {}
        self.query_latency_s: dict[str, float] = {}

    @property
    def scorer(self) -> Any:
        if self._scorer is None:
            self._scorer = load_scorer(self.reranker, max_length=self.max_length, device=self.device,
                                       threads=self.threads)
        return self._scorer

    def stage_runs(self) -> dict[str, Run]:
        return {self.first.name: self.first_run} if self.first_run else {}

    def _search(self, corpus: Corpus, queries: Queries, top_k: int, cache: RunCache | None) -> Run:
        check_queries(queries)
        if self.k is not None and self.k > len(corpus):
            raise ConfigError(f"rerank k={self.k} is larger than the corpus ({len(corpus)} documents): the first stage "
                              f"cannot return {self.k} candidates. Use k <= {len(corpus)} (e.g. "
                              f"rerank(k={len(corpus)}):{self.reranker}) or leave k out to take the top {top_k}")
        k = self.k or min(top_k, len(corpus))
        n = min(self.n or k, k)
        # scores of (query, candidate) pairs by this reranker, shared through the evaluation's cache: blends and
        # other depths of the same reranker reuse them (with the seconds each query took when it was scored)
        memo, memo_s = cache.setdefault(self._scores_key, ({}, {})) if cache is not None else ({}, {})
        start = time.perf_counter()
        if not memo:
            _ = self.scorer  # loaded first: a bad reranker path fails before the first stage runs
        load_s = time.perf_counter() - start
        # a cached first-stage run holds top_k documents; one deeper than that must be searched afresh
        first_run = self.first.search(corpus, queries, k, cache if k <= top_k else None)
        first_t = dict(self.first.timings)
        self.first_run = {q: dict(sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))[:k]) for q, d in first_run.items()}
        first_share = float(first_t.get("search_s", 0.0)) / max(1, len(queries))
        run: Run = {}
        self.rerank_run = {}
        latency: dict[str, float] = {}
        rerank_s, n_pairs, reused = 0.0, 0, 0
        for qid, query in queries.items():
            cands = list(self.first_run.get(qid, {}))
            known = memo.setdefault(qid, {})
            todo = [d for d in cands if d not in known]
            if todo:
                start = time.perf_counter()
                scores = self.scorer.predict([(query, doc_text(corpus[d])) for d in todo], batch_size=self.batch_size)
                elapsed = time.perf_counter() - start
                known.update(zip(todo, (float(x) for x in scores), strict=True))
                memo_s[qid] = memo_s.get(qid, 0.0) + elapsed
            else:
                reused += 1
            elapsed = memo_s.get(qid, 0.0) * len(cands) / max(1, len(known))  # as if this query ran alone
            ranked = sorted(((d, known[d]) for d in cands), key=lambda kv: (-kv[1], kv[0]))
            self.rerank_run[qid] = dict(ranked)
            run[qid] = dict(ranked[:n])
            latency[qid] = first_share + elapsed
            rerank_s += elapsed
            n_pairs += len(cands)
        if self.fuse:
            run = fuse_reranked(self.first_run, self.rerank_run, self.fuse, n)
        self.query_latency_s = latency
        self.timings = {"load_s": float(first_t.get("load_s", 0.0)) + load_s,
                        "index_s": float(first_t.get("index_s", 0.0)),
                        "search_s": float(first_t.get("search_s", 0.0)) + rerank_s,
                        "first_stage_search_s": float(first_t.get("search_s", 0.0)), "rerank_s": rerank_s,
                        "rerank_pairs": float(n_pairs),
                        "rerank_pairs_per_s": n_pairs / rerank_s if rerank_s > 0 else 0.0}
        if reused:
            self.timings["rerank_queries_reused"] = float(reused)
        logger.info("reranked %d candidates of %d queries with %s in %.1f s", n_pairs, len(queries), self.reranker,
                    rerank_s)
        return run


def rerank_spec(first: str, reranker: str | Path, k: int | None = None, fuse: float = 0.0) -> str:
    """The spec of ``first`` reranked by ``reranker`` over its top ``k`` (None: the evaluation's top_k), blended
    with the first stage's scores at weight ``fuse``: ``first>rerank(k=20,fuse=0.25):RERANKER``."""
    params = ([f"k={k}"] if k else []) + ([f"fuse={fuse:g}"] if fuse else [])
    return f"{first}>rerank({','.join(params)}):{reranker}" if params else f"{first}>rerank:{reranker}"


def fuse_reranked(first_run: Run, rerank_run: Run, weight: float, n: int | None = None) -> Run:
    """Blend a reranker with the first stage it reranked: per query, both runs' scores over the same candidates
    are min-max normalised and summed as ``weight * first + (1 - weight) * reranker``; the top ``n`` (default:
    all) are kept, best first.

    Blending keeps what the first stage knew (e.g. the exact term matches of BM25 in a hybrid) that a cross-encoder
    trained on another domain can miss; ``weight`` 0 is the reranker alone.
    """
    deepest = max((len(docs) for docs in rerank_run.values()), default=0)
    return weighted_fusion([first_run, rerank_run], [weight, 1.0 - weight], top_k=n or deepest)


def rerank_factory(arg: str, first: RetrievalSystem, params: dict[str, str]) -> RetrievalSystem:
    """``STAGES["rerank"]``: ``rerank:MODEL`` / ``rerank(k=100,n=10,fuse=0.3,batch_size=32,max_length=256):MODEL``."""
    if not arg:
        raise ConfigError(f"--system '{first.name}>rerank': name the reranker after 'rerank:'; {_FIX}")
    known = {"k", "n", "fuse", "batch_size", "max_length", "threads"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"--system '{first.name}>rerank(...)': unknown parameter(s) {unknown}; known: "
                          f"{', '.join(sorted(known))} (e.g. rerank(k=100,n=10):{arg})")
    values: dict[str, Any] = {}
    for key, raw in params.items():
        try:
            values[key] = float(raw) if key == "fuse" else int(raw)
        except ValueError:
            kind = "a number in [0, 1)" if key == "fuse" else "an integer"
            raise ConfigError(f"--system '{first.name}>rerank(...)': {key}={raw!r} is not {kind}") from None
    return RerankSystem(first, arg, **values)
