"""``bss study``: paired seeds of several variants, and what the differences say."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from bss_cli.cli.common import handle_errors


def _settings(items: list[str]) -> dict:
    """``key=value`` pairs; values read as TOML (numbers, true/false, quoted strings), else text."""
    import tomllib

    from bss_cli.errors import ConfigError

    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set epochs=20")
        try:
            settings[key.replace("-", "_")] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            settings[key.replace("-", "_")] = value
    return settings


def _interrupted(kwargs: dict) -> str:
    return (f"interrupted: the finished runs in {kwargs.get('out_dir')} are kept; run the same bss study again "
            "to continue")


@handle_errors(interrupted=_interrupted)
def study(
    manifest: Annotated[Path, typer.Argument(help="Dataset manifest.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Study folder (an existing study continues).")],
    schedulers: Annotated[Optional[str], typer.Option(
        help="Variants by scheduler, comma-separated, e.g. none,curriculum,learned (default: none,curriculum,"
             "learned unless --variants).")] = None,
    variants: Annotated[Optional[Path], typer.Option(
        help="TOML file: [base] settings for every run and [variants.NAME] tables (default: none).")] = None,
    seeds: Annotated[int, typer.Option(help="Paired seeds 0..N-1, the same for every variant.")] = 10,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", metavar="KEY=VALUE", help="A bss train setting for every run, e.g. --set epochs=20 (repeatable) "
                                           "(default: none).")] = None,
    baseline: Annotated[Optional[str], typer.Option(help="Variant the others are compared with (default: the "
                                                         "first).")] = None,
    jobs: Annotated[int, typer.Option(help="Runs at once (one per GPU on a machine with several).")] = 1,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the final table (default: off).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout (default: off).")] = False,
) -> None:
    """Train every variant with the same seeds; report paired differences to the baseline.

    Each run is a bss train run folder under STUDY/runs; finished runs are skipped, interrupted
    ones resume, so a killed study continues when run again. Selection is on validation accuracy,
    test is evaluated once per run; the table gives mean and sd over seeds, the paired difference
    with a 95 % t-interval, wins/losses/ties, and the weakest head's change.
    """
    from bss_cli.cli.common import err
    from bss_cli.study.runner import design_from, plan, run_study

    names = [s.strip() for s in schedulers.split(",") if s.strip()] if schedulers else None
    if names is None and variants is None:
        names = ["none", "curriculum", "learned"]
    design = design_from(str(manifest), names, str(variants) if variants else None, seeds, _settings(set_ or []),
                         baseline)
    todo = sum(r.state != "done" for r in plan(out_dir, design)) if out_dir.exists() else \
        len(design.variants) * len(design.seeds)
    done = {"n": 0}

    def on_run(record, outcome):
        done["n"] += 1
        if not (quiet or as_json):
            err.print(f"[{done['n']}/{todo}] {record.variant} seed {record.seed}: {outcome}", markup=False)

    summary = run_study(out_dir, design, jobs=jobs, device=device, on_run=on_run)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    from bss_cli.cli.inspect import render_study_summary

    render_study_summary(summary, str(out_dir))


def register(app: typer.Typer) -> None:
    app.command("study")(study)
