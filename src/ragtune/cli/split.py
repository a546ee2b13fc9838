"""``ragtune split --data DIR --output OUT``: a corpus -> ``OUT/{train,val,test}/corpus.jsonl``, by document."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("split")(split_command)


def _corpus_file(data: Path) -> Path:
    from ragtune.errors import DataFormatError

    if data.is_file():
        return data
    if data.is_dir():
        for name in ("corpus.jsonl", "corpus.jsonl.gz"):
            if (data / name).is_file():
                return data / name
        raise DataFormatError(f"--data {str(data)!r} has no corpus.jsonl. Run 'ragtune ingest DOCS --output "
                              f"{data}' first, or point --data at a folder or file with a BEIR corpus.")
    raise DataFormatError(f"--data {str(data)!r} does not exist. Give the folder written by 'ragtune ingest' "
                          "(it holds corpus.jsonl) or a corpus.jsonl file.")


def split_command(
    data: Path = typer.Option(..., "--data", help="Folder with corpus.jsonl (from ragtune ingest) or the file."),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Folder for train/, val/, test/ and split-report.json."),
    train: float | None = typer.Option(None, "--train", help="Share of chunks for training [0.7]."),
    val: float | None = typer.Option(None, "--val", help="Share of chunks for validation [0.1]; 0 = none."),
    test: float | None = typer.Option(None, "--test", help="Share of chunks for testing [0.2]."),
    seed: int | None = typer.Option(None, "--seed", help="Shuffle seed [42]."),
    config: Path | None = typer.Option(None, "--config", help="ragtune.yaml; its 'split' section is used."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of a table."),
) -> None:
    """Split a corpus into train / val / test; chunks of one document stay together."""
    from ragtune.config import RunConfig
    from ragtune.data.beir import load_corpus
    from ragtune.data.split import SPLITS, split_corpus, write_splits

    overrides = {"split.train": train, "split.val": val, "split.test": test, "split.seed": seed}
    cfg = RunConfig.load(config, overrides=overrides).split
    corpus = load_corpus(_corpus_file(data))
    splits = split_corpus(corpus, cfg)
    report = write_splits(splits, output, cfg)
    if as_json:
        typer.echo(json.dumps({**report, "output": str(output)}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ragtune split (seed {cfg.seed})")
    for col in ("split", "documents", "chunks", "share of chunks"):
        table.add_column(col, justify="left" if col == "split" else "right")
    total = max(1, sum(report[n]["chunks"] for n in SPLITS))
    for name in SPLITS:
        row = report[name]
        table.add_row(name, f"{row['documents']:,}", f"{row['chunks']:,}", f"{row['chunks'] / total:.0%}")
    console = Console()
    console.print(table)
    console.print(f"wrote {output}/{{train,val,test}}/corpus.jsonl and {output / 'split-report.json'}",
                  highlight=False)
