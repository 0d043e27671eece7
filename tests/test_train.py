import json
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import ROOT, free_port, run_processes
from typer.testing import CliRunner

from bss_cli.cli.app import app
from bss_cli.errors import ConfigError
from bss_cli.training.config import TrainConfig
from bss_cli.training.trainer import Callbacks, train

runner = CliRunner()
TIMING = ("plan_seconds", "train_seconds", "score_seconds", "eval_seconds", "samples_per_s")


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def metrics(run_dir):
    t = pq.read_table(run_dir / "metrics.parquet")
    return t.drop_columns([c for c in TIMING if c in t.column_names]).to_pylist()


def test_end_to_end_score_schedule_train_resume_inspect(tiny_manifest, tmp_path):
    scores, sched, run_dir = tmp_path / "scores.parquet", tmp_path / "schedule.parquet", tmp_path / "run"
    assert run("score", tiny_manifest, "-o", scores).exit_code == 0
    assert run("schedule", scores, "-o", sched, "--epochs", "3", "--t-grow", "2").exit_code == 0
    r = run("train", tiny_manifest, "--out", run_dir, "--schedule", sched, "--epochs", "2", "--quiet")
    assert r.exit_code == 0, r.output
    files = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    assert files == [".bss-lock", "best.pt", "last.pt", "metrics.parquet", "settings.json", "summary.json",
                     "timings.parquet"]
    assert [m["epoch"] for m in metrics(run_dir)] == [0, 1]
    assert [m["subset_size"] for m in metrics(run_dir)] == [pq.ParquetFile(sched).metadata.row_group(i).num_rows
                                                          for i in range(2)]
    r = run("train", tiny_manifest, "--out", run_dir, "--schedule", sched, "--epochs", "2", "--quiet")
    assert r.exit_code == 1 and "already holds a run; pass --resume" in r.stderr
    r = run("train", tiny_manifest, "--out", run_dir, "--schedule", sched, "--epochs", "3", "--quiet", "--resume")
    assert r.exit_code == 1 and "settings differ from the run's settings.json: epochs (run: 2, now: 3)" in r.stderr
    r = run("train", tiny_manifest, "--out", tmp_path / "run2", "--scheduler", "learned", "--epochs", "3", "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["scheduler"] == "learned" and set(summary["test"]) >= {"acc", "macro_f1", "map", "acc_a", "acc_b",
                                                                          "imbalance"}
    epochs = sorted(p.name for p in (tmp_path / "run2" / "epochs").iterdir())
    assert epochs == ["epoch=0", "epoch=1", "epoch=2"]
    for e in epochs:
        assert {p.name for p in (tmp_path / "run2" / "epochs" / e).iterdir()} == {"scores.parquet", "schedule.parquet"}
    r = run("inspect", tmp_path / "run2", "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["kind"] == "run" and len(s["epochs"]) == 3 and len(s["balance"]) == 3


class Crash(Exception):
    pass


def crash_at(epoch, batch):
    seen = {"n": 0}

    def on_batch(e, n, loss):
        if e == epoch:
            seen["n"] += 1
            if seen["n"] == batch:
                raise Crash()

    return Callbacks(on_batch=on_batch)


@pytest.mark.parametrize("settings", [
    {"scheduler": "learned"},
    {"scheduler": "learned", "rescore": "online", "accumulate": True},
    {"scheduler": "curriculum", "t_grow": 3},
    {"scheduler": "none", "lr_schedule": "step", "lr_step": 2, "optimizer": "adam", "lr": 0.01},
    {"scheduler": "paced-random", "t_grow": 3, "lr_warmup": 2.5, "optimizer": "adamw", "lr": 0.01},
    {"scheduler": "learned", "shuffle_scores": True, "paced": True, "t_grow": 3, "clip_grad": 0.0},
])
def test_killed_and_resumed_run_equals_uninterrupted(tiny_manifest, tmp_path, settings):
    base = dict(manifest=str(tiny_manifest), epochs=4, batch_size=8, dropout=0.3, save_every=0, **settings)
    straight = train(TrainConfig(out=str(tmp_path / "a"), **base))
    with pytest.raises(Crash):
        train(TrainConfig(out=str(tmp_path / "b"), **base), crash_at(epoch=2, batch=2))
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["epoch"] == 1  # saved after every epoch
    resumed = train(TrainConfig(out=str(tmp_path / "b"), resume=True, **base))
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")
    assert resumed.test == straight.test
    for name in ("last.pt", "best.pt"):
        a = torch.load(tmp_path / "a" / name, weights_only=True)["model"]
        b = torch.load(tmp_path / "b" / name, weights_only=True)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a)


def folder_bytes(run_dir):
    return {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name not in ("settings.json", "timings.parquet", ".bss-lock")}


@pytest.mark.parametrize("settings", [{"scheduler": "learned", "accumulate": True},
                                      {"scheduler": "learned", "rescore": "online"},
                                      {"scheduler": "curriculum", "t_grow": 3}, {"scheduler": "none"}])
def test_saving_only_at_the_end_leaves_the_same_folder(tiny_manifest, tmp_path, settings):
    """--save-every holds each epoch's files back until the folder is brought up to date: a run
    saved once, at its end, leaves the same bytes as one saved after every epoch (best.pt from
    the state held since its epoch, the epoch artifacts, the plan files the checkpoint names)."""
    base = dict(manifest=str(tiny_manifest), epochs=5, batch_size=8, dropout=0.3, **settings)
    every = train(TrainConfig(out=str(tmp_path / "a"), save_every=0, **base))
    once = train(TrainConfig(out=str(tmp_path / "b"), save_every=3600, **base))
    assert once.test == every.test
    a, b = folder_bytes(tmp_path / "a"), folder_bytes(tmp_path / "b")
    # summary.json too: --save-every is resume-free, not part of the settings' fingerprint
    assert sorted(a) == sorted(b) and [k for k in a if a[k] != b[k]] == []
    assert "best.pt" in a and "epochs/epoch=4/schedule.parquet" in a
    assert torch.load(tmp_path / "b" / "best.pt", weights_only=True)["epoch"] == every.best_epoch
    if settings["scheduler"] == "none":  # the case of a best.pt held back for epochs since its epoch
        assert every.best_epoch < 4


def test_a_kill_between_saves_leaves_the_folder_as_last_saved(tiny_manifest, tmp_path):
    base = dict(manifest=str(tiny_manifest), epochs=4, batch_size=8, scheduler="learned", save_every=3600)
    straight = train(TrainConfig(out=str(tmp_path / "a"), **base))
    with pytest.raises(Crash):
        train(TrainConfig(out=str(tmp_path / "b"), **base), crash_at(epoch=2, batch=2))
    left = sorted(p.relative_to(tmp_path / "b").as_posix() for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert left == [".bss-lock", "settings.json"]  # the held files were dropped
    resumed = train(TrainConfig(out=str(tmp_path / "b"), resume=True, **base))  # starts over
    assert resumed.test == straight.test and metrics(tmp_path / "a") == metrics(tmp_path / "b")


@pytest.mark.parametrize("settings", [{"scheduler": "learned", "accumulate": True},
                                      {"scheduler": "curriculum", "t_grow": 3}])
def test_checkpoints_name_their_plan_files_and_hold_no_scores(tiny_manifest, tmp_path, settings):
    run_dir = tmp_path / "r"
    train(TrainConfig(manifest=str(tiny_manifest), out=str(run_dir), epochs=3, epoch_artifacts=False, **settings))
    state = torch.load(run_dir / "last.pt", weights_only=True)
    trainer = state["trainer"]
    assert set(trainer) == {"json"}  # plain JSON: no score tables, no per-sample arrays
    files = json.loads(trainer["json"])["plan_files"]
    kept = sorted(p.relative_to(run_dir).as_posix() for p in (run_dir / "plan").glob("*.parquet"))
    assert kept == sorted(e["file"] for e in files.values() if e)  # superseded plan files are gone
    if settings["scheduler"] == "learned":
        assert files["plan"]["file"] == "plan/scores-epoch=2.parquet" and files["static"] is None
        assert "accumulated_balance" in pq.read_schema(run_dir / files["plan"]["file"]).names
    else:
        assert files["static"]["file"] == "plan/static.parquet"
    # A plan file that changed or vanished stops the resume, naming it; nothing is overwritten.
    target = run_dir / next(e["file"] for e in files.values() if e)
    table = pq.read_table(target)
    pq.write_table(table.set_column(table.schema.get_field_index("balance"), "balance",
                                    pa.array(np.zeros(table.num_rows))), target)
    before = (run_dir / "last.pt").read_bytes()
    r = run("train", tiny_manifest, "--out", run_dir, "--resume", "--epochs", "3", "--no-epoch-artifacts",
            *[f"--{k.replace('_', '-')}" if v is True else f"--{k.replace('_', '-')}={v}" for k, v in settings.items()])
    assert r.exit_code == 1, r.output
    assert str(target) in r.stderr and "changed since the checkpoint was written" in r.stderr
    assert (run_dir / "last.pt").read_bytes() == before
    target.unlink()
    r = run("train", tiny_manifest, "--out", run_dir, "--resume", "--epochs", "3", "--no-epoch-artifacts",
            *[f"--{k.replace('_', '-')}" if v is True else f"--{k.replace('_', '-')}={v}" for k, v in settings.items()])
    assert r.exit_code == 1 and "missing, and the checkpoint needs it to resume" in r.stderr, r.output


def test_same_seed_same_run_bytes(tiny_manifest, tmp_path):
    for name in ("a", "b"):
        train(TrainConfig(manifest=str(tiny_manifest), out=str(tmp_path / name), epochs=2))
    for rel in ("epochs/epoch=1/scores.parquet", "epochs/epoch=1/schedule.parquet"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")


def test_config_file_and_flag_errors(tiny_manifest, tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'manifest = "{tiny_manifest}"\nout = "{tmp_path / "r"}"\nepochs = 2\nbatch-size = 16\n'
                   'scheduler = "curriculum"\nwarmup = 1\n')
    r = run("train", "--config", cfg, "--quiet")
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "r" / "settings.json").read_text())
    assert saved["batch_size"] == 16 and saved["warmup"] == 1 and saved["epochs"] == 2
    cfg.write_text('epoch = 3\n')
    r = run("train", tiny_manifest, "--config", cfg, "--out", tmp_path / "x")
    assert r.exit_code == 1 and "unknown key(s) epoch; keys are the flags of bss train" in r.stderr
    r = run("train", tiny_manifest, "--out", tmp_path / "x", "--warmup", "2", "--rescore", "online",
            "--criterion", "prediction-sim+gradient")
    assert r.exit_code == 1
    assert "--scores and --warmup choose the curriculum's order" in r.stderr
    assert "--rescore online cannot compute per-sample gradients" in r.stderr
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match="--epochs 0: expected an integer >= 1"):
        TrainConfig(manifest="m", out="o", epochs=0).validate()


def test_plugin_model(tiny_manifest, tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(
        "from bss_cli.models.fusion import LateFusion\n"
        "def build(cfg):\n    cfg.hidden = 8\n    return LateFusion(cfg)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    res = train(TrainConfig(manifest=str(tiny_manifest), out=str(tmp_path / "r"), epochs=1, model="mymodels:build"))
    assert res.best_epoch == 0
    state = torch.load(tmp_path / "r" / "best.pt", weights_only=True)
    assert state["model"]["heads.a.weight"].shape[1] == 8


@pytest.mark.slow
def test_two_process_torchrun_gloo(tiny_manifest, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "bss_cli", "train", str(tiny_manifest), "--out", str(tmp_path / "ddp"),
           "--epochs", "2", "--device", "cpu", "--quiet", "--json"]
    proc = run_processes(cmd, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-6000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["epochs"] == 2 and 0 <= summary["test"]["acc"] <= 1
    rows = metrics(tmp_path / "ddp")
    assert [r["epoch"] for r in rows] == [0, 1] and rows[0]["subset_size"] == 36


def test_inspect_plot(tiny_manifest, tmp_path):
    import importlib.util

    train(TrainConfig(manifest=str(tiny_manifest), out=str(tmp_path / "run"), epochs=2))
    r = run("inspect", tmp_path / "run", "--plot", tmp_path / "curves.png")
    if importlib.util.find_spec("matplotlib") is None:
        assert r.exit_code == 1 and "--plot needs matplotlib, an optional extra of this checkout: .venv/bin/pip install -e '.[plot]'" in r.stderr
        assert not (tmp_path / "curves.png").exists()
    else:
        assert r.exit_code == 0, r.output
        assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = run("inspect", tiny_manifest, "--plot", tmp_path / "x.png")
    assert r.exit_code == 1 and "--plot draws run folders" in r.stderr


def test_inspect_metrics_file(tiny_manifest, tmp_path):
    train(TrainConfig(manifest=str(tiny_manifest), out=str(tmp_path / "run"), epochs=2, scheduler="none"))
    r = run("inspect", tmp_path / "run" / "metrics.parquet", "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["kind"] == "metrics" and [e["epoch"] for e in s["epochs"]] == [0, 1]


def test_epoch_folders_read_back_with_their_epoch_by_one_glob(tiny_manifest, tmp_path):
    import glob

    import pyarrow.dataset as ds

    train(TrainConfig(manifest=str(tiny_manifest), out=str(tmp_path / "run"), epochs=3, hidden=8, quiet=True))
    base = str(tmp_path / "run" / "epochs")
    table = ds.dataset(sorted(glob.glob(base + "/*/scores.parquet")), format="parquet", partitioning="hive",
                       partition_base_dir=base).to_table()
    assert sorted(set(table["epoch"].to_pylist())) == [0, 1, 2] and table.num_rows == 3 * 36


def test_rescore_every_and_the_paper_rule_in_training(tiny_manifest, tmp_path):
    r = train(TrainConfig(manifest=str(tiny_manifest), out=str(tmp_path / "r"), epochs=5, hidden=8, quiet=True,
                          scheduler="learned", rule="paper", beta=0.4, rescore_every=2))
    rescored = [h["epoch"] for h in r.history if h["rescored"]]
    assert rescored == [1, 3]  # after epochs 2 and 4 (t = 2, 4); none after the last
    import pyarrow.parquet as pq

    meta = pq.read_schema(tmp_path / "r" / "epochs" / "epoch=2" / "schedule.parquet").metadata
    params = json.loads(meta[b"bss.scheduler_params"])
    assert params == {"rule": "paper", "temperature": 1.0, "beta": 0.4}


def test_diagnosis_states_signals_and_claims_no_prediction(tiny_manifest, tmp_path):
    from bss_cli.report.summary import diagnose

    rows = [{"epoch": e, "val_acc": 0.8 + 0.01 * e, "val_acc_a": 0.9, "val_acc_b": 0.9 - d, "val_imbalance": d}
            for e, d in enumerate((0.3, 0.2))]
    for spread in (0.25, 0.02, 0.07):  # imbalanced or level: the measured evidence says the same
        d = diagnose(rows, {"test": {"acc_a": 0.9, "acc_b": 0.9 - spread}})
        assert d["verdict"].startswith("not predictable from this run") and "bss study" in d["verdict"]
        assert d["weak_head"] == "b" and d["spread"] == pytest.approx(spread)
    collapsing = [{**r, "val_acc": v} for r, v in zip(rows * 6, [0.9, 0.5] + [0.6] * 10)]
    assert diagnose(collapsing, None)["verdict"].startswith("not judged: this run is unstable")
    train(TrainConfig(manifest=str(tiny_manifest), out=str(tmp_path / "r"), epochs=2, hidden=8, scheduler="none",
                      quiet=True))
    s = json.loads(run("inspect", tmp_path / "r", "--json").stdout)
    assert s["diagnosis"]["from"] == "test" and set(s["diagnosis"]["heads"]) == {"a", "b"}
    assert "Will BSS help here?" in run("inspect", tmp_path / "r").stdout


class Killed(BaseException):
    """A kill: not an Exception, so nothing in bss catches it."""


def _kill_and_resume(tiny_manifest, tmp_path, monkeypatch, settings, kill_at) -> None:
    """Kill the run inside the writes ``kill_at(count, path)`` picks (its temporary file half
    written, not renamed), resume it each time, and compare with an uninterrupted run's folder."""
    import bss_cli.artifacts as artifacts

    base = dict(manifest=str(tiny_manifest), epochs=4, hidden=8, batch_size=8, save_every=0, quiet=True, **settings)
    train(TrainConfig(out=str(tmp_path / "straight"), **base))
    expected = folder_bytes(tmp_path / "straight")
    real = artifacts.write_bytes
    writes: list[Path] = []

    def counting(path, data):
        writes.append(Path(path))
        return real(path, data)

    monkeypatch.setattr(artifacts, "write_bytes", counting)
    train(TrainConfig(out=str(tmp_path / "count"), **base))
    monkeypatch.setattr(artifacts, "write_bytes", real)
    chosen = [k for k, path in enumerate(writes, 1) if kill_at(k, path.name)]
    assert chosen
    for k in chosen:
        calls = {"n": 0}

        def killing(path, data, k=k):
            calls["n"] += 1
            if calls["n"] == k:
                path = Path(path)
                path.parent.mkdir(parents=True, exist_ok=True)
                (path.parent / f".{path.name}.killed.tmp").write_bytes(data[: len(data) // 2])
                raise Killed()
            return real(path, data)

        run_dir = tmp_path / f"k{k}"
        monkeypatch.setattr(artifacts, "write_bytes", killing)
        with pytest.raises(Killed):
            train(TrainConfig(out=str(run_dir), **base))
        monkeypatch.setattr(artifacts, "write_bytes", real)
        train(TrainConfig(out=str(run_dir), resume=True, **base))
        got = folder_bytes(run_dir)
        assert got.keys() == expected.keys(), (k, sorted(set(got) ^ set(expected)))
        assert [name for name in expected if got[name] != expected[name]] == [], k


def test_a_kill_while_best_or_the_last_metrics_are_written_then_resume(tiny_manifest, tmp_path, monkeypatch):
    """The two instants issue 20 found: best.pt being replaced (last.pt must not record it first),
    and the last epoch's metrics (a last.pt of the last epoch must not land before them)."""
    _kill_and_resume(tiny_manifest, tmp_path, monkeypatch, {"scheduler": "curriculum", "t_grow": 3},
                     lambda k, name: name in ("best.pt", "metrics.parquet") and k > 8)


@pytest.mark.slow
@pytest.mark.parametrize("settings", [{"scheduler": "curriculum", "t_grow": 3}, {"scheduler": "learned"}])
def test_a_kill_inside_any_write_then_resume_gives_the_same_folder(tiny_manifest, tmp_path, monkeypatch, settings):
    """Killed inside the k-th file write of the run, for every k, then resumed: the folder equals an
    uninterrupted run's, best.pt and summary included."""
    _kill_and_resume(tiny_manifest, tmp_path, monkeypatch, settings, lambda k, name: True)


def test_resume_free_flags_leave_the_summary_alone_and_an_unstarted_run_starts_over(tiny_manifest, tmp_path):
    base = dict(manifest=str(tiny_manifest), epochs=2, hidden=8, quiet=True, scheduler="none")
    a = train(TrainConfig(out=str(tmp_path / "a"), save_every=0, **base))
    b = train(TrainConfig(out=str(tmp_path / "b"), save_every=5, threads=1, **base))
    assert a.summary["settings_fingerprint"] == b.summary["settings_fingerprint"]
    # killed before settings.json: --resume starts it over (a requeued job), with the same result
    (tmp_path / "c").mkdir()
    c = train(TrainConfig(out=str(tmp_path / "c"), resume=True, save_every=0, **base))
    assert c.test == a.test and (tmp_path / "c" / "best.pt").read_bytes() == (tmp_path / "a" / "best.pt").read_bytes()


@pytest.mark.slow  # four runs with a warm-up each: 4 s
def test_the_curriculum_warm_up_trains_with_the_runs_optimiser_and_clipping(tiny_manifest, tmp_path, monkeypatch):
    """--warmup K trains its model as the run does (before: always SGD, never clipped, the default
    architecture): the static scores change with --optimizer and --clip-grad, and the warm-up model
    equals one built with the run's model settings and trained by hand with Adam and clipping."""
    import torch

    from bss_cli.data.datasets import ManifestData
    from bss_cli.data.manifest import load_manifest
    from bss_cli.models.step import OptimConfig, make_optimizer, train_epoch
    from bss_cli.scoring import predict as P
    from bss_cli.scoring.criteria import LossWeights
    from bss_cli.training import trainer as T

    def static(name, *flags):
        r = runner.invoke(app, ["train", str(tiny_manifest), "--out", str(tmp_path / name), "--epochs", "1",
                                "--scheduler", "curriculum", "--warmup", "2", "--lr", "0.05", "--quiet", *flags])
        assert r.exit_code == 0, r.output
        return pq.read_table(tmp_path / name / "plan" / "static.parquet")["balance"].to_numpy()

    seen = {}

    def keep(source, manifest, data, weights, info=None, progress=None):
        model, fp = P.model_for_source(source, manifest, data, weights, info, progress)
        seen.update(source=source, state={k: v.clone() for k, v in model.state_dict().items()})
        return model, fp

    monkeypatch.setattr(T, "model_for_source", keep)
    adam_clipped = static("a", "--optimizer", "adam", "--clip-grad", "0.05", "--hidden", "16")
    src, run = seen["source"], TrainConfig()
    assert (src.optimizer, src.clip_grad, src.hidden, src.model_settings["layers"], src.model_settings["dropout"]) == \
        ("adam", 0.05, 16, run.layers, run.dropout)
    m = load_manifest(tiny_manifest)
    data = ManifestData(m)
    model, _ = P.fresh_model(m, data, 0, 16, None, **src.model_settings)
    opt = make_optimizer(model, OptimConfig("adam", 0.05, run.momentum, run.weight_decay))
    gen = np.random.default_rng([0, 1])
    for _ in range(2):
        train_epoch(model, opt, data, gen.permutation(m.indices("train")), batch_size=run.batch_size,
                    weights=LossWeights(run.fused_weight, run.unimodal_weight), clip=0.05)
    assert all(torch.equal(v, seen["state"][k]) for k, v in model.state_dict().items())
    assert not np.allclose(adam_clipped, static("b", "--optimizer", "sgd", "--clip-grad", "0.05", "--hidden", "16"))
    assert not np.allclose(adam_clipped, static("c", "--optimizer", "adam", "--clip-grad", "0", "--hidden", "16"))
