"""Bad input, hostile files and faults end cleanly: exit 1 (2 from the parser), one message naming
the culprit, no traceback, and no file created or changed.

One workspace is built per module (a manifest, scores, schedules, predictions, a real run folder,
crafted bad files); every case runs one CLI command against it and compares the workspace's
bytes before and after.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401
import pyarrow.parquet as pq
import pytest
import torch
from conftest import ROOT, make_manifest_table, vectors
from typer.testing import CliRunner

from bss_cli.cli.app import app
from bss_cli.training.config import TrainConfig
from bss_cli.training.trainer import train

runner = CliRunner()
MARKER = "pwned.txt"


class Evil:
    """Unpickling this runs a shell command: what a crafted checkpoint does to a pickle load."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _write_parquet(table: pa.Table, path: Path, metadata: dict | None = None) -> Path:
    if metadata is not None:
        table = table.replace_schema_metadata(metadata)
    pq.write_table(table, path)
    return path


def _predictions(m: pa.Table, n_classes: int = 3) -> pa.Table:
    rng = np.random.default_rng(0)
    n = m.num_rows
    return pa.table({"sample_id": m["sample_id"], "logits_a": vectors(rng.normal(size=(n, n_classes))),
                     "logits_b": vectors(rng.normal(size=(n, n_classes)))})


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("ws")
    m = make_manifest_table()
    _write_parquet(m, w / "m.parquet")
    no_test = m.set_column(2, "split", pa.array(["val" if s == "test" else s for s in m["split"].to_pylist()]))
    _write_parquet(no_test, w / "m_notest.parquet")
    _write_parquet(make_manifest_table(n_classes=2), w / "m2.parquet")
    (w / "garbage.parquet").write_bytes(b"PAR1 this is not parquet")
    (w / "garbage.pt").write_bytes(os.urandom(256))
    (w / "afile").write_text("a plain file\n")
    (w / "existing.parquet").write_bytes(b"precious bytes")
    (w / "subdir").mkdir()
    env = dict(cwd=w)
    assert run("score", w / "m.parquet", "-o", w / "scores.parquet", **env).exit_code == 0
    assert run("score", w / "m.parquet", "-o", w / "scores_val.parquet", "--split", "val", **env).exit_code == 0
    assert run("score", w / "m.parquet", "-o", w / "scores_all.parquet", "--split", "all", **env).exit_code == 0
    assert run("schedule", w / "scores.parquet", "-o", w / "sched.parquet", "--epochs", "3", **env).exit_code == 0
    assert run("schedule", w / "scores_all.parquet", "-o", w / "sched_all.parquet", "--epochs", "3").exit_code == 0
    sched = pq.read_table(w / "sched.parquet")
    rows = sched["row"].to_numpy().copy()
    rows[0] = 10_000
    bad = sched.set_column(3, "row", pa.array(rows))
    with pq.ParquetWriter(w / "sched_bad_rows.parquet", bad.schema) as writer:
        for e in range(3):  # one row group per epoch, as bss schedule writes
            writer.write_table(bad.filter(pa.compute.equal(bad["epoch"], e)))
    scores = pq.read_table(w / "scores.parquet")
    bal = scores["balance"].to_numpy().copy()
    bal[3] = np.nan
    i = scores.column_names.index("balance")
    _write_parquet(scores.set_column(i, "balance", pa.array(bal)), w / "scores_nan.parquet", scores.schema.metadata)
    _write_parquet(scores.drop_columns(["balance"]), w / "scores_nobalance.parquet", scores.schema.metadata)
    p = _predictions(m)
    _write_parquet(p, w / "preds.parquet")
    _write_parquet(p.set_column(1, "logits_a", pa.array([str(v) for v in p["logits_a"].to_pylist()])),
                   w / "preds_str.parquet")
    _write_parquet(p.set_column(1, "logits_a", pa.array([[str(x) for x in v] for v in p["logits_a"].to_pylist()])),
                   w / "preds_liststr.parquet")
    _write_parquet(p.slice(1), w / "preds_missing.parquet")
    _write_parquet(_predictions(m, n_classes=5), w / "preds_5cls.parquet")
    nan_logits = np.array(p["logits_b"].to_pylist(), np.float32)
    nan_logits[0, 0] = np.nan
    _write_parquet(p.set_column(2, "logits_b", vectors(nan_logits)), w / "preds_nan.parquet")
    # a real run, and checkpoints made from it
    train(TrainConfig(manifest=str(w / "m.parquet"), out=str(w / "run"), epochs=1, hidden=8, quiet=True))
    train(TrainConfig(manifest=str(w / "m2.parquet"), out=str(w / "run2"), epochs=1, hidden=8, quiet=True))
    torch.save(Evil(w / MARKER), w / "evil.pt")
    state = torch.load(w / "run" / "last.pt", weights_only=True)
    state["model_factory"] = "evil_plugin:build"
    torch.save(state, w / "plugin.pt")
    (w / "evil_plugin.py").write_text(f"open({str(w / MARKER)!r}, 'w').write('imported')\n"
                                      "def build(cfg):\n    raise SystemExit('never')\n")
    (w / "bad_plugin.py").write_text(
        "import torch\nfrom bss_cli.models import FusionOutput\n"
        "class M(torch.nn.Module):\n    def __init__(self):\n        super().__init__(); self.w = torch.nn.Linear(1, 1)\n"
        "    def forward(self, x):\n        b = len(next(iter(x.values())))\n"
        "        return FusionOutput({m: torch.zeros(b, 7) for m in x}, None, {})\n"
        "def build(cfg):\n    return M()\n"
        "def build_tuple(cfg):\n    class T(M):\n        def forward(self, x):\n            return (1, 2)\n    return T()\n")
    for name, change in {"run_bad_settings": lambda r: (r / "settings.json").write_text("{not json"),
                         "run_no_settings": lambda r: (r / "settings.json").unlink(),
                         "run_evil": lambda r: shutil.copy(w / "evil.pt", r / "last.pt"),
                         "run_bad_metrics": lambda r: (r / "metrics.parquet").write_bytes(b"garbage"),
                         "run_bad_summary": lambda r: (r / "summary.json").write_text("[1, 2"),
                         "run_garbage_ckpt": lambda r: shutil.copy(w / "garbage.pt", r / "last.pt")}.items():
        shutil.copytree(w / "run", w / name)
        change(w / name)
    (w / "bad.toml").write_text("lr = [unclosed\n")
    for key, value in {"momentum": "-1", "dropout": "1.5", "lr_step": "0", "epochs": '"ten"', "seed": "1.5",
                       "lr": '"fast"', "amp": '"yes"', "layers": "0", "weight_decay": "-1", "lr_gamma": "0",
                       "decay": "2", "scheduler": "3", "lambda0": "nan", "batch_size": "true",
                       "temperature": "inf", "hidden": "-8", "encoder_weights": '"a=x.pt"'}.items():
        (w / f"bad_{key}.toml").write_text(f"{key} = {value}\n")
    (w / "unknown_key.toml").write_text("learning_rate = 0.1\n")
    long_vec = " ".join(["0.123456789"] * 40)  # a text cell longer than a file name may be
    (w / "long.csv").write_text("sample_id,label,split,a,b\n" + "".join(
        f"s{i},{i % 2},{['train', 'val', 'test'][i % 3]},{long_vec},{long_vec[:200]} {i}\n" for i in range(12)))
    sys.path.insert(0, str(w))
    yield w
    sys.path.remove(str(w))


def run(*args, cwd=None):
    return runner.invoke(app, [str(a) for a in args])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


# (id, argv with {w} for the workspace, exit code, substrings the message must contain)
S, SC, T, I, B = "score", "schedule", "train", "inspect", "build-manifest"
CASES = [
    # --- bss score: the manifest -----------------------------------------------------------
    ("score-missing-manifest", [S, "{w}/nope.parquet", "-o", "{w}/new.parquet"], 1, ["nope.parquet"]),
    ("score-manifest-is-folder", [S, "{w}/subdir", "-o", "{w}/new.parquet"], 1, ["subdir"]),
    ("score-manifest-garbage", [S, "{w}/garbage.parquet", "-o", "{w}/new.parquet"], 1, ["garbage.parquet"]),
    ("score-manifest-unknown-ext", [S, "{w}/afile", "-o", "{w}/new.parquet"], 1, ["afile"]),
    ("score-split-empty", [S, "{w}/m_notest.parquet", "-o", "{w}/new.parquet", "--split", "test"], 1,
     ["--split test", "no rows"]),
    ("score-split-unknown", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--split", "testing"], 2, ["--split"]),
    ("score-criterion-unknown", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--criterion", "magic"], 2, ["--criterion"]),
    # --- bss score: predictions ----------------------------------------------------------------
    ("score-preds-missing", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--predictions", "{w}/nope.parquet"], 1,
     ["nope.parquet"]),
    ("score-preds-garbage", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--predictions", "{w}/garbage.parquet"],
     1, ["garbage.parquet"]),
    ("score-preds-string-col", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--predictions",
                                "{w}/preds_str.parquet"], 1, ["logits_a"]),
    ("score-preds-list-of-strings", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--predictions",
                                     "{w}/preds_liststr.parquet"], 1, ["logits_a"]),
    ("score-preds-missing-row", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--predictions",
                                 "{w}/preds_missing.parquet"], 1, ["s000"]),
    ("score-preds-class-count", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--predictions",
                                 "{w}/preds_5cls.parquet"], 1, ["5 values", "3 classes"]),
    ("score-preds-nan", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--predictions", "{w}/preds_nan.parquet"], 1,
     ["logits_b"]),
    ("score-preds-and-checkpoint", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--predictions",
                                    "{w}/preds.parquet", "--checkpoint", "{w}/run/best.pt"], 1,
     ["--predictions and --checkpoint"]),
    ("score-preds-and-model", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--predictions", "{w}/preds.parquet",
                               "--model", "x:y"], 1, ["--model"]),
    # --- bss score: checkpoints ------------------------------------------------------------
    ("score-ckpt-missing", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--checkpoint", "{w}/nope.pt"], 1,
     ["nope.pt"]),
    ("score-ckpt-garbage", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--checkpoint", "{w}/garbage.pt"], 1,
     ["garbage.pt", "not a readable bss checkpoint"]),
    ("score-ckpt-malicious", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--checkpoint", "{w}/evil.pt"], 1,
     ["evil.pt", "refused"]),
    ("score-ckpt-not-checkpoint", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--checkpoint",
                                   "{w}/scores.parquet"], 1, ["scores.parquet"]),
    ("score-ckpt-fewer-classes", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--checkpoint", "{w}/run2/best.pt"],
     1, ["2 classes", "3"]),
    ("score-ckpt-plugin-unnamed", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--checkpoint", "{w}/plugin.pt"], 1,
     ["evil_plugin:build", "--model"]),
    ("score-ckpt-builtin-with-model", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--checkpoint",
                                       "{w}/run/best.pt", "--model", "bad_plugin:build"], 1, ["drop --model"]),
    # --- bss score: numbers ----------------------------------------------------------------
    ("score-fused-nan", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--fused-weight", "nan"], 1,
     ["--fused-weight nan"]),
    ("score-fused-negative", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--fused-weight", "-1"], 1,
     ["--fused-weight -1", "[0, 1000000]"]),
    ("score-unimodal-inf", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--unimodal-weight", "inf"], 1,
     ["--unimodal-weight inf"]),
    ("score-weights-zero", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--fused-weight", "0",
                            "--unimodal-weight", "0"], 1, ["no loss"]),
    ("score-hidden-zero", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--hidden", "0"], 1, ["--hidden 0"]),
    ("score-seed-negative", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--seed", "-1"], 1, ["--seed -1"]),
    ("score-workers-negative", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--workers", "-1"], 1,
     ["--workers -1"]),
    ("score-warmup-negative", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--warmup", "-2"], 1, ["--warmup -2"]),
    ("score-warmup-text", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--warmup", "two"], 2, ["--warmup"]),
    ("score-device-unknown", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--device", "tpu"], 1, ["--device"]),
    ("score-device-cuda-absent", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--device", "cuda"], 1,
     ["--device cuda"]),
    ("score-model-bad-spec", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--model", "nocolon"], 1,
     ["--model 'nocolon'"]),
    ("score-model-missing-module", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--model", "no_such_mod:build"], 1,
     ["no_such_mod"]),
    ("score-model-wrong-shape", [S, "{w}/m.parquet", "-o", "{w}/new.parquet", "--model", "bad_plugin:build"], 1,
     ["[2, 3]"]),
    # --- bss score: outputs ----------------------------------------------------------------
    ("score-out-is-folder", [S, "{w}/m.parquet", "-o", "{w}/subdir"], 1, ["subdir", "folder"]),
    ("score-out-parent-is-file", [S, "{w}/m.parquet", "-o", "{w}/afile/new.parquet"], 1, ["afile"]),
    ("score-out-exists", [S, "{w}/m.parquet", "-o", "{w}/existing.parquet"], 1, ["existing.parquet", "--force"]),
    # --- bss schedule ---------------------------------------------------------------------
    ("sched-scores-missing", [SC, "{w}/nope.parquet", "-o", "{w}/new.parquet"], 1, ["nope.parquet"]),
    ("sched-scores-is-manifest", [SC, "{w}/m.parquet", "-o", "{w}/new.parquet"], 1, ["m.parquet", "'scores'"]),
    ("sched-scores-garbage", [SC, "{w}/garbage.parquet", "-o", "{w}/new.parquet"], 1, ["garbage.parquet"]),
    ("sched-scores-folder", [SC, "{w}/subdir", "-o", "{w}/new.parquet"], 1, ["subdir"]),
    ("sched-scores-nan", [SC, "{w}/scores_nan.parquet", "-o", "{w}/new.parquet"], 1, ["balance", "NaN"]),
    ("sched-scores-no-balance", [SC, "{w}/scores_nobalance.parquet", "-o", "{w}/new.parquet"], 1, ["balance"]),
    ("sched-scheduler-unknown", [SC, "{w}/scores.parquet", "-o", "{w}/new.parquet", "--scheduler", "best"], 2,
     ["--scheduler"]),
    ("sched-pacing-unknown", [SC, "{w}/scores.parquet", "-o", "{w}/new.parquet", "--pacing", "cubic"], 2,
     ["--pacing"]),
    ("sched-format-unknown", [SC, "{w}/scores.parquet", "-o", "{w}/new.parquet", "--format", "xml"], 2, ["--format"]),
    ("sched-epochs-zero", [SC, "{w}/scores.parquet", "-o", "{w}/new.parquet", "--epochs", "0"], 1, ["--epochs 0"]),
    ("sched-epochs-negative", [SC, "{w}/scores.parquet", "-o", "{w}/new.parquet", "--epochs", "-3"], 1,
     ["--epochs -3"]),
    ("sched-epochs-text", [SC, "{w}/scores.parquet", "-o", "{w}/new.parquet", "--epochs", "ten"], 2, ["--epochs"]),
    ("sched-epoch-negative", [SC, "{w}/scores.parquet", "-o", "{w}/new.parquet", "--epoch", "-1"], 1,
     ["--epoch -1"]),
    ("sched-epoch-past-epochs", [SC, "{w}/scores.parquet", "-o", "{w}/new.parquet", "--epoch", "5", "--epochs",
                                 "3"], 1, ["--epoch 5", "--epochs 3"]),
    ("sched-lambda0-zero", [SC, "{w}/scores.parquet", "-o", "{w}/new.parquet", "--lambda0", "0"], 1,
     ["--lambda0 0"]),
    ("sched-lambda0-big", [SC, "{w}/scores.parquet", "-o", "{w}/new.parquet", "--lambda0", "1.5"], 1,
     ["--lambda0 1.5"]),
    ("sched-lambda0-nan", [SC, "{w}/scores.parquet", "-o", "{w}/new.parquet", "--lambda0", "nan"], 1,
     ["--lambda0 nan"]),
    ("sched-t-grow-zero", [SC, "{w}/scores.parquet", "-o", "{w}/new.parquet", "--t-grow", "0"], 1, ["--t-grow 0"]),
    ("sched-temperature-nan", [SC, "{w}/scores.parquet", "-o", "{w}/new.parquet", "--scheduler", "learned",
                               "--temperature", "nan"], 1, ["--temperature nan"]),
    ("sched-temperature-zero", [SC, "{w}/scores.parquet", "-o", "{w}/new.parquet", "--temperature", "0"], 1,
     ["--temperature 0"]),
    ("sched-temperature-inf", [SC, "{w}/scores.parquet", "-o", "{w}/new.parquet", "--temperature", "inf"], 1,
     ["--temperature inf"]),
    ("sched-eps-nan", [SC, "{w}/scores.parquet", "-o", "{w}/new.parquet", "--eps", "nan"], 1, ["--eps nan"]),
    ("sched-eps-zero", [SC, "{w}/scores.parquet", "-o", "{w}/new.parquet", "--eps", "0"], 1, ["--eps 0"]),
    ("sched-eps-negative", [SC, "{w}/scores.parquet", "-o", "{w}/new.parquet", "--eps", "-0.1"], 1, ["--eps -0.1"]),
    ("sched-decay-big", [SC, "{w}/scores.parquet", "-o", "{w}/new.parquet", "--decay", "1.5"], 1, ["--decay 1.5"]),
    ("sched-decay-nan", [SC, "{w}/scores.parquet", "-o", "{w}/new.parquet", "--decay", "nan"], 1, ["--decay nan"]),
    ("sched-seed-negative", [SC, "{w}/scores.parquet", "-o", "{w}/new.parquet", "--seed", "-5"], 1, ["--seed -5"]),
    ("sched-history-no-accumulate", [SC, "{w}/scores.parquet", "-o", "{w}/new.parquet", "--scheduler", "learned",
                                     "--history", "{w}/scores.parquet"], 1, ["--history needs an accumulating rule"]),
    ("sched-history-other-rows", [SC, "{w}/scores.parquet", "-o", "{w}/new.parquet", "--scheduler", "learned",
                                  "--accumulate", "--history", "{w}/scores_val.parquet"], 1, ["--history"]),
    ("sched-history-missing", [SC, "{w}/scores.parquet", "-o", "{w}/new.parquet", "--scheduler", "learned",
                               "--accumulate", "--history", "{w}/nope.parquet"], 1, ["nope.parquet"]),
    ("sched-out-is-folder", [SC, "{w}/scores.parquet", "-o", "{w}/subdir"], 1, ["subdir", "folder"]),
    ("sched-out-parent-is-file", [SC, "{w}/scores.parquet", "-o", "{w}/afile/s.parquet"], 1, ["afile"]),
    ("sched-out-exists", [SC, "{w}/scores.parquet", "-o", "{w}/existing.parquet"], 1, ["existing.parquet",
                                                                                        "--force"]),
    # --- bss train: flags ------------------------------------------------------------------
    *[(f"train-{flag.strip('-')}-{value}", [T, "{w}/m.parquet", "--out", "{w}/newrun", flag, value], 1,
       [f"{flag} {value}"])
      for flag, value in [("--lr", "nan"), ("--lr", "inf"), ("--lr", "0"), ("--lr", "-1"), ("--temperature", "nan"),
                          ("--temperature", "0"), ("--fused-weight", "nan"), ("--fused-weight", "-1"),
                          ("--unimodal-weight", "inf"), ("--hidden", "0"), ("--epochs", "0"), ("--batch-size", "0"),
                          ("--seed", "-1"), ("--t-grow", "0"), ("--lambda0", "2"), ("--lambda0", "nan"),
                          ("--warmup", "-1"), ("--workers", "-1")]],
    ("train-epochs-text", [T, "{w}/m.parquet", "--out", "{w}/newrun", "--epochs", "ten"], 2, ["--epochs"]),
    ("train-scheduler-unknown", [T, "{w}/m.parquet", "--out", "{w}/newrun", "--scheduler", "magic"], 2, ["--scheduler"]),
    ("train-device-cuda-absent", [T, "{w}/m.parquet", "--out", "{w}/newrun", "--device", "cuda"], 1,
     ["--device cuda"]),
    ("train-no-manifest", [T, "--out", "{w}/newrun"], 1, ["no manifest"]),
    ("train-no-out", [T, "{w}/m.parquet"], 1, ["--out"]),
    ("train-missing-manifest", [T, "{w}/nope.parquet", "--out", "{w}/newrun"], 1, ["nope.parquet"]),
    ("train-garbage-manifest", [T, "{w}/garbage.parquet", "--out", "{w}/newrun"], 1, ["garbage.parquet"]),
    ("train-scores-and-warmup", [T, "{w}/m.parquet", "--out", "{w}/newrun", "--scheduler", "curriculum", "--scores",
                                 "{w}/scores.parquet", "--warmup", "1"], 1, ["--scores and --warmup"]),
    ("train-online-gradient", [T, "{w}/m.parquet", "--out", "{w}/newrun", "--rescore", "online", "--criterion",
                               "prediction-sim+gradient"], 1, ["--rescore online"]),
    ("train-encoder-weights-format", [T, "{w}/m.parquet", "--out", "{w}/newrun", "--encoder-weights", "nonsense"], 1,
     ["--encoder-weights"]),
    ("train-model-bad-spec", [T, "{w}/m.parquet", "--out", "{w}/newrun", "--model", "nocolon"], 1, ["nocolon"]),
    ("train-model-missing", [T, "{w}/m.parquet", "--out", "{w}/newrun", "--model", "no_such_mod:build"], 1,
     ["no_such_mod"]),
    ("train-model-wrong-shape", [T, "{w}/m.parquet", "--out", "{w}/newrun", "--model", "bad_plugin:build"], 1,
     ["[2, 3]", "logits"]),
    ("train-model-wrong-type", [T, "{w}/m.parquet", "--out", "{w}/newrun", "--model", "bad_plugin:build_tuple"], 1,
     ["FusionOutput"]),
    # --- bss train: TOML -------------------------------------------------------------------
    *[(f"train-toml-{key}", [T, "{w}/m.parquet", "--out", "{w}/newrun", "--config", f"{{w}}/bad_{key}.toml"], 1,
       [f"bad_{key}.toml: {key} ="])
      for key in ("momentum", "dropout", "lr_step", "epochs", "seed", "lr", "amp", "layers", "weight_decay",
                  "lr_gamma", "decay", "scheduler", "lambda0", "batch_size", "temperature", "hidden",
                  "encoder_weights")],
    ("train-toml-broken", [T, "{w}/m.parquet", "--out", "{w}/newrun", "--config", "{w}/bad.toml"], 1,
     ["bad.toml", "not valid TOML"]),
    ("train-toml-missing", [T, "{w}/m.parquet", "--out", "{w}/newrun", "--config", "{w}/nope.toml"], 1,
     ["nope.toml"]),
    ("train-toml-unknown-key", [T, "{w}/m.parquet", "--out", "{w}/newrun", "--config", "{w}/unknown_key.toml"], 1,
     ["learning_rate"]),
    # --- bss train: run folders ------------------------------------------------------------
    ("train-out-is-file", [T, "{w}/m.parquet", "--out", "{w}/afile"], 1, ["afile", "is a file"]),
    ("train-out-parent-is-file", [T, "{w}/m.parquet", "--out", "{w}/afile/run"], 1, ["afile", "is a file"]),
    ("train-out-holds-run", [T, "{w}/m.parquet", "--out", "{w}/run", "--epochs", "1", "--hidden", "8"], 1,
     ["already holds a run", "--resume"]),
    ("train-resume-changed", [T, "{w}/m.parquet", "--out", "{w}/run", "--epochs", "2", "--hidden", "8", "--resume"],
     1, ["settings differ", "epochs"]),
    ("train-resume-bad-settings", [T, "{w}/m.parquet", "--out", "{w}/run_bad_settings", "--epochs", "1", "--hidden",
                                   "8", "--resume"], 1, ["settings.json", "not readable JSON"]),
    ("train-resume-no-settings", [T, "{w}/m.parquet", "--out", "{w}/run_no_settings", "--epochs", "1", "--hidden",
                                  "8", "--resume"], 1, ["settings.json", "missing"]),
    ("train-resume-malicious", [T, "{w}/m.parquet", "--out", "{w}/run_evil", "--epochs", "1", "--hidden", "8",
                                "--resume"], 1, ["last.pt", "refused"]),
    ("train-resume-garbage", [T, "{w}/m.parquet", "--out", "{w}/run_garbage_ckpt", "--epochs", "1", "--hidden", "8",
                              "--resume"], 1, ["last.pt", "not a readable bss checkpoint"]),
    # --- bss train: schedules and scores that would leak or misfit -------------------------
    ("train-schedule-test-rows", [T, "{w}/m.parquet", "--out", "{w}/newrun", "--schedule", "{w}/sched_all.parquet",
                                  "--epochs", "3"], 1, ["not in the train split", "val", "test"]),
    ("train-schedule-row-out-of-range", [T, "{w}/m.parquet", "--out", "{w}/newrun", "--schedule",
                                         "{w}/sched_bad_rows.parquet", "--epochs", "3"], 1, ["10000"]),
    ("train-schedule-too-short", [T, "{w}/m.parquet", "--out", "{w}/newrun", "--schedule", "{w}/sched.parquet",
                                  "--epochs", "5"], 1, ["no epoch(s) [3, 4]"]),
    ("train-schedule-other-manifest", [T, "{w}/m2.parquet", "--out", "{w}/newrun", "--schedule",
                                       "{w}/sched.parquet", "--epochs", "3"], 1, ["another manifest"]),
    ("train-schedule-not-schedule", [T, "{w}/m.parquet", "--out", "{w}/newrun", "--schedule", "{w}/scores.parquet"],
     1, ["'schedule'"]),
    ("train-scores-val-split", [T, "{w}/m.parquet", "--out", "{w}/newrun", "--scheduler", "curriculum", "--scores",
                                "{w}/scores_val.parquet"], 1, ["not in the train split", "val"]),
    ("train-scores-all-splits", [T, "{w}/m.parquet", "--out", "{w}/newrun", "--scheduler", "curriculum", "--scores",
                                 "{w}/scores_all.parquet"], 1, ["not in the train split", "test"]),
    ("train-scores-other-manifest", [T, "{w}/m2.parquet", "--out", "{w}/newrun", "--scheduler", "curriculum",
                                     "--scores", "{w}/scores.parquet"], 1, ["another manifest"]),
    # --- bss inspect ---------------------------------------------------------------------
    ("inspect-missing", [I, "{w}/nope.parquet"], 1, ["nope.parquet"]),
    ("inspect-garbage", [I, "{w}/garbage.parquet"], 1, ["garbage.parquet"]),
    ("inspect-not-a-run", [I, "{w}/subdir"], 1, ["subdir"]),
    ("inspect-bad-metrics", [I, "{w}/run_bad_metrics"], 1, ["metrics.parquet"]),
    ("inspect-bad-summary", [I, "{w}/run_bad_summary"], 1, ["summary.json"]),
    ("inspect-bad-settings", [I, "{w}/run_bad_settings"], 1, ["settings.json"]),
    ("inspect-malicious-checkpoint", [I, "{w}/evil.pt"], 1, ["evil.pt", "refused"]),
    ("inspect-garbage-checkpoint", [I, "{w}/garbage.pt"], 1, ["garbage.pt"]),
    ("inspect-plot-to-folder", [I, "{w}/run", "--plot", "{w}/subdir"], 1, ["subdir"]),
    # --- bss build-manifest: media flags -------------------------------------------------
    *[(f"build-{flag.strip('-')}-{value}", [B, "crema-d", "{w}/subdir", "-o", "{w}/new.parquet", flag, value], 1,
       [f"{flag} {value}"])
      for flag, value in [("--frames", "0"), ("--seconds", "0"), ("--seconds", "nan"), ("--sample-rate", "0"),
                          ("--hop", "0"), ("--image-size", "0"), ("--n-fft", "-4"), ("--seed", "-1")]],
    ("build-root-missing", [B, "crema-d", "{w}/nope", "-o", "{w}/new.parquet"], 1, ["nope"]),
    ("build-layout-unknown", [B, "kinetics", "{w}/subdir", "-o", "{w}/new.parquet"], 2, ["kinetics"]),
    ("sample-data-unknown", ["sample-data", "imagenet", "--out-dir", "{w}/subdir"], 1, ["imagenet"]),
]


@pytest.mark.parametrize("case_id,argv,code,needles", CASES, ids=[c[0] for c in CASES])
def test_bad_input_ends_cleanly(ws, case_id, argv, code, needles):
    before = snapshot(ws)
    r = run(*[a.replace("{w}", str(ws)) for a in argv])
    assert r.exit_code == code, r.output
    assert isinstance(r.exception, SystemExit), f"uncaught {r.exception!r}"
    assert "Traceback" not in r.output and "Warning" not in r.output
    message = r.stderr
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    if code == 1:
        assert message.startswith("error: ") and len(message.strip().splitlines()) <= 30
    assert snapshot(ws) == before, "files were created or changed"
    assert not (ws / MARKER).exists(), "code from a file ran"


def test_enough_cases():
    assert len(CASES) >= 120


def test_malicious_checkpoint_runs_nothing_anywhere(ws):
    """Every load of a checkpoint refuses a pickle that would run code, with a clean message."""
    from bss_cli.errors import ArtifactError
    from bss_cli.models.checkpoints import load_checkpoint, model_from_checkpoint

    for load in (load_checkpoint, model_from_checkpoint):
        with pytest.raises(ArtifactError, match="refused"):
            load(ws / "evil.pt")
    # a checkpoint naming a plug-in does not make bss import it
    r = run("score", ws / "m.parquet", "-o", ws / "x.parquet", "--checkpoint", ws / "plugin.pt")
    assert r.exit_code == 1 and "pass --model evil_plugin:build" in r.stderr
    assert not (ws / MARKER).exists() and "evil_plugin" not in sys.modules


def test_inputs_that_crashed_before_now_work(ws, tmp_path):
    # a CSV whose text vectors are longer than a file name may be
    r = run("score", ws / "long.csv", "-o", tmp_path / "s.parquet")
    assert r.exit_code == 0, r.output
    # a run's checkpoint rebuilds and scores through --checkpoint
    r = run("score", ws / "m.parquet", "-o", tmp_path / "c.parquet", "--checkpoint", ws / "run" / "best.pt")
    assert r.exit_code == 0, r.output


def test_truncated_jpeg_is_refused_at_validation(tmp_path):
    from PIL import Image

    from bss_cli.data.media import check_image
    from bss_cli.errors import BSSError

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(tmp_path / "f.jpg")
    data = (tmp_path / "f.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    check_image(tmp_path / "f.jpg", 1)
    with pytest.raises(BSSError, match="cut.jpg cannot be decoded"):
        check_image(tmp_path / "cut.jpg", 1)


def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "bss_cli", *map(str, args)], capture_output=True, text=True,
                          **kwargs)


def test_full_disk_and_dev_full_keep_existing_files(ws, tmp_path):
    import resource

    target = tmp_path / "sched.parquet"
    target.write_bytes(b"old good file")

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))

    r = subprocess.run([sys.executable, "-m", "bss_cli", "schedule", str(ws / "scores.parquet"), "-o", str(target),
                        "--epochs", "50", "--force"], capture_output=True, text=True, preexec_fn=small_files)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "cannot write" in r.stderr and str(target) in r.stderr
    assert target.read_bytes() == b"old good file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sched.parquet"]  # no temporary file left
    with open("/dev/full", "wb") as full:
        r = subprocess.run([sys.executable, "-m", "bss_cli", "schedule", str(ws / "scores.parquet"), "-o", "-",
                            "--epochs", "50"], stdout=full, stderr=subprocess.PIPE, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "stdout" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_full_disk_during_training_stops_with_the_file_named(ws, tmp_path):
    """Checkpoints are written on a background thread; a write that fails still stops the run with
    exit 1, naming the file, leaving no temporary file and no half-written checkpoint."""
    import resource

    out = tmp_path / "r"

    def small_files():  # the plan and schedule files fit; a checkpoint (~19 kB) does not
        resource.setrlimit(resource.RLIMIT_FSIZE, (12000, 12000))

    r = _cli("train", ws / "m.parquet", "--out", out, "--epochs", "3", "--hidden", "8", "--quiet",
             preexec_fn=small_files)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    # best.pt is the first checkpoint written (last.pt, which records it, lands after it)
    assert "cannot write" in r.stderr and str(out / "best.pt") in r.stderr, r.stderr
    assert not (out / "last.pt").exists() and not (out / "best.pt").exists() and not list(out.rglob("*.tmp"))


def test_file_writer_keeps_order_and_reports_a_failed_write(tmp_path):
    from bss_cli.artifacts import FileWriter
    from bss_cli.errors import ArtifactError

    seen = []
    with FileWriter() as files:
        for i in range(20):
            files.write(tmp_path / "f", str(i).encode())
            files.call(lambda i=i: seen.append((i, (tmp_path / "f").read_text())))
    assert seen == [(i, str(i)) for i in range(20)]  # each write landed before what was asked after it
    (tmp_path / "dir").mkdir()
    files = FileWriter()
    files.write(tmp_path / "dir", b"x")  # a folder in the way: fails on the thread
    with pytest.raises(ArtifactError, match="is a folder"):
        files.flush()
    with pytest.raises(KeyError), FileWriter() as files:  # the error in flight is the one reported
        files.write(tmp_path / "dir", b"x")
        raise KeyError("first")


def test_read_only_folder(ws, tmp_path):
    if os.geteuid() == 0:
        target = Path("/sys/bss-test.parquet")  # root ignores permission bits; sysfs refuses new files
    else:
        (tmp_path / "ro").mkdir(mode=0o555)
        target = tmp_path / "ro" / "s.parquet"
    r = run("schedule", ws / "scores.parquet", "-o", target)
    assert r.exit_code == 1 and "cannot write" in r.stderr and str(target) in r.stderr, r.output
    assert not target.exists()


def test_ctrl_c_exits_130_with_one_line(ws, tmp_path, monkeypatch):
    import bss_cli.scheduling.schedule_io as sio

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sio, "write_schedule", interrupted)
    r = run("schedule", ws / "scores.parquet", "-o", tmp_path / "s.parquet")
    assert r.exit_code == 130 and r.stderr.strip() == "interrupted: nothing was written; existing outputs are unchanged"
    assert not (tmp_path / "s.parquet").exists()

    def stop(*a, **k):
        raise KeyboardInterrupt

    import bss_cli.training.trainer as trainer

    monkeypatch.setattr(trainer, "train", stop)
    r = run("train", ws / "m.parquet", "--out", tmp_path / "r")
    assert r.exit_code == 130 and "--resume" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_second_writer_on_a_run_folder_fails_at_once(ws, tmp_path):
    """A run holding the folder's lock makes a second bss train fail; a killed holder frees it."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; from pathlib import Path; p = Path(sys.argv[1]); p.mkdir();"
        "fd = os.open(p / '.bss-lock', os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX);"
        "print('locked', flush=True); time.sleep(60)"), str(tmp_path / "r")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = run("train", ws / "m.parquet", "--out", tmp_path / "r", "--epochs", "1", "--hidden", "8", "--quiet")
        assert r.exit_code == 1 and "another bss train is writing this run folder" in r.stderr, r.output
        assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [".bss-lock"]
    finally:
        holder.kill()  # kill -9: the lock dies with the process
        holder.wait()
    r = run("train", ws / "m.parquet", "--out", tmp_path / "r", "--epochs", "1", "--hidden", "8", "--quiet")
    assert r.exit_code == 0, r.output


def test_diverging_run_stops_cleanly_keeping_the_last_good_checkpoint(ws, tmp_path):
    out = tmp_path / "r"
    # the largest factors the bounds allow, unclipped: the loss overflows (an --lr past 10 is refused)
    r = run("train", ws / "m.parquet", "--out", out, "--epochs", "3", "--hidden", "8", "--lr", "10", "--clip-grad",
            "0", "--fused-weight", "1000000", "--unimodal-weight", "1000000", "--optimizer", "sgd", "--quiet")
    assert r.exit_code == 1 and "training diverged" in r.stderr and "--lr" in r.stderr, r.output
    assert "epoch" in r.stderr and "batch" in r.stderr and "Traceback" not in r.output
    assert not (out / "summary.json").exists()
    if (out / "last.pt").exists():  # whatever was kept is a good checkpoint
        state = torch.load(out / "last.pt", weights_only=True)
        assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_resume_before_the_first_checkpoint_starts_over(ws, tmp_path):
    base = dict(manifest=str(ws / "m.parquet"), epochs=2, hidden=8, quiet=True)
    straight = train(TrainConfig(out=str(tmp_path / "a"), **base))

    class Kill(Exception):
        pass

    def die(*_):
        raise Kill

    from bss_cli.training.trainer import Callbacks

    with pytest.raises(Kill):
        train(TrainConfig(out=str(tmp_path / "b"), **base), Callbacks(on_batch=die))
    assert not (tmp_path / "b" / "last.pt").exists() and (tmp_path / "b" / "settings.json").exists()
    (tmp_path / "b" / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")  # left by a kill -9
    os.chdir(tmp_path)
    try:  # the same folder by a relative path
        resumed = train(TrainConfig(out="b", resume=True, **base))
    finally:
        os.chdir(ROOT)
    assert resumed.test == straight.test
    assert not list((tmp_path / "b").glob("*.tmp"))


def test_same_seed_runs_are_byte_identical(ws, tmp_path):
    """Every file of a run folder but timings.parquet is the same, byte for byte, for the same seed."""
    for name in ("a", "b"):
        train(TrainConfig(manifest=str(ws / "m.parquet"), out=str(tmp_path / name), epochs=2, hidden=8,
                          scheduler="learned", quiet=True))
    a, b = snapshot(tmp_path / "a"), snapshot(tmp_path / "b")
    assert sorted(a) == sorted(b)
    differ = [k for k in a if a[k] != b[k]]
    assert differ == ["timings.parquet"]
    assert "last.pt" in a and "epochs/epoch=1/scores.parquet" in a
    assert json.loads(a["summary.json"])["best_epoch"] in (0, 1)


def test_concurrent_writers_to_one_output_never_tear(ws, tmp_path):
    target = tmp_path / "s.parquet"
    procs = [subprocess.Popen([sys.executable, "-m", "bss_cli", "schedule", str(ws / "scores.parquet"), "-o",
                               str(target), "--epochs", "20", "--seed", str(seed), "--force", "--quiet"])
             for seed in range(3)]
    assert [p.wait() for p in procs] == [0, 0, 0]
    assert pq.read_table(target).num_rows > 0  # a whole file, from one of the writers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.parquet"]
