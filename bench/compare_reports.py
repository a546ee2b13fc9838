"""Differences between any two systems of `ragtune eval` reports: paired bootstrap CIs and paired tests.

`ragtune eval` gives every system a CI of its own mean and a p-value against one baseline. Whether one fine-tuned
model beats another is a different question: the two CIs overlap far more than the CI of their per-query
difference is wide. This script reads one or more reports of the same data set (written with ``-o``, so they hold
per-query scores), takes one system as the reference and prints, for every other system, its mean, the mean
difference to the reference with a 95% percentile-bootstrap CI of that difference (resampling queries, so the
pairing is kept), and the paired Wilcoxon p-value, both from ``ragtune.evaluate.stats``::

    python bench/compare_reports.py /tmp/a.json /tmp/b.json --reference 'dense(max_length=512):/models/x'

A system named the same in several reports with the same per-query scores appears once; with different scores
(say ``dense:minilm`` from different data) the script stops, as the reports do not describe the same queries.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ragtune.evaluate.stats import bootstrap_ci, paired_test


def load_systems(paths: list[Path], metric: str) -> dict[str, dict[str, float]]:
    """Per-query ``metric`` scores of every system in the reports, by system name."""
    systems: dict[str, dict[str, float]] = {}
    queries: set[str] | None = None
    for path in paths:
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            sys.exit(f"{path}: cannot read a `ragtune eval -o` report ({exc})")
        for name, result in (report.get("systems") or {}).items():
            scores = (result.get("per_query") or {}).get(metric)
            if scores is None:
                sys.exit(f"{path}: system {name!r} has no per-query {metric}; write the report with "
                         f"`ragtune eval ... -o FILE` and pick one of its metrics with --metric")
            if queries is None:
                queries = set(scores)
            elif set(scores) != queries:
                sys.exit(f"{path}: system {name!r} was scored on other queries than the first report's; "
                         "compare reports of the same data set only")
            if name in systems and systems[name] != scores:
                sys.exit(f"{path}: system {name!r} appears in an earlier report with other scores; "
                         "the reports do not describe the same run of that system")
            systems[name] = scores
    if not systems:
        sys.exit("no systems in the reports given")
    return systems


def compare(systems: dict[str, dict[str, float]], reference: str, bootstrap: int = 1000,
            seed: int = 42) -> list[dict[str, object]]:
    """One row per system: mean, difference to ``reference``, its 95% CI and the paired p-value."""
    if reference not in systems:
        sys.exit(f"--reference {reference!r} is not a system of the reports; choose one of: "
                 + ", ".join(systems))
    qids = sorted(systems[reference])
    ref = np.array([systems[reference][q] for q in qids])
    rows = []
    for name, scores in systems.items():
        values = np.array([scores[q] for q in qids])
        row: dict[str, object] = {"system": name, "mean": float(values.mean())}
        if name != reference:
            row["diff"] = float((values - ref).mean())
            row["ci"] = bootstrap_ci(values - ref, bootstrap, seed=seed)
            row["p"] = paired_test(values, ref)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", type=Path, nargs="+", help="JSON files of `ragtune eval -o`, same data set")
    ap.add_argument("--reference", required=True, help="system every other one is compared with (its name)")
    ap.add_argument("--metric", default="ndcg@10")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs [1000]")
    args = ap.parse_args()

    rows = compare(load_systems(args.reports, args.metric), args.reference, args.bootstrap)
    print(f"| system | {args.metric} | difference to the reference [95% paired bootstrap CI] | Wilcoxon p |")
    print("|---|---|---|---|")
    for row in rows:
        if "diff" not in row:
            print(f"| {row['system']} (reference) | {row['mean']:.4f} | | |")
            continue
        ci = row["ci"]
        interval = f" [{ci[0] * 100:+.2f}, {ci[1] * 100:+.2f}]" if ci else ""
        print(f"| {row['system']} | {row['mean']:.4f} | {row['diff'] * 100:+.2f} pt{interval} | {row['p']:.3g} |")


if __name__ == "__main__":
    main()
