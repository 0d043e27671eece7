import io
import json
import subprocess
import sys

import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from bss_cli.cli.app import app
from bss_cli.scheduling.schedule_io import ScheduleFile
from bss_cli.scoring.scores import read_scores, score_manifest, write_scores

runner = CliRunner()


@pytest.fixture
def scores_file(tiny_manifest, tmp_path):
    path = tmp_path / "scores.parquet"
    write_scores(score_manifest(tiny_manifest), path)
    return path


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_schedule_file_layout_metadata_and_byte_identity(scores_file, tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    for path in (a, b):
        r = run("schedule", scores_file, "-o", path, "--epochs", "5", "--t-grow", "4", "--seed", "3")
        assert r.exit_code == 0, r.output
    assert a.read_bytes() == b.read_bytes()
    f = ScheduleFile(a)
    assert f.epochs == [0, 1, 2, 3, 4]
    meta = pq.ParquetFile(a).metadata
    assert meta.num_row_groups == 5
    sizes = [meta.row_group(i).num_rows for i in range(5)]
    assert sizes == sorted(sizes) and sizes[-1] == 36
    assert f.metadata["bss.scheduler"] == "curriculum"
    assert json.loads(f.metadata["bss.scheduler_params"]) == {"pacing": "root", "lambda0": 0.1, "t_grow": 4, "shuffle": True,
                                                                "stratify": False}
    assert f.metadata["bss.manifest_fingerprint"] == read_scores(scores_file).metadata["bss.manifest_fingerprint"]
    e2 = f.epoch(2)
    assert e2["position"].to_pylist() == list(range(sizes[2]))
    assert set(e2["epoch"].to_pylist()) == {2}


def test_single_epoch_equals_that_epoch_of_the_full_run(scores_file, tmp_path):
    run("schedule", scores_file, "-o", tmp_path / "full.parquet", "--scheduler", "learned", "--epochs", "4")
    run("schedule", scores_file, "-o", tmp_path / "e2.parquet", "--scheduler", "learned", "--epoch", "2")
    full = ScheduleFile(tmp_path / "full.parquet").epoch(2)
    alone = ScheduleFile(tmp_path / "e2.parquet").epoch(2)
    assert full.equals(alone)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "npy", "parquet"])
def test_pipe_formats_read_back(scores_file, tmp_path, fmt):
    run("schedule", scores_file, "-o", tmp_path / "ref.parquet", "--epochs", "3", "--scheduler", "learned")
    ref = pq.read_table(tmp_path / "ref.parquet")
    proc = subprocess.run([sys.executable, "-m", "bss_cli", "schedule", str(scores_file), "-o", "-", "--format", fmt,
                           "--epochs", "3", "--scheduler", "learned"], capture_output=True, check=True)
    data = proc.stdout
    if fmt == "csv":
        got = pcsv.read_csv(io.BytesIO(data))
        assert got["row"].to_pylist() == ref["row"].to_pylist()
        assert got["sample_id"].to_pylist() == ref["sample_id"].to_pylist()
    elif fmt == "jsonl":
        rows = [json.loads(line) for line in data.decode().splitlines()]
        assert [r["row"] for r in rows] == ref["row"].to_pylist()
        assert rows[0].keys() == {"epoch", "position", "sample_id", "row", "probability", "balance", "label"}
    elif fmt == "npy":
        arr = np.load(io.BytesIO(data))
        assert arr.shape == (ref.num_rows, 3)
        assert arr[:, 2].tolist() == ref["row"].to_pylist() and arr[:, 0].tolist() == ref["epoch"].to_pylist()
    else:
        got = pq.read_table(io.BytesIO(data))
        assert got.equals(ref)


def test_pipe_into_head_ends_quietly(scores_file):
    cmd = f"{sys.executable} -m bss_cli schedule {scores_file} -o - --epochs 3000 --scheduler random | head -2"
    proc = subprocess.run(["bash", "-c", "set -o pipefail; " + cmd], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].startswith('"epoch","position"') and proc.stderr == ""


def test_accumulate_with_history(tiny_manifest, scores_file, tmp_path):
    from bss_cli.scoring.predict import ModelSource

    later = tmp_path / "later.parquet"
    write_scores(score_manifest(tiny_manifest, source=ModelSource(kind="warmup", warmup_epochs=2)), later)
    r = run("schedule", later, "-o", tmp_path / "acc.parquet", "--scheduler", "learned", "--accumulate",
            "--history", scores_file, "--epochs", "1")
    assert r.exit_code == 0, r.output
    t = pq.read_table(tmp_path / "acc.parquet").sort_by("row")
    mean = (read_scores(scores_file).balance + read_scores(later).balance) / 2
    np.testing.assert_allclose(t["balance"].to_numpy(), mean)
    r = run("schedule", later, "-o", tmp_path / "x.parquet", "--scheduler", "learned", "--history", scores_file)
    assert r.exit_code == 1 and "--history needs an accumulating rule" in r.stderr
    assert not (tmp_path / "x.parquet").exists()


def test_schedule_errors(scores_file, tiny_manifest, tmp_path):
    r = run("schedule", tiny_manifest, "-o", tmp_path / "s.parquet")
    assert r.exit_code == 1 and "expected a 'scores' artifact, found a Parquet file without bss metadata" in r.stderr
    r = run("schedule", scores_file, "-o", tmp_path / "s.parquet", "--lambda0", "0")
    assert r.exit_code == 1 and "--lambda0 0.0: expected a finite number in (0, 1]" in r.stderr
    r = run("schedule", scores_file, "-o", tmp_path / "s.parquet", "--epochs", "0")
    assert r.exit_code == 1 and "--epochs 0: expected an integer >= 1" in r.stderr
    assert not (tmp_path / "s.parquet").exists()


def test_inspect_schedule_counts_classes_and_warns_on_a_missing_class(scores_file, tmp_path):
    run("schedule", scores_file, "-o", tmp_path / "plain.parquet", "--epochs", "3", "--lambda0", "0.05")
    r = run("inspect", tmp_path / "plain.parquet", "--json")
    s = json.loads(r.stdout)
    first = s["epochs"][0]["per_class"]
    assert sum(first.values()) == s["epochs"][0]["size"] and set(first) == {"0", "1", "2"}
    missing = [c for c, k in first.items() if k == 0]
    assert bool(missing) == any(w.startswith("epoch 0 leaves out") for w in s["warnings"])
    r = run("inspect", tmp_path / "plain.parquet")
    assert ("warning: epoch 0 leaves out class(es)" in r.stderr) == bool(missing) and "samples per class" in r.stdout
    run("schedule", scores_file, "-o", tmp_path / "strat.parquet", "--epochs", "3", "--lambda0", "0.05", "--stratify")
    s = json.loads(run("inspect", tmp_path / "strat.parquet", "--json").stdout)
    assert all(k >= 1 for e in s["epochs"] for k in e["per_class"].values()) and s["warnings"] == []


def test_npy_reads_from_a_pipe(scores_file, tmp_path):
    """np.load cannot read a pipe (it seeks); bss_cli.read_npy can, with the obvious one-liner."""
    reader = ("import sys, bss_cli; a = bss_cli.read_npy(sys.stdin.buffer); "
              "print(a.shape[0], a[:, 2].sum())")
    cmd = (f"{sys.executable} -m bss_cli schedule {scores_file} -o - --format npy --epochs 2 | "
           f"{sys.executable} -c '{reader}'")
    out = subprocess.run(cmd, shell=True, capture_output=True, text=True, check=True).stdout.split()
    ref = pq.read_table(run_ref(scores_file, tmp_path))
    assert int(out[0]) == ref.num_rows and int(out[1]) == sum(ref["row"].to_pylist())


def run_ref(scores_file, tmp_path):
    run("schedule", scores_file, "-o", tmp_path / "ref.parquet", "--epochs", "2")
    return tmp_path / "ref.parquet"


def test_one_epoch_file_encodes_what_write_schedule_writes(scores_file, tmp_path):
    """The trainer's per-epoch schedule artifact (encoded apart from writing) is the same file."""
    from bss_cli.artifacts import write_table
    from bss_cli.scheduling.schedule_io import ScheduleJob, one_epoch_file, write_schedule
    from bss_cli.scheduling.schedulers import ScheduleConfig

    job = ScheduleJob(read_scores(scores_file), ScheduleConfig(scheduler="learned", seed=2), [3])
    table = next(job.tables())
    write_schedule(job, tmp_path / "a.parquet", tables=[table])
    file_table, options = one_epoch_file(job, table)
    write_table(file_table, tmp_path / "b.parquet", {}, **options)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
