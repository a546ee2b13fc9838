"""Render report data as ``report.json``, ``report.md`` and ``report.html``; :func:`write_report` writes all three."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ragtune._io import atomic_write_json, atomic_write_text
from ragtune.report.data import PRIMARY, build_report_data, trained_on

logger = logging.getLogger(__name__)


def _fmt(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _md_escape(text: Any) -> str:
    """Text safe inside a markdown table cell or list item: no pipes, newlines or raw HTML tags."""
    return (str(text).replace("&", "&amp;").replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")
            .replace(">", "&gt;"))


def _eval_table(ev: dict[str, Any]) -> list[str]:
    metrics = ev["metrics"]
    header = ["system", *metrics, f"p ({PRIMARY} vs {_md_escape(ev['baseline'])})"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, s in ev["systems"].items():
        cells = []
        for m in metrics:
            cell = _fmt(s["means"].get(m, "–"))
            if m in s.get("ci95", {}):
                lo, hi = s["ci95"][m]
                cell += f" [{lo:.3f}, {hi:.3f}]"
            cells.append(cell)
        p = s.get("p_values", {}).get(PRIMARY)
        cells.append("baseline" if p is None else f"{p:.2g}{' *' if p < 0.05 else ''}")
        lines.append("| " + " | ".join([_md_escape(name), *cells]) + " |")
    return lines


def _examples_md(ex: dict[str, Any]) -> list[str]:
    wins, ties, losses = ex.get("wins_ties_losses", [0, 0, 0])
    out = [f"## {_md_escape(ex['candidate'])} against {_md_escape(ex['baseline'])}, per query", "",
           f"{ex['metric']}: {wins} queries better, {ties} the same, {losses} worse."]
    for title, key in (("Worst regressions", "regressions"), ("Best gains", "gains")):
        if ex.get(key):
            out += ["", f"{title}:", ""]
            out += [f"- {e['delta']:+.3f} `{_md_escape(e['query_id'])}` {_md_escape(e['query'])}" for e in ex[key]]
    return [*out, ""]


def _generation_md(gen: dict[str, Any]) -> list[str]:
    out = ["## Training queries", "", f"Method: {_md_escape(gen.get('method'))}; training queries: "
           f"{gen.get('train_queries')}, validation: {gen.get('val_queries')}, test: {gen.get('test_queries')}."]
    if gen.get("note"):
        out += ["", f"> {_md_escape(gen['note'])}"]
    if gen.get("filters"):
        out += ["", "| filter step | dropped | left |", "|---|---:|---:|"]
        out += [f"| {_md_escape(s['step'])} | {s['dropped']} | {s['kept']} |" for s in gen["filters"]]
    out += ["", "Samples:", ""]
    out += [f"- {_md_escape(s['query'])}" for s in gen.get("samples", [])[:6]]
    return [*out, ""]


def _costs_md(data: dict[str, Any]) -> list[str]:
    out: list[str] = []
    guard = data.get("guard")
    if guard:
        out += ["## Forgetting guard", "", f"**{_md_escape(guard['verdict'])}**: {_md_escape(guard.get('message', ''))}",
                ""]
    pipeline = data.get("pipeline")
    if pipeline:
        out += ["## Reranking", "", _md_escape(pipeline.get("message", "")), "",
                f"Pipeline to serve: `{pipeline['chosen']}`", ""]
        trained = pipeline.get("training_queries")
        if trained:
            out += [f"The reranker trained on {trained_on(trained)}.", ""]
    cost = data.get("cost")
    if cost:
        out += ["## Cost", "", f"{cost['prompt_tokens']:,} prompt + {cost['completion_tokens']:,} completion tokens, "
                f"${cost['usd']:.4f}.", ""]
    return out


def render_markdown(data: dict[str, Any]) -> str:
    out = [f"# {_md_escape(data['title'])}", ""]
    verdict = data.get("verdict") or {}
    if verdict.get("message"):
        out += [f"**{_md_escape(verdict['message'])}**", ""]
    ev = data.get("evaluation")
    if ev:
        out += [f"## Retrieval on the held-out test documents ({ev['num_queries']} queries, "
                f"{ev['num_docs']} passages)", ""]
        out += _eval_table(ev)
        out += ["", "95% bootstrap confidence intervals in brackets; * = significant at p < 0.05 "
                    f"(paired {ev.get('paired_test', 'test')}).", ""]
    if data.get("examples"):
        out += _examples_md(data["examples"])
    out += _costs_md(data)
    ingest = data.get("ingest")
    if ingest:
        counts = {k: v for k, v in ingest.items() if isinstance(v, (int, float))}
        out += ["## Documents", "", ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items()
                                              if not isinstance(v, bool)), ""]
        skipped = ingest.get("skipped", [])
        if skipped:
            out += [f"Skipped {len(skipped)} file(s):", ""]
            out += [f"- `{_md_escape(s['path'])}`: {_md_escape(s['reason'])}" for s in skipped]
            out.append("")
    split = data.get("split")
    if split:
        out += ["## Split by document", ""]
        for name, info in split.items():
            if not isinstance(info, dict):
                continue
            out.append(f"- {_md_escape(name)}: {info.get('documents')} documents, {info.get('chunks')} chunks")
        out.append("")
    if data.get("generation"):
        out += _generation_md(data["generation"])
    tr = data.get("training")
    if tr:
        out += ["## Fine-tuning", "", ", ".join(f"{k}: {_md_escape(_fmt(v))}" for k, v in tr.items()
                                              if isinstance(v, (int, float, str))), ""]
    steps = data.get("manifest", {}).get("steps", {})
    if steps:
        out += ["## Steps", "", "| step | status | seconds |", "|---|---|---|"]
        out += [f"| {_md_escape(n)} | {_md_escape(s.get('status', ''))}"
                f"{' (skipped on resume)' if s.get('skipped_on_resume') else ''} | {s.get('seconds', '')} |"
                for n, s in steps.items() if n != "report" and isinstance(s, dict)]
        out.append("")
    versions = data.get("manifest", {}).get("versions", {})
    if versions:
        out += ["## Versions", "", _md_escape(", ".join(f"{k} {v}" for k, v in versions.items())), ""]
    return "\n".join(out)


def write_report(run_dir: str | Path) -> list[Path]:
    """Rebuild ``report.json``, ``report.md`` and ``report.html`` from the run directory alone."""
    from ragtune.report.html import render_html

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    data = build_report_data(run_dir)
    paths = [run_dir / "report.json", run_dir / "report.md", run_dir / "report.html"]
    atomic_write_json(paths[0], data)
    atomic_write_text(paths[1], render_markdown(data))
    atomic_write_text(paths[2], render_html(data))
    logger.info("report of %s written in %.2f s: %s", run_dir, time.perf_counter() - t0, paths[2])
    return paths
