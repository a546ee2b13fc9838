"""Evaluation: metrics via pytrec_eval, bootstrap CIs and paired tests via scipy, and the comparison harness."""

from ragtune.evaluate.harness import EvalReport, SystemResult, evaluate_systems
from ragtune.evaluate.metrics import METRICS, PRIMARY_METRIC, RunScores, evaluate_run, truncate_run
from ragtune.evaluate.stats import bootstrap_ci, paired_test

__all__ = [
    "METRICS",
    "PRIMARY_METRIC",
    "EvalReport",
    "RunScores",
    "SystemResult",
    "bootstrap_ci",
    "evaluate_run",
    "evaluate_systems",
    "paired_test",
    "truncate_run",
]
