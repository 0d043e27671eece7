"""``bss``: the Typer app. Each subcommand lives in a module of its own and registers here."""

from __future__ import annotations

import typer

from bss_cli import __version__

app = typer.Typer(
    name="bss",
    help="Balance-aware sequence sampling for multi-modal training: score, schedule, train, inspect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bss {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Balance-aware sequence sampling for multi-modal training."""


from bss_cli.cli import build_manifest as _build_manifest  # noqa: E402
from bss_cli.cli import inspect as _inspect  # noqa: E402
from bss_cli.cli import sample_data as _sample_data  # noqa: E402
from bss_cli.cli import schedule as _schedule  # noqa: E402
from bss_cli.cli import score as _score  # noqa: E402
from bss_cli.cli import train as _train  # noqa: E402

for module in (_score, _schedule, _train, _inspect, _build_manifest, _sample_data):
    module.register(app)


def main() -> None:
    app(prog_name="bss")
