"""What keeps bss study's answer true: stable defaults, random-order controls, tuning selected on
validation, the instability signature, the paper's protocol kept apart."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE

from bss_cli.errors import ConfigError
from bss_cli.scheduling.schedulers import ScheduleConfig, make_scheduler
from bss_cli.study import stats
from bss_cli.study.runner import StudyDesign, design_from
from bss_cli.training import lr as LR
from bss_cli.training.config import TrainConfig
from bss_cli.training.metrics import stability
from bss_cli.training.trainer import train

# --- the defaults: a real unstable case becomes stable ------------------------------------------


@pytest.fixture
def digits_av():
    path = SAMPLE / "digits-av.parquet"
    if not path.exists():
        pytest.skip("make setup builds sample_data/digits-av.parquet")
    return path


def test_the_defaults_make_an_unstable_baseline_stable(digits_av, tmp_path):
    """digits-av at SGD 0.05 without clipping collapses after epoch 1 (0.90 -> 0.69 on seed 0);
    the defaults (the same rate, the gradient norm clipped to 1) improve and hold (0.87 -> 0.97)."""
    common = dict(manifest=str(digits_av), epochs=6, scheduler="none", lr_schedule="none", quiet=True, threads=1,
                  epoch_artifacts=False)
    raw = train(TrainConfig(out=str(tmp_path / "raw"), clip_grad=0.0, **common))
    default = train(TrainConfig(out=str(tmp_path / "default"), **common))
    assert TrainConfig().clip_grad == 1.0 and TrainConfig().lr == 0.05
    unstable = stability([r["val_acc"] for r in raw.history])
    stable = stability([r["val_acc"] for r in default.history])
    assert unstable["unstable"] and unstable["peak_drop"] > 0.10, unstable
    assert not stable["unstable"] and stable["best_epoch"] >= 2 and stable["peak_drop"] < 0.02, stable
    assert default.history[-1]["val_acc"] > raw.history[-1]["val_acc"] + 0.1


def test_stability_signature():
    assert stability([0.5, 0.9, 0.5, 0.6])["unstable"]  # fell 0.4 after the peak
    s = stability([0.5, 0.9, 0.85, 0.88])
    assert not s["unstable"] and s["peak_drop"] == pytest.approx(0.05) and s["best_epoch"] == 1
    early = stability([0.9] + [0.82] * 11)
    assert early["unstable"] and "best epoch 0 of 12" in early["why"]
    assert not stability([0.8, 0.95, 0.97] + [0.965] * 27)["unstable"]  # an early plateau: saturation
    assert not stability([0.9, 0.85, 0.86])["unstable"]  # too short to judge the best epoch
    assert stability([0.5, 0.9, 0.85], drop=0.01)["unstable"]


# --- the learning rate: a pure function, the warm-up the same for every scheduler -------------


def test_warmup_is_linear_per_step_in_epochs_then_the_decay():
    cfg = TrainConfig(lr=0.1, epochs=10, lr_warmup=2, lr_schedule="none")
    assert LR.lr_at(cfg, 0, 0.25) == pytest.approx(0.1 * 0.125)
    assert LR.lr_at(cfg, 1, 0.5) == pytest.approx(0.1 * 0.75)
    assert LR.lr_at(cfg, 2, 0.1) == pytest.approx(0.1)
    assert LR.warming(cfg, 1) and not LR.warming(cfg, 2)
    cos = TrainConfig(lr=0.1, epochs=10, lr_schedule="cosine")
    assert LR.lr_at(cos, 0) == pytest.approx(0.1) and LR.lr_at(cos, 5) == pytest.approx(0.05)
    step = TrainConfig(lr=0.1, epochs=10, lr_schedule="step", lr_step=3, lr_gamma=0.5)
    assert [LR.lr_at(step, e) for e in (2, 3, 6)] == pytest.approx([0.1, 0.05, 0.025])
    with pytest.raises(ConfigError, match="--lr-warmup 12.0 is longer than the run"):
        TrainConfig(manifest="m", out="o", epochs=10, lr_warmup=12.0).validate()


def test_every_scheduler_sees_the_same_rates(tiny_manifest, tmp_path):
    lrs = {}
    for name in ("none", "curriculum", "paced-random", "learned"):
        r = train(TrainConfig(manifest=str(tiny_manifest), out=str(tmp_path / name), epochs=4, hidden=8, t_grow=3,
                              scheduler=name, lr_warmup=1.5, quiet=True))
        lrs[name] = [row["lr"] for row in r.history]
    assert len({tuple(v) for v in lrs.values()}) == 1
    assert lrs["none"][0] == pytest.approx(0.05 * (1 + math.cos(0)) / 2 / 1.5)


# --- the controls ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stratify", [False, True])
def test_paced_random_has_the_curriculums_sizes_in_a_seeded_random_order(stratify):
    rng = np.random.default_rng(0)
    balance, labels = rng.normal(size=500), np.arange(500) % 4
    cfg = ScheduleConfig(scheduler="curriculum", t_grow=8, stratify=stratify, seed=3)
    cur = make_scheduler(balance, cfg, labels)
    ctl = make_scheduler(balance, ScheduleConfig(**{**cfg.__dict__, "scheduler": "paced-random"}), labels)
    again = make_scheduler(balance, ScheduleConfig(**{**cfg.__dict__, "scheduler": "paced-random"}), labels)
    for e in range(10):
        a, b = cur.epoch(e)[0], ctl.epoch(e)[0]
        assert len(a) == len(b) == cur.size(e) == ctl.size(e)
        assert np.array_equal(b, again.epoch(e)[0])  # deterministic
        if stratify:
            assert np.array_equal(np.bincount(labels[a], minlength=4), np.bincount(labels[b], minlength=4))
    first_cur, first_ctl = set(cur.epoch(0)[0]), set(ctl.epoch(0)[0])
    assert first_ctl < set(ctl.epoch(5)[0])  # nested: a growing prefix of one fixed order
    assert len(first_cur & first_ctl) < 0.5 * len(first_cur)  # not the balance order
    assert balance[list(first_cur)].mean() > balance[list(first_ctl)].mean() + 0.5
    other = make_scheduler(balance, ScheduleConfig(**{**cfg.__dict__, "scheduler": "paced-random", "seed": 4}), labels)
    assert set(other.epoch(0)[0]) != first_ctl  # another seed, another order


def test_anti_curriculum_takes_the_least_balanced_first():
    balance = np.linspace(-1, 1, 100)
    anti = make_scheduler(balance, ScheduleConfig(scheduler="anti-curriculum", t_grow=4, lambda0=0.2))
    assert set(anti.epoch(0)[0]) == set(range(anti.size(0)))


def test_shuffled_scores_keep_the_weights_but_not_their_samples():
    balance = np.linspace(-1, 1, 200)
    plain = make_scheduler(balance, ScheduleConfig(scheduler="learned", seed=1))
    ctl = make_scheduler(balance, ScheduleConfig(scheduler="learned", seed=1, shuffle_scores=True))
    assert np.allclose(np.sort(plain.p), np.sort(ctl.p)) and not np.allclose(plain.p, ctl.p)
    assert abs(np.corrcoef(ctl.p, balance)[0, 1]) < 0.3
    with pytest.raises(ConfigError, match="control of the learned scheduler"):
        make_scheduler(balance, ScheduleConfig(scheduler="curriculum", shuffle_scores=True))


@pytest.mark.parametrize("name", ["anti-curriculum", "paced-random"])
def test_controls_train_and_resume_exactly(tiny_manifest, tmp_path, name):
    base = dict(manifest=str(tiny_manifest), epochs=4, hidden=8, t_grow=3, scheduler=name, quiet=True, save_every=0)
    straight = train(TrainConfig(out=str(tmp_path / "a"), **base))
    sizes = [r["subset_size"] for r in straight.history]
    cur = train(TrainConfig(out=str(tmp_path / "c"), **{**base, "scheduler": "curriculum"}))
    assert sizes == [r["subset_size"] for r in cur.history] and sizes[0] < sizes[-1]
    again = train(TrainConfig(out=str(tmp_path / "b"), **base))
    assert (tmp_path / "a" / "best.pt").read_bytes() == (tmp_path / "b" / "best.pt").read_bytes()
    assert again.test == straight.test


# --- the study: controls paired, tuning on validation only ---------------------------------------


def test_a_study_pairs_each_scheduler_with_its_control():
    d = design_from("m.parquet", ["none", "curriculum", "anti-curriculum", "paced-random", "learned",
                                  "learned-shuffled", "learned-paced", "learned-paced-shuffled"], None, 2, {}, None)
    assert d.controls() == {"curriculum": "paced-random", "anti-curriculum": "paced-random",
                            "learned": "learned-shuffled", "learned-paced": "learned-paced-shuffled"}
    assert d.reverses() == {"curriculum": "anti-curriculum"}
    assert design_from("m.parquet", ["none", "curriculum"], None, 2, {}, None).controls() == {}


def _rows(variant, val, test, lr=None, seeds=3):
    return [{"variant": variant, "lr": lr, "seed": s, "best_epoch": 10, "val_acc": val + 0.001 * s,
             "test_acc": test + 0.001 * s, "unstable": False} for s in range(seeds)]


def test_tuning_selects_on_validation_never_on_test():
    # lr 0.1: best on validation, worse on test; lr 0.01 the other way round
    rows = _rows("none", 0.90, 0.70, 0.1) + _rows("none", 0.80, 0.95, 0.01) \
        + _rows("cur", 0.85, 0.99, 0.1) + _rows("cur", 0.86, 0.60, 0.01)
    s = stats.summarise_study(rows, "none", lr_grid=[0.01, 0.1], tune="per-variant", n_seeds=3)
    assert s["variants"]["none"]["lr"] == 0.1 and s["variants"]["cur"]["lr"] == 0.01
    assert s["variants"]["none"]["mean"] == pytest.approx(0.701) and s["variants"]["cur"]["mean"] == pytest.approx(0.601)
    assert s["variants"]["cur"]["vs_baseline"]["mean"] == pytest.approx(-0.10)
    assert s["variants"]["none"]["tuning"]["at_grid_edge"]
    shared = stats.summarise_study(rows, "none", lr_grid=[0.01, 0.1], tune="shared", n_seeds=3)
    assert shared["variants"]["cur"]["lr"] == 0.1  # the baseline's rate
    # not every seed of a rate has finished: nothing is selected yet
    assert stats.select_rate(rows[:-1], "cur", [0.01, 0.1], 3) is None


def test_the_conclusion_says_when_a_gain_is_pacing_and_when_the_baseline_is_unstable():
    rows = _rows("none", 0.8, 0.80) + _rows("curriculum", 0.9, 0.90) + _rows("paced-random", 0.9, 0.90)
    rows[0]["unstable"] = True
    rows[4]["test_acc"] += 0.002  # not all differences equal: an interval of some width
    s = stats.summarise_study(rows, "none", controls={"curriculum": "paced-random"})
    text = "\n".join(s["conclusion"])
    assert "WARNING: the baseline 'none' shows the instability signature in 1 of 3 seeds" in text
    assert "curriculum vs its random-order control paced-random" in text and "no ordering effect" in text
    assert "not explained by its order" in text and "no evidence here" in text


def test_the_study_table_shows_rates_controls_intervals_and_the_papers_protocol(monkeypatch):
    import io

    from rich.console import Console

    from bss_cli.cli import inspect as cli_inspect
    from bss_cli.cli.inspect import render_study_summary

    buffer = io.StringIO()
    monkeypatch.setattr(cli_inspect, "out", Console(file=buffer, width=400, highlight=False))

    rows = []
    for v, lr in (("none", 0.1), ("curriculum", 0.01), ("paced-random", 0.1)):
        for r in _rows(v, 0.8, 0.8, lr) + _rows(v, 0.7, 0.7, 0.1 if lr == 0.01 else 0.01):
            r.update(test_acc_a=0.9, test_acc_b=0.5 + 0.01 * r["seed"] * (v == "curriculum"),
                     paper_test_acc=r["test_acc"] + 0.02)
            rows.append(r)
    s = stats.summarise_study(rows, "none", controls={"curriculum": "paced-random"}, lr_grid=[0.01, 0.1], n_seeds=3)
    render_study_summary(s, "STUDY")
    shown = buffer.getvalue()
    assert "b head change [95 % CI]" in shown and "+0.0100 [" in shown  # the weak head's interval
    assert "learning-rate tuning (per-variant)" in shown and "0.8010*" in shown
    assert "best TEST epoch" in shown and "+0.0200 [+0.0200, +0.0200]" in shown
    assert "paced-random" in shown and "ordering effect" in shown


def test_a_study_refuses_bad_names_and_a_grid_beside_an_lr():
    with pytest.raises(ConfigError, match="becomes a folder"):
        StudyDesign(manifest="m", variants={"../x": {}}, seeds=[0])
    with pytest.raises(ConfigError, match="must be quoted in TOML"):
        StudyDesign(manifest="m", variants={"sgd-0": {"05": {"lr": 0.05}}}, seeds=[0])
    with pytest.raises(ConfigError, match="also set"):
        StudyDesign(manifest="m", variants={"a": {"lr": 0.1}}, seeds=[0], lr_grid=[0.01])
    with pytest.raises(ConfigError, match="distinct learning rates, each a finite number in \\(0, 10\\]"):
        StudyDesign(manifest="m", variants={"a": {}}, seeds=[0], lr_grid=[0.01, -1])


@pytest.mark.slow
def test_study_tunes_and_reports_the_papers_protocol_apart(tiny_manifest, tmp_path):
    from typer.testing import CliRunner

    from bss_cli.cli.app import app

    study = tmp_path / "s"
    r = CliRunner().invoke(app, ["study", str(tiny_manifest), "--out", str(study), "--schedulers",
                                 "none,curriculum,paced-random", "--seeds", "2", "--set", "epochs=2", "--set",
                                 "hidden=8", "--tune-lr", "0.01,0.1", "--paper-protocol", "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["tuned"] == {"grid": [0.01, 0.1], "mode": "per-variant", "selected_on": "val_acc"}
    cur = s["variants"]["curriculum"]
    assert cur["control"] == "paced-random" and cur["vs_control"]["n"] == 2 and cur["lr"] in (0.01, 0.1)
    table = pq.read_table(study / "study.parquet").to_pylist()
    # the best test epoch can only be as good as or better than the epoch selected on validation
    assert len(table) == 12 and all(row["paper_test_acc"] >= row["test_acc"] - 1e-12 for row in table)
    assert (study / "runs" / "curriculum" / "lr=0.1" / "seed=1" / "summary.json").exists()
    best = [r for r in table if r["variant"] == "none" and r["lr"] == s["variants"]["none"]["lr"]]
    assert s["variants"]["none"]["paper_protocol"]["mean"] == pytest.approx(np.mean([r["paper_test_acc"] for r in best]))
    shown = CliRunner().invoke(app, ["inspect", str(study)])
    assert "learning-rate tuning (per-variant)" in shown.stdout and "best TEST epoch" in shown.stdout


def test_p_values_and_holm():
    # two-sided paired t-test p-values (scipy.stats.t.sf references)
    assert stats.t_test_p(3.13 * 0.1 / math.sqrt(10), 0.1, 10) == pytest.approx(0.0121217006871, rel=1e-9)
    assert stats.t_test_p(1.0, math.sqrt(5), 5) == pytest.approx(0.373900966300, rel=1e-9)
    adjusted = stats.holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert adjusted == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})


def test_an_ordering_gain_the_reversed_order_shares_is_not_called_balance_aware():
    rows = _rows("none", 0.8, 0.80) + _rows("paced-random", 0.8, 0.80)
    for v in ("curriculum", "anti-curriculum"):
        rows += _rows(v, 0.8, 0.80)
    for r in rows:
        if r["variant"] in ("curriculum", "anti-curriculum"):
            r["test_acc"] += 0.02 + 0.001 * r["seed"] ** 2  # both beat the control, by the same
    s = stats.summarise_study(rows, "none", controls={"curriculum": "paced-random", "anti-curriculum": "paced-random"},
                              reverses={"curriculum": "anti-curriculum"})
    cur = s["variants"]["curriculum"]
    assert cur["vs_control"]["significant"] and cur["vs_reverse"]["mean"] == pytest.approx(0)
    assert not cur["balance_aware_gain"]
    text = "\n".join(s["conclusion"])
    assert "not a balance-aware one" in text and "the reversed order does as well" in text
    assert "Overall: no evidence here" in text
    assert "Holm-adjusted" in text and s["ordering_tests"] == 2
