"""Retrieval systems named by spec strings, so the CLI and configs can compare them without code.

Valid specs:

- ``bm25``                      BM25 (bm25s, k1 0.9, b 0.4, tokenizer by corpus language)
- ``dense`` / ``dense:MODEL``   exact dense search with a sentence-transformers model (default ``minilm``);
                                ``dense(max_length=512):MODEL`` reads up to 512 tokens of each text instead of the
                                model's own ``max_seq_length`` (256 for MiniLM; ``hybrid`` takes it too)
- ``hybrid`` / ``hybrid:MODEL`` reciprocal-rank fusion (k=60) of ``bm25`` and ``dense:MODEL``
- ``hybrid(alpha=0.7):MODEL``   weighted fusion instead: per query, each run's scores are min-max normalised to
                                [0, 1] and fused as ``alpha * dense + (1 - alpha) * bm25`` (a document missing from
                                a run counts 0 there); ``hybrid(rrf_k=30):MODEL`` changes the RRF constant
- ``adapter:DIR``               the frozen encoder recorded in DIR (endpoint or ST model) + its trained adapter

``MODEL`` is everything after the first ``:``, so paths containing ``:`` work (``dense:C:/models/x``); parameters go
in parentheses before that colon. A pipeline adds later stages with ``>``; :data:`STAGES` maps a stage name to its
factory. The one stage is ``rerank`` (:mod:`ragtune.retrieval.rerank`): ``hybrid:MODEL>rerank:CROSS_ENCODER``
reranks the first stage's top 100 with a cross-encoder; ``>rerank(k=50,n=10):CROSS_ENCODER`` takes the top 50 and
keeps 10; ``>rerank(fuse=0.3):CROSS_ENCODER`` blends 30 % of the first stage's normalised score into the
reranker's (also ``batch_size``, ``max_length``, ``threads``). CROSS_ENCODER is a CrossEncoder directory or hub name,
``msmarco-onnx`` or a ``.onnx`` path.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from ragtune.config import EvalConfig
from ragtune.data.beir import Corpus, Queries, Run
from ragtune.errors import ConfigError

logger = logging.getLogger(__name__)

RRF_K = 60
VALID_FORMS = ("bm25", "dense", "dense:MODEL", "dense(max_length=512):MODEL", "hybrid", "hybrid:MODEL",
               "hybrid(alpha=0.7):MODEL", "adapter:DIR",
               "FIRST_STAGE>rerank:CROSS_ENCODER", "FIRST_STAGE>rerank(k=100,n=10):CROSS_ENCODER")
DEFAULT_SYSTEMS = ("bm25", "dense:minilm")

# system name -> (run, timings); a rerank stage also keeps its reranker's pair scores and seconds per query there
RunCache = dict[str, tuple[Run, dict[str, float]]]


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


def weighted_fusion(runs: list[Run], weights: list[float], top_k: int | None = None) -> Run:
    """Fuse runs by a weighted sum of per-query min-max normalised scores (CombSUM with normalisation).

    Each run's scores for a query are mapped to [0, 1] (all equal -> 1); a document a run did not return counts 0
    there. Written here rather than taken from ranx for the reason given in :func:`reciprocal_rank_fusion`.
    """
    if len(runs) != len(weights):
        raise ConfigError(f"weighted_fusion: {len(runs)} runs but {len(weights)} weights")
    fused: Run = {}
    for run, weight in zip(runs, weights, strict=True):
        for qid, docs in run.items():
            acc = fused.setdefault(qid, {})
            if not docs:
                continue
            low, high = min(docs.values()), max(docs.values())
            for did, score in docs.items():
                norm = (score - low) / (high - low) if high > low else 1.0
                acc[did] = acc.get(did, 0.0) + weight * norm
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
    # seconds per query id when the system measured each query itself (a pipeline does); batch systems leave it
    # None and the evaluation reports their search time spread evenly over the queries
    query_latency_s: dict[str, float] | None = None

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def stage_runs(self) -> dict[str, Run]:
        """Runs of the earlier stages of a pipeline after :meth:`search`, by stage system name (none here)."""
        return {}

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
    """Exact dense search (:class:`~ragtune.retrieval.dense.DenseRetriever`); ``max_length`` (tokens read per
    text) defaults to the model's own ``max_seq_length``."""

    def __init__(self, model: Any = "minilm", batch_size: int = 64, block_size: int = 50_000,
                 max_length: int | None = None):
        super().__init__()
        params = "" if max_length is None else f"(max_length={max_length})"
        self.name = f"dense{params}:" + (model if isinstance(model, str) else type(model).__name__)
        self.model = model
        self.batch_size, self.block_size, self.max_length = batch_size, block_size, max_length
        self._retriever = None

    def _search(self, corpus, queries, top_k, cache):
        from ragtune.retrieval.dense import DenseRetriever

        if self._retriever is None:
            self._retriever = DenseRetriever(self.model, batch_size=self.batch_size, block_size=self.block_size,
                                             top_k=top_k, max_length=self.max_length)
        run = self._retriever.search(corpus, queries, top_k)
        self.timings = dict(self._retriever.timings)
        return run


class HybridSystem(RetrievalSystem):
    """Fusion of BM25 and a dense model over each one's top ``top_k``: RRF (default) or weighted by ``alpha``."""

    def __init__(self, model: Any = "minilm", batch_size: int = 64, block_size: int = 50_000, rrf_k: int = RRF_K,
                 fusion: str = "rrf", alpha: float = 0.5, max_length: int | None = None):
        super().__init__()
        if fusion not in ("rrf", "weighted"):
            raise ConfigError(f"hybrid fusion={fusion!r}: use 'rrf' or 'weighted'")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"hybrid alpha={alpha}: the weight on the dense run must be in [0, 1]")
        if rrf_k < 1:
            raise ConfigError(f"hybrid rrf_k={rrf_k}: must be a positive integer (60 is the usual choice)")
        self.bm25 = BM25System()
        self.dense = DenseSystem(model, batch_size, block_size, max_length)
        self.fusion, self.alpha, self.rrf_k = fusion, alpha, rrf_k
        params = [f"alpha={alpha:g}"] if fusion == "weighted" else ([] if rrf_k == RRF_K else [f"rrf_k={rrf_k}"])
        params += [] if max_length is None else [f"max_length={max_length}"]
        self.name = (f"hybrid({','.join(params)}):" if params else "hybrid:") + self.dense.name.split(":", 1)[1]

    def _search(self, corpus, queries, top_k, cache):
        timings = {"index_s": 0.0, "search_s": 0.0}
        runs = []
        for part in (self.bm25, self.dense):
            runs.append(part.search(corpus, queries, top_k, cache))
            for key, seconds in part.timings.items():
                if key.endswith("_s"):
                    timings[key] = timings.get(key, 0.0) + seconds
        start = time.perf_counter()
        if self.fusion == "weighted":
            fused = weighted_fusion(runs, [1.0 - self.alpha, self.alpha], top_k=top_k)
        else:
            fused = reciprocal_rank_fusion(runs, k=self.rrf_k, top_k=top_k)
        timings["search_s"] += time.perf_counter() - start
        self.timings = timings
        return fused


def _rerank_stage(arg: str, first: RetrievalSystem, params: dict[str, str]) -> RetrievalSystem:
    from ragtune.retrieval.rerank import rerank_factory  # imports this module; loaded on first use

    return rerank_factory(arg, first, params)


# Later stages of a pipeline, by name: factory(argument, previous_system, parameters) -> RetrievalSystem.
STAGES: dict[str, Callable[[str, RetrievalSystem, dict[str, str]], RetrievalSystem]] = {"rerank": _rerank_stage}

_HEAD = re.compile(r"^\s*([A-Za-z_][\w-]*)\s*(?:\((.*)\))?\s*$")


def _split_head(spec: str, head: str) -> tuple[str, dict[str, str]]:
    """``"hybrid(alpha=0.7, rrf_k=30)"`` -> ``("hybrid", {"alpha": "0.7", "rrf_k": "30"})``."""
    match = _HEAD.match(head)
    if match is None:
        raise _invalid(spec, f"cannot read {head.strip()!r}; parameters go in parentheses, e.g. hybrid(alpha=0.7)")
    params: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in (match.group(2) or "").split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise _invalid(spec, f"parameter {item!r} is not key=value")
        params[key.strip().lower()] = value.strip()
    return match.group(1).lower(), params


def _max_length(spec: str, params: dict[str, str]) -> int | None:
    if "max_length" not in params:
        return None
    try:
        value = int(params["max_length"])
    except ValueError:
        value = 0
    if value < 1:
        raise _invalid(spec, f"max_length={params['max_length']!r} must be a positive number of tokens, e.g. 512")
    return value


def _dense(spec: str, model: str, params: dict[str, str], cfg: EvalConfig) -> DenseSystem:
    unknown = sorted(set(params) - {"max_length"})
    if unknown:
        raise _invalid(spec, f"dense has no parameter {unknown}; use max_length (tokens read per text)")
    return DenseSystem(model, batch_size=cfg.batch_size, block_size=cfg.block_size,
                       max_length=_max_length(spec, params))


def _hybrid(spec: str, model: str, params: dict[str, str], cfg: EvalConfig) -> HybridSystem:
    unknown = sorted(set(params) - {"alpha", "fusion", "rrf_k", "max_length"})
    if unknown:
        raise _invalid(spec, f"hybrid has no parameter {unknown}; use alpha (weighted fusion), fusion (rrf|weighted), "
                             "rrf_k or max_length")
    try:
        alpha = float(params.get("alpha", 0.5))
        rrf_k = int(params.get("rrf_k", RRF_K))
    except ValueError:
        raise _invalid(spec, "alpha must be a number in [0, 1] and rrf_k an integer") from None
    fusion = params.get("fusion", "weighted" if "alpha" in params else "rrf").lower()
    return HybridSystem(model, batch_size=cfg.batch_size, block_size=cfg.block_size, rrf_k=rrf_k, fusion=fusion,
                        alpha=alpha, max_length=_max_length(spec, params))


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
    head, sep, arg = first.partition(":")
    kind, params = _split_head(spec, head)
    if params and kind not in ("dense", "hybrid"):
        raise _invalid(spec, f"{kind} takes no parameters in parentheses")
    if sep and not arg.strip():
        raise _invalid(spec, f"nothing after '{kind}:'; name a model or drop the colon")
    arg = arg.strip() or "minilm"
    if kind == "bm25":
        if sep:
            raise _invalid(spec, "bm25 takes no argument")
        system: RetrievalSystem = BM25System()
    elif kind == "dense":
        system = _dense(spec, arg, params, cfg)
    elif kind == "hybrid":
        system = _hybrid(spec, arg, params, cfg)
    elif kind == "adapter" and sep:
        from ragtune.adapters.system import AdapterSystem  # issue 6: DIR written by `ragtune train adapter`

        system = AdapterSystem(arg)
    else:
        raise _invalid(spec, f"unknown retriever {kind!r}")
    for stage in stages:
        stage_head, _, stage_arg = stage.partition(":")
        name, stage_params = _split_head(spec, stage_head or stage)
        factory = STAGES.get(name)
        if factory is None:
            raise _invalid(spec, f"unknown pipeline stage {name!r} (known: {', '.join(STAGES)})")
        system = factory(stage_arg.strip(), system, stage_params)
    return system
