"""The ``sagegen`` command line. Each command is a thin shell over a library function."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from sagegen import __version__
from sagegen.config import Config, load_config
from sagegen.errors import SagegenError

app = typer.Typer(
    name="sagegen",
    help="Verified, difficulty-controlled deep-search QA generation (SAGE), and search-agent training/eval.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config file.")]  # noqa: UP045
SetOpt = Annotated[
    Optional[list[str]],  # noqa: UP045
    typer.Option("--set", "-s", help="Override a config value, e.g. -s retrieval.kind=dense (repeatable)."),
]


def resolve_config(config: Path | None, overrides: list[str] | None) -> Config:
    return load_config(config, overrides or [])


@app.command()
def version() -> None:
    """Print the sagegen version."""
    print(__version__)


def main() -> None:
    try:
        app()
    except SagegenError as e:
        console.print(f"error: {e}", style="bold red", markup=False, highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
