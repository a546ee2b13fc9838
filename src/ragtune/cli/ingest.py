"""``ragtune ingest DIR --output OUT``: documents -> ``OUT/corpus.jsonl`` + ``OUT/ingest-report.json``."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest_command)


def ingest_command(
    input_dir: Path = typer.Argument(
        ..., metavar="DIR", help="Folder of documents (txt, md, html, pdf, docx, jsonl), read recursively."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for corpus.jsonl and ingest-report.json."),
    chunk_tokens: int | None = typer.Option(None, "--chunk-tokens", help="Target chunk length in tokens [200]."),
    overlap_tokens: int | None = typer.Option(
        None, "--overlap-tokens", help="Tokens shared by neighbouring chunks [32]."),
    min_chunk_tokens: int | None = typer.Option(
        None, "--min-chunk-tokens", help="Shorter trailing pieces merge into the previous chunk [8]."),
    max_file_mb: float | None = typer.Option(None, "--max-file-mb", help="Skip larger files [20]."),
    tokenizer: str | None = typer.Option(
        None, "--tokenizer", help="Model whose tokenizer counts tokens [packaged MiniLM]."),
    config: Path | None = typer.Option(None, "--config", help="ragtune.yaml; its 'ingest' section is used."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of a table."),
) -> None:
    """Parse and chunk a folder of documents into a BEIR corpus."""
    import time

    from ragtune.config import RunConfig
    from ragtune.data.ingest import ingest, write_ingest
    from ragtune.errors import ConfigError

    if not input_dir.exists():
        raise ConfigError(f"DIR {str(input_dir)!r} does not exist. Pass the folder that holds your "
                          "documents.")
    if not input_dir.is_dir():
        raise ConfigError(f"DIR {str(input_dir)!r} is a file, not a folder. Put it in a folder and pass "
                          "that.")
    if output.resolve() == input_dir.resolve():
        raise ConfigError(f"--output {str(output)!r} is DIR itself; a rerun would ingest its own corpus.jsonl. "
                          "Choose another folder (a subfolder of DIR is fine).")
    overrides = {"ingest.chunk_tokens": chunk_tokens, "ingest.overlap_tokens": overlap_tokens,
                 "ingest.min_chunk_tokens": min_chunk_tokens, "ingest.max_file_mb": max_file_mb,
                 "ingest.tokenizer": tokenizer}
    cfg = RunConfig.load(config, overrides=overrides).ingest
    t0 = time.perf_counter()
    result = ingest(input_dir, cfg, exclude=[output])
    report = write_ingest(result, output)
    seconds = time.perf_counter() - t0
    if as_json:
        typer.echo(json.dumps({**report, "output": str(output), "seconds": round(seconds, 2)},
                              ensure_ascii=False, indent=2))
        return
    _print_summary(report, output, seconds)


def _print_summary(report: dict, output: Path, seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="ragtune ingest", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    table.add_row("files parsed", f"{report['files_parsed']:,}")
    table.add_row("chunks", f"{report['chunks']:,}")
    table.add_row("duplicate chunks removed", f"{report['duplicates_removed']:,}")
    table.add_row("files skipped", f"{report['files_skipped']:,}")
    table.add_row("languages", ", ".join(f"{k} {v:,}" for k, v in report["languages"].items()) or "-")
    table.add_row("time", f"{seconds:.1f} s")
    console.print(table)
    if report["skipped"]:
        skipped = Table(title="skipped files")
        skipped.add_column("file", overflow="fold")
        skipped.add_column("reason", overflow="fold")
        for item in report["skipped"]:
            skipped.add_row(item["path"], item["reason"])
        console.print(skipped)
    console.print(f"wrote {output / 'corpus.jsonl'} and {output / 'ingest-report.json'}", highlight=False)
    if report["chunks"]:
        console.print(f"next: ragtune split --data {output} --output {output.parent / 'split'}",
                      highlight=False)
