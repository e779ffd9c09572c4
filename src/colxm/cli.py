"""The `colxm` command."""
from __future__ import annotations

import typer

from colxm import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Multilingual late-interaction retrieval.")


@app.command()
def version() -> None:
    """Print the colxm version."""
    typer.echo(__version__)


if __name__ == "__main__":
    app()
