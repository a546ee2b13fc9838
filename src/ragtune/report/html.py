"""Render report data as one self-contained HTML page (inline CSS, inline SVG charts, no scripts, no network).

The page comes from ``templates/report.html.j2`` with autoescaping on for every value; nothing taken from the run
(documents, queries, system names, notes) is ever marked safe. A Content-Security-Policy meta tag forbids scripts
and any network fetch, as a second line of defence.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from typing import Any

from markupsafe import Markup

from ragtune.lang import cjk_ratio
from ragtune.report import plots
from ragtune.report.data import PRIMARY, SIGNIFICANCE, trained_on

logger = logging.getLogger(__name__)

HEADLINE_METRICS = ("ndcg@10", "mrr@10", "hit@1", "hit@5", "hit@10")


@lru_cache(maxsize=1)
def environment() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("ragtune.report", "templates"), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(num=_num, signed=_signed, pval=_pval, pct=_pct, seconds=_seconds, count=_count,
                       pretty_json=_pretty_json, trained_on=trained_on)
    env.globals.update(lang=lang_attr, significance=SIGNIFICANCE)
    return env


# --- template helpers --------------------------------------------------------------------------------------------


def lang_attr(text: Any) -> Markup:
    """`` lang="zh-Hans"`` for mostly-Chinese text (so the browser picks Simplified Chinese glyphs), else nothing.

    The returned markup is a constant; the text itself is never inserted.
    """
    return Markup(' lang="zh-Hans"') if isinstance(text, str) and cjk_ratio(text) >= 0.3 else Markup("")


def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value)
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else str(value)


def _signed(value: Any, digits: int = 4) -> str:
    return f"{value:+.{digits}f}" if isinstance(value, (int, float)) else "–"


def _pval(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "–"
    return "< 0.001" if value < 0.001 else f"{value:.2g}"


def _pct(value: Any, digits: int = 1) -> str:
    return f"{value * 100:+.{digits}f}%" if isinstance(value, (int, float)) else "–"


def _seconds(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "–"
    if value >= 120:
        return f"{value / 60:.1f} min"
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


# --- view model ----------------------------------------------------------------------------------------------


def results_table(data: dict[str, Any]) -> dict[str, Any] | None:
    """Rows of the headline table: every system's means with CIs, the best value per column, p vs the baseline."""
    ev = data.get("evaluation")
    if not ev:
        return None
    systems = ev.get("systems", {})
    metrics = [m for m in HEADLINE_METRICS if m in ev.get("metrics", HEADLINE_METRICS)]
    metrics += [m for m in ev.get("metrics", []) if m not in metrics]
    best = {m: max((s["means"].get(m, float("-inf")) for s in systems.values()), default=None) for m in metrics}
    classes = plots.system_classes(list(systems))
    specs = data.get("manifest", {}).get("systems", {})
    winner = (data.get("verdict") or {}).get("winner")
    rows = []
    for name, s in systems.items():
        cells = []
        for m in metrics:
            mean = s["means"].get(m)
            ci = s.get("ci95", {}).get(m)
            cells.append({"mean": mean, "ci": ci, "best": mean is not None and mean == best[m] and len(systems) > 1,
                          "primary": m == PRIMARY})
        p = s.get("p_values", {}).get(PRIMARY)
        base_mean = systems.get(ev.get("baseline"), {}).get("means", {}).get(PRIMARY)
        delta = s["means"].get(PRIMARY, 0.0) - base_mean if base_mean is not None else None
        rows.append({"name": name, "cls": classes[name], "spec": specs.get(name), "cells": cells, "p": p,
                     "delta": delta, "baseline": name == ev.get("baseline"), "winner": name == winner,
                     "significant": p is not None and p < SIGNIFICANCE})
    return {"metrics": metrics, "rows": rows, "baseline": ev.get("baseline"),
            "paired_test": ev.get("paired_test", "paired"), "bootstrap": ev.get("config", {}).get("bootstrap"),
            "num_queries": ev.get("num_queries"), "num_docs": ev.get("num_docs")}


def charts(data: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any] | None] = []
    ev = data.get("evaluation")
    if ev:
        out.append(plots.metric_bars(ev))
        if data.get("recall_curves"):
            out.append(plots.recall_chart(data["recall_curves"], order=list(ev.get("systems", {}))))
    ex = data.get("examples") or {}
    if ex.get("deltas"):
        out.append(plots.delta_histogram(ex["deltas"], ex.get("metric", PRIMARY), ex.get("candidate", ""),
                                         ex.get("baseline", "")))
    if data.get("training"):
        out.extend(plots.training_charts(data["training"]))
    return [c for c in out if c]


def seeds(config: dict[str, Any] | None) -> dict[str, Any]:
    return {section: values["seed"] for section, values in (config or {}).items()
            if isinstance(values, dict) and "seed" in values}


def render_html(data: dict[str, Any]) -> str:
    """The report page for ``data`` (as built by :func:`ragtune.report.data.build_report_data`)."""
    template = environment().get_template("report.html.j2")
    steps = data.get("manifest", {}).get("steps", {})
    return template.render(data=data, table=results_table(data), charts=charts(data), seeds=seeds(data.get("config")),
                           classes=plots.system_classes(list((data.get("evaluation") or {}).get("systems", {}))),
                           steps_done=[n for n, s in steps.items() if isinstance(s, dict) and s.get("status") == "done"],
                           primary=PRIMARY)
