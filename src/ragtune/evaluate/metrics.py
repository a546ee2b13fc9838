"""Ranking metrics computed by pytrec_eval (trec_eval's C code), never by hand.

ragtune's metric names map to trec_eval measures:

=============  =====================================================
``hit@k``      ``success_k`` (1 when a relevant document is in the top k)
``mrr@10``     ``recip_rank`` on the run cut to each query's top 10
``ndcg@10``    ``ndcg_cut_10`` (graded gains, as in BEIR)
``recall@100`` ``recall_100``
``map@100``    ``map_cut_100``
=============  =====================================================

Two trec_eval habits are undone here: a judged query that is missing from the run (or has an empty ranking) is
silently dropped by pytrec_eval, which would inflate the mean, so it is added back with every metric 0; and a
document is relevant when its grade is >= 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from ragtune.data.beir import Qrels, Run
from ragtune.errors import ConfigError

METRICS: tuple[str, ...] = ("hit@1", "hit@5", "hit@10", "mrr@10", "ndcg@10", "recall@100", "map@100")
PRIMARY_METRIC = "ndcg@10"
MRR_CUTOFF = 10

# ragtune name -> (pytrec_eval measure to request, key in its output, needs the run cut to MRR_CUTOFF)
_TREC: dict[str, tuple[str, str, bool]] = {
    "hit@1": ("success.1", "success_1", False),
    "hit@5": ("success.5", "success_5", False),
    "hit@10": ("success.10", "success_10", False),
    "mrr@10": ("recip_rank", "recip_rank", True),
    "ndcg@10": ("ndcg_cut.10", "ndcg_cut_10", False),
    "recall@100": ("recall.100", "recall_100", False),
    "map@100": ("map_cut.100", "map_cut_100", False),
}


@dataclass
class RunScores:
    """Per-query scores (``per_query[metric][query_id]``) and their means over every judged query."""

    means: dict[str, float]
    per_query: dict[str, dict[str, float]]

    @property
    def query_ids(self) -> list[str]:
        first = next(iter(self.per_query.values()), {})
        return list(first)


def _check_metrics(metrics: tuple[str, ...] | list[str]) -> None:
    unknown = [m for m in metrics if m not in _TREC]
    if unknown:
        raise ConfigError(f"metrics {unknown}: unknown; choose from {', '.join(_TREC)}")


def _trec_order(docs: dict[str, float]) -> list[tuple[str, float]]:
    """trec_eval's ranking order: score descending, ties by document id descending."""
    return sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)


def truncate_run(run: Run, k: int) -> Run:
    """Each query's top ``k`` documents, in the order trec_eval would rank them."""
    return {q: dict(_trec_order(docs)[:k]) for q, docs in run.items()}


def _evaluate(qrels: Qrels, run: Run, measures: set[str]) -> dict[str, dict[str, float]]:
    import pytrec_eval

    if not measures:
        return {}
    clean_run = {q: {d: float(s) for d, s in docs.items()} for q, docs in run.items() if q in qrels and docs}
    return pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(clean_run)


def evaluate_run(qrels: Qrels, run: Run, metrics: tuple[str, ...] | list[str] = METRICS) -> RunScores:
    """Score ``run`` against ``qrels`` on every query of ``qrels`` (missing queries score 0)."""
    _check_metrics(metrics)
    clean_qrels = {str(q): {str(d): int(g) for d, g in docs.items()} for q, docs in qrels.items()}
    if not clean_qrels:
        raise ConfigError("qrels is empty: nothing to evaluate")
    full = _evaluate(clean_qrels, run, {_TREC[m][0] for m in metrics if not _TREC[m][2]})
    cut = _evaluate(clean_qrels, truncate_run(run, MRR_CUTOFF), {_TREC[m][0] for m in metrics if _TREC[m][2]})
    per_query: dict[str, dict[str, float]] = {}
    for metric in metrics:
        _, key, needs_cut = _TREC[metric]
        source = cut if needs_cut else full
        per_query[metric] = {q: float(source.get(q, {}).get(key, 0.0)) for q in clean_qrels}
    n = len(clean_qrels)
    means = {m: sum(per_query[m].values()) / n for m in metrics}
    return RunScores(means=means, per_query=per_query)
