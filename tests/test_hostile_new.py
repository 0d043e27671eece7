"""Hostile inputs on the newer surfaces: rich markup in user strings printed as text, optimiser
numbers bounded, volumes checked by row, study designs checked, run folders that are not runs."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_manifest_table
from typer.testing import CliRunner

from bss_cli.cli.app import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(r, *needles):
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for needle in needles:
        assert needle in r.stderr, r.stderr


def test_rich_markup_in_paths_labels_and_modality_names_is_printed_as_text(tmp_path):
    folder = tmp_path / "d["  # a path holding '[/bold]'
    folder.mkdir()
    t = make_manifest_table()
    t = t.rename_columns([{"a": "x[/bold]", "b": "y[/]"}.get(c, c) for c in t.column_names])
    t = t.set_column(t.column_names.index("label"), "label",
                     pa.array([["[/bold]a", "[/]b", "c[red]"][i % 3] for i in range(t.num_rows)]))
    manifest = folder / "bold].parquet"
    pq.write_table(t, manifest)
    for args in (["inspect", manifest], ["score", manifest, "-o", folder / "s.parquet"],
                 ["inspect", folder / "s.parquet"], ["schedule", folder / "s.parquet", "-o", folder / "o.parquet"],
                 ["inspect", folder / "o.parquet"],
                 ["train", manifest, "--out", folder / "r[/]", "--epochs", "1"], ["inspect", folder / "r[/]"],
                 ["inspect", folder / "r[/]" / "last.pt"]):
        r = run(*args)
        assert r.exit_code == 0, (args, r.output)
    assert "x[/bold]" in run("inspect", folder / "r[/]").stdout and "[/]b" in run("inspect", manifest).stdout


def test_an_error_naming_markup_prints_it_on_a_terminal_too(monkeypatch):
    import typer
    from rich.console import Console

    from bss_cli.cli import common

    buffer = io.StringIO()
    monkeypatch.setattr(common, "err", Console(file=buffer, force_terminal=True, stderr=True))
    with pytest.raises(typer.Exit):
        common.fail("x[/bold].parquet: no such file [/]")
    assert "x[/bold].parquet: no such file [/]" in buffer.getvalue()


@pytest.mark.parametrize("flag,value,bound", [("--lr", "1e300", "(0, 10]"), ("--clip-grad", "1e300", "[0, 1000000]")])
def test_optimiser_numbers_are_bounded(tiny_manifest, tmp_path, flag, value, bound):
    r = run("train", tiny_manifest, "--out", tmp_path / "run", "--epochs", "1", flag, value)
    assert r.exit_code == 1 and f"{flag} {float(value)!r}: expected a finite number in {bound}" in r.stderr
    assert not (tmp_path / "run").exists()
    toml = tmp_path / "run.toml"
    toml.write_text(f'manifest = "{tiny_manifest}"\nweight_decay = 1e300\nlr_gamma = 1e300\n')
    r = run("train", "--config", toml, "--out", tmp_path / "run")
    assert r.exit_code == 1 and "weight_decay = 1e+300: expected a finite number in [0, 10]" in r.stderr
    assert "lr_gamma = 1e+300: expected a finite number in (0, 10]" in r.stderr


def test_tune_shared_without_a_grid_is_refused(tiny_manifest, tmp_path):
    r = run("study", tiny_manifest, "--out", tmp_path / "s", "--tune", "shared", "--seeds", "1")
    one_line_error(r, "--tune shared needs a grid", "--tune-lr")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("array,needle", [
    (np.zeros((2, 0, 4, 4), np.float32), "an empty volume of shape [2, 0, 4, 4]"),
    (np.zeros((2, 3, 0, 4), np.float32), "an empty volume of shape [2, 3, 0, 4]"),
    (np.zeros((2, 3, 4, 4), np.complex64), "its values are complex64"),
    (np.full((2, 3, 4, 4), "a"), "its values are <U1"),
])
def test_a_bad_volume_is_refused_by_row_at_manifest_load(tmp_path, array, needle):
    good = np.zeros((2, 3, 4, 4), np.float32)
    for i in range(12):
        np.save(tmp_path / f"v{i}.npy", array if i == 7 else good)
    t = make_manifest_table(n=12)
    t = t.append_column("flow", pa.array([f"v{i}.npy" for i in range(12)]))
    pq.write_table(t, tmp_path / "m.parquet")
    r = run("train", tmp_path / "m.parquet", "--out", tmp_path / "run", "--epochs", "1")
    assert r.exit_code == 1 and "row 7: column 'flow' file 'v7.npy' cannot be read" in r.stderr and needle in r.stderr
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One learned run (with epoch artifacts), trained once for every damage case."""
    base = tmp_path_factory.mktemp("base")
    pq.write_table(make_manifest_table(), base / "tiny.parquet")
    run_dir = base / "run"
    r = run("train", base / "tiny.parquet", "--out", run_dir, "--epochs", "2", "--quiet", "--scheduler", "learned")
    assert r.exit_code == 0, r.output
    return run_dir


def _json(run_dir, name, change):
    import json

    path = run_dir / name
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def _parquet(path, change):
    t = pq.read_table(path)
    pq.write_table(change(t).replace_schema_metadata(t.schema.metadata), path)


def _cast(column, to):
    import pyarrow.compute as pc

    return lambda t: t.set_column(t.column_names.index(column), column, pc.cast(t[column], to))


DAMAGE = {
    "summary.json is a list": (lambda d: _json(d, "summary.json", lambda s: [1, 2]), "summary.json: holds a JSON list"),
    "settings.json is a list": (lambda d: _json(d, "settings.json", lambda s: [1]), "settings.json: holds a JSON list"),
    "test figures as a list": (lambda d: _json(d, "summary.json", lambda s: {**s, "test": [1, 2]}),
                               "summary.json: test is not an object"),
    "best_val_acc a string": (lambda d: _json(d, "summary.json", lambda s: {**s, "best_val_acc": "0.5"}),
                              "best_val_acc is '0.5', expected a number"),
    "metrics without epoch": (lambda d: _parquet(d / "metrics.parquet", lambda t: t.drop(["epoch"])),
                              "metrics.parquet: no integer 'epoch' column"),
    "val accuracy as strings": (lambda d: _parquet(d / "metrics.parquet", _cast("val_acc", pa.string())),
                                "metrics.parquet: column(s) 'val_acc' are not numbers"),
    "scores without balance": (lambda d: _parquet(d / "epochs" / "epoch=0" / "scores.parquet",
                                                  lambda t: t.drop(["balance"])), "no floating-point 'balance' column"),
    "negative labels": (lambda d: _parquet(d / "epochs" / "epoch=0" / "scores.parquet",
                                           lambda t: t.set_column(t.column_names.index("label"), "label",
                                                                  pa.array([-1] * t.num_rows))),
                        "column 'label' is not integers >= 0"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_inspect_and_report_refuse_a_damaged_run_folder_and_draw_nothing(finished_run, tmp_path, case):
    import shutil

    damaged = tmp_path / "run"
    shutil.copytree(finished_run, damaged)
    damage, needle = DAMAGE[case]
    damage(damaged)
    one_line_error(run("inspect", damaged), needle, "damaged")
    one_line_error(run("report", damaged, "-o", tmp_path / "page.html"), needle, "damaged")
    assert not (tmp_path / "page.html").exists()


def test_a_scores_file_with_rows_or_balance_as_text_is_refused_by_schedule(finished_run, tmp_path):
    scores = tmp_path / "scores.parquet"
    for column, to in (("row", pa.string()), ("balance", pa.string())):
        import shutil

        shutil.copy(finished_run / "epochs" / "epoch=0" / "scores.parquet", scores)
        _parquet(scores, _cast(column, to))
        one_line_error(run("schedule", scores, "-o", tmp_path / "o.parquet"), f"column '{column}' holds string",
                       "damaged")
        assert not (tmp_path / "o.parquet").exists()


def test_a_model_plug_in_that_returns_none_is_refused(tiny_manifest, tmp_path, monkeypatch):
    (tmp_path / "noneplug.py").write_text("def build(cfg):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    r = run("train", tiny_manifest, "--out", tmp_path / "run", "--epochs", "1", "--model", "noneplug:build")
    one_line_error(r, "--model 'noneplug:build' returned NoneType, expected a torch.nn.Module")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # a study spawning its run: 4 s
def test_a_study_with_damaged_results_is_named_not_overwritten(tiny_manifest, tmp_path):
    study = tmp_path / "s"
    args = ["study", tiny_manifest, "--out", study, "--schedulers", "none", "--seeds", "1", "--set", "epochs=1",
            "--device", "cpu", "--quiet"]
    assert run(*args).exit_code == 0
    (study / "study.parquet").write_bytes(b"garbage")
    one_line_error(run(*args), "study.parquet or summary.json is damaged", "remove both")
    assert (study / "study.parquet").read_bytes() == b"garbage"


@pytest.mark.slow  # a fresh interpreter importing torch: 2 s
def test_a_score_under_a_file_size_limit_fails_and_leaves_nothing(tiny_manifest, tmp_path):
    import resource
    import subprocess
    import sys

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    out = tmp_path / "scores.parquet"
    r = subprocess.run([sys.executable, "-m", "bss_cli", "score", str(tiny_manifest), "-o", str(out)],
                       preexec_fn=limit, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "File too large" in r.stderr and "nothing was written" in r.stderr
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))
