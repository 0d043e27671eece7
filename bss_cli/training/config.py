"""Training settings: one dataclass whose fields are the flags of ``bss train`` and the keys of
its TOML file. Problems are collected and reported together."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

from bss_cli.bounds import BOUNDS, bound_problems, flag_label
from bss_cli.errors import ConfigError
from bss_cli.scheduling.pacing import PACING
from bss_cli.scoring.criteria import CRITERIA

TRAIN_SCHEDULERS = ("none", "curriculum", "anti-curriculum", "paced-random", "learned")
# Schedulers ordered by one fixed set of scores (of the initial model, a warm-up or --scores); the
# paced-random control needs no scores, as none needs none.
STATIC_SCORED = ("curriculum", "anti-curriculum")
RESCORE_MODES = ("pass", "online")
LR_SCHEDULES = ("none", "step", "cosine")
PREDICT_WITH = ("sum", "unimodal", "fused")
OPTIMIZERS = ("sgd", "adam", "adamw")
DEVICES = ("auto", "cpu", "cuda")
# Settings that may differ when a run is resumed (they do not change what is computed).
RESUME_FREE = ("resume", "quiet", "workers", "device", "threads", "save_every", "log", "log_dir", "log_group",
               "log_name")


@dataclass
class TrainConfig:
    manifest: str = ""
    out: str = ""
    # what orders the data
    scheduler: str = "learned"  # none | curriculum | anti-curriculum | paced-random | learned
    schedule: str | None = None  # a precomputed schedule file, used instead of --scheduler
    criterion: str = "prediction-sim+loss"
    scores: str | None = None  # curriculum: order from this scores file
    warmup: int = 0  # curriculum: order from a fresh model trained this many epochs
    pacing: str = "root"
    lambda0: float = 0.1
    t_grow: int | None = None  # None: a third of the epochs, as the scripts' 40 of 120
    ordered: bool = False
    stratify: bool = False  # curriculum: the balanced-first prefix within each class
    rule: str = "scripts"  # learned: scripts (p ~ 1 + s + eps) | paper (p = softmax of an EMA of the scores)
    temperature: float = 1.0
    eps: float = 0.01
    beta: float = 0.5  # paper rule: EMA step of the accumulated scores
    accumulate: bool = False
    decay: float = 1.0
    alpha: float = 0.5  # weight of the similarity criterion against loss/gradient (0.5 = equal, the default)
    rescore: str = "pass"  # pass | online
    rescore_every: int = 1  # learned: re-score every E epochs (k = floor(t / E))
    paced: bool = False  # learned: train on the first floor(N lambda(e + 1)) of each epoch's draw
    shuffle_scores: bool = False  # learned, a control: each sample draws with another sample's score
    # model
    encoder: str = "mlp"
    array_encoder: str = "mlp"  # 2-D array modalities: mlp (flattened) or resnet18 (a one-channel map)
    image_encoder: str = "resnet18"  # image and frame modalities: resnet18 or resnet50 (torchvision's layout)
    hidden: int = 64
    layers: int = 2
    dropout: float = 0.1
    model: str | None = None  # 'module:function' plug-in
    fused_weight: float = 1.0
    unimodal_weight: float = 1.0
    predict_with: str = "sum"
    # optimisation
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_schedule: str = "cosine"
    lr_step: int = 70  # step schedule: epoch of the x lr_gamma drop (the scripts' 70)
    lr_gamma: float = 0.1
    lr_warmup: float = 0.0  # epochs of linear learning-rate warm-up from 0, per step, for every scheduler alike
    clip_grad: float = 1.0  # clip the gradient's global norm to this (0 = off); see the README for why 1
    epochs: int = 30
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    workers: int = 0
    threads: int | None = None  # torch CPU threads (None: torch's default, or OMP_NUM_THREADS)
    epoch_artifacts: bool = True  # save each epoch's scores and schedule in the run folder
    test_every_epoch: bool = False  # also evaluate test each epoch (the paper's protocol, for comparison only)
    save_every: float = 1.0  # seconds: bring the run folder up to date (checkpoint, metrics, artifacts) at most
    # this often, and after the last epoch; 0 = after every epoch. A kill loses at most this much (plus an epoch)
    cache_dir: str | None = None  # cache decoded spectrograms here
    encoder_weights: list[str] | None = None  # 'modality=path' state_dict files for encoders
    # text modalities (besides those the manifest's bss.text metadata declares) and how they are tokenized
    text: list[str] | None = None  # columns of strings to read as text
    text_model: str | None = None  # a local Hugging Face folder: tokenizer and encoder (safetensors only)
    text_max_tokens: int | None = None  # None: the manifest's setting, else 30
    text_max_words: int | None = None
    text_clean: bool | None = None  # the paper's preprocessing: English words, lower-case, no punctuation
    # experiment trackers: how the run is watched, never what it computes (not saved in settings.json)
    log: list[str] | None = None  # tensorboard | mlflow | wandb | csv
    log_dir: str | None = None  # the trackers' base folder (None: the run folder)
    log_group: str | None = None  # groups tracker runs (bss study: the study's name)
    log_name: str | None = None  # the tracker run's name under log_dir (bss study: variant/seed=N)
    resume: bool = False
    quiet: bool = False

    @property
    def grow(self) -> int:
        return self.t_grow if self.t_grow is not None else max(1, self.epochs // 3)

    def to_dict(self) -> dict:
        return asdict(self)

    def text_options(self) -> dict:
        """The text flags that override the manifest's bss.text settings (None: keep them)."""
        return {"model": self.text_model, "max_tokens": self.text_max_tokens, "max_words": self.text_max_words,
                "clean": self.text_clean}

    def weights_by_modality(self) -> dict[str, str]:
        out = {}
        for item in self.encoder_weights or []:
            modality, sep, path = item.partition("=")
            if not sep or not modality or not path:
                raise ConfigError(f"--encoder-weights {item!r}: expected 'modality=path/to/weights.pt'")
            out[modality] = path
        return out

    def validate(self, label: Callable[[str], str] = flag_label) -> "TrainConfig":
        """Check every setting (types, ranges, choices, combinations); report all problems at once.

        ``label`` names a setting in messages: the flag by default, ``run.toml: key =`` for TOML.
        """
        problems = bound_problems({f.name: getattr(self, f.name) for f in fields(self) if f.name in BOUNDS}, label)
        for f in fields(self):
            value, default = getattr(self, f.name), f.default
            if f.name in BOUNDS:
                continue
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    problems.append(f"{label(f.name)} {value!r}: expected true or false")
            elif f.name == "text_clean":
                if value is not None and not isinstance(value, bool):
                    problems.append(f"{label(f.name)} {value!r}: expected true or false")
            elif f.name in ("text_max_tokens", "text_max_words"):
                if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                    problems.append(f"{label(f.name)} {value!r}: expected an integer >= 1")
            elif f.name == "text":
                if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                    problems.append(f"{label(f.name)} {value!r}: expected a list of column names")
            elif f.name == "log":
                if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                    problems.append(f"{label(f.name)} {value!r}: expected a list of tracker names")
            elif f.name == "encoder_weights":
                if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                    problems.append(f"{label(f.name)} {value!r}: expected a list of 'modality=path' strings")
            elif value is not None and not isinstance(value, str):
                problems.append(f"{label(f.name)} {value!r}: expected a string")
        if problems:  # later checks assume the right types
            raise ConfigError("bad training settings:\n  - " + "\n  - ".join(problems))

        def choice(name, allowed):
            if getattr(self, name) not in allowed:
                problems.append(f"{label(name)} {getattr(self, name)!r}: expected one of {', '.join(allowed)}")

        choice("scheduler", TRAIN_SCHEDULERS)
        choice("rescore", RESCORE_MODES)
        choice("rule", ("scripts", "paper"))
        choice("lr_schedule", LR_SCHEDULES)
        choice("predict_with", PREDICT_WITH)
        choice("criterion", tuple(CRITERIA))
        choice("pacing", tuple(PACING))
        choice("optimizer", OPTIMIZERS)
        choice("array_encoder", ("mlp", "resnet18"))
        choice("image_encoder", ("resnet18", "resnet50"))
        choice("device", DEVICES)
        if self.fused_weight == 0 and self.unimodal_weight == 0:
            problems.append("--fused-weight 0 and --unimodal-weight 0 leave no loss to train; make one > 0")
        if self.paced and self.rescore == "online" and self.scheduler == "learned":
            problems.append("--paced with --rescore online: samples left out of an epoch have no training-pass "
                            "logits to score; use --rescore pass")
        if self.rule == "paper" and self.accumulate:
            problems.append("--accumulate is the scripts rule's memory; the paper rule accumulates with --beta")
        if self.scores and self.warmup:
            problems.append("--scores and --warmup name two sources of the curriculum order; give one")
        if (self.scores or self.warmup) and self.scheduler not in STATIC_SCORED:
            problems.append("--scores and --warmup choose the curriculum's order; use them with --scheduler "
                            "curriculum or anti-curriculum")
        if self.shuffle_scores and self.scheduler != "learned":
            problems.append(f"--shuffle-scores is a control of the learned scheduler, not of {self.scheduler}; the "
                            "curriculum's control is --scheduler paced-random")
        if self.stratify and self.scheduler not in (*STATIC_SCORED, "paced-random"):
            problems.append(f"--stratify shapes a curriculum's growing prefix; --scheduler {self.scheduler} has none")
        if self.lr_warmup > self.epochs:
            problems.append(f"--lr-warmup {self.lr_warmup} is longer than the run (--epochs {self.epochs})")
        if self.rescore == "online" and "grad_norm" in CRITERIA.get(self.criterion, CRITERIA["loss"]).parts:
            problems.append(f"--rescore online cannot compute per-sample gradients; use --rescore pass with "
                            f"--criterion {self.criterion}")
        if self.log:
            from bss_cli.tracking.backends import parse_names

            try:
                self.log = parse_names(self.log, label("log"))
            except ConfigError as exc:
                problems.append(str(exc))
        if self.log_name is not None and not _relative_name(self.log_name):
            problems.append(f"{label('log_name')} {self.log_name!r}: a name under the log folder (parts joined by /, "
                            "none empty, '.' or '..', not absolute)")
        if not self.manifest:
            problems.append("no manifest given")
        if not self.out:
            problems.append("no run folder given (--out)")
        if problems:
            raise ConfigError("bad training settings:\n  - " + "\n  - ".join(problems))
        return self


def _relative_name(name) -> bool:
    """A tracker run's name stays under its folder: relative, no empty, '.' or '..' part."""
    return isinstance(name, str) and bool(name) and not name.startswith(("/", "\\")) and "\x00" not in name \
        and all(part not in ("", ".", "..") for part in name.replace("\\", "/").split("/"))


def load_toml(path: str | Path) -> dict:
    """Read a settings file: TOML whose keys are the flags' names with '_' or '-' (``batch_size = 64``),
    or a run's own ``settings.json`` (to re-run it: give a new --out)."""
    import json

    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():
        raise ConfigError(f"--config {path}: not a regular file (a FIFO, device or socket)")
    try:
        text = path.read_text()
        raw = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (FileNotFoundError, IsADirectoryError):
        raise ConfigError(f"--config {path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid TOML ({exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"--config {path}: expected a table of settings, found {type(raw).__name__}")
    known = {f.name for f in fields(TrainConfig)}
    out, unknown = {}, []
    for key, value in raw.items():
        name = key.replace("-", "_")
        (out.__setitem__(name, value) if name in known else unknown.append(key))
    if unknown:
        raise ConfigError(f"--config {path}: unknown key(s) {', '.join(unknown)}; keys are the flags of bss train")
    return out
