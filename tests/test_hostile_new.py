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
