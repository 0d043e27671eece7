import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from bss_cli.cli.app import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_score_then_inspect_on_real_sample_data(htad, mfeat, tmp_path):
    for manifest in (htad, mfeat):
        out = tmp_path / f"{manifest.stem}_scores.parquet"
        r = run("score", manifest, "-o", out)
        assert r.exit_code == 0, r.output
        assert f"wrote {pq.read_metadata(out).num_rows:,} rows -> {out}" in r.stdout
        r = run("inspect", out, "--json")
        assert r.exit_code == 0, r.output
        summary = json.loads(r.stdout)
        assert summary["kind"] == "scores" and summary["metadata"]["criterion"] == "prediction-sim+loss"
        assert sum(summary["histogram"]["counts"]) == summary["rows"]
        assert summary["most_balanced"][0]["balance"] >= summary["least_balanced"][0]["balance"]
        r = run("inspect", out)
        assert r.exit_code == 0 and "balance histogram" in r.stdout and "least balanced" in r.stdout
    r = run("inspect", htad, "--json")
    s = json.loads(r.stdout)
    assert s["kind"] == "manifest" and s["rows"] == 1386 and set(s["modalities"]) == {"audio", "accel"}


def test_bad_manifest_exit_1_clear_message_no_output(tmp_path):
    t = pa.table({"sample_id": ["a", "a"], "label": [0, 1], "split": ["train", "train"],
                  "x": pa.array([[1.0], [2.0]]), "y": pa.array([[1.0], [float("nan")]])})
    pq.write_table(t, tmp_path / "bad.parquet")
    out = tmp_path / "scores.parquet"
    r = run("score", tmp_path / "bad.parquet", "-o", out)
    assert r.exit_code == 1
    assert "error:" in r.stderr and "bad.parquet: 2 problem(s)" in r.stderr
    assert "rows 0, 1: duplicate sample_id 'a'" in r.stderr and "row 1: column 'y' holds NaN" in r.stderr
    assert "Traceback" not in r.output
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "bad.parquet"]


def test_flag_errors(tiny_manifest, tmp_path):
    out = tmp_path / "s.parquet"
    r = run("score", tiny_manifest, "-o", out, "--warmup", "2", "--predictions", tmp_path / "p.parquet")
    assert r.exit_code == 1 and "--predictions and --warmup name two prediction sources; give one" in r.stderr
    r = run("score", tiny_manifest, "-o", out, "--criterion", "nope")
    assert r.exit_code == 2 and "nope" in r.output
    r = run("score", tiny_manifest, "-o", out, "--checkpoint", tmp_path / "missing.pt")
    assert r.exit_code == 1 and "missing.pt: no such checkpoint" in r.stderr
    r = run("score", tiny_manifest, "-o", out, "--device", "cuda")
    assert r.exit_code == 1 and ("no CUDA device" in r.stderr or r.exit_code == 0)
    r = run("inspect", tmp_path / "nothing.parquet")
    assert r.exit_code == 1 and "nothing.parquet: no such file" in r.stderr
    assert not out.exists()


def test_help_and_inspect_do_not_import_torch(tmp_path, htad):
    code = ("import sys\nfrom bss_cli.cli.app import app\n"
            f"try:\n    app(['inspect', {str(htad)!r}, '--json'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "assert 'torch' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    r = subprocess.run([sys.executable, "-m", "bss_cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "score" in r.stdout and "build-manifest" in r.stdout
    code = ("import sys\nfrom bss_cli.cli.app import app\ntry:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('numpy', 'pyarrow', 'torch') if m in sys.modules]\nassert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def _options():
    import typer.main

    group = typer.main.get_command(app)
    root = group.make_context("bss", [], resilient_parsing=True)
    for name in group.list_commands(root):
        cmd = group.get_command(root, name)
        ctx = cmd.make_context(name, [], resilient_parsing=True)
        for param in cmd.params:
            yield name, param, param.get_help_record(ctx)


def test_every_option_has_help_with_its_default():
    seen = 0
    for name, param, record in _options():
        assert record is not None and record[1].strip(), f"bss {name} {param.name}: no help"
        if param.param_type_name == "option" and not param.required:
            assert "default" in record[1] or "required" in record[1], f"bss {name} {record[0]}: no default shown"
        seen += 1
    assert seen > 60


def test_help_keeps_defaults_and_lists_choices():
    r = runner.invoke(app, ["train", "--help"], terminal_width=200)
    assert r.exit_code == 0
    assert "Data order (default: learned)." in r.stdout and "<none|curriculum|anti-curriculum|paced-random|learned>" in r.stdout
    assert "<bool>" not in r.stdout and "list[" not in runner.invoke(app, ["schedule", "--help"]).stdout


def test_version_and_shell_completion():
    import os
    import subprocess
    import sys

    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.startswith("bss ")
    r = runner.invoke(app, ["--help"])
    assert "--install-completion" in r.stdout and "--show-completion" in r.stdout
    base = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    done = subprocess.run([sys.executable, "-m", "bss_cli"], capture_output=True, text=True, env={
        **base, "_BSS_COMPLETE": "complete_bash", "COMP_WORDS": "bss sc", "COMP_CWORD": "1"})
    assert done.stdout.split() == ["score", "schedule"], done.stderr
    done = subprocess.run([sys.executable, "-m", "bss_cli"], capture_output=True, text=True, env={
        **base, "_BSS_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "bss train --sched"})
    assert '"--scheduler":"Data order (default' in done.stdout and "learned)." in done.stdout, done.stdout


def test_every_command_that_writes_has_json(tiny_manifest, tmp_path):
    import json

    def js(*args):
        r = runner.invoke(app, [str(a) for a in args])
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)

    s = js("score", tiny_manifest, "-o", tmp_path / "s.parquet", "--json")
    assert s["kind"] == "scores" and s["rows"] == 36 and len(s["fingerprint"]) == 16 and s["wrote"].endswith("s.parquet")
    s = js("schedule", tmp_path / "s.parquet", "-o", tmp_path / "e.parquet", "--epochs", "2", "--json")
    assert s["kind"] == "schedule" and s["epochs"] == [0, 1] and s["rows"] > 0
    s = js("sample-data", "mfeat", "--out-dir", tmp_path, "--json")
    assert s["written"][0]["rows"] == 2000
    assert js("inspect", tmp_path / "e.parquet", "--json")["kind"] == "schedule"
    r = runner.invoke(app, ["schedule", str(tmp_path / "s.parquet"), "-o", "-", "--json"])
    assert r.exit_code == 1 and "--json describes a written file" in r.stderr


def test_inspect_understands_every_file_bss_writes(tiny_manifest, tmp_path):
    import json

    from bss_cli.training.config import TrainConfig
    from bss_cli.training.trainer import train

    train(TrainConfig(manifest=str(tiny_manifest), out=str(tmp_path / "run"), epochs=2, hidden=8, quiet=True))
    assert runner.invoke(app, ["score", str(tiny_manifest), "-o", str(tmp_path / "s.parquet")]).exit_code == 0
    for fmt in ("csv", "jsonl"):
        r = runner.invoke(app, ["schedule", str(tmp_path / "s.parquet"), "-o", str(tmp_path / f"e.{fmt}"),
                                "--epochs", "2"])
        assert r.exit_code == 0, r.output
    kinds = {}
    for name in ("run", "run/summary.json", "run/settings.json", "run/best.pt", "run/metrics.parquet", "s.parquet",
                 "e.csv", "e.jsonl", "run/epochs/epoch=1/schedule.parquet"):
        r = runner.invoke(app, ["inspect", str(tmp_path / name), "--json"])
        assert r.exit_code == 0, (name, r.output)
        kinds[name] = json.loads(r.stdout)["kind"]
        assert runner.invoke(app, ["inspect", str(tmp_path / name)], terminal_width=80).exit_code == 0
    assert kinds == {"run": "run", "run/summary.json": "summary", "run/settings.json": "settings",
                     "run/best.pt": "checkpoint", "run/metrics.parquet": "metrics", "s.parquet": "scores",
                     "e.csv": "schedule", "e.jsonl": "schedule", "run/epochs/epoch=1/schedule.parquet": "schedule"}
    s = json.loads(runner.invoke(app, ["inspect", str(tmp_path / "s.parquet"), "--json"]).stdout)
    assert s["most_balanced"][0]["label"] in ("0", "1", "2")  # class names (here the codes' names)
    # a run's settings.json re-runs it
    r = runner.invoke(app, ["train", "--config", str(tmp_path / "run" / "settings.json"), "--out",
                            str(tmp_path / "again"), "--quiet"])
    assert r.exit_code == 0, r.output
    a = (tmp_path / "run" / "metrics.parquet").read_bytes()
    assert a == (tmp_path / "again" / "metrics.parquet").read_bytes()
