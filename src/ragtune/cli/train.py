"""placeholder: replaced by the module owner."""

import typer


def register(app: typer.Typer) -> None:
    pass
