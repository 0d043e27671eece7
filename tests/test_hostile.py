"""Hostile and damaged inputs (issue 20): refused with exit 1 and a message naming the culprit; no
traceback, no hang, nothing written where it was not asked."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_manifest_table

from bss_cli.errors import BSSError, ConfigError


def bss(*args, fifos=(), timeout=30):
    """In this process, on a thread, for cases that would hang on a FIFO if the refusal regressed:
    past ``timeout`` each of ``fifos`` is opened at both ends (a blocked open or read returns) and
    the test fails."""
    done: dict = {}

    def run():
        try:
            done["result"] = cli(*args)
        except BaseException as e:  # noqa: BLE001 (re-raised on the test's thread)
            done["error"] = e

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        for path in fifos:
            for flags in (os.O_RDONLY | os.O_NONBLOCK, os.O_WRONLY | os.O_NONBLOCK):
                try:
                    os.close(os.open(path, flags))
                except OSError:
                    pass
        worker.join(10)
        pytest.fail(f"bss {' '.join(map(str, args))} blocked on {[str(f) for f in fifos]} instead of refusing")
    if "error" in done:
        raise done["error"]
    assert "Traceback" not in done["result"].stderr, done["result"].stderr
    return done["result"]


class _Result:
    def __init__(self, r):
        self.returncode, self.stderr = r.exit_code, r.stderr
        assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)


def cli(*args):
    """In this process (no interpreter and torch start-up per call), for cases that cannot hang."""
    from typer.testing import CliRunner

    from bss_cli.cli.app import app

    return _Result(CliRunner().invoke(app, [str(a) for a in args]))


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe.parquet"
    os.mkfifo(path)
    return path


def test_a_fifo_is_refused_not_read(fifo, tmp_path, tiny_manifest):
    r = bss("inspect", fifo, fifos=[fifo])
    assert r.returncode == 1 and "not a regular file" in r.stderr and str(fifo) in r.stderr
    cfg = tmp_path / "run.toml"
    os.mkfifo(cfg)
    r = bss("train", tiny_manifest, "--out", tmp_path / "r", "--config", cfg, fifos=[cfg])
    assert r.returncode == 1 and "not a regular file" in r.stderr and not (tmp_path / "r").exists()


def test_an_npy_path_that_is_a_fifo_or_a_wav_that_is_a_folder_is_named_by_row(tmp_path):
    t = make_manifest_table(n=10)
    os.mkfifo(tmp_path / "x.npy")
    (tmp_path / "clip.wav").mkdir()
    for value, name in (("x.npy", "m1"), ("clip.wav", "m2")):
        table = t.set_column(t.schema.get_field_index("b"), "b", pa.array([value] * 10))
        pq.write_table(table, tmp_path / f"{name}.parquet")
        r = bss("score", tmp_path / f"{name}.parquet", "-o", tmp_path / f"{name}-s.parquet", fifos=[tmp_path / "x.npy"])
        assert r.returncode == 1 and "not a regular file" in r.stderr and value in r.stderr, r.stderr
        assert not (tmp_path / f"{name}-s.parquet").exists()


def test_force_never_replaces_what_is_not_a_regular_file(fifo, tiny_manifest, tmp_path):
    for target in (fifo, "/dev/null"):
        r = bss("score", tiny_manifest, "-o", target, "--force", fifos=[fifo])
        assert r.returncode == 1 and "not a regular file" in r.stderr
    assert fifo.exists() and not fifo.is_file() and os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_deeply_nested_json_in_a_run_folder(tmp_path, tiny_manifest):
    from bss_cli.training.config import TrainConfig
    from bss_cli.training.trainer import train

    run = tmp_path / "r"
    train(TrainConfig(manifest=str(tiny_manifest), out=str(run), epochs=1, hidden=8, scheduler="none", quiet=True))
    (run / "summary.json").write_text("[" * 200_000 + "]" * 200_000)
    r = cli("inspect", run)
    assert r.returncode == 1 and "summary.json" in r.stderr
    (run / "settings.json").write_text("[1, 2]")
    r = cli("inspect", run / "settings.json")
    assert r.returncode == 1 and "settings.json" in r.stderr


@pytest.mark.parametrize("length, needle", [(10**9, "length 1000000000"), (-5, "length -5"), ("x", "length 'x'")])
def test_array_lengths_are_bounded(tmp_path, length, needle):
    t = make_manifest_table(n=10)
    meta = {b"bss.arrays": json.dumps({"a": {"length": length, "time_axis": 0}}).encode()}
    pq.write_table(t.replace_schema_metadata(meta), tmp_path / "m.parquet")
    r = cli("score", tmp_path / "m.parquet", "-o", tmp_path / "s.parquet")
    assert r.returncode == 1 and needle in r.stderr and "bss.arrays" in r.stderr


def test_a_checkpoint_claiming_a_huge_model_is_refused_before_allocating(tmp_path, tiny_manifest):
    import torch

    from bss_cli.models import checkpoints as C
    from bss_cli.training.config import TrainConfig
    from bss_cli.training.trainer import train

    train(TrainConfig(manifest=str(tiny_manifest), out=str(tmp_path / "r"), epochs=1, hidden=8, scheduler="none",
                      quiet=True))
    state = torch.load(tmp_path / "r" / "best.pt", weights_only=True)
    state[C.MODEL_CONFIG]["n_classes"] = 10**12
    C.save_checkpoint(tmp_path / "huge.pt", {k: v for k, v in state.items() if k != C.FORMAT})
    r = cli("score", tiny_manifest, "-o", tmp_path / "s.parquet", "--checkpoint", tmp_path / "huge.pt")
    assert r.returncode == 1 and "huge.pt" in r.stderr and "n_classes 1000000000000" in r.stderr


def test_sampler_refuses_absurd_epochs_and_ids_of_another_type(tiny_manifest, tmp_path):
    from bss_cli.scheduling.sampler import ScheduleSampler

    assert cli("score", tiny_manifest, "-o", tmp_path / "s.parquet").returncode == 0
    assert cli("schedule", tmp_path / "s.parquet", "-o", tmp_path / "sc.parquet", "--epochs", "2").returncode == 0
    s = ScheduleSampler(tmp_path / "sc.parquet", rows=True, rank=0, world_size=1)
    with pytest.raises(ConfigError, match="set_epoch"):
        s.set_epoch(10**12)
    with pytest.raises(ConfigError, match="ids are int64 but the schedule's sample ids are string"):
        list(ScheduleSampler(tmp_path / "sc.parquet", ids=list(range(60)), rank=0, world_size=1))


def test_predictions_with_list_ids_are_refused(tiny_manifest, tmp_path):
    n = 36
    pq.write_table(pa.table({"sample_id": [[i] for i in range(n)], "logits_a": np.zeros((n, 3)).tolist(),
                             "logits_b": np.zeros((n, 3)).tolist()}), tmp_path / "p.parquet")
    r = cli("score", tiny_manifest, "-o", tmp_path / "s.parquet", "--predictions", tmp_path / "p.parquet")
    assert r.returncode == 1 and "column 'sample_id' is list" in r.stderr


def test_crema_d_with_one_actor_is_refused_at_build(tmp_path):
    from PIL import Image

    from bss_cli.data.layouts import crema_d

    wav = tmp_path / "AudioWAV"
    wav.mkdir()
    import wave

    for i, emotion in enumerate(["ANG", "HAP", "SAD", "NEU"]):
        with wave.open(str(wav / f"1001_IEO_{emotion}_XX.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(np.zeros(800, np.int16).tobytes())
        frames = tmp_path / "Image-01-FPS" / f"1001_IEO_{emotion}_XX"
        frames.mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(frames / "0001.jpg")
    with pytest.raises(BSSError, match="split.* would be empty.*at least 3 actors, found 1"):
        crema_d(tmp_path, tmp_path / "m.parquet")
