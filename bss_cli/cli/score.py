"""``bss score``: per-sample balance scores for a manifest -> Parquet."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from bss_cli.artifacts import check_output
from bss_cli.bounds import bound_problems
from bss_cli.cli.common import StageProgress, choices, handle_errors, out, print_json, written, wrote
from bss_cli.errors import ConfigError
from bss_cli.scoring.criteria import CRITERIA, DEFAULT_CRITERION

Criterion = choices("Criterion", CRITERIA)
Split = choices("Split", ("train", "val", "test", "all"))
Engine = choices("Engine", ("local", "ray"))


@handle_errors
def score(
    manifest: Annotated[Path, typer.Argument(
        help="Dataset manifest (.parquet, .csv or .jsonl), or a predictions set: a folder of Parquet partitions "
             "(or one file) whose rows carry sample_id, label and logits_<modality> (docs/scale.md).")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Scores file to write (Parquet); with --engine ray "
                                                               "a folder of Parquet partitions.")],
    criterion: Annotated[Criterion, typer.Option(help="Balance criterion: what 'balanced' measures (README, Scoring).")] = DEFAULT_CRITERION,
    predictions: Annotated[Optional[Path], typer.Option(
        help="Predictions file from any trainer (see README); scores without torch (default: none, score with a bss model).")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="Score with this bss checkpoint (read safely: tensors only) (default: none, a fresh seeded model).")] = None,
    warmup: Annotated[int, typer.Option(help="Train a fresh model this many epochs first, then score.")] = 0,
    split: Annotated[Split, typer.Option(help="Which samples to score (min-max over them).")] = "train",
    seed: Annotated[int, typer.Option(help="Seed of the fresh model and of the warm-up.")] = 0,
    alpha: Annotated[float, typer.Option(
        help="Weight of the similarity criterion against loss/gradient, in [0, 1]; 0.5 = equal.")] = 0.5,
    fused_weight: Annotated[float, typer.Option(help="w_mm: weight of the fused head's loss.")] = 1.0,
    unimodal_weight: Annotated[float, typer.Option(help="w_uni: weight of each modality head's loss.")] = 1.0,
    hidden: Annotated[int, typer.Option(help="Encoder width of the fresh model.")] = 64,
    model: Annotated[Optional[str], typer.Option(
        help="Your model plug-in 'module:function' (code you trust; needed to rebuild a plug-in's checkpoint) (default: none, the built-in model).")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto (model sources only).")] = "cpu",
    threads: Annotated[Optional[int], typer.Option(
        help="torch CPU threads (default: torch's, which honours OMP_NUM_THREADS).")] = None,
    workers: Annotated[int, typer.Option(help="Processes decoding audio/image files (model sources).")] = 0,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Cache decoded spectrograms in this folder (default: no cache).")] = None,
    engine: Annotated[Engine, typer.Option(
        help="Where a predictions set is scored: local (this machine) or ray (Ray Data, the bss[ray] extra; "
             "RAY_ADDRESS names the cluster) (docs/scale.md).")] = "local",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors (default: off).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was written as JSON on stdout (default: off).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output file (atomically) (default: off, an existing file is refused).")] = False,
) -> None:
    """Score every sample of a split for how well its modalities agree (higher = more balanced).

    Predictions come from a file written by any trainer (--predictions), a bss checkpoint
    (--checkpoint), a fresh seeded model (the default, as the paper's curriculum), or a fresh model
    trained --warmup K epochs.
    """
    from bss_cli.scoring.criteria import LossWeights
    from bss_cli.scoring.scores import score_manifest, write_scores

    started = time.perf_counter()
    engine = Engine(engine).value
    from bss_cli.scoring.sets import is_predictions_set

    if is_predictions_set(manifest):
        _score_set(manifest, out_path, criterion=Criterion(criterion).value, split=Split(split).value, alpha=alpha,
                   fused_weight=fused_weight, unimodal_weight=unimodal_weight, engine=engine, force=force,
                   quiet=quiet, as_json=as_json, started=started,
                   flags={"--predictions": predictions, "--checkpoint": checkpoint, "--warmup": warmup,
                          "--model": model, "--workers": workers, "--cache-dir": cache_dir})
        return
    if engine != "local":
        raise ConfigError(f"--engine {engine} scores a predictions set (a folder of Parquet partitions whose rows carry "
                          f"sample_id, label and logits_<modality>); {manifest} is a manifest: drop --engine, or "
                          "give the predictions set (docs/scale.md)")
    check_output(out_path, force)
    chosen = [name for name, on in (("--predictions", predictions), ("--checkpoint", checkpoint),
                                    ("--warmup", warmup)) if on]
    if len(chosen) > 1:
        raise ConfigError(f"{' and '.join(chosen)} name two prediction sources; give one")
    problems = bound_problems({"alpha": alpha, "threads": threads, "workers": workers, "warmup": warmup, "fused_weight": fused_weight,
                               "unimodal_weight": unimodal_weight, "hidden": hidden, "seed": seed})
    if fused_weight == 0 and unimodal_weight == 0:
        problems.append("--fused-weight 0 and --unimodal-weight 0 leave no loss to score; make one > 0")
    if model and predictions is not None:
        problems.append("--model builds a bss model; scores from --predictions need none: drop --model")
    if problems:
        raise ConfigError("bad score settings:\n  - " + "\n  - ".join(problems))
    source, info = None, None
    if predictions is None:
        from bss_cli.models.distributed import setup
        from bss_cli.scoring.predict import ModelSource

        info, device = setup(device, threads)  # under torchrun: join the group, shard the scoring pass
        kind = "checkpoint" if checkpoint else ("warmup" if warmup else "init")
        source = ModelSource(kind=kind, checkpoint=str(checkpoint) if checkpoint else None,
                             warmup_epochs=warmup, seed=seed, hidden=hidden, model=model)
    with StageProgress(quiet or as_json or (info is not None and not info.is_main)) as progress:
        scores = score_manifest(manifest, criterion=Criterion(criterion).value, predictions=predictions,
                                source=source, weights=LossWeights(fused_weight, unimodal_weight),
                                split=Split(split).value, device=device, workers=workers, cache_dir=cache_dir,
                                info=info, progress=progress, alpha=alpha)
    if info is not None and info.enabled:
        from bss_cli.models.distributed import teardown

        teardown(info)
        if not info.is_main:  # rank 0 writes the one file
            return
    write_scores(scores, out_path)
    if as_json:
        b = scores.balance
        print_json(written(out_path, len(b), started, kind="scores", criterion=scores.metadata["bss.criterion"],
                           balance={"mean": float(b.mean()), "min": float(b.min()), "max": float(b.max())}))
    elif not quiet:
        b = scores.balance
        wrote(len(b), out_path)
        out.print(f"balance ({scores.metadata['bss.criterion']}): mean {b.mean():.3f}, "
                  f"min {b.min():.3f}, max {b.max():.3f}")


def _score_set(path: Path, out_path: Path, *, criterion: str, split: str, alpha: float, fused_weight: float,
               unimodal_weight: float, engine: str, force: bool, quiet: bool, as_json: bool, started: float,
               flags: dict) -> None:
    """``bss score SET``: a predictions set that carries its labels, on this machine or on Ray."""
    from bss_cli.scoring.criteria import LossWeights
    from bss_cli.scoring.scores import write_scores
    from bss_cli.scoring.sets import score_set_local

    extra = [name for name, value in flags.items() if value]
    if extra:
        raise ConfigError(f"{path} is a predictions set: it scores itself, {' and '.join(extra)} "
                          f"{'has' if len(extra) == 1 else 'have'} nothing to do; drop {' and '.join(extra)}")
    problems = bound_problems({"alpha": alpha, "fused_weight": fused_weight, "unimodal_weight": unimodal_weight})
    if fused_weight == 0 and unimodal_weight == 0:
        problems.append("--fused-weight 0 and --unimodal-weight 0 leave no loss to score; make one > 0")
    if problems:
        raise ConfigError("bad score settings:\n  - " + "\n  - ".join(problems))
    weights = LossWeights(fused_weight, unimodal_weight)
    if engine == "ray":
        from bss_cli.artifacts import check_output_folder
        from bss_cli.engines import ray_data

        check_output_folder(out_path, force)
        summary = ray_data.score(path, out_path, criterion=criterion, weights=weights, split=split, alpha=alpha)
        n, b = summary["rows"], summary["balance"]
    else:
        check_output(out_path, force)
        with StageProgress(quiet or as_json) as progress:
            scores = score_set_local(path, criterion=criterion, weights=weights, split=split, alpha=alpha,
                                     progress=progress and (lambda d, t: progress("scoring", d, t)))
        write_scores(scores, out_path)
        n = len(scores)
        b = {"mean": float(scores.balance.mean()), "min": float(scores.balance.min()),
             "max": float(scores.balance.max())}
    if as_json:
        print_json(written(out_path, n, started, kind="scores", criterion=criterion, engine=engine, balance=b))
    elif not quiet:
        wrote(n, out_path)
        out.print(f"balance ({criterion}): mean {b['mean']:.3f}, min {b['min']:.3f}, max {b['max']:.3f}")


def register(app: typer.Typer) -> None:
    app.command("score")(score)
