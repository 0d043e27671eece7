import math

import numpy as np
import pytest

from bss_cli.errors import ConfigError
from bss_cli.scheduling import keys
from bss_cli.scheduling.pacing import PACING, check_pacing, subset_size
from bss_cli.scheduling.schedulers import SCHEDULERS, Accumulator, ScheduleConfig, make_scheduler


@pytest.mark.parametrize("name", list(PACING))
@pytest.mark.parametrize("lambda0, t_grow", [(0.1, 40), (0.25, 7), (0.5, 1)])
def test_pacing_is_monotone_from_lambda0_to_one(name, lambda0, t_grow):
    f = PACING[name]
    values = [f(t, lambda0=lambda0, t_grow=t_grow) for t in range(1, 3 * t_grow + 2)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert lambda0 <= values[0] <= 1.0
    assert values[t_grow - 1] == 1.0 and values[-1] == 1.0


def test_root_pacing_matches_the_scripts():
    f = PACING["root"]
    assert f(1, lambda0=0.1, t_grow=40) == pytest.approx(0.18641, abs=1e-5)
    assert f(39, lambda0=0.1, t_grow=40) < 1.0 and f(40, lambda0=0.1, t_grow=40) == 1.0
    assert PACING["step"](1, lambda0=0.1, t_grow=40) == 0.1
    with pytest.raises(ConfigError, match="unknown pacing 'cubic'; choose one of: root, linear"):
        check_pacing("cubic", 0.1, 40)


def scores(n=101, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, n)


@pytest.mark.parametrize("pacing", list(PACING))
@pytest.mark.parametrize("shuffle", [True, False])
def test_curriculum_epoch_is_exactly_the_balanced_first_prefix(pacing, shuffle):
    b = scores()
    cfg = ScheduleConfig(scheduler="curriculum", pacing=pacing, t_grow=10, shuffle=shuffle)
    sched = make_scheduler(b, cfg)
    expected_order = np.argsort(-b, kind="stable")
    for e in range(12):
        idx, prob = sched.epoch(e)
        n = math.floor(len(b) * PACING[pacing](e + 1, lambda0=0.1, t_grow=10))
        assert len(idx) == max(1, n) and np.allclose(prob, 1 / len(idx))
        if shuffle:
            assert sorted(idx) == sorted(expected_order[:len(idx)])
        else:
            assert idx.tolist() == expected_order[:len(idx)].tolist()


def test_anti_curriculum_takes_the_least_balanced_first():
    b = scores()
    idx, _ = make_scheduler(b, ScheduleConfig(scheduler="anti-curriculum", shuffle=False)).epoch(0)
    assert idx.tolist() == np.argsort(b, kind="stable")[:len(idx)].tolist()


@pytest.mark.parametrize("name", ["learned", "random"])
def test_full_schedulers_give_permutations_and_epochs_stand_alone(name):
    b = scores()
    cfg = ScheduleConfig(scheduler=name, seed=7)
    s = make_scheduler(b, cfg)
    runs = [s.epoch(e)[0] for e in range(5)]
    for idx in runs:
        assert sorted(idx) == list(range(len(b)))
    assert not np.array_equal(runs[0], runs[1])
    alone = make_scheduler(b, cfg).epoch(3)[0]
    assert np.array_equal(alone, runs[3])
    other_seed = make_scheduler(b, ScheduleConfig(scheduler=name, seed=8)).epoch(3)[0]
    assert not np.array_equal(other_seed, runs[3])


def many_epochs(s, epochs: int) -> np.ndarray:
    """The orders of epochs 0..epochs-1 of a learned scheduler [epochs, N], computed at once from
    the counter-based keys it draws with; equal to its ``epoch(e)`` (checked on 20 of them)."""
    order = np.argsort(keys.exponential(s.cfg.seed, np.arange(epochs)[:, None], s.rows[None, :]) / s.p, axis=1)
    for e in range(0, epochs, epochs // 20):
        np.testing.assert_array_equal(s.epoch(e)[0], order[e])
    return order


def test_learned_probabilities_follow_the_scripts_rule_and_first_draws_follow_them():
    b = np.array([1.0, 0.0, -1.0])
    s = make_scheduler(b, ScheduleConfig(scheduler="learned"))
    w = 1 + b + 0.01
    np.testing.assert_allclose(s.p, w / w.sum())
    order = many_epochs(s, 6000)
    firsts = np.bincount(order[:, 0], minlength=3) / 6000
    np.testing.assert_allclose(firsts, s.p, atol=0.02)
    # second draw follows the renormalised weights (sampling without replacement)
    seconds_after_0 = order[order[:, 0] == 0, 1]
    frac1 = np.mean(seconds_after_0 == 1)
    assert frac1 == pytest.approx(w[1] / (w[1] + w[2]), abs=0.03)


def test_temperature_sharpens_and_flattens():
    b = scores()
    p1 = make_scheduler(b, ScheduleConfig(scheduler="learned")).p
    sharp = make_scheduler(b, ScheduleConfig(scheduler="learned", temperature=0.25)).p
    flat = make_scheduler(b, ScheduleConfig(scheduler="learned", temperature=100.0)).p
    assert sharp.max() > p1.max() > flat.max()
    np.testing.assert_allclose(flat, 1 / len(b), rtol=0.05)
    with pytest.raises(ConfigError, match="--temperature 0"):
        make_scheduler(b, ScheduleConfig(scheduler="learned", temperature=0))


def test_accumulator_is_a_decayed_running_mean():
    acc = Accumulator(decay=0.5)
    a, b = np.array([1.0, -1.0]), np.array([0.0, 1.0])
    np.testing.assert_allclose(acc.add(a), a)
    np.testing.assert_allclose(acc.add(b), (0.5 * a + b) / 1.5)
    plain = Accumulator(1.0)
    plain.add(a)
    np.testing.assert_allclose(plain.add(b), (a + b) / 2)


def test_subset_size_bounds():
    assert subset_size(10, 0.0) == 1 and subset_size(10, 1.0) == 10 and subset_size(10, 0.55) == 5


def test_unknown_scheduler():
    with pytest.raises(ConfigError, match="--scheduler 'best': expected one of " + ", ".join(SCHEDULERS)):
        make_scheduler(scores(), ScheduleConfig(scheduler="best"))


def test_stratified_curriculum_keeps_every_class_in_every_epoch():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2, 3], [40, 30, 20, 10])
    balance = np.where(labels == 0, 1.0, -1.0) + rng.normal(0, 0.01, len(labels))  # class 0 is most balanced
    plain = make_scheduler(balance, ScheduleConfig(scheduler="curriculum", t_grow=10, shuffle=False), labels)
    strat = make_scheduler(balance, ScheduleConfig(scheduler="curriculum", t_grow=10, shuffle=False, stratify=True),
                           labels)
    first, _ = plain.epoch(0)
    assert set(labels[first]) == {0}  # the authors' rule: early epochs can leave whole classes out
    for e in range(12):
        idx, prob = strat.epoch(e)
        counts = np.bincount(labels[idx], minlength=4)
        assert (counts >= 1).all() and len(idx) == strat.size(e) and np.isclose(prob.sum(), 1)
        assert np.all(np.diff(balance[idx]) <= 0)  # still balanced-first across classes
        for c in range(4):  # each class contributes its most balanced samples
            mine = np.flatnonzero(labels == c)
            top = mine[np.argsort(-balance[mine], kind="stable")][:counts[c]]
            assert set(idx[labels[idx] == c]) == set(top)
    assert len(strat.epoch(11)[0]) == 100
    with pytest.raises(ConfigError, match="--stratify needs each sample's class"):
        make_scheduler(balance, ScheduleConfig(scheduler="curriculum", stratify=True))
    with pytest.raises(ConfigError, match="--stratify shapes a curriculum"):
        make_scheduler(balance, ScheduleConfig(scheduler="learned", stratify=True), labels)


def test_paper_rule_is_softmax_of_the_scores_and_draws_follow_it():
    b = np.array([1.0, 0.0, -1.0])
    for t in (1.0, 0.5):
        s = make_scheduler(b, ScheduleConfig(scheduler="learned", rule="paper", temperature=t))
        e = np.exp(b / t)
        np.testing.assert_allclose(s.p, e / e.sum())
    s = make_scheduler(b, ScheduleConfig(scheduler="learned", rule="paper"))
    firsts = np.bincount(many_epochs(s, 6000)[:, 0], minlength=3) / 6000
    np.testing.assert_allclose(firsts, s.p, atol=0.02)
    with pytest.raises(ConfigError, match="--accumulate is the scripts rule's memory"):
        ScheduleConfig(scheduler="learned", rule="paper", accumulate=True).validate()
    with pytest.raises(ConfigError, match="--rule 'magic'"):
        ScheduleConfig(scheduler="learned", rule="magic").validate()


def test_one_accumulation_mechanism_for_both_rules():
    rng = np.random.default_rng(0)
    scores_k = [rng.uniform(-1, 1, 5) for _ in range(6)]
    for decay in (1.0, 0.7, 0.0):  # the scripts' decayed running mean, exactly
        acc = Accumulator(decay=decay)
        for k, s in enumerate(scores_k):
            got = acc.add(s)
            w = decay ** np.arange(k, -1, -1)
            np.testing.assert_allclose(got, (w[:, None] * np.array(scores_k[:k + 1])).sum(0) / w.sum())
    acc = Accumulator(beta=0.3)  # the paper's EMA: s_hat(k+1) = 0.7 s_hat(k) + 0.3 s(k+1)
    expected = scores_k[0]
    np.testing.assert_allclose(acc.add(scores_k[0]), expected)
    for s in scores_k[1:]:
        expected = 0.7 * expected + 0.3 * s
        np.testing.assert_allclose(acc.add(s), expected)
    assert Accumulator.for_config(ScheduleConfig(scheduler="learned")) is None  # the memory-less default
    assert Accumulator.for_config(ScheduleConfig(scheduler="learned", rule="paper", beta=1.0)).beta == 1.0


def test_paced_learned_keeps_a_growing_prefix_of_each_draw():
    b = scores()
    cfg = ScheduleConfig(scheduler="learned", paced=True, t_grow=4, seed=2)
    s = make_scheduler(b, cfg)
    full = make_scheduler(b, ScheduleConfig(scheduler="learned", seed=2))
    sizes = [s.size(e) for e in range(6)]
    assert sizes == sorted(sizes) and sizes[0] < len(b) and sizes[-1] == len(b)
    for e in range(6):
        idx, prob = s.epoch(e)
        assert np.array_equal(idx, full.epoch(e)[0][:sizes[e]])  # the same draw, cut by the pacing
    assert set(cfg.params()) >= {"paced", "pacing", "lambda0", "t_grow"}
