"""``ragtune report RUN_DIR``: rebuild the report of a run from its directory alone."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("report")(report)


def report(run_dir: Path = typer.Argument(..., help="A run directory made by `ragtune run`.")) -> None:
    """Rebuild report.json, report.md and report.html from a run directory (nothing is recomputed)."""
    from rich.console import Console
    from rich.markup import escape

    from ragtune.errors import ConfigError
    from ragtune.report import write_report

    if not run_dir.is_dir():
        raise ConfigError(f"RUN_DIR {run_dir}: not a directory. Give the folder `ragtune run` wrote "
                          "(by default runs/<name of your documents folder>).")
    if not (run_dir / "manifest.json").is_file():
        raise ConfigError(f"RUN_DIR {run_dir}: no manifest.json there, so it is not a run directory. Give the "
                          "folder `ragtune run` wrote (by default runs/<name of your documents folder>).")
    console = Console()
    for path in write_report(run_dir):
        console.print(f"wrote {path}", markup=False, highlight=False)
    console.print(f"Open [bold]{escape((run_dir / 'report.html').resolve().as_uri())}[/] in a browser.",
                  highlight=False)
