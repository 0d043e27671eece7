"""bss study: paired seeds, resumable, statistics checked by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from bss_cli.cli.app import app
from bss_cli.errors import ConfigError
from bss_cli.study import stats
from bss_cli.study.runner import design_from

runner = CliRunner()


def test_paired_interval_by_hand():
    base = {0: 0.80, 1: 0.82, 2: 0.78, 3: 0.81}
    vals = {0: 0.83, 1: 0.83, 2: 0.80, 3: 0.80}
    d = np.array([0.03, 0.01, 0.02, -0.01])
    res = stats.paired(vals, base)
    half = 3.182446305 * d.std(ddof=1) / math.sqrt(4)
    assert res["n"] == 4 and res["mean"] == pytest.approx(d.mean())
    assert res["low"] == pytest.approx(d.mean() - half) and res["high"] == pytest.approx(d.mean() + half)
    assert (res["wins"], res["losses"], res["ties"]) == (3, 1, 0) and res["significant"] is False
    sure = stats.paired({s: v + 0.05 for s, v in base.items()}, base)
    assert sure["significant"] is False or sure["sd"] == pytest.approx(0, abs=1e-12)


@pytest.mark.parametrize("df, expected", [
    # two-sided 95 % quantiles of Student's t (scipy.stats.t.ppf(0.975, df), 10 digits)
    (1, 12.70620474), (2, 4.302652730), (3, 3.182446305), (9, 2.262157163), (30, 2.042272456),
    (31, 2.039513446), (35, 2.030107928), (59, 2.000995378), (121, 1.979763763), (500, 1.964719837),
    (10**7, 1.959964222),
])
def test_t_quantiles_are_exact_for_every_df(df, expected):
    assert stats.t95(df) == pytest.approx(expected, rel=1e-8)


def test_t_quantile_other_levels_and_refusals():
    assert stats.t_quantile(0.995, 4) == pytest.approx(4.604094871, rel=1e-8)
    assert stats.t_quantile(0.9, 1) == pytest.approx(3.077683537, rel=1e-8)
    assert math.isnan(stats.t95(0)) and math.isnan(stats.t_quantile(0.4, 5))


def test_summary_names_the_weak_head_and_its_change():
    rows = []
    for s in range(3):
        rows.append({"variant": "none", "seed": s, "test_acc": 0.8, "test_acc_a": 0.9, "test_acc_b": 0.5,
                     "test_imbalance": 0.4})
        rows.append({"variant": "cur", "seed": s, "test_acc": 0.82 + 0.001 * s, "test_acc_a": 0.9,
                     "test_acc_b": 0.6, "test_imbalance": 0.3})
    out = stats.summarise(rows, "none")
    assert out["weak_head"] == "b" and out["order"] == ["none", "cur"]
    cur = out["variants"]["cur"]
    assert cur["weak_head_change"]["mean"] == pytest.approx(0.1) and cur["vs_baseline"]["wins"] == 3
    assert cur["vs_baseline"]["significant"]


@pytest.mark.slow
def test_study_runs_every_pair_resumes_and_reports(tiny_manifest, tmp_path):
    study = tmp_path / "study"
    args = ["study", str(tiny_manifest), "--out", str(study), "--schedulers", "none,curriculum", "--seeds", "2",
            "--set", "epochs=2", "--set", "hidden=8", "--jobs", "2", "--device", "cpu", "--json"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["baseline"] == "none" and summary["variants"]["curriculum"]["vs_baseline"]["n"] == 2
    table = pq.read_table(study / "study.parquet").to_pylist()
    assert sorted((row["variant"], row["seed"]) for row in table) == [("curriculum", 0), ("curriculum", 1),
                                                                      ("none", 0), ("none", 1)]
    assert all(0 <= row["test_acc"] <= 1 and row["best_epoch"] in (0, 1) for row in table)
    # seeds are paired: seed s of every variant starts from the same model (same settings but the scheduler)
    a = json.loads((study / "runs" / "none" / "seed=1.json").read_text())
    b = json.loads((study / "runs" / "curriculum" / "seed=1.json").read_text())
    assert {k: v for k, v in a.items() if k != "scheduler"} == {k: v for k, v in b.items() if k != "scheduler"}
    # a run that did not finish is re-run; the finished ones are kept as they are
    kept = (study / "runs" / "none" / "seed=0" / "last.pt").read_bytes()
    (study / "runs" / "curriculum" / "seed=1" / "summary.json").unlink()
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert (study / "runs" / "curriculum" / "seed=1" / "summary.json").exists()
    assert (study / "runs" / "none" / "seed=0" / "last.pt").read_bytes() == kept
    assert json.loads(r.stdout) == summary  # the same runs give the same study
    r = runner.invoke(app, ["inspect", str(study), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["kind"] == "study"
    assert runner.invoke(app, ["inspect", str(study)], terminal_width=100).exit_code == 0
    # the shareable page: paired differences, controls, per-seed values; the same study, the same bytes
    for name in ("a.html", "b.html"):
        assert runner.invoke(app, ["report", str(study), "-o", str(tmp_path / name)]).exit_code == 0
    page = (tmp_path / "a.html").read_text()
    assert page == (tmp_path / "b.html").read_text()
    assert all(f'data-plot="{p}"' in page for p in ("vs-baseline", "seeds"))  # no control variant in this study
    assert "No run of this study shows the instability signature" in page or "instability signature (validation" in page
    # another design in the same folder is refused, not mixed, and the message says what differs
    r = runner.invoke(app, [*args[:9], "epochs=3", *args[10:]])
    assert r.exit_code == 1 and "holds a study of another design" in r.stderr and "base:" in r.stderr
    # more seeds extend it: only the new seed is trained, the others are kept as they are
    r = runner.invoke(app, [*args[:7], "3", *args[8:]])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["variants"]["curriculum"]["vs_baseline"]["n"] == 3
    assert (study / "runs" / "none" / "seed=0" / "last.pt").read_bytes() == kept


@pytest.mark.slow
def test_a_killed_study_leaves_no_run_behind(tiny_manifest, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    study = tmp_path / "study"
    proc = subprocess.Popen([sys.executable, "-m", "bss_cli", "study", str(tiny_manifest), "--out", str(study),
                             "--schedulers", "none", "--seeds", "1", "--set", "epochs=400", "--device", "cpu"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = study / "runs" / "none" / "seed=0"
    deadline = time.time() + 60
    while not (run / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert (run / "last.pt").exists()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(2)
    # the bss train child died with the study: its lock is free, so the study continues at once
    from bss_cli.training import runs

    with runs.run_lock(run):
        pass


def test_study_checks_device_and_manifest_before_creating_anything(tiny_manifest, tmp_path):
    for args, needle in ((["--device", "tpu"], "--device 'tpu'"), ([], "no such manifest file")):
        manifest = str(tiny_manifest) if args else str(tmp_path / "missing.parquet")
        r = runner.invoke(app, ["study", manifest, "--out", str(tmp_path / "s"), *args])
        assert r.exit_code == 1 and needle in r.stderr, r.output
        assert not (tmp_path / "s").exists()


def test_a_study_folder_is_locked_and_never_written_through_a_link(tiny_manifest, tmp_path):
    from bss_cli.training import runs

    study = tmp_path / "s"
    args = ["study", str(tiny_manifest), "--out", str(study), "--schedulers", "none", "--seeds", "1", "--set",
            "epochs=1", "--device", "cpu"]
    with runs.folder_lock(study, "--out", "the study folder", "busy"):
        r = runner.invoke(app, args)
    assert r.exit_code == 1 and "another bss study is running in this folder" in r.stderr
    target = tmp_path / "elsewhere"
    (study / ".bss-lock").unlink()
    (study / ".bss-lock").symlink_to(target)
    r = runner.invoke(app, args)
    assert r.exit_code == 1 and "is a symbolic link" in r.stderr and not target.exists()


def test_a_study_continued_from_another_folder_is_the_same_design(tiny_manifest, tmp_path, monkeypatch):
    from bss_cli.study.runner import _check_design

    monkeypatch.chdir(tiny_manifest.parent)
    here = design_from(tiny_manifest.name, ["none"], None, 2, {}, None)
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "study.json").write_text(json.dumps(here.to_dict()))
    monkeypatch.chdir(tmp_path)
    _check_design(tmp_path / "s", design_from(str(tiny_manifest), ["none"], None, 2, {}, None))
    _check_design(tmp_path / "s", design_from(str(tiny_manifest), ["none", "curriculum"], None, 4, {}, None))
    grid = design_from(str(tiny_manifest), ["none"], None, 2, {}, None, lr_grid=[0.01, 0.1])
    with pytest.raises(ConfigError, match="lr_grid"):
        _check_design(tmp_path / "s", grid)  # a grid where there was none: another design
    (tmp_path / "s" / "study.json").write_text(json.dumps(grid.to_dict()))
    _check_design(tmp_path / "s", design_from(str(tiny_manifest), ["none"], None, 2, {}, None,
                                              lr_grid=[0.01, 0.1, 0.3]))  # more rates extend it
    with pytest.raises(ConfigError, match="lr_grid"):
        _check_design(tmp_path / "s", design_from(str(tiny_manifest), ["none"], None, 2, {}, None, lr_grid=[0.1]))
    with pytest.raises(ConfigError, match=r"seed\(s\) \[1\] missing"):
        _check_design(tmp_path / "s", design_from(str(tiny_manifest), ["none"], None, 1, {}, None))


def test_study_refuses_bad_designs_before_running(tiny_manifest, tmp_path):
    bad = tmp_path / "v.toml"
    bad.write_text('[variants.x]\nscheduler = "learned"\nlearning_rate = 1\n')
    for extra, needle in ((["--variants", str(bad)], "unknown setting(s) learning_rate"),
                          (["--set", "lr=nan"], "lr = nan"), (["--baseline", "nope"], "--baseline 'nope'"),
                          (["--seeds", "0"], "--seeds 0")):
        r = runner.invoke(app, ["study", str(tiny_manifest), "--out", str(tmp_path / "s"), *extra])
        assert r.exit_code == 1 and needle in r.stderr, r.output
        assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_study_runs_import_nothing_from_the_current_folder(tiny_manifest, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    here = tmp_path / "cwd"
    here.mkdir()
    marker = tmp_path / "imported"
    (here / "rich.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nraise SystemExit(3)\n")
    bss = Path(sys.executable).parent / "bss"
    r = subprocess.run([str(bss), "study", str(tiny_manifest), "--out", str(tmp_path / "s"), "--schedulers", "none",
                        "--seeds", "1", "--set", "epochs=1", "--device", "cpu", "--quiet"], cwd=here,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert not marker.exists()


def test_a_run_folder_lock_is_never_written_through_a_link(tiny_manifest, tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / ".bss-lock").symlink_to(tmp_path / "target")
    r = runner.invoke(app, ["train", str(tiny_manifest), "--out", str(run_dir), "--epochs", "1", "--quiet"])
    assert r.exit_code == 1 and "symbolic link" in r.stderr and not (tmp_path / "target").exists()


def _rows(table: dict[str, list[float]], lr=None, heads: dict[str, list[float]] | None = None) -> list[dict]:
    """Study rows: variant -> test accuracy per seed (val accuracy the same), optional weak-head accuracies."""
    out = []
    for v, accs in table.items():
        for seed, acc in enumerate(accs):
            row = {"variant": v, "seed": seed, "test_acc": acc, "val_acc": acc, "lr": lr, "test_imbalance": 0.1,
                   "best_epoch": 3, "unstable": False}
            for head, values in (heads or {}).get(v, {}).items():
                row[f"test_acc_{head}"] = values[seed]
            out.append(row)
    return out


def test_two_seeds_or_a_zero_width_interval_draw_no_verdict():
    from bss_cli.study import stats

    rows = _rows({"none": [0.80, 0.82], "learned": [0.78, 0.80], "learned-shuffled": [0.80, 0.82]})
    s = stats.summarise_study(rows, "none", controls={"learned": "learned-shuffled"})
    text = "\n".join(s["conclusion"])
    assert "no verdict" in text and "fewer than the 3 a verdict needs" in text and "zero width" in text
    assert "hurts" not in text and "helps" not in text
    assert not s["variants"]["learned"]["vs_control"]["significant"]
    rows = _rows({"none": [0.8, 0.81, 0.82, 0.83], "learned": [0.78, 0.79, 0.80, 0.81],
                  "learned-shuffled": [0.8, 0.81, 0.82, 0.83]})  # 4 seeds, every difference -0.02
    d = stats.summarise_study(rows, "none", controls={"learned": "learned-shuffled"})["variants"]["learned"]
    assert d["vs_control"]["degenerate"] and not d["vs_control"]["significant"]


def test_conclusions_name_every_significant_result_losses_too():
    from bss_cli.study import stats

    rng = np.random.default_rng(0)
    noise = lambda: list(rng.normal(0, 0.002, 6))  # noqa: E731
    base = [0.80 + x for x in noise()]
    rows = _rows({"none": base,
                  "learned": [b - 0.05 + x for b, x in zip(base, noise())],           # loses to the baseline
                  "learned-shuffled": [b + 0.03 + x for b, x in zip(base, noise())],  # the control gains alone
                  "curriculum": [b + x for b, x in zip(base, noise())],
                  "anti-curriculum": [b - 0.04 + x for b, x in zip(base, noise())]},
                 heads={"none": {"a": [0.6] * 6, "b": [0.3 + x for x in noise()]},
                        "learned": {"a": [0.6] * 6, "b": [0.4 + x for x in noise()]},
                        "learned-shuffled": {"a": [0.6] * 6, "b": [0.3 + x for x in noise()]},
                        "curriculum": {"a": [0.6] * 6, "b": [0.3 + x for x in noise()]},
                        "anti-curriculum": {"a": [0.6] * 6, "b": [0.3 + x for x in noise()]}})
    s = stats.summarise_study(rows, "none", controls={"learned": "learned-shuffled"},
                              reverses={"curriculum": "anti-curriculum"})
    text = "\n".join(s["conclusion"])
    assert "Significant: learned loses against none" in text
    assert "Significant: learned-shuffled gains against none" in text and "pacing or weighting alone" in text
    assert "Significant: learned raises the weak head (b)" in text
    assert "Significant: curriculum (balanced first) against anti-curriculum" in text and "better" in text
    assert "Significant: anti-curriculum loses against none" in text


def test_a_variant_and_its_control_are_tuned_together():
    """Per-variant tuning picked learned at 0.03 and learned-shuffled at 0.01 on a tiny validation
    gap, then called their difference an ordering effect: the pair now shares one rate."""
    from bss_cli.study import stats

    rows = []
    for lr, (learned, shuffled) in {0.01: (0.8000, 0.8100), 0.03: (0.8002, 0.7000)}.items():
        rows += _rows({"none": [0.8, 0.81, 0.79], "learned": [learned] * 3, "learned-shuffled": [shuffled] * 3}, lr=lr)
    s = stats.summarise_study(rows, "none", controls={"learned": "learned-shuffled"}, lr_grid=[0.01, 0.03],
                              tune="per-variant", n_seeds=3)
    v = s["variants"]
    assert v["learned"]["lr"] == v["learned-shuffled"]["lr"] == 0.01  # the pair's best mean, not each its own
    assert "mixes the order with the learning rate" not in "\n".join(s["conclusion"])


def test_a_first_epoch_of_nearly_one_class_is_warned_about():
    from bss_cli.study import stats

    rows = _rows({"none": [0.8, 0.81, 0.82], "curriculum": [0.7, 0.71, 0.72]})
    for r in rows:
        r["first_class_share"] = 23 / 24 if r["variant"] == "curriculum" and r["seed"] != 1 else 0.4
    text = "\n".join(stats.summarise_study(rows, "none")["conclusion"])
    assert "WARNING: curriculum's first epoch draws at least 90% of its rows from one class (seed(s) 0, 2)" in text
    assert "stratify=true" in text and "warmup=2" in text and "none's first epoch" not in text


def test_a_run_records_the_largest_class_share_of_each_epoch(tiny_manifest, tmp_path):
    r = runner.invoke(app, ["train", str(tiny_manifest), "--out", str(tmp_path / "r"), "--epochs", "3",
                            "--scheduler", "curriculum", "--quiet"])
    assert r.exit_code == 0, r.output
    history = pq.read_table(tmp_path / "r" / "metrics.parquet").to_pylist()
    for e, row in enumerate(history):
        sched = pq.read_table(tmp_path / "r" / "epochs" / f"epoch={e}" / "schedule.parquet")
        labels = np.asarray(sched["label"].to_pylist())
        assert row["top_class_share"] == pytest.approx(np.bincount(labels).max() / len(labels))
