"""``ragtune run DOCS_DIR``: the main job, end to end."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("run")(run)


def run(
    docs_dir: Path = typer.Argument(..., help="Folder of documents (txt, md, html, pdf, docx, jsonl), searched "
                                              "recursively."),
    output: Path = typer.Option(None, "--output", "-o", help="Run directory (default: runs/<folder name>). "
                                                              "Rerunning into it resumes finished steps."),
    config: Path = typer.Option(None, "--config", "-c", help="ragtune.yaml with settings per step "
                                                              "(default: ./ragtune.yaml if present)."),
    base: str = typer.Option(None, "--base", help="Embedding model to fine-tune (default: packaged MiniLM)."),
    epochs: float = typer.Option(None, "--epochs", help="Training epochs (embedding.epochs)."),
    max_steps: int = typer.Option(None, "--max-steps", help="Cap on training steps (embedding.max_steps)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Training batch size (embedding.batch_size)."),
    method: str = typer.Option(None, "--method", help="Query generation: auto, ict, crop or llm."),
    adapter: str = typer.Option(None, "--adapter", help="Also train a query-side adapter on the frozen base "
                                                        "model: linear, mlp or a registered kind."),
    rerank: bool = typer.Option(True, "--rerank/--no-rerank", help="Train a cross-encoder reranker and compare "
                                                                   "hybrid retrieval with and without it."),
    guard: bool = typer.Option(True, "--guard/--no-guard", help="Forgetting guard before handing over the "
                                                                "fine-tuned model."),
    seed: int = typer.Option(None, "--seed", help="One seed for split, generation and training."),
    stop_after: str = typer.Option(None, "--stop-after", help="Stop after this step (ingest, split, generate, "
                                                              "train, guard, adapter, rerank, eval)."),
    json_out: bool = typer.Option(False, "--json", help="Print the report data as JSON."),
) -> None:
    """Ingest, split, generate queries, fine-tune, evaluate and report, in one resumable run directory."""
    import json

    from rich.console import Console

    from ragtune.config import RunConfig
    from ragtune.pipeline import run_pipeline

    if config is None and Path("ragtune.yaml").is_file():
        config = Path("ragtune.yaml")
    overrides = {"embedding.base": base, "embedding.epochs": epochs, "embedding.max_steps": max_steps,
                 "embedding.batch_size": batch_size, "generate.method": method, "adapter.kind": adapter}
    if seed is not None:
        overrides.update({"split.seed": seed, "generate.seed": seed, "embedding.seed": seed, "eval.seed": seed})
        if adapter is not None:
            overrides["adapter.seed"] = seed
    cfg = RunConfig.load(config, overrides)
    if not rerank:
        cfg.reranker = None
    elif seed is not None and cfg.reranker is not None:
        cfg.reranker.seed = seed
    if not guard:
        cfg.guard.enabled = False
    run_dir = output or Path("runs") / docs_dir.resolve().name
    result = run_pipeline(docs_dir, run_dir, cfg, stop_after=stop_after)
    console = Console()
    if json_out:
        console.print_json(json.dumps(result.report, default=str))
        return
    md = result.run_dir / "report.md"
    if md.is_file():
        from rich.markdown import Markdown

        console.print(Markdown(md.read_text(encoding="utf-8")))
    console.print(f"\nRun directory: [bold]{result.run_dir}[/]")
    if (result.run_dir / "report.html").is_file():
        console.print(f"Report: [bold]{result.run_dir / 'report.html'}[/]")
