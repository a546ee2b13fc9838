"""``ragtune eval --data DIR --system SPEC ...``: compare retrieval systems on a BEIR directory."""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)


def _run_file_name(system: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", system).strip("_") + ".run.json"


def eval_command(
    data: Path = typer.Option(..., "--data", help="BEIR directory (corpus.jsonl, queries.jsonl, qrels)."),
    system: list[str] | None = typer.Option(
        None, "--system", "-s", metavar="SPEC",
        help="Retrieval system, repeatable: bm25, dense:MODEL, dense(max_length=512):MODEL (tokens read per text), "
             "hybrid:MODEL, hybrid(alpha=0.7):MODEL, or a pipeline "
             "FIRST>rerank:CROSS_ENCODER / FIRST>rerank(k=100,n=10):CROSS_ENCODER (CROSS_ENCODER: a CrossEncoder "
             "dir or name, msmarco-onnx, a .onnx path) (default: bm25 and dense:minilm)."),
    queries: str | None = typer.Option(None, "--queries", metavar="FILE", help="Queries file inside DIR or a path."),
    qrels: str | None = typer.Option(None, "--qrels", metavar="FILE", help="Qrels file inside DIR (or DIR/qrels) or a path."),
    top_k: int | None = typer.Option(None, "--top-k", help="Documents retrieved per query [100]."),
    bootstrap: int | None = typer.Option(None, "--bootstrap", help="Bootstrap resamples for 95% CIs; 0 = none [1000]."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Encoding batch size for dense models [64]."),
    baseline: str | None = typer.Option(None, "--baseline", help="System the p-values compare to (default: the first)."),
    config: Path | None = typer.Option(None, "--config", help="ragtune.yaml; its 'eval' section is used."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of a table."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Also write the JSON report to this file."),
    save_runs: Path | None = typer.Option(None, "--save-runs", help="Write each system's run (JSON) here."),
) -> None:
    """Score systems with hit@1/5/10, MRR@10, nDCG@10, recall@100, MAP@100, 95% CIs and paired tests."""
    from ragtune.config import RunConfig
    from ragtune.data.beir import load_beir, write_run
    from ragtune.evaluate.harness import evaluate_systems
    from ragtune.retrieval.systems import DEFAULT_SYSTEMS

    overrides = {"eval.top_k": top_k, "eval.bootstrap": bootstrap, "eval.batch_size": batch_size}
    cfg = RunConfig.load(config, overrides=overrides).eval
    dataset = load_beir(data, queries=queries, qrels=qrels)
    specs = list(system) if system else list(DEFAULT_SYSTEMS)
    report = evaluate_systems(dataset, specs, cfg, baseline=baseline, keep_runs=save_runs is not None)
    if output is not None:
        report.save(output)
    if save_runs is not None:
        for name, run in report.runs.items():
            write_run(save_runs / _run_file_name(name), run, name=name)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), ensure_ascii=False))
        return
    _print_table(report, output, save_runs)


def _print_table(report, output: Path | None, save_runs: Path | None) -> None:
    """One column per system (so a few systems fit an 80-column terminal), one row per metric."""
    from rich.console import Console
    from rich.table import Table

    from ragtune.evaluate.metrics import PRIMARY_METRIC

    table = Table(title=f"ragtune eval: {report.dataset} ({report.num_queries:,} queries, "
                        f"{report.num_docs:,} documents)")
    table.add_column("metric")
    for name in report.systems:
        table.add_column(name, justify="right", overflow="fold")
    for metric in report.metrics:
        table.add_row(metric, *(report.cell(name, metric).replace(" [", "\n[") for name in report.systems))
    table.add_row(f"p {PRIMARY_METRIC}", *(report.p_value_text(name) for name in report.systems))
    table.add_row("seconds", *(f"{r.timings['total_s']:.1f}" for r in report.systems.values()))
    table.add_row("queries/s", *(f"{r.timings['queries_per_s']:.0f}" for r in report.systems.values()))
    table.add_row("ms/query\np50/p95/p99", *(report.latency_text(name).replace(" / ", "/")
                                             for name in report.systems))
    console = Console()
    console.print(table)
    pipelines = {name: r for name, r in report.systems.items() if r.first_stage is not None}
    if pipelines:
        stages = Table(title="pipeline stages")
        for col in ("pipeline", "stage", PRIMARY_METRIC, "recall@100", f"p {PRIMARY_METRIC} vs first stage"):
            stages.add_column(col, overflow="fold", justify="left" if col in ("pipeline", "stage") else "right")
        for name, r in pipelines.items():
            fs = r.first_stage
            p = fs["p_values"].get(PRIMARY_METRIC)
            stages.add_row(name, f"first stage: {fs['name']}", f"{fs['means'][PRIMARY_METRIC]:.4f}",
                           f"{fs['recall@100']:.4f} (ceiling)", "")
            stages.add_row("", "reranked", f"{r.means[PRIMARY_METRIC]:.4f}", f"{r.means['recall@100']:.4f}",
                           f"{p:.2g}{' *' if p < 0.05 else ''}" if p is not None else "")
        console.print(stages)
    notes = [f"95% bootstrap CIs in brackets; * = differs from {report.baseline} at p < 0.05 "
             f"(paired {report.paired_test} test)." if report.config.get("bootstrap") else
             f"* = differs from {report.baseline} at p < 0.05 (paired {report.paired_test} test).",
             "ms/query: measured per query for pipelines; ~ = batch search time / queries."]
    if output is not None:
        notes.append(f"report: {output}")
    if save_runs is not None:
        notes.append(f"runs: {save_runs}/")
    console.print("\n".join(notes), highlight=False)
