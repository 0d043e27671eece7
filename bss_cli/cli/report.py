"""``bss report``: one self-contained HTML page for a run folder, a study folder or a scores file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bss_cli.cli.common import handle_errors, out


@handle_errors
def report(
    path: Annotated[Path, typer.Argument(help="A run folder (bss train), a study folder (bss study) or a scores "
                                              "file (bss score).")],
    output: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("report.html"),
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out file (default: off).")] = False,
) -> None:
    """Write a self-contained HTML report (inline plots, no network, prints on paper).

    A run: every head's curve, the imbalance, the schedule's growth and class composition, the
    score distribution, the diagnosis. A study: paired differences with intervals, wins/losses,
    ordering effects against the controls, the baseline's stability. Scores: the distribution per
    class and per part of the criterion. The same inputs give the same bytes.
    """
    from bss_cli.artifacts import check_output, write_bytes
    from bss_cli.report.html import report as make_report

    check_output(output, force)
    text = make_report(path)
    write_bytes(output, text.encode())
    out.print(f"wrote {output} ({len(text) / 1024:,.0f} KiB); open it in a browser", markup=False)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
