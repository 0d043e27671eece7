"""Experiment trackers: what bss train and bss study log, read back with each tracker's own library
(integration tier), and that logging never changes a run nor loses one when a tracker fails."""

from __future__ import annotations

import csv
import json
import struct
import sys

import pyarrow.parquet as pq
import pytest
from conftest import ROOT
from typer.testing import CliRunner

from bss_cli.cli.app import app
from bss_cli.training.config import TrainConfig
from bss_cli.training.trainer import Callbacks, train

runner = CliRunner()
TRACKER_FILES = ("csv", "tensorboard", "mlruns", "wandb", "trackers.json", "trackers-logged.json")


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def result_bytes(run_dir):
    """Every file a run computes (not the trackers' own, not wall-clock timings)."""
    return {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name not in ("timings.parquet", ".bss-lock")
            and p.relative_to(run_dir).parts[0] not in TRACKER_FILES}


def train_with_and_without(tracker, tiny_manifest, tmp_path, *settings):
    """Train the same run twice, without and with ``--log tracker``; the logged run's folder, after
    checking the two computed the same bytes (settings.json included: --log is not a setting)."""
    plain, logged = tmp_path / "plain", tmp_path / "logged"
    base = ["train", tiny_manifest, "--epochs", "3", "--quiet", *settings]
    assert run(*base, "--out", plain).exit_code == 0
    r = run(*base, "--out", logged, "--log", tracker)
    assert r.exit_code == 0, r.output
    assert result_bytes(plain) == result_bytes(logged)
    return logged


def history(run_dir):
    return pq.read_table(run_dir / "metrics.parquet").to_pylist()


def summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def check_logged(get, run_dir, tol=1e-9):
    """``get(tag) -> {step: value}`` holds the run's metrics, per epoch, under the documented names."""
    rows, n_train = history(run_dir), None
    for tag, column in [("val/acc", "val_acc"), ("val/imbalance", "val_imbalance"), ("train/loss", "train_loss"),
                        ("train/lr", "lr"), ("bss/epoch_size", "subset_size"), ("bss/mean_balance", "mean_balance")]:
        got = get(tag)
        assert sorted(got) == [r["epoch"] for r in rows], tag
        for r in rows:
            assert got[r["epoch"]] == pytest.approx(r[column], rel=tol, abs=tol), (tag, r["epoch"])
    heads = [k for k in rows[0] if k.startswith("val_acc_")]
    assert heads and all(get(f"val/{k[4:]}") for k in heads)
    n_train = get("bss/epoch_size")[0] / get("bss/prefix_fraction")[0]
    assert n_train == pytest.approx(round(n_train))
    last = rows[-1]["epoch"]
    for k, v in summary(run_dir)["test"].items():
        assert get(f"test/{k}")[last] == pytest.approx(v, rel=tol, abs=tol)


# --- default tier: the CSV tracker needs no library ------------------------------------------------
def test_csv_tracker_logs_the_metrics_and_changes_nothing(tiny_manifest, tmp_path):
    logged = train_with_and_without("csv", tiny_manifest, tmp_path, "--scheduler", "learned")
    with open(logged / "csv" / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    check_logged(lambda tag: {int(r["step"]): float(r[tag]) for r in table if r.get(tag)}, logged)
    with open(logged / "csv" / "histograms.csv", newline="") as f:
        hist = list(csv.DictReader(f))
    steps = {(int(r["step"]), r["tag"]) for r in hist}
    # learned re-scores after every epoch: each epoch's order came from new scores
    assert steps == {(e, t) for e in range(3) for t in ("bss/balance_scores", "bss/sampling_probability")}
    n = len(history(logged)) and history(logged)[0]["subset_size"]
    assert sum(int(r["count"]) for r in hist if r["step"] == "0" and r["tag"] == "bss/balance_scores") == n
    params = json.loads((logged / "csv" / "hparams.json").read_text())
    assert params["scheduler"] == "learned" and params["lr"] == 0.05 and "log" not in params  # types kept


def test_a_tracker_failing_mid_run_loses_nothing(tiny_manifest, tmp_path):
    """The CSV tracker's file becomes a folder after the first epoch: the tracker is dropped with a
    warning, the run finishes with the same files as a run without trackers."""
    warnings = []

    def break_tracker(row):
        if row["epoch"] == 0:
            target = tmp_path / "logged" / "csv" / "metrics.csv"
            if target.exists():
                target.unlink()
            target.mkdir()

    cfg = dict(manifest=str(tiny_manifest), epochs=3, scheduler="curriculum", quiet=True)
    train(TrainConfig(out=str(tmp_path / "plain"), **cfg))
    train(TrainConfig(out=str(tmp_path / "logged"), log=["csv"], **cfg),
          Callbacks(on_epoch_end=break_tracker, on_warning=warnings.append))
    assert result_bytes(tmp_path / "plain") == result_bytes(tmp_path / "logged")
    assert len(warnings) == 1 and "--log csv failed" in warnings[0] and "the run goes on" in warnings[0]


def test_a_missing_tracker_library_is_a_clear_error_before_anything_is_written(tiny_manifest, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    r = run("train", tiny_manifest, "--out", tmp_path / "r", "--log", "csv,wandb")
    assert r.exit_code == 1 and "--log wandb: the wandb package is not installed" in r.stderr
    assert "pip install 'bss[wandb]'" in r.stderr and not (tmp_path / "r").exists()
    r = run("train", tiny_manifest, "--out", tmp_path / "r", "--log", "neptune")
    assert r.exit_code == 1 and "--log 'neptune': expected one of tensorboard, mlflow, wandb, csv" in r.stderr


def test_a_resumed_run_continues_its_tracker_files(tiny_manifest, tmp_path):
    """Killed after epoch 1 (its last.pt kept), resumed: the CSV holds every epoch once, equal to the run's."""
    run_dir = tmp_path / "r"

    def kill(row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    cfg = dict(manifest=str(tiny_manifest), out=str(run_dir), epochs=4, scheduler="learned", quiet=True,
               save_every=0.0, log=["csv"])
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**cfg), Callbacks(on_epoch_end=kill))
    train(TrainConfig(**{**cfg, "resume": True}))
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [int(r["step"]) for r in table] == [0, 1, 2, 3]
    check_logged(lambda tag: {int(r["step"]): float(r[tag]) for r in table if r.get(tag)}, run_dir)


def test_epochs_a_killed_trackers_thread_never_wrote_are_replayed_on_resume(tiny_manifest, tmp_path):
    """A kill -9 can leave the tracker thread behind the saved epochs (it writes on its own thread):
    here the CSV holds epoch 0 only while last.pt holds epochs 0-2, the state such a kill leaves.
    Resumed, the trackers get the saved epochs they lack and then the rest: every epoch exactly once,
    with the run's values."""
    import json

    run_dir = tmp_path / "r"

    def kill(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    cfg = dict(manifest=str(tiny_manifest), out=str(run_dir), epochs=5, scheduler="learned", quiet=True,
               save_every=0.0, log=["csv"])
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**cfg), Callbacks(on_epoch_end=kill))
    metrics = run_dir / "csv" / "metrics.csv"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join(lines[:2]))  # the header and epoch 0: what the lagging thread had written
    (run_dir / "trackers-logged.json").write_text(json.dumps({"csv": 0}))
    train(TrainConfig(**{**cfg, "resume": True}))
    with open(metrics, newline="") as f:
        table = list(csv.DictReader(f))
    assert [int(r["step"]) for r in table] == [0, 1, 2, 3, 4]
    check_logged(lambda tag: {int(r["step"]): float(r[tag]) for r in table if r.get(tag)}, run_dir)
    assert json.loads((run_dir / "trackers-logged.json").read_text()) == {"csv": 4}


# --- integration tier: each tracker read back with its own library ----------------------------------
def tensorboard_values(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    return acc


@pytest.mark.integration
def test_tensorboard_event_files_hold_the_runs_metrics(tiny_manifest, tmp_path):
    pytest.importorskip("tensorboard")
    logged = train_with_and_without("tensorboard", tiny_manifest, tmp_path, "--scheduler", "curriculum",
                                    "--t-grow", "2")
    acc = tensorboard_values(logged / "tensorboard")
    check_logged(lambda tag: {e.step: e.value for e in acc.Scalars(tag)}, logged, tol=1e-6)  # float32 on disk
    assert [e.step for e in acc.Histograms("bss/balance_scores")] == [0]  # a curriculum scores once
    assert acc.Histograms("bss/balance_scores")[0].histogram_value.num == history(logged)[0]["subset_size"]
    assert any("hparams" in name for name in acc.PluginTagToContent("hparams") or {}) or \
        acc.summary_metadata  # the HPARAMS tab's session summaries


@pytest.mark.integration
def test_a_kill_9_then_resume_leaves_every_epoch_in_tensorboard_exactly_once(tiny_manifest, tmp_path):
    """kill -9 while epochs are being written, then --resume: TensorBoard's event files hold every
    epoch of metrics.parquet once (the steps it lacked replayed, those it had not written twice)."""
    import os
    import signal
    import subprocess
    import time

    pytest.importorskip("tensorboard")
    run_dir = tmp_path / "r"
    cmd = [sys.executable, "-m", "bss_cli", "train", str(tiny_manifest), "--out", str(run_dir), "--epochs", "40",
           "--quiet", "--scheduler", "learned", "--save-every", "0", "--log", "tensorboard", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (run_dir / "last.pt").exists() and (run_dir / "trackers-logged.json").exists():
            time.sleep(0.3)  # a few epochs in
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    r = run("train", tiny_manifest, "--out", run_dir, "--epochs", "40", "--quiet", "--scheduler", "learned",
            "--save-every", "0", "--log", "tensorboard", "--threads", "1", "--resume")
    assert r.exit_code == 0, r.output
    acc = tensorboard_values(run_dir / "tensorboard")
    steps = [e.step for e in acc.Scalars("val/acc")]
    assert sorted(steps) == list(range(40)) and len(set(steps)) == len(steps)
    check_logged(lambda tag: {e.step: e.value for e in acc.Scalars(tag)}, run_dir, tol=1e-6)


@pytest.mark.integration
def test_mlflow_store_holds_the_runs_metrics_and_settings(tiny_manifest, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    logged = train_with_and_without("mlflow", tiny_manifest, tmp_path)
    run_id = json.loads((logged / "trackers.json").read_text())["mlflow"]
    client = MlflowClient(tracking_uri=(logged / "mlruns").as_uri())
    check_logged(lambda tag: {m.step: m.value for m in client.get_metric_history(run_id, tag)}, logged)
    info = client.get_run(run_id)
    assert info.info.status == "FINISHED" and info.data.params["scheduler"] == "learned"
    assert info.data.tags["bss.scheduler"] == "learned"
    assert client.list_artifacts(run_id, "histograms")


def wandb_records(folder):
    """The offline run's records, decoded with wandb's own protobuf schema (the file is a LevelDB-style
    log: a 7-byte header, then 32 KiB blocks of length-prefixed chunks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = folder.glob("wandb/offline-run-*/run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and n == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + n], pos + 7 + n
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            yield record


@pytest.mark.integration
def test_wandb_offline_run_holds_the_runs_metrics(tiny_manifest, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    logged = train_with_and_without("wandb", tiny_manifest, tmp_path)
    steps: dict[int, dict] = {}
    config = {}
    for rec in wandb_records(logged):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item}
            steps.setdefault(int(items["_step"]), {}).update(items)
        elif kind in ("config", "run"):
            updates = rec.config.update if kind == "config" else rec.run.config.update
            config.update({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in updates})
    check_logged(lambda tag: {s: v[tag] for s, v in steps.items() if tag in v}, logged)
    assert steps[0]["bss/balance_scores/_type"] == "histogram" and sum(steps[0]["bss/balance_scores/values"]) > 0
    assert config["scheduler"] == "learned" and config["epochs"] == 3


@pytest.mark.integration
def test_study_logs_one_tracker_run_per_run_grouped_by_variant(tiny_manifest, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads a file store only when asked
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    study = tmp_path / "study"
    r = run("study", tiny_manifest, "--out", study, "--schedulers", "none,learned", "--seeds", "2",
            "--set", "epochs=2", "--quiet", "--log", "tensorboard", "--log", "mlflow")
    assert r.exit_code == 0, r.output
    for variant in ("none", "learned"):
        for seed in (0, 1):
            acc = tensorboard_values(study / "tensorboard" / variant / f"seed={seed}")
            rows = history(study / "runs" / variant / f"seed={seed}")
            assert [e.value for e in acc.Scalars("val/acc")] == pytest.approx([r["val_acc"] for r in rows], rel=1e-6)
    client = MlflowClient(tracking_uri=(study / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("study")
    found = client.search_runs([experiment.experiment_id])
    assert sorted((x.data.tags["bss.variant"], x.data.tags["bss.seed"]) for x in found) == \
        [("learned", "0"), ("learned", "1"), ("none", "0"), ("none", "1")]
    assert {x.info.run_name for x in found} == {"none/seed=0", "none/seed=1", "learned/seed=0", "learned/seed=1"}


@pytest.mark.integration
def test_lightning_and_hf_log_the_orders_quantities_through_their_own_loggers(tiny_manifest, tmp_path):
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger
    from transformers import TrainerCallback, TrainingArguments

    from bss_cli import ScheduleSampler
    from bss_cli.integrations.lightning import ScheduleCallback
    from bss_cli.scheduling.schedule_io import ScheduleFile

    assert run("score", tiny_manifest, "-o", tmp_path / "s.parquet").exit_code == 0
    assert run("schedule", tmp_path / "s.parquet", "-o", tmp_path / "sched.parquet", "--epochs", "3",
               "--t-grow", "2").exit_code == 0
    schedule = tmp_path / "sched.parquet"
    sizes = [ScheduleFile(schedule).epoch(e).num_rows for e in range(3)]
    sys.path.insert(0, str(ROOT / "examples"))
    from hf_train import BSSTrainer
    from hf_train import Classifier as HFClassifier
    from hf_train import TrainRows as HFRows
    from lightning_train import Classifier, TrainRows

    data = TrainRows(str(tiny_manifest))
    bss = ScheduleCallback(ScheduleSampler(schedule, dataset=data))
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=CSVLogger(tmp_path / "pl", name="bss"),
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        reload_dataloaders_every_n_epochs=1, use_distributed_sampler=False, callbacks=[bss],
                        log_every_n_steps=1)
    trainer.fit(Classifier(data, bss, 4))
    (metrics_csv,) = (tmp_path / "pl").rglob("metrics.csv")
    with open(metrics_csv, newline="") as f:
        logged = [r for r in csv.DictReader(f) if r.get("bss/epoch_size")]
    assert [float(r["bss/epoch_size"]) for r in logged] == sizes
    assert [float(r["bss/prefix_fraction"]) for r in logged] == [s / sizes[-1] for s in sizes]

    hf_data = HFRows(str(tiny_manifest))
    model = HFClassifier(hf_data)

    class NewEpoch(TrainerCallback):
        def on_epoch_begin(self, *a, **k):
            model.trained.append([])

    args = TrainingArguments(output_dir=str(tmp_path / "hf"), num_train_epochs=3, per_device_train_batch_size=4,
                             report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True)
    hf = BSSTrainer(model=model, args=args, train_dataset=hf_data, callbacks=[NewEpoch()],
                    bss_sampler=ScheduleSampler(schedule, dataset=hf_data))
    hf.train()
    entries = [h for h in hf.state.log_history if "bss/epoch_size" in h]
    assert [h["bss/epoch_size"] for h in entries] == sizes
    assert [h["epoch"] for h in entries] == [0, 1, 2]


@pytest.mark.slow  # a fresh interpreter (torch's import) for one epoch: 6 s
def test_a_run_without_log_loads_no_tracker_code(tiny_manifest, tmp_path):
    """What makes logging free when unused: no tracker object, no tracker module imported."""
    import subprocess

    code = ("import sys; from bss_cli.training.config import TrainConfig; from bss_cli.training.trainer import train; "
            f"train(TrainConfig(manifest={str(tiny_manifest)!r}, out={str(tmp_path / 'r')!r}, epochs=1, quiet=True)); "
            "print(sorted(m for m in sys.modules if m.startswith(('bss_cli.tracking', 'tensorboard', 'mlflow', "
            "'wandb'))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.integration
def test_a_tracker_that_cannot_start_stops_the_run_before_anything_is_written(tiny_manifest, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://nowhere")
    r = run("train", tiny_manifest, "--out", tmp_path / "r", "--epochs", "2", "--log", "mlflow")
    assert r.exit_code == 1 and "--log mlflow: the tracker did not start" in r.stderr
    assert not (tmp_path / "r" / "settings.json").exists() and not (tmp_path / "r" / "last.pt").exists()
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    r = run("train", tiny_manifest, "--out", tmp_path / "r", "--epochs", "2", "--quiet")  # the folder is reusable
    assert r.exit_code == 0, r.output
