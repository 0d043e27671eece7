"""``bss schedule``: per-epoch orderings from balance scores -> Parquet, or a pipe."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from bss_cli.artifacts import check_output
from bss_cli.bounds import bound_problems
from bss_cli.cli.common import StageProgress, choices, handle_errors, print_json, written, wrote
from bss_cli.errors import ConfigError
from bss_cli.scheduling.pacing import PACING
from bss_cli.scheduling.schedule_io import FORMATS
from bss_cli.scheduling.schedulers import RULES, SCHEDULERS, ScheduleConfig

SchedulerName = choices("SchedulerName", SCHEDULERS)
Pacing = choices("Pacing", PACING)
Format = choices("Format", FORMATS)
Rule = choices("Rule", RULES)
Engine = choices("Engine", ("local", "ray"))
_D = ScheduleConfig()
DEFAULT_EPOCHS = 120


def _format_for(out: str, fmt: Optional[str]) -> str:
    if fmt:
        return fmt
    if out == "-":
        return "csv"
    suffix = Path(out).suffix.lstrip(".").lower()
    return suffix if suffix in FORMATS else "parquet"


@handle_errors
def schedule(
    scores: Annotated[Path, typer.Argument(help="Scores written by bss score: a file, or a folder of partitions.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Schedule file, or '-' for stdout; with --engine ray a folder "
                                                         "(epoch=NNNNN/part-NNNNN.parquet).")],
    scheduler: Annotated[SchedulerName, typer.Option(help="Ordering rule.")] = "curriculum",
    epochs: Annotated[Optional[int], typer.Option(help="Number of epochs to write (0..epochs-1) (default: 120).")] = None,
    epoch: Annotated[Optional[int], typer.Option(help="Write only this epoch (from 0), e.g. in a per-epoch loop (default: none, epochs 0..--epochs-1).")] = None,
    seed: Annotated[int, typer.Option(help="Seed; epoch e draws from (seed, e).")] = 0,
    pacing: Annotated[Pacing, typer.Option(help="curriculum: pacing function.")] = _D.pacing,
    lambda0: Annotated[float, typer.Option(help="curriculum: fraction of data at the start.")] = _D.lambda0,
    t_grow: Annotated[int, typer.Option(help="curriculum: epoch from which all data is used.")] = _D.t_grow,
    ordered: Annotated[bool, typer.Option(help="curriculum: keep balanced-first order within an epoch.")] = False,
    stratify: Annotated[bool, typer.Option(
        help="curriculum: take the balanced-first prefix within each class, so early epochs keep every class.")] = False,
    temperature: Annotated[float, typer.Option(help="learned: p ~ w^(1/T); <1 sharpens, >1 flattens.")] = 1.0,
    rule: Annotated[Rule, typer.Option(
        help="learned: scripts (p ~ 1 + s + eps) or paper (p = softmax of the scores, EMA over --history).")
    ] = "scripts",
    beta: Annotated[float, typer.Option(help="learned --rule paper: EMA step over --history, in (0, 1].")] = 0.5,
    paced: Annotated[bool, typer.Option(help="learned: keep a growing prefix of each draw, paced like the "
                                             "curriculum.")] = False,
    shuffle_scores: Annotated[bool, typer.Option(
        help="learned, a control: each sample draws with another sample's score (a fixed seeded permutation).")
    ] = False,
    eps: Annotated[float, typer.Option(help="learned: w = 1 + s + eps.")] = _D.eps,
    accumulate: Annotated[bool, typer.Option(help="learned: the paper's accumulated scores.")] = False,
    decay: Annotated[float, typer.Option(help="learned --accumulate: weight of older scores.")] = 1.0,
    history: Annotated[Optional[list[Path]], typer.Option(
        metavar="SCORES", help="learned --accumulate: earlier epochs' scores files, oldest first (repeatable) (default: none).")] = None,
    fmt: Annotated[Optional[Format], typer.Option("--format", help="Output format (default: from -o, csv for '-').")] = None,
    engine: Annotated[Engine, typer.Option(
        help="local (this machine) or ray (Ray Data, the bss[ray] extra; RAY_ADDRESS names the cluster): each "
             "epoch's order is a distributed sort (docs/scale.md).")] = "local",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors (default: off).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was written as JSON on stdout (default: off).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output file (atomically) (default: off, an existing file is refused).")] = False,
) -> None:
    """Turn balance scores into per-epoch training orderings that any trainer can consume."""
    from bss_cli.scheduling.schedule_io import ScheduleJob, write_schedule
    from bss_cli.scoring.scores import SCHEDULE_COLUMNS, read_scores

    started = time.perf_counter()
    engine = Engine(engine).value
    if engine == "ray":
        if out == "-":
            raise ConfigError("--engine ray writes a folder of partitions; name one with -o DIR (a pipe reads one "
                              "machine's schedule: drop --engine ray)")
        if fmt and Format(fmt).value != "parquet":
            raise ConfigError(f"--format {Format(fmt).value}: --engine ray writes Parquet partitions; drop --format")
        if history:
            raise ConfigError("--history runs on one machine only (it needs every epoch's scores at once); drop "
                              "--engine ray")
        from bss_cli.artifacts import check_output_folder

        check_output_folder(out, force)
    elif out != "-":
        check_output(out, force)
    elif as_json:
        raise ConfigError("--json describes a written file; with -o - the schedule itself is on stdout")
    elif (fmt and Format(fmt).value in ("npy", "parquet")) and sys.stdout.isatty():
        raise ConfigError(f"--format {Format(fmt).value} is binary and stdout is a terminal; pipe it into a program "
                          "or write a file with -o FILE")
    problems = bound_problems({"epochs": DEFAULT_EPOCHS if epochs is None else epochs, "epoch": epoch or 0})
    if epoch is not None and epochs is not None and epoch >= epochs and not problems:
        problems.append(f"--epoch {epoch} with --epochs {epochs}: epochs count 0..{epochs - 1}; "
                        f"raise --epochs or drop it")
    if problems:
        raise ConfigError("bad schedule settings:\n  - " + "\n  - ".join(problems))
    epochs = DEFAULT_EPOCHS if epochs is None else epochs
    cfg = ScheduleConfig(scheduler=SchedulerName(scheduler).value, seed=seed, pacing=Pacing(pacing).value,
                         lambda0=lambda0, t_grow=t_grow, shuffle=not ordered, stratify=stratify,
                         temperature=temperature, eps=eps, accumulate=accumulate, decay=decay,
                         rule=Rule(rule).value, beta=beta, paced=paced,
                         shuffle_scores=shuffle_scores).validate()
    if engine == "ray":
        from bss_cli.engines import ray_data

        chosen = [epoch] if epoch is not None else list(range(epochs))
        with StageProgress(quiet or as_json) as progress:
            n = ray_data.schedule(scores, out, cfg, chosen, progress=progress)
        if as_json:
            print_json(written(out, n, started, kind="schedule", format="parquet", scheduler=cfg.scheduler,
                               engine="ray", epochs=chosen if len(chosen) <= 20 else [chosen[0], chosen[-1]]))
        elif not quiet:
            wrote(n, out)
        return
    job = ScheduleJob(read_scores(scores, SCHEDULE_COLUMNS), cfg,
                      [epoch] if epoch is not None else list(range(epochs)),
                      tuple(read_scores(h, SCHEDULE_COLUMNS) for h in history or ()))
    job.effective_balance()  # validate before anything is written
    fmt_name = _format_for(out, Format(fmt).value if fmt else None)
    if out != "-":
        with StageProgress(quiet or as_json) as progress:
            n = write_schedule(job, out, fmt_name, progress=progress)
        if as_json:
            print_json(written(out, n, started, kind="schedule", format=fmt_name, scheduler=cfg.scheduler,
                               epochs=job.epochs if len(job.epochs) <= 20 else [job.epochs[0], job.epochs[-1]]))
        elif not quiet:
            wrote(n, out)
        return
    try:
        write_schedule(job, sys.stdout.buffer, fmt_name)
        sys.stdout.flush()
    except OSError as exc:
        # Point stdout at devnull so the interpreter's final flush does not complain again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        if isinstance(exc, BrokenPipeError):  # the reader (head, ...) left early: that is fine
            raise typer.Exit(0)
        raise ConfigError(f"cannot write the schedule to stdout: {exc.strerror or exc}") from None


def register(app: typer.Typer) -> None:
    app.command("schedule")(schedule)
