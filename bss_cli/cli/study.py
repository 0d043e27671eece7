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
        help="Variants by scheduler, comma-separated: none, curriculum, anti-curriculum, paced-random, learned, "
             "learned-shuffled, learned-paced, learned-paced-shuffled (default: none,curriculum,paced-random,"
             "learned,learned-shuffled unless --variants: each BSS scheduler with its random-order control).")] = None,
    variants: Annotated[Optional[Path], typer.Option(
        help="TOML file: [base] settings for every run and [variants.NAME] tables (default: none).")] = None,
    seeds: Annotated[int, typer.Option(help="Paired seeds 0..N-1, the same for every variant.")] = 10,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", metavar="KEY=VALUE", help="A bss train setting for every run, e.g. --set epochs=20 (repeatable) "
                                           "(default: none).")] = None,
    baseline: Annotated[Optional[str], typer.Option(help="Variant the others are compared with (default: the "
                                                         "first).")] = None,
    tune_lr: Annotated[Optional[str], typer.Option(
        help="Learning-rate grid, comma-separated, e.g. 0.003,0.01,0.03: each variant (or the baseline, --tune "
             "shared) trains at every rate and keeps the one of best mean validation accuracy; test is reported "
             "for that rate only (default: no tuning, the lr of the settings).")] = None,
    tune: Annotated[str, typer.Option(
        help="per-variant: every variant tuned on its own; shared: the baseline's selected rate for all.")
    ] = "per-variant",
    paper_protocol: Annotated[bool, typer.Option(
        help="Also report each variant's best test epoch, the paper's protocol (optimistic: selected on test), "
             "beside the validation-selected figure (default: off).")] = False,
    unstable_drop: Annotated[float, typer.Option(
        help="A run whose val accuracy falls more than this below its peak (or peaks by epoch 2) is flagged "
             "unstable.")] = 0.10,
    log: Annotated[Optional[list[str]], typer.Option(
        metavar="TRACKER", help="Log every run to an experiment tracker: tensorboard, mlflow, wandb or csv "
                                "(repeatable): one tracker run per study run, under the study folder, named "
                                "variant/seed=N and grouped by the study (default: none).")] = None,
    jobs: Annotated[int, typer.Option(help="Runs at once (one per GPU on a machine with several).")] = 1,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the final table (default: off).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout (default: off).")] = False,
) -> None:
    """Train every variant with the same seeds; report paired differences to the baseline.

    Each run is a bss train run folder under STUDY/runs; finished runs are skipped, interrupted
    ones resume, so a killed study continues when run again. Selection is on validation accuracy,
    test is evaluated once per run; the table gives mean and sd over seeds, the paired difference
    with a 95 % t-interval, wins/losses/ties, the ordering effect against each variant's
    random-order control, the weakest head's change, and runs with the instability signature.
    """
    from bss_cli.cli.common import err
    from bss_cli.study.runner import design_from, plan, run_study

    from bss_cli.errors import ConfigError
    from bss_cli.study.runner import DEFAULT_SCHEDULERS

    names = [s.strip() for s in schedulers.split(",") if s.strip()] if schedulers else None
    if names is None and variants is None:
        names = list(DEFAULT_SCHEDULERS)
    grid = None
    if tune_lr is not None:
        try:
            grid = [float(x) for x in tune_lr.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--tune-lr {tune_lr!r}: expected comma-separated learning rates, e.g. "
                              "0.003,0.01,0.03") from None
    if not (0 < unstable_drop < 1):
        raise ConfigError(f"--unstable-drop {unstable_drop}: expected a fraction in (0, 1)")
    design = design_from(str(manifest), names, str(variants) if variants else None, seeds, _settings(set_ or []),
                         baseline, lr_grid=grid, tune=tune, paper_protocol=paper_protocol)
    todo = sum(r.state != "done" for r in plan(out_dir, design))
    if design.lr_grid is not None and design.tune == "shared":  # then each other variant at the chosen rate
        todo += (len(design.variants) - 1) * len(design.seeds)
    done = {"n": 0}

    def on_run(record, outcome):
        done["n"] += 1
        if not (quiet or as_json):
            rate = "" if record.lr is None else f" lr {record.lr:g}"
            err.print(f"[{done['n']}/{todo}] {record.variant}{rate} seed {record.seed}: {outcome}", markup=False)

    summary = run_study(out_dir, design, jobs=jobs, device=device, on_run=on_run, unstable_drop=unstable_drop,
                        log=log)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    from bss_cli.cli.inspect import render_study_summary

    render_study_summary(summary, str(out_dir))


def register(app: typer.Typer) -> None:
    app.command("study")(study)
