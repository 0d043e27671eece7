"""Nothing written through a planted folder link, no user file overwritten by a new run, a
tracker name that stays under its folder, a dead tracker server refused in seconds, and a
resume that knows its manifest by any spelling of its path."""

from __future__ import annotations

import os
import time

import pytest
from typer.testing import CliRunner

from bss_cli.cli.app import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def planted(tmp_path, name):
    """A run folder of bss's (its lock file) with ``name`` a link to a folder outside it, which
    holds one file of the user's."""
    run_dir, outside = tmp_path / "run", tmp_path / "outside"
    outside.mkdir()
    (outside / "mine.txt").write_text("the user's own file\n")
    (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
    (run_dir / ".bss-lock").touch()
    (run_dir / name).symlink_to(outside, target_is_directory=True)
    return run_dir, outside


@pytest.mark.parametrize("name,extra", [("epochs", []), ("plan", ["--scheduler", "learned"]),
                                        ("csv", ["--log", "csv"])])
def test_a_folder_link_inside_a_run_is_refused_and_nothing_lands_outside(tiny_manifest, tmp_path, name, extra):
    run_dir, outside = planted(tmp_path, name)
    before = snapshot(outside)
    r = run("train", tiny_manifest, "--out", run_dir, "--epochs", "2", "--quiet", *extra)
    assert r.exit_code == 1, r.output
    assert f"{run_dir / name} is a symbolic link inside {run_dir}; bss never writes through one" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert snapshot(outside) == before


def test_a_link_at_the_csv_trackers_files_is_never_followed(tiny_manifest, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    run_dir = tmp_path / "run"
    (run_dir / "csv").mkdir(parents=True)
    (run_dir / ".bss-lock").touch()
    (run_dir / "csv" / "metrics.csv.tmp").symlink_to(victim)
    (run_dir / "csv" / "histograms.csv").symlink_to(victim)
    r = run("train", tiny_manifest, "--out", run_dir, "--epochs", "2", "--quiet", "--log", "csv",
            "--scheduler", "learned")
    assert r.exit_code == 0, r.output
    assert victim.read_text() == "precious\n"
    assert "warning: --log csv failed" in r.stderr and "histograms.csv" in r.stderr  # dropped, the link not followed
    assert (run_dir / "summary.json").is_file()


def test_a_folder_of_the_users_own_files_is_refused_as_a_run_folder(tiny_manifest, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name, text in (("summary.json", '{"mine": 1}'), ("settings.json", '{"lr": 3}'), ("metrics.parquet", "x")):
        (data / name).write_text(text)
    before = snapshot(data)
    for extra in ([], ["--resume"]):
        r = run("train", tiny_manifest, "--out", data, "--epochs", "1", "--quiet", *extra)
        assert r.exit_code == 1 and "holds files bss did not write (metrics.parquet, settings.json, summary.json)" \
            in r.stderr, r.output
        assert snapshot(data) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run("train", tiny_manifest, "--out", empty, "--epochs", "1", "--quiet").exit_code == 0


def test_a_log_name_that_leaves_the_log_folder_is_refused(tiny_manifest, tmp_path):
    for name in ("../../x", "/abs", "a//b", "a/./b"):
        r = run("train", tiny_manifest, "--out", tmp_path / "run", "--epochs", "1", "--quiet", "--log", "csv",
                "--log-name", name)
        assert r.exit_code == 1 and "--log-name" in r.stderr and "a name under the log folder" in r.stderr, name
    assert not (tmp_path / "run").exists() and not (tmp_path.parent / "x").exists()


def test_resume_knows_the_manifest_by_its_absolute_path(tiny_manifest, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_manifest.parent)
    r = run("train", tiny_manifest.name, "--out", tmp_path / "run", "--epochs", "2", "--quiet")
    assert r.exit_code == 0, r.output
    r = run("train", tiny_manifest.resolve(), "--out", tmp_path / "run", "--epochs", "2", "--quiet", "--resume")
    assert r.exit_code == 0, r.output
    r = run("train", tmp_path / "other.parquet", "--out", tmp_path / "run", "--epochs", "2", "--quiet", "--resume")
    assert r.exit_code == 1


@pytest.mark.slow  # two studies, each spawning its runs: 5 s
def test_a_link_inside_a_study_folder_is_refused(tiny_manifest, tmp_path):
    import shutil

    study, outside = tmp_path / "study", tmp_path / "outside"
    args = ["study", tiny_manifest, "--out", study, "--schedulers", "none", "--set", "epochs=1", "--device", "cpu"]
    assert run(*args, "--seeds", "1").exit_code == 0
    shutil.move(study / "runs" / "none", outside)  # the variant's folder now lives elsewhere, linked back
    (study / "runs" / "none").symlink_to(outside, target_is_directory=True)
    before = snapshot(outside)
    r = run(*args, "--seeds", "2")  # one more seed: a new run folder under the link
    assert r.exit_code == 1 and f"{study / 'runs' / 'none'} is a symbolic link inside {study}" in r.stderr, r.output
    assert snapshot(outside) == before


@pytest.mark.integration
def test_an_unreachable_mlflow_server_fails_in_seconds(tiny_manifest, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    started = time.monotonic()
    r = run("train", tiny_manifest, "--out", tmp_path / "run", "--epochs", "1", "--quiet", "--log", "mlflow")
    assert time.monotonic() - started < 30
    assert r.exit_code == 1 and "MLFLOW_TRACKING_URI http://127.0.0.1:9: cannot be reached" in r.stderr, r.output
    assert len(r.stderr.strip().splitlines()) == 1
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert run("train", tiny_manifest, "--out", tmp_path / "run", "--epochs", "1", "--quiet").exit_code == 0


@pytest.mark.integration
def test_a_link_at_the_tensorboard_folder_is_refused(tiny_manifest, tmp_path):
    pytest.importorskip("tensorboard")
    run_dir, outside = planted(tmp_path, "tensorboard")
    r = run("train", tiny_manifest, "--out", run_dir, "--epochs", "1", "--quiet", "--log", "tensorboard")
    assert r.exit_code == 1 and "is a symbolic link inside" in r.stderr
    assert [p.name for p in outside.iterdir()] == ["mine.txt"]
    assert os.path.islink(run_dir / "tensorboard")
