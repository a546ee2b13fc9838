"""Entry point of the ``ragtune`` command. Each command lives in its own module and registers itself here.

Heavy libraries (torch, sentence-transformers) are imported inside the commands, so ``ragtune --help`` is instant.
"""

from __future__ import annotations

import logging
import sys

import typer

from ragtune.cli import eval as eval_cmd
from ragtune.cli import example, generate, ingest, report, run, split, train
from ragtune.errors import RagtuneError

app = typer.Typer(
    name="ragtune",
    help="Fine-tune the retrieval parts of a RAG system on your own documents, and prove it with numbers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors; no progress bars."),
) -> None:
    setup_logging(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)


def setup_logging(level: int) -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    handler = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", datefmt="[%X]", handlers=[handler],
                        force=True)
    logging.getLogger("ragtune").setLevel(level)
    # Progress bars follow the log level (the sentence-transformers habit). Only a value ragtune set itself is
    # undone, so a user's own TQDM_DISABLE stays, and one `-q` does not leak into later calls in one process.
    import os

    global _set_tqdm_disable
    if level > logging.INFO and "TQDM_DISABLE" not in os.environ:
        os.environ["TQDM_DISABLE"] = "1"
        _set_tqdm_disable = True
    elif level <= logging.INFO and _set_tqdm_disable:
        os.environ.pop("TQDM_DISABLE", None)
        _set_tqdm_disable = False


_set_tqdm_disable = False


for module in (ingest, split, generate, train, eval_cmd, run, report, example):
    module.register(app)


def main() -> None:
    try:
        app()
    except RagtuneError as exc:
        from rich.console import Console
        from rich.text import Text

        Console(stderr=True).print(Text("error: ", style="bold red") + Text(str(exc)), highlight=False)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
