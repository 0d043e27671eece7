"""``bss train``: train a late-fusion model with a BSS scheduler; progress, summary table."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from bss_cli.bounds import flag_label
from bss_cli.cli.common import choices, err, handle_errors, out
from bss_cli.scheduling.pacing import PACING
from bss_cli.scoring.criteria import CRITERIA
from bss_cli.training.config import (
    LR_SCHEDULES,
    OPTIMIZERS,
    PREDICT_WITH,
    RESCORE_MODES,
    TRAIN_SCHEDULERS,
    TrainConfig,
    load_toml,
)

_D = TrainConfig()
Sched = choices("Sched", TRAIN_SCHEDULERS)
Rescore = choices("Rescore", RESCORE_MODES)
Rule = choices("Rule", ("scripts", "paper"))
ArrayEncoder = choices("ArrayEncoder", ("mlp", "resnet18"))
ImageEncoder = choices("ImageEncoder", ("resnet18", "resnet50"))
LrSchedule = choices("LrSchedule", LR_SCHEDULES)
PredictWith = choices("PredictWith", PREDICT_WITH)
Crit = choices("Crit", CRITERIA)
Pace = choices("Pace", PACING)
Optim = choices("Optim", OPTIMIZERS)
Device = choices("Device", ("auto", "cpu", "cuda"))


class Progress:
    """Rich bars on a terminal, one plain line per epoch otherwise, nothing with --quiet."""

    def __init__(self, quiet: bool, epochs: int):
        self.quiet, self.epochs = quiet, epochs
        self.live = not quiet and sys.stderr.isatty()
        self.bars, self.stages = None, {}
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.bars = RichProgress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=err)
            self.epoch_task = self.bars.add_task("epochs", total=epochs, info="")
            self.batch_task = self.bars.add_task("epoch", total=1, info="")

    def __enter__(self):
        if self.bars:
            self.bars.start()
        return self

    def __exit__(self, *exc):
        if self.bars:
            self.bars.stop()

    def epoch_start(self, epoch: int, n: int) -> None:
        if self.bars:
            self.bars.reset(self.batch_task, total=n, description=f"epoch {epoch}", info="")

    def batch(self, epoch: int, n: int, loss: float) -> None:
        if self.bars:
            self.bars.update(self.batch_task, advance=n)
            speed = self.bars.tasks[self.batch_task].speed or 0.0
            self.bars.update(self.batch_task, info=f"loss {loss:.3f}  {speed:,.0f} samples/s")

    def epoch_end(self, row: dict) -> None:
        line = (f"epoch {row['epoch']}: loss {row['train_loss']:.4f}  val acc {row['val_acc']:.4f}  "
                f"macro-F1 {row['val_macro_f1']:.4f}  imbalance {row['val_imbalance']:.3f}  "
                f"{row['samples_per_s']:,.0f} samples/s")
        if self.bars:
            self.bars.update(self.epoch_task, advance=1, info=f"val acc {row['val_acc']:.3f}")
            self.bars.console.print(line, markup=False)
        elif not self.quiet:
            err.print(line, markup=False)

    def message(self, text: str) -> None:
        if not self.quiet:
            err.print(text, markup=False)  # names paths and modalities: text, never rich markup

    def stage(self, name: str, done: int, total: int) -> None:
        """Passes before training (checking a manifest's audio and image files)."""
        if self.bars:
            if name not in self.stages:
                self.stages[name] = self.bars.add_task(name, total=total, info="")
            self.bars.update(self.stages[name], completed=done, total=total)


def summary_table(summary: dict) -> Table:
    t = Table(title=Text(f"{summary['run']}: best epoch {summary['best_epoch']} by val accuracy "
                         f"({summary['best_val_acc']:.4f}); test once with that checkpoint"), title_justify="left")
    t.add_column("test metric")
    t.add_column("value", justify="right")
    for k, v in summary["test"].items():
        t.add_row(Text(k), f"{v:.4f}")  # head names are the manifest's column names
    return t


def _interrupted(kwargs: dict) -> str:
    run = kwargs.get("out_dir") or "the run folder"
    return (f"interrupted: {run} keeps its last checkpoint (the end of the last finished epoch); "
            f"run the same bss train command with --resume to continue")


@handle_errors(interrupted=_interrupted)
def train(
    manifest: Annotated[Optional[Path], typer.Argument(help="Dataset manifest.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (created; must not hold a run unless --resume) (required here or in --config).")] = None,
    config: Annotated[Optional[Path], typer.Option(help="Settings file: TOML whose keys are these flags' names, or a run's settings.json (default: none).")] = None,
    scheduler: Annotated[Optional[Sched], typer.Option(help=f"Data order (default: {_D.scheduler}).")] = None,
    schedule: Annotated[Optional[Path], typer.Option(help="Train on this precomputed schedule file (bss schedule) instead of --scheduler (default: none).")] = None,
    criterion: Annotated[Optional[Crit], typer.Option(help=f"Balance criterion (default: {_D.criterion}).")] = None,
    scores: Annotated[Optional[Path], typer.Option(help="curriculum: order from this scores file (default: none, score with the initial model).")] = None,
    warmup: Annotated[Optional[int], typer.Option(help="curriculum: order from a model warmed up K epochs (default: 0, the initial model).")] = None,
    rescore: Annotated[Optional[Rescore], typer.Option(help="learned: re-score with an inference pass, or from the training pass itself (default: pass).")] = None,
    pacing: Annotated[Optional[Pace], typer.Option(help="curriculum: pacing function (default: root).")] = None,
    lambda0: Annotated[Optional[float], typer.Option(help="curriculum: fraction of data at the start, in (0, 1] (default: 0.1).")] = None,
    t_grow: Annotated[Optional[int], typer.Option(help="curriculum: epoch from which all data is used (default: epochs/3).")] = None,
    stratify: Annotated[Optional[bool], typer.Option("--stratify/--no-stratify",
                                                     help="curriculum: balanced-first prefix within each class (default: off).")] = None,
    rule: Annotated[Optional[Rule], typer.Option(
        help="learned: scripts (p ~ 1 + s + eps, the authors' code) or paper (p = softmax of an EMA of the "
             "scores) (default: scripts).")] = None,
    beta: Annotated[Optional[float], typer.Option(
        help="learned --rule paper: EMA step, s_hat = (1 - beta) s_hat + beta s, in (0, 1] (default: 0.5).")] = None,
    shuffle_scores: Annotated[Optional[bool], typer.Option("--shuffle-scores/--no-shuffle-scores",
        help="learned, a control: each sample draws with another sample's score (a fixed seeded permutation) "
             "(default: off).")] = None,
    paced: Annotated[Optional[bool], typer.Option(
        "--paced/--no-paced", help="learned: train on a growing prefix of each epoch's draw, paced like the "
                                   "curriculum (--pacing, --lambda0, --t-grow) (default: off).")] = None,
    rescore_every: Annotated[Optional[int], typer.Option(
        help="learned: re-score every E epochs, >= 1 (default: 1).")] = None,
    alpha: Annotated[Optional[float], typer.Option(
        help="Weight of the similarity criterion against loss/gradient, in [0, 1] (default: 0.5, equal).")] = None,
    temperature: Annotated[Optional[float], typer.Option(help="learned: p ~ w^(1/T); < 1 sharpens, > 1 flattens (default: 1).")] = None,
    accumulate: Annotated[Optional[bool], typer.Option("--accumulate/--no-accumulate",
                                                       help="learned: the paper's accumulated scores (default: off).")] = None,
    array_encoder: Annotated[Optional[ArrayEncoder], typer.Option(
        help="2-D array modalities (spectrograms, MFCC frames as .npy or nested lists): mlp on the flattened "
             "array or resnet18 on a one-channel map (default: mlp).")] = None,
    image_encoder: Annotated[Optional[ImageEncoder], typer.Option(
        help="Image and frame modalities: resnet18 (the audio-visual settings) or resnet50 (the image-text settings; "
             "torchvision's layout, so --encoder-weights image=resnet50.pth takes its ImageNet file) (default: "
             "resnet18).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Your model plug-in 'module:function' (code you trust; see README) (default: built-in late fusion).")] = None,
    hidden: Annotated[Optional[int], typer.Option(help=f"Encoder width, >= 1 (default: {_D.hidden}).")] = None,
    fused_weight: Annotated[Optional[float], typer.Option(help="w_mm: weight of the fused head's loss, >= 0 (default: 1).")] = None,
    unimodal_weight: Annotated[Optional[float], typer.Option(help="w_uni: weight of each modality head's loss, >= 0 (default: 1).")] = None,
    predict_with: Annotated[Optional[PredictWith], typer.Option(help="What predicts: summed logits of all heads, the unimodal heads, or the fused head (default: sum).")] = None,
    optimizer: Annotated[Optional[Optim], typer.Option(help=f"Optimiser (default: {_D.optimizer}).")] = None,
    lr: Annotated[Optional[float], typer.Option(help=f"Learning rate, > 0 (default: {_D.lr}).")] = None,
    lr_schedule: Annotated[Optional[LrSchedule], typer.Option(help=f"Learning-rate schedule (step: x lr_gamma at lr_step) (default: {_D.lr_schedule}).")] = None,
    lr_warmup: Annotated[Optional[float], typer.Option(help=f"Epochs of linear learning-rate warm-up from 0, per step, the same for every scheduler, >= 0 (default: {_D.lr_warmup}).")] = None,
    clip_grad: Annotated[Optional[float], typer.Option(help=f"Clip the gradient's global norm to this, 0 = off (default: {_D.clip_grad}).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help=f"Epochs, >= 1 (default: {_D.epochs}).")] = None,
    test_every_epoch: Annotated[Optional[bool], typer.Option("--test-every-epoch/--no-test-every-epoch",
        help="Also evaluate test every epoch, for the paper's best-test-epoch protocol (optimistic; bss still "
             "selects on validation and reports that) (default: off).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help=f"Batch size per process, >= 1 (default: {_D.batch_size}).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the model, the data order and every draw, >= 0 (default: 0).")] = None,
    device: Annotated[Optional[Device], typer.Option(help="Device: cuda when available (auto), cpu or cuda (default: auto).")] = None,
    amp: Annotated[Optional[bool], typer.Option("--amp/--no-amp", help="bf16 autocast on CUDA (default: on).")] = None,
    threads: Annotated[Optional[int], typer.Option(
        help="torch CPU threads per process (default: torch's, which honours OMP_NUM_THREADS).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="DataLoader worker processes, >= 0 (default: 0).")] = None,
    epoch_artifacts: Annotated[Optional[bool], typer.Option("--epoch-artifacts/--no-epoch-artifacts",
                                                            help="Save each epoch's scores and schedule in the run folder (default: on).")] = None,
    save_every: Annotated[Optional[float], typer.Option(
        metavar="SECONDS", help="Bring the run folder up to date (last.pt, metrics, epoch artifacts) at most every "
                                "SECONDS, and after the last epoch; 0 = after every epoch. A kill loses at most this "
                                "much training plus one epoch (default: 1).")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Cache decoded spectrograms in this folder (default: no cache).")] = None,
    encoder_weights: Annotated[Optional[list[str]], typer.Option(
        metavar="MODALITY=FILE", help="Initial encoder weights: 'modality=file.pt' (a state_dict, read safely; repeatable) (default: none).")] = None,
    text: Annotated[Optional[list[str]], typer.Option(
        metavar="COLUMN", help="Read this column of strings as a text modality (repeatable); the manifest's bss.text "
                               "metadata can declare it instead (default: none).")] = None,
    text_model: Annotated[Optional[Path], typer.Option(
        help="A local Hugging Face folder (save_pretrained; safetensors): its tokenizer and model encode the text "
             "(default: none, the built-in hashed-word tokenizer and convolutional encoder).")] = None,
    text_max_tokens: Annotated[Optional[int], typer.Option(help="Tokens per text, cut or padded (default: the "
                                                                "manifest's, else 30).")] = None,
    text_max_words: Annotated[Optional[int], typer.Option(help="Words kept per text (default: the manifest's, else "
                                                               "all).")] = None,
    text_clean: Annotated[Optional[bool], typer.Option("--text-clean/--no-text-clean", help="The paper's text "
        "preprocessing: English words only, lower-case, punctuation stripped (default: the manifest's, else off).")
    ] = None,
    log: Annotated[Optional[list[str]], typer.Option(
        metavar="TRACKER", help="Log to an experiment tracker: tensorboard, mlflow, wandb or csv (repeatable, or "
                                "comma-separated); each but csv needs its extra, e.g. pip install 'bss[tensorboard]' "
                                "(default: none).")] = None,
    log_dir: Annotated[Optional[Path], typer.Option(
        help="Base folder of the trackers' files: RUN/tensorboard, RUN/mlruns, RUN/wandb, RUN/csv (default: the run "
             "folder).")] = None,
    log_group: Annotated[Optional[str], typer.Option(
        help="Group the tracker run belongs to: the MLflow experiment, the W&B group (default: none; MLflow "
             "experiment 'bss').")] = None,
    log_name: Annotated[Optional[str], typer.Option(
        help="The tracker run's name, and its sub-folder under --log-dir (default: the run folder's name).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted run in --out (default: off).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output (the final table still prints) (default: off).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final summary as JSON on stdout (default: off).")] = False,
) -> None:
    """Train a multi-modal late-fusion model with balance-aware sequence sampling.

    Flags override the --config file, which overrides the defaults. Launch under torchrun for
    DistributedDataParallel training (one process per GPU).
    """
    from bss_cli.training.trainer import Callbacks
    from bss_cli.training.trainer import train as run_training

    settings = load_toml(config) if config else {}
    from_file = set(settings)
    given = dict(locals())
    for f in fields(TrainConfig):
        value = given.get("out_dir" if f.name == "out" else f.name)
        if value is not None and f.name not in ("resume", "quiet"):
            settings[f.name] = value.value if hasattr(value, "value") else (str(value) if isinstance(value, Path) else value)
            from_file.discard(f.name)
    settings["resume"], settings["quiet"] = resume, quiet or as_json
    if manifest is not None:
        settings["manifest"] = str(manifest)
        from_file.discard("manifest")
    cfg = TrainConfig(**settings)
    cfg.validate(lambda name: f"{config}: {name} =" if name in from_file else flag_label(name))
    progress = Progress(cfg.quiet or int(os.environ.get("RANK", "0")) != 0, cfg.epochs)  # one rank reports
    with progress:
        result = run_training(cfg, Callbacks(on_epoch_start=progress.epoch_start,
                                             on_batch=progress.batch if progress.live else None,
                                             on_epoch_end=progress.epoch_end, on_message=progress.message,
                                             on_warning=lambda text: err.print(text, markup=False),
                                             on_progress=progress.stage if progress.live else None))
    if result.summary and int(os.environ.get("RANK", "0")) == 0:
        if as_json:
            typer.echo(json.dumps(result.summary, indent=2))
        else:
            out.print(summary_table(result.summary))


def register(app: typer.Typer) -> None:
    app.command("train")(train)
