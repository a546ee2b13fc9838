"""Compare retrieval systems on one BEIR dataset: metrics, 95% bootstrap CIs, paired tests, timings.

``report = evaluate_systems(dataset, ["bm25", "dense:minilm"])`` returns an :class:`EvalReport` that prints as a
markdown table and saves as JSON (with per-query scores, which the HTML report and later significance tests use).

A pipeline (``hybrid>rerank:MODEL``) is scored at every stage: its entry holds the final (reranked) scores as any
system's do, plus ``first_stage`` with the first stage's means, CIs, its recall@100 (the most the reranker can reach)
and the paired p-values of the reranked scores against it. Every system's timings carry per-query latency
percentiles (``latency_p50_ms`` / ``p95`` / ``p99`` / ``mean``): measured per query for a pipeline (its first-stage
share plus the reranking of that query), the batch search time spread evenly for a one-stage system
(``latency_measured`` 1.0 or 0.0 says which).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragtune._io import atomic_write_json
from ragtune.config import EvalConfig
from ragtune.data.beir import BeirDataset, Run
from ragtune.errors import ConfigError, DataFormatError
from ragtune.evaluate.metrics import METRICS, PRIMARY_METRIC, evaluate_run
from ragtune.evaluate.stats import bootstrap_ci, paired_test
from ragtune.retrieval.systems import RetrievalSystem, RunCache, parse_system

logger = logging.getLogger(__name__)

SIGNIFICANCE = 0.05
PAIRED_TEST = "wilcoxon"


@dataclass
class SystemResult:
    """One system's scores on the dataset."""

    name: str
    means: dict[str, float]
    ci: dict[str, tuple[float, float]]  # empty when bootstrap = 0
    per_query: dict[str, dict[str, float]]  # metric -> query_id -> score
    p_values: dict[str, float]  # metric -> p-value vs the baseline (empty for the baseline itself)
    timings: dict[str, float]  # load_s (model), index_s, search_s, total_s (as if run alone), wall_s (this call),
    # queries_per_s, latency_p50_ms / latency_p95_ms / latency_p99_ms / latency_mean_ms, latency_measured
    run: Run | None = None
    # a pipeline's first stage: {"name", "means", "ci95", "recall@100", "p_values" (reranked vs first stage)}
    first_stage: dict[str, Any] | None = None

    def to_dict(self, per_query: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "means": self.means,
            "ci95": {m: list(v) for m, v in self.ci.items()},
            "p_values": self.p_values,
            "timings": self.timings,
        }
        if self.first_stage is not None:
            out["first_stage"] = self.first_stage
        if per_query:
            out["per_query"] = self.per_query
        return out


@dataclass
class EvalReport:
    """Results of :func:`evaluate_systems`, in the order the systems were given."""

    dataset: str
    num_queries: int
    num_docs: int
    baseline: str
    systems: dict[str, SystemResult]
    config: dict[str, Any] = field(default_factory=dict)
    metrics: tuple[str, ...] = METRICS
    paired_test: str = PAIRED_TEST

    @property
    def means(self) -> dict[str, dict[str, float]]:
        return {name: r.means for name, r in self.systems.items()}

    @property
    def runs(self) -> dict[str, Run]:
        return {name: r.run for name, r in self.systems.items() if r.run is not None}

    def to_dict(self, per_query: bool = True) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "num_queries": self.num_queries,
            "num_docs": self.num_docs,
            "metrics": list(self.metrics),
            "primary_metric": PRIMARY_METRIC,
            "baseline": self.baseline,
            "paired_test": self.paired_test,
            "config": self.config,
            "systems": {name: r.to_dict(per_query) for name, r in self.systems.items()},
        }

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON (atomically)."""
        path = Path(path)
        atomic_write_json(path, self.to_dict())
        return path

    def cell(self, system: str, metric: str) -> str:
        """``0.6451 [0.610, 0.680]``, with ``*`` when it differs from the baseline at p < 0.05."""
        r = self.systems[system]
        text = f"{r.means[metric]:.4f}"
        if metric in r.ci:
            low, high = r.ci[metric]
            text += f" [{low:.3f}, {high:.3f}]"
        if r.p_values.get(metric, 1.0) < SIGNIFICANCE:
            text += " *"
        return text

    def p_value_text(self, system: str, metric: str = PRIMARY_METRIC) -> str:
        p = self.systems[system].p_values.get(metric)
        if p is None:
            return "baseline"
        return f"{p:.2g}{' *' if p < SIGNIFICANCE else ''}"

    def latency_text(self, system: str) -> str:
        """``"3.1 / 4.0 / 9.2"``: per-query latency p50 / p95 / p99 in ms (``~`` marks a batch average)."""
        t = self.systems[system].timings
        if "latency_p50_ms" not in t:
            return "n/a"
        text = " / ".join(f"{t[f'latency_{p}_ms']:.1f}" for p in ("p50", "p95", "p99"))
        return text if t.get("latency_measured") else f"~{text}"

    def to_markdown(self) -> str:
        header = ["system", *self.metrics, f"p ({PRIMARY_METRIC} vs {self.baseline})", "seconds", "queries/s",
                  "ms/query p50 / p95 / p99"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for name, r in self.systems.items():
            row = [name, *(self.cell(name, m) for m in self.metrics), self.p_value_text(name),
                   f"{r.timings.get('total_s', 0.0):.1f}", f"{r.timings.get('queries_per_s', 0.0):.1f}",
                   self.latency_text(name)]
            lines.append("| " + " | ".join(row) + " |")
            if r.first_stage is not None:
                fs = r.first_stage
                cells = []
                for m in self.metrics:
                    text = f"{fs['means'][m]:.4f}"
                    if m in fs.get("ci95", {}):
                        text += " [{:.3f}, {:.3f}]".format(*fs["ci95"][m])
                    cells.append(text)
                p = fs.get("p_values", {}).get(PRIMARY_METRIC)
                p_text = f"reranked vs this: {p:.2g}{' *' if p < SIGNIFICANCE else ''}" if p is not None else ""
                lines.append("| " + " | ".join([f"↳ first stage {fs['name']}", *cells, p_text, "", "", ""]) + " |")
        ci = (f"95% bootstrap CI ({self.config.get('bootstrap')} resamples) in brackets; "
              if self.config.get("bootstrap") else "")
        lines.append("")
        lines.append(f"{self.dataset}: {self.num_queries} queries, {self.num_docs} documents. {ci}"
                     f"* = differs from {self.baseline} at p < {SIGNIFICANCE} (paired {self.paired_test} test). "
                     "Latency: measured per query for pipelines; ~ = batch search time / queries.")
        for name, r in self.systems.items():
            if r.first_stage is not None:
                lines.append(f"{name}: the first stage's recall@100 is {r.first_stage['recall@100']:.4f}, the most "
                             "any reranking of its candidates can reach.")
        return "\n".join(lines) + "\n"


def _timings(system: RetrievalSystem, elapsed: float, num_queries: int) -> dict[str, float]:
    """Index and search seconds as if the system ran alone (a hybrid counts its parts even when reused), plus
    per-query latency percentiles in ms and the system's own extra timings (a pipeline's ``rerank_s``, ...)."""
    import numpy as np

    load_s = float(system.timings.get("load_s", 0.0))
    index_s = float(system.timings.get("index_s", 0.0))
    search_s = float(system.timings.get("search_s", 0.0))
    out = {k: float(v) for k, v in system.timings.items() if k not in ("load_s", "index_s", "search_s")}
    out.update({"load_s": load_s, "index_s": index_s, "search_s": search_s,
                "total_s": max(elapsed, load_s + index_s + search_s),
                "wall_s": elapsed, "queries_per_s": num_queries / search_s if search_s > 0 else 0.0})
    measured = system.query_latency_s
    per_query = (np.asarray(list(measured.values()), dtype=float) if measured else
                 np.full(max(1, num_queries), search_s / max(1, num_queries)))
    p50, p95, p99 = np.percentile(per_query, [50, 95, 99]) * 1000.0
    out.update({"latency_p50_ms": float(p50), "latency_p95_ms": float(p95), "latency_p99_ms": float(p99),
                "latency_mean_ms": float(per_query.mean() * 1000.0), "latency_measured": 1.0 if measured else 0.0})
    return out


def _first_stage(system: RetrievalSystem, dataset: BeirDataset, qids: list[str], final: dict[str, dict[str, float]],
                 cfg: EvalConfig) -> dict[str, Any] | None:
    """Scores of a pipeline's first stage, and paired p-values of the final scores against them."""
    stages = system.stage_runs()
    if not stages:
        return None
    name, run = next(iter(stages.items()))
    scores = evaluate_run(dataset.qrels, run)
    ci = {}
    for metric in METRICS:
        interval = bootstrap_ci([scores.per_query[metric][q] for q in qids], cfg.bootstrap, seed=cfg.seed)
        if interval is not None:
            ci[metric] = list(interval)
    p_values = {m: paired_test([final[m][q] for q in qids], [scores.per_query[m][q] for q in qids],
                               method=PAIRED_TEST, seed=cfg.seed) for m in METRICS}
    return {"name": name, "means": scores.means, "ci95": ci, "recall@100": scores.means["recall@100"],
            "p_values": p_values}


def evaluate_systems(
    dataset: BeirDataset,
    systems: list[str | RetrievalSystem] | dict[str, str | RetrievalSystem],
    config: EvalConfig | None = None,
    baseline: str | None = None,
    *,
    keep_runs: bool = False,
) -> EvalReport:
    """Run every system on ``dataset`` and score it over the queries judged in ``dataset.qrels``.

    ``systems`` is a list of specs (or system objects), or a dict ``{name: spec}`` to show each under a short name.
    ``baseline`` (a system name, default the first) is what every other system's paired p-values compare to.
    ``keep_runs`` keeps each system's run in the report (for ``--save-runs`` or fusion afterwards).
    """
    cfg = config or EvalConfig()
    if not systems:
        raise ConfigError("systems is empty: give at least one system spec, e.g. ['bm25', 'dense:minilm']")
    parsed = []
    for name, spec in (systems.items() if isinstance(systems, dict) else ((None, s) for s in systems)):
        system = parse_system(spec, cfg)
        if name is not None:
            system.name = name
        parsed.append(system)
    names = [s.name for s in parsed]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"systems {duplicates} are given more than once; list each system once")
    base = baseline or names[0]
    if base not in names:
        raise ConfigError(f"baseline={base!r} is not one of the systems ({', '.join(names)})")
    if cfg.top_k < 100:
        logger.warning("top_k=%d: recall@100 and map@100 only see the top %d documents", cfg.top_k, cfg.top_k)
    queries = {q: dataset.queries[q] for q in dataset.qrels if q in dataset.queries}
    empty = [q for q, text in queries.items() if not isinstance(text, str) or not text.strip()]
    if empty:
        raise DataFormatError(f"dataset {dataset.name!r}: query {empty[0]!r} is empty"
                              + (f" (and {len(empty) - 1} more)" if len(empty) > 1 else "")
                              + "; give it text or remove it from the queries and qrels")
    if not queries:
        raise ConfigError(f"dataset {dataset.name!r}: no judged query has text; check the queries/qrels files")
    qids = list(dataset.qrels)

    cache: RunCache = {}
    results: dict[str, SystemResult] = {}
    for system in parsed:
        logger.info("evaluating %s on %s", system.name, dataset.summary())
        start = time.perf_counter()
        run = system.search(dataset.corpus, queries, cfg.top_k, cache=cache)
        elapsed = time.perf_counter() - start
        scores = evaluate_run(dataset.qrels, run)
        ci: dict[str, tuple[float, float]] = {}
        for metric in METRICS:
            interval = bootstrap_ci([scores.per_query[metric][q] for q in qids], cfg.bootstrap, seed=cfg.seed)
            if interval is not None:
                ci[metric] = interval
        results[system.name] = SystemResult(system.name, scores.means, ci, scores.per_query, {},
                                            _timings(system, elapsed, len(queries)),
                                            run if keep_runs else None,
                                            _first_stage(system, dataset, qids, scores.per_query, cfg))
        logger.info("%s: %s %.4f (%.1f s)", system.name, PRIMARY_METRIC, scores.means[PRIMARY_METRIC], elapsed)

    ref = results[base]
    for name, result in results.items():
        if name == base:
            continue
        for metric in METRICS:
            result.p_values[metric] = paired_test([result.per_query[metric][q] for q in qids],
                                                  [ref.per_query[metric][q] for q in qids],
                                                  method=PAIRED_TEST, seed=cfg.seed)
    return EvalReport(dataset=dataset.name, num_queries=len(qids), num_docs=len(dataset.corpus), baseline=base,
                      systems=results, config=cfg.model_dump(mode="json"))
