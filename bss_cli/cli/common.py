"""What every command shares: error handling, consoles, choice enums built from registries."""

from __future__ import annotations

import functools
from enum import Enum

import typer
from rich.console import Console

from bss_cli.errors import BSSError

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def choices(name: str, keys) -> type[Enum]:
    """A str Enum whose values are a registry's keys, so --help lists them."""
    return Enum(name, {k: k for k in keys}, type=str)


def fail(message: str) -> None:
    """Print ``error: message`` to stderr and exit 1 (bad input, never a bug)."""
    err.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True, highlight=False) if err.is_terminal \
        else err.print(f"error: {message}", markup=False, soft_wrap=True)
    raise typer.Exit(1)


def handle_errors(fn):
    """Turn a :class:`BSSError` into ``error: ...`` on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BSSError as exc:
            fail(str(exc))

    return wrapper


def wrote(rows: int, path) -> None:
    out.print(f"wrote {rows:,} rows -> {path}")
