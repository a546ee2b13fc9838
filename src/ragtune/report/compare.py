"""Per-query analyses for the report: recall@k curves, score changes against the baseline, worst and best queries.

All functions take the plain shapes (qrels, runs, per-query scores) and return JSON-able dicts, so the report data
stays a plain object that ``report.json`` holds and every renderer reads.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ragtune.data.beir import Corpus, Qrels, Queries, Run

logger = logging.getLogger(__name__)

MAX_K = 100
EXAMPLES = 5
SHOWN_PER_SYSTEM = 3


def _positives(qrels: Qrels) -> dict[str, set[str]]:
    return {q: {d for d, s in docs.items() if s > 0} for q, docs in qrels.items()
            if any(s > 0 for s in docs.values())}


def ranked(run_for_query: dict[str, float]) -> list[str]:
    """Document ids best first; equal scores keep a stable order by id, so the result is deterministic."""
    return [d for d, _ in sorted(run_for_query.items(), key=lambda kv: (-kv[1], kv[0]))]


def recall_curve(qrels: Qrels, run: Run, max_k: int = MAX_K) -> list[float]:
    """Mean recall@k for k = 1..max_k over the judged queries (a query missing from the run counts as 0)."""
    positives = _positives(qrels)
    if not positives:
        return []
    found = np.zeros(max_k, dtype=float)
    for qid, rel in positives.items():
        hits = np.zeros(max_k, dtype=float)
        for rank, did in enumerate(ranked(run.get(qid, {}))[:max_k]):
            if did in rel:
                hits[rank] += 1.0
        found += np.cumsum(hits) / len(rel)
    return [round(float(v), 4) for v in found / len(positives)]


def recall_curves(qrels: Qrels, runs: dict[str, Run], max_k: int = MAX_K) -> dict[str, Any] | None:
    """``{"k": [1..K], "systems": {name: [recall@1..recall@K]}}`` (K = the deepest ranking seen, at most 100)."""
    if not runs or not qrels:
        return None
    depth = max((len(docs) for run in runs.values() for docs in run.values()), default=0)
    k = max(1, min(max_k, depth))
    curves = {name: recall_curve(qrels, run, k) for name, run in runs.items()}
    curves = {n: c for n, c in curves.items() if c}
    return {"k": list(range(1, k + 1)), "systems": curves} if curves else None


def score_changes(base: dict[str, float], other: dict[str, float]) -> list[tuple[float, str]]:
    """``(other - base, query_id)`` for every query the baseline scored, worst first."""
    return sorted(((other.get(q, 0.0) - s, q) for q, s in base.items()), key=lambda t: (t[0], t[1]))


def delta_interval(deltas: list[float], resamples: int, seed: int = 42) -> list[float] | None:
    """95% bootstrap interval of the mean per-query change (None when there is nothing to resample)."""
    if not deltas or resamples <= 0:
        return None
    from ragtune.evaluate.stats import bootstrap_ci

    low, high = bootstrap_ci(deltas, resamples, seed=seed)
    return [round(low, 4), round(high, 4)]


def examples(
    evaluation: dict[str, Any],
    baseline: str,
    candidate: str,
    *,
    queries: Queries,
    corpus: Corpus,
    qrels: Qrels,
    runs: dict[str, Run],
    metric: str,
    resamples: int = 1000,
) -> dict[str, Any]:
    """The candidate's worst regressions and best gains against the baseline, with what each system returned.

    Also the per-query changes (for the histogram), wins / ties / losses and a bootstrap interval of the mean
    change.
    """
    systems = evaluation.get("systems", {})
    base = systems[baseline].get("per_query", {}).get(metric, {})
    other = systems[candidate].get("per_query", {}).get(metric, {})
    changes = score_changes(base, other)
    positives = _positives(qrels)

    def describe(delta: float, qid: str) -> dict[str, Any]:
        relevant = positives.get(qid, set())
        returned: dict[str, dict[str, Any]] = {}
        for name, run in runs.items():
            order = ranked(run.get(qid, {}))
            top = [{"rank": i + 1, "doc_id": d, "text": _clip(corpus.get(d, {}), 220), "relevant": d in relevant}
                   for i, d in enumerate(order[:SHOWN_PER_SYSTEM])]
            first = next((i + 1 for i, d in enumerate(order) if d in relevant), None)
            returned[name] = {"top": top, "first_relevant_rank": first}
        return {"query_id": qid, "query": queries.get(qid, ""), "delta": round(delta, 4),
                "baseline_score": round(base.get(qid, 0.0), 4), "candidate_score": round(other.get(qid, 0.0), 4),
                "expected": [{"doc_id": d, "text": _clip(corpus.get(d, {}), 400)} for d in sorted(relevant)],
                "returned": returned}

    deltas = [d for d, _ in changes]
    wins = sum(1 for d in deltas if d > 0)
    ties = sum(1 for d in deltas if d == 0)
    return {
        "baseline": baseline,
        "candidate": candidate,
        "metric": metric,
        "regressions": [describe(d, q) for d, q in changes[:EXAMPLES] if d < 0],
        "gains": [describe(d, q) for d, q in reversed(changes[-EXAMPLES:]) if d > 0],
        "wins_ties_losses": [wins, ties, len(deltas) - wins - ties],
        "deltas": [round(d, 4) for d in deltas],
        "mean_delta_ci95": delta_interval(deltas, resamples, seed=evaluation.get("config", {}).get("seed", 42)),
    }


def _clip(doc: dict[str, Any], limit: int) -> str:
    text = str(doc.get("text", ""))
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
