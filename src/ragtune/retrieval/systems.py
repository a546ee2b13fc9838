"""Retrieval systems named by spec strings, so the CLI and configs can compare them without code.

Valid specs:

- ``bm25``                      BM25 (bm25s, k1 0.9, b 0.4, tokenizer by corpus language)
- ``dense`` / ``dense:MODEL``   exact dense search with a sentence-transformers model (default ``minilm``)
- ``hybrid`` / ``hybrid:MODEL`` reciprocal-rank fusion (k=60) of ``bm25`` and ``dense:MODEL``
- ``adapter:DIR``               the frozen encoder recorded in DIR (endpoint or ST model) + its trained adapter

``MODEL`` is everything after the first ``:``, so paths containing ``:`` work (``dense:C:/models/x``).
A pipeline adds later stages with ``>`` (``hybrid:MODEL>rerank:CROSS_ENCODER``); the parser splits them here
and :data:`STAGES` is the seam where stage factories register (rerank arrives in a later issue).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ragtune.config import EvalConfig
from ragtune.data.beir import Corpus, Queries, Run
from ragtune.errors import ConfigError

logger = logging.getLogger(__name__)

RRF_K = 60
VALID_FORMS = ("bm25", "dense", "dense:MODEL", "hybrid", "hybrid:MODEL", "adapter:DIR",
               "FIRST_STAGE>rerank:MODEL (later)")
DEFAULT_SYSTEMS = ("bm25", "dense:minilm")

RunCache = dict[str, tuple[Run, dict[str, float]]]  # system name -> (run, timings)


def reciprocal_rank_fusion(runs: list[Run], k: int = RRF_K, top_k: int | None = None) -> Run:
    """Fuse runs by reciprocal rank (Cormack et al. 2009): ``score(d) = sum over runs of 1 / (k + rank(d))``.

    Written here rather than taken from ranx because RRF is five lines and ranx (with numba) is not a
    dependency; ties in a run are ranked by doc id so the result does not depend on dict order.
    """
    fused: Run = {}
    for run in runs:
        for qid, docs in run.items():
            acc = fused.setdefault(qid, {})
            for rank, (did, _) in enumerate(sorted(docs.items(), key=lambda kv: (-kv[1], kv[0])), 1):
                acc[did] = acc.get(did, 0.0) + 1.0 / (k + rank)
    if top_k is not None:
        fused = {q: dict(sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]) for q, d in fused.items()}
    return fused


class RetrievalSystem:
    """A named first-stage retriever: ``run = system.search(corpus, queries, top_k)``.

    ``cache`` (optional, shared by the systems of one evaluation) maps a system name to its run and timings,
    so ``hybrid:minilm`` reuses the runs of ``bm25`` and ``dense:minilm`` instead of searching twice.
    ``timings`` holds ``index_s`` (indexing / corpus encoding) and ``search_s`` of the last search, counted as
    if the system ran alone (a reused run keeps the timings it was made with, flagged ``reused``).
    """

    name: str = ""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def search(self, corpus: Corpus, queries: Queries, top_k: int = 100, cache: RunCache | None = None) -> Run:
        if cache is not None and self.name in cache:
            run, timings = cache[self.name]
            self.timings = {**timings, "reused": 1.0}
            return run
        run = self._search(corpus, queries, top_k, cache)
        if cache is not None:
            cache[self.name] = (run, dict(self.timings))
        return run

    def _search(self, corpus: Corpus, queries: Queries, top_k: int, cache: RunCache | None) -> Run:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class BM25System(RetrievalSystem):
    def __init__(self, k1: float = 0.9, b: float = 0.4, language: str = "auto", *, stem: bool = True,
                 name: str = "bm25"):
        super().__init__()
        self.name = name
        self.params = {"k1": k1, "b": b, "language": language, "stem": stem}

    def _search(self, corpus, queries, top_k, cache):
        from ragtune.retrieval.bm25 import BM25Retriever

        retriever = BM25Retriever(**self.params).index(corpus)
        run = retriever.search(queries, top_k)
        self.timings = dict(retriever.timings)
        return run


class DenseSystem(RetrievalSystem):
    def __init__(self, model: Any = "minilm", batch_size: int = 64, block_size: int = 50_000):
        super().__init__()
        self.name = f"dense:{model}" if isinstance(model, str) else f"dense:{type(model).__name__}"
        self.model = model
        self.batch_size, self.block_size = batch_size, block_size
        self._retriever = None

    def _search(self, corpus, queries, top_k, cache):
        from ragtune.retrieval.dense import DenseRetriever

        if self._retriever is None:
            self._retriever = DenseRetriever(self.model, batch_size=self.batch_size, block_size=self.block_size,
                                             top_k=top_k)
        run = self._retriever.search(corpus, queries, top_k)
        self.timings = dict(self._retriever.timings)
        return run


class HybridSystem(RetrievalSystem):
    """RRF of BM25 and a dense model over each one's top ``top_k``."""

    def __init__(self, model: Any = "minilm", batch_size: int = 64, block_size: int = 50_000, rrf_k: int = RRF_K):
        super().__init__()
        self.bm25 = BM25System()
        self.dense = DenseSystem(model, batch_size, block_size)
        self.name = "hybrid:" + self.dense.name.split(":", 1)[1]
        self.rrf_k = rrf_k

    def _search(self, corpus, queries, top_k, cache):
        timings = {"index_s": 0.0, "search_s": 0.0}
        runs = []
        for part in (self.bm25, self.dense):
            runs.append(part.search(corpus, queries, top_k, cache))
            for key, seconds in part.timings.items():
                if key.endswith("_s"):
                    timings[key] = timings.get(key, 0.0) + seconds
        start = time.perf_counter()
        fused = reciprocal_rank_fusion(runs, k=self.rrf_k, top_k=top_k)
        timings["search_s"] += time.perf_counter() - start
        self.timings = timings
        return fused


def _not_yet(stage: str) -> Callable[..., Any]:
    def factory(arg: str, first: RetrievalSystem) -> RetrievalSystem:
        raise ConfigError(f"--system '{first.name}>{stage}:{arg}': {stage} stages are not available yet in this "
                          f"version of ragtune; evaluate the first stage alone (--system {first.name}).")

    return factory


# Later stages of a pipeline, by name: factory(argument, previous_system) -> RetrievalSystem.
STAGES: dict[str, Callable[[str, RetrievalSystem], RetrievalSystem]] = {"rerank": _not_yet("rerank")}


def _invalid(spec: str, why: str) -> ConfigError:
    return ConfigError(f"--system {spec!r}: {why}. Valid forms: {', '.join(VALID_FORMS)} "
                       "(MODEL: 'minilm', a sentence-transformers directory or a hub name).")


def parse_system(spec: str | RetrievalSystem, config: EvalConfig | None = None) -> RetrievalSystem:
    """Build the :class:`RetrievalSystem` a spec string names (a system object passes through)."""
    if isinstance(spec, RetrievalSystem):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise _invalid(str(spec), "empty system spec")
    cfg = config or EvalConfig()
    first, *stages = [part.strip() for part in spec.strip().split(">")]
    kind, sep, arg = first.partition(":")
    kind = kind.strip().lower()
    if sep and not arg.strip():
        raise _invalid(spec, f"nothing after '{kind}:'; name a model or drop the colon")
    arg = arg.strip() or "minilm"
    if kind == "bm25":
        if sep:
            raise _invalid(spec, "bm25 takes no argument")
        system: RetrievalSystem = BM25System()
    elif kind == "dense":
        system = DenseSystem(arg, batch_size=cfg.batch_size, block_size=cfg.block_size)
    elif kind == "hybrid":
        system = HybridSystem(arg, batch_size=cfg.batch_size, block_size=cfg.block_size)
    elif kind == "adapter" and sep:
        from ragtune.adapters.system import AdapterSystem  # issue 6: DIR written by `ragtune train adapter`

        system = AdapterSystem(arg)
    else:
        raise _invalid(spec, f"unknown retriever {kind!r}")
    for stage in stages:
        name, _, stage_arg = stage.partition(":")
        factory = STAGES.get(name.strip().lower())
        if factory is None:
            raise _invalid(spec, f"unknown pipeline stage {name!r} (known: {', '.join(STAGES)})")
        system = factory(stage_arg.strip(), system)
    return system
