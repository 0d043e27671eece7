"""What every command shares: error handling, consoles, choice enums built from registries."""

from __future__ import annotations

import functools
import os
import sys
import warnings
from enum import Enum
from typing import Callable

import typer
from rich.console import Console
from rich.markup import escape

from bss_cli.errors import BSSError


def _console(stderr: bool = False) -> Console:
    """A terminal gets tables that fit it; a pipe or file gets them whole (rich would cut them to 80
    columns and show values as '0.…'), unless COLUMNS says otherwise."""
    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=400 if wide else None)


out = _console()
err = _console(stderr=True)


def choices(name: str, keys) -> type[Enum]:
    """A str Enum whose values are a registry's keys, so --help lists them."""
    return Enum(name, {k: k for k in keys}, type=str)


def fail(message: str) -> None:
    """Print ``error: message`` to stderr and exit 1 (bad input, never a bug)."""
    err.print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True, highlight=False) if err.is_terminal \
        else err.print(f"error: {message}", markup=False, soft_wrap=True)
    raise typer.Exit(1)


class StageProgress:
    """Rich progress bars per stage on a terminal (stderr); nothing when piped or with --quiet.

    Used as ``with StageProgress(quiet) as progress: work(progress=progress)``; the library calls
    ``progress(stage, done, total)``.
    """

    def __init__(self, quiet: bool):
        self.bars = None
        if not quiet and err.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bars = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), console=err, transient=True)
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        if self.bars:
            self.bars.start()
        return self if self.bars else None

    def __exit__(self, *exc):
        if self.bars:
            self.bars.stop()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.bars.add_task(stage, total=total)
        self.bars.update(self.tasks[stage], completed=done, total=total)


INTERRUPTED = "interrupted: nothing was written; existing outputs are unchanged"


def handle_errors(fn=None, *, interrupted: Callable[[dict], str] | None = None):
    """Turn a :class:`BSSError` (or an OS fault) into ``error: ...`` on stderr and exit code 1.

    Ctrl-C exits 130 with one line saying what was (not) written: ``interrupted(kwargs)`` gives it
    for commands that leave something resumable. numpy's RuntimeWarnings are not printed: the
    checks that matter raise errors of their own.
    """
    if fn is None:
        return functools.partial(handle_errors, interrupted=interrupted)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                return fn(*args, **kwargs)
        except BSSError as exc:
            fail(str(exc))
        except OSError as exc:  # the environment (a vanished file, a full disk), not bad logic
            where = f"{exc.filename}: " if exc.filename else ""
            fail(f"{where}{exc.strerror or exc}")
        except MemoryError as exc:  # Arrow's too: an input claimed more data than this machine holds
            fail(f"ran out of memory ({str(exc)[:200] or 'MemoryError'}): an input file claims more data than "
                 "this machine holds (a damaged or hostile file?), or the job needs a bigger machine")
        except KeyboardInterrupt:
            err.print(interrupted(kwargs) if interrupted else INTERRUPTED, markup=False)
            raise typer.Exit(130) from None

    return wrapper


def wrote(rows: int, path) -> None:
    out.print(f"wrote {rows:,} rows -> {path}", markup=False)


def print_json(record: dict) -> None:
    """One JSON object on stdout (``--json``): what was written, rows, fingerprints, timings."""
    import json

    typer.echo(json.dumps(record, indent=2, sort_keys=True, default=str))


def written(path, rows: int, started: float, **extra) -> dict:
    """The ``--json`` record of one written file."""
    import time

    from pathlib import Path

    from bss_cli.artifacts import fingerprint_file

    if Path(path).is_dir():  # a folder of partitions (an engine's output)
        from bss_cli.data.partitions import fingerprint, open_set

        fp = fingerprint(open_set(path))
    else:
        fp = fingerprint_file(path)
    return {"wrote": str(path), "rows": int(rows), "fingerprint": fp,
            "seconds": round(time.perf_counter() - started, 3), **extra}
