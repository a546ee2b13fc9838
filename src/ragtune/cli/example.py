"""``ragtune example DIR``: write a folder of example documents (the Python documentation topics)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("example")(example_command)


def example_command(
    out_dir: Path = typer.Argument(..., metavar="DIR", help="Folder to write the example documents into."),
) -> None:
    """Write the 79 Python documentation topics (from pydoc_data, part of every Python) as .txt files."""
    from rich.console import Console

    from ragtune.errors import ConfigError
    from ragtune.examples import write_pydoc_topics

    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"DIR {str(out_dir)!r} is a file. Give a new or existing folder for the example.")
    count = write_pydoc_topics(out_dir)
    console = Console()
    console.print(f"wrote {count} Python documentation topics to {out_dir}", highlight=False)
    console.print(f"next: ragtune run {out_dir}", highlight=False)
