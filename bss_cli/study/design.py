"""A study's design: the variants (bss train settings), the paired seeds, the baseline, the
learning-rate grid; how variants pair with their random-order controls; the design from the
command line (``--schedulers`` or a TOML ``[base]`` / ``[variants.NAME]`` file)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from bss_cli.errors import ConfigError
from bss_cli.training.config import TRAIN_SCHEDULERS, TrainConfig

FREE = ("quiet", "resume", "out", "manifest")  # set by the study itself
TUNE_MODES = ("per-variant", "shared")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,99}")  # a variant name is a folder name: no '/', no '..'
# Names --schedulers accepts beyond the schedulers themselves: the learned scheduler's variants
# and its control (scores shuffled across samples).
SCHEDULER_VARIANTS = {
    "learned-shuffled": {"scheduler": "learned", "shuffle_scores": True},
    "learned-paced": {"scheduler": "learned", "paced": True},
    "learned-paced-shuffled": {"scheduler": "learned", "paced": True, "shuffle_scores": True},
}
DEFAULT_SCHEDULERS = ("none", "curriculum", "paced-random", "learned", "learned-shuffled")
# Settings a random-order control does not read (it scores nothing): ignored when pairing a
# curriculum with its paced-random control.
SCORING_ONLY = ("criterion", "alpha", "scores", "warmup", "rescore", "rescore_every")


@dataclass
class StudyDesign:
    manifest: str
    variants: dict[str, dict]  # name -> bss train settings on top of ``base``
    seeds: list[int]
    base: dict = field(default_factory=dict)
    baseline: str | None = None
    lr_grid: list[float] | None = None  # --tune-lr: every variant (or the baseline) at each rate
    tune: str = "per-variant"  # per-variant | shared

    def __post_init__(self):
        if not self.variants:
            raise ConfigError("a study needs at least one variant (--schedulers or --variants)")
        bad = [n for n in self.variants if not isinstance(n, str) or not NAME.fullmatch(n)]
        if bad:
            raise ConfigError(f"variant name(s) {', '.join(map(repr, bad))}: a name becomes a folder of the study; "
                              "use letters, digits and . _ + = - (not starting with . or -), at most 100")
        for name, body in self.variants.items():
            if not isinstance(body, dict):
                raise ConfigError(f"variant {name!r}: expected a table of bss train settings, found "
                                  f"{type(body).__name__} {body!r}")
            nested = [k for k, v in body.items() if isinstance(v, dict)]
            if nested:
                raise ConfigError(f"variant {name!r}: {', '.join(nested)} holds a table, not a setting; a variant "
                                  "name with a dot must be quoted in TOML: [variants.\"sgd-0.05\"]")
        if self.tune not in TUNE_MODES:
            raise ConfigError(f"--tune {self.tune!r}: expected one of {', '.join(TUNE_MODES)}")
        if self.tune != "per-variant" and self.lr_grid is None:
            raise ConfigError(f"--tune {self.tune} needs a grid to tune on: add --tune-lr, e.g. --tune-lr 0.003,0.01,0.03")
        if self.lr_grid is not None:
            from bss_cli.bounds import BOUNDS

            if not self.lr_grid or any(not BOUNDS["lr"].accepts(x) for x in self.lr_grid) \
                    or len(set(self.lr_grid)) != len(self.lr_grid):
                raise ConfigError(f"--tune-lr {self.lr_grid}: expected distinct learning rates, each "
                                  f"{BOUNDS['lr'].describe()}, e.g. --tune-lr 0.003,0.01,0.03")
            self.lr_grid = sorted(float(x) for x in self.lr_grid)
            if len({f"{x:g}" for x in self.lr_grid}) != len(self.lr_grid):  # a rate names a folder: lr=<rate:g>
                raise ConfigError(f"--tune-lr {self.lr_grid}: rates must differ in their first 6 significant digits")
            setting_lr = [n for n, b in {"base": self.base, **self.variants}.items() if "lr" in b]
            if setting_lr:
                raise ConfigError(f"--tune-lr gives the learning rates, and {', '.join(setting_lr)} also set(s) lr; "
                                  "drop one of them")
        self.baseline = self.baseline or next(iter(self.variants))
        if self.baseline not in self.variants:
            raise ConfigError(f"--baseline {self.baseline!r} is not a variant; variants: {', '.join(self.variants)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds {self.seeds}: expected distinct seeds (--seeds N for 0..N-1)")
        known = {f.name for f in fields(TrainConfig)} - set(FREE) - {"seed"}
        for name, settings in {"base": self.base, **self.variants}.items():
            unknown = sorted(set(settings) - known)
            if unknown:
                raise ConfigError(f"variant {name!r}: unknown setting(s) {', '.join(unknown)}; settings are the "
                                  "flags of bss train (without --out, --seed, --resume)")

    def settings(self, variant: str, seed: int, lr: float | None = None) -> dict:
        extra = {} if lr is None else {"lr": lr}
        return {"manifest": self.manifest, **self.base, **self.variants[variant], **extra, "seed": seed}

    def to_dict(self) -> dict:
        out = {"manifest": self.manifest, "variants": self.variants, "seeds": self.seeds, "base": self.base,
               "baseline": self.baseline}
        if self.lr_grid is not None:  # only then: a study without a grid keeps its old design file
            out.update(lr_grid=self.lr_grid, tune=self.tune)
        return out

    def validate(self) -> None:
        """Every run's settings pass bss train's checks before anything is created."""
        for v in self.variants:
            for lr in self.lr_grid or [None]:
                TrainConfig(out="study", **self.settings(v, self.seeds[0], lr)).validate(
                    lambda name, v=v: f"variant {v!r}: {name} =")

    def rates(self, variant: str) -> list[float | None]:
        """The learning rates ``variant`` trains at before selection (None: its own setting)."""
        if self.lr_grid is None:
            return [None]
        return self.lr_grid if self.tune == "per-variant" or variant == self.baseline else []

    def _full_settings(self) -> dict[str, dict]:
        """Every variant's complete bss train settings (defaults filled in), for pairing variants."""
        return {v: TrainConfig(out="-", **self.settings(v, 0)).to_dict() for v in self.variants}

    def controls(self) -> dict[str, str]:
        """Each variant's random-order control among the variants: the curriculum's (and the
        anti-curriculum's) is paced-random with the same settings otherwise; the learned
        scheduler's is itself with --shuffle-scores."""
        full = self._full_settings()

        def same(a: dict, b: dict, ignore: tuple) -> bool:
            return all(a[k] == b[k] for k in a if k not in ignore)

        out = {}
        for v, s in full.items():
            if s["scheduler"] in ("curriculum", "anti-curriculum"):
                want = {**s, "scheduler": "paced-random"}
                ignore = SCORING_ONLY
            elif s["scheduler"] == "learned" and not s["shuffle_scores"]:
                want, ignore = {**s, "shuffle_scores": True}, ()
            else:
                continue
            found = [c for c, cs in full.items() if c != v and same(cs, want, ignore)]
            if found:
                out[v] = found[0]
        return out

    def reverses(self) -> dict[str, str]:
        """Each curriculum's anti-curriculum twin (the same settings, the order reversed)."""
        full = self._full_settings()
        return {v: c for v, s in full.items() if s["scheduler"] == "curriculum"
                for c, cs in full.items() if cs == {**s, "scheduler": "anti-curriculum"}}


def design_from(manifest: str, schedulers: list[str] | None, variants_file: str | None, seeds: int,
                settings: dict, baseline: str | None, lr_grid: list[float] | None = None,
                tune: str = "per-variant", paper_protocol: bool = False) -> StudyDesign:
    """The design from the command line: ``--schedulers`` or a TOML ``[base]`` / ``[variants.NAME]`` file."""
    import tomllib

    base, variants = dict(settings), {}
    if variants_file:
        if Path(variants_file).exists() and not Path(variants_file).is_file() and not Path(variants_file).is_dir():
            raise ConfigError(f"--variants {variants_file}: not a regular file (a FIFO, device or socket)")
        try:
            raw = tomllib.loads(Path(variants_file).read_text())
        except (FileNotFoundError, IsADirectoryError):
            raise ConfigError(f"--variants {variants_file}: no such file") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--variants {variants_file}: not valid TOML ({exc})") from None
        if not isinstance(raw.get("base", {}), dict) or not isinstance(raw.get("variants", {}), dict):
            raise ConfigError(f"--variants {variants_file}: expected [base] and [variants.NAME] tables")
        base = {**{k.replace("-", "_"): v for k, v in raw.get("base", {}).items()}, **base}
        variants = {name: ({k.replace("-", "_"): v for k, v in body.items()} if isinstance(body, dict) else body)
                    for name, body in raw.get("variants", {}).items()}
        if not variants:
            raise ConfigError(f"--variants {variants_file}: no [variants.NAME] tables")
    for name in schedulers or []:
        if name not in SCHEDULER_VARIANTS and name not in TRAIN_SCHEDULERS:
            raise ConfigError(f"--schedulers: unknown {name!r}; expected schedulers of bss train "
                              f"({', '.join(TRAIN_SCHEDULERS)}) or {', '.join(SCHEDULER_VARIANTS)}")
        variants.setdefault(name, dict(SCHEDULER_VARIANTS.get(name, {"scheduler": name})))
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: expected an integer >= 1")
    if paper_protocol:
        base["test_every_epoch"] = True
    # the manifest by its absolute path: the same study continued from another folder is the same design
    return StudyDesign(manifest=str(Path(manifest).resolve()), variants=variants, seeds=list(range(seeds)), base=base,
                       baseline=baseline, lr_grid=lr_grid, tune=tune)
