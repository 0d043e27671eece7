"""``bss inspect``: what an artifact holds (tables on a terminal, JSON for scripts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bss_cli.cli.common import handle_errors, out

BARS = " ▏▎▍▌▋▊▉█"


def bar(count: int, peak: int, width: int = 40) -> str:
    if peak <= 0:
        return ""
    eighths = round(count / peak * width * 8)
    return "█" * (eighths // 8) + (BARS[eighths % 8] if eighths % 8 else "")


def _kv_table(title: str, items: dict) -> Table:
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    for k, v in items.items():
        t.add_row(str(k), v if isinstance(v, str) else json.dumps(v))
    return t


def _records_table(title: str, rows: list[dict], fmt: str = "{:.3f}") -> Table:
    t = Table(title=title, title_justify="left")
    if not rows:
        return t
    for col in rows[0]:
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(*[fmt.format(v) if isinstance(v, float) else str(v) for v in r.values()])
    return t


def render_histogram(title: str, hist: dict) -> Table:
    t = Table(title=title, title_justify="left", show_header=False, box=None)
    peak = max(hist["counts"]) if hist["counts"] else 0
    edges = hist["edges"]
    for i, c in enumerate(hist["counts"]):
        t.add_row(f"[{edges[i]: .3f}, {edges[i + 1]: .3f})", f"{c:>7,}", bar(c, peak))
    return t


def render_manifest(s: dict) -> None:
    out.print(f"[bold]manifest[/] {s['path']}  ({s['rows']:,} rows, {s['classes']} classes, fingerprint {s['fingerprint']})")
    out.print(_kv_table("samples per split", s["splits"]))
    rows = [{"class": c, **v} for c, v in s["per_class"].items()]
    out.print(_records_table("samples per class", rows))
    rows = [{"modality": m, **v} for m, v in s["modalities"].items()]
    out.print(_records_table("modalities", rows))


def render_scores(s: dict) -> None:
    out.print(f"[bold]scores[/] {s['path']}  ({s['rows']:,} rows)")
    out.print(_kv_table("provenance", s["metadata"]))
    out.print(_records_table("balance and raw criteria", [{"column": "balance", **s["balance"]}] +
                             [{"column": c, **v} for c, v in s["criteria"].items()]))
    out.print(render_histogram("balance histogram (higher = more balanced)", s["histogram"]))
    if s["per_modality"]:
        out.print(_records_table("per modality (dominates = samples where its head is most confident in the truth)",
                                 [{"modality": m, **v} for m, v in s["per_modality"].items()]))
    out.print(_records_table("most balanced", s["most_balanced"]))
    out.print(_records_table("least balanced", s["least_balanced"]))


RENDERERS = {"manifest": render_manifest, "scores": render_scores}


@handle_errors
def inspect(
    path: Annotated[Path, typer.Argument(help="A manifest, scores, schedule or metrics file, or a run folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Show what an artifact holds: kind, provenance, counts, distributions, extremes."""
    from bss_cli.inspection import summarise

    summary = summarise(path)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    RENDERERS[summary["kind"]](summary)


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect)
