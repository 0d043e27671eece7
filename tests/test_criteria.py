import numpy as np
import pytest

from bss_cli.errors import ConfigError, PredictionsError
from bss_cli.scoring import criteria
from bss_cli.scoring.criteria import (
    CRITERIA,
    LossWeights,
    Predictions,
    balance_rank,
    compute_balance,
    get_criterion,
    minmax,
    stable_argsort,
)

LN3 = np.log(3.0)


def hand_case() -> Predictions:
    a = np.array([[0, 0], [LN3, 0], [0, 0]], float)
    b = np.array([[0, 0], [0, LN3], [LN3, 0]], float)
    return Predictions(labels=np.array([0, 0, 0]), logits={"a": a, "b": b})


def test_prediction_sim_plus_loss_matches_hand_computation():
    r = compute_balance(hand_case(), "prediction-sim+loss", LossWeights(fused=1.0, unimodal=1.0))
    np.testing.assert_allclose(r.raw["pred_sim"], [1.0, 0.6, 0.5 / np.sqrt(0.5 * 0.625)], atol=1e-12)
    np.testing.assert_allclose(r.raw["loss"], [2 * np.log(2), -np.log(0.75) - np.log(0.25), np.log(2) - np.log(0.75)])
    np.testing.assert_allclose(r.normalised["pred_sim"], [1.0, 0.0, 0.7360679775], atol=1e-9)
    np.testing.assert_allclose(r.normalised["loss"], [np.log2(1.5), 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(r.balance, [1 - np.log2(1.5), -1.0, 0.7360679775], atol=1e-9)
    assert balance_rank(r.balance).tolist() == [1, 2, 0]


@pytest.mark.parametrize("case", ["distinct", "few ties", "many ties", "signed zeros", "nan", "runs across slices",
                                  "empty", "one"])
def test_stable_argsort_is_numpys_stable_argsort(case, monkeypatch):
    """The unstable sort with its ties put back in index order gives numpy's stable order exactly,
    whatever the ties (found a slice at a time: small slices here, so runs cross them)."""
    rng = np.random.default_rng(7)
    values = {
        "distinct": rng.random(5000),
        "few ties": np.round(rng.random(5000), 5),  # about a hundred ties: the run-fixing path
        "many ties": rng.integers(0, 6, 5000).astype(float),  # over one in 8: the stable sort itself
        "signed zeros": np.array([0.0, -0.0, 1.0, 0.0, -0.0, -1.0, -0.0]),
        "nan": np.array([1.0, np.nan, 0.5, np.nan, 0.5, 2.0]),
        "runs across slices": np.concatenate([rng.random(900), np.repeat(rng.random(10), 10)])[rng.permutation(1000)],
        "empty": np.array([], float),
        "one": np.array([3.0]),
    }[case]
    monkeypatch.setattr(criteria, "TIE_SLICE", 64)
    expected = np.argsort(values, kind="stable")
    if case in ("few ties", "runs across slices"):
        ties = np.count_nonzero(np.diff(np.sort(values)) == 0)
        assert 0 < ties <= len(values) // 8
    got = stable_argsort(values.copy())
    assert got.dtype == expected.dtype and np.array_equal(got, expected)
    assert np.array_equal(balance_rank(values.copy()), np.argsort(np.argsort(-values, kind="stable"), kind="stable"))


def test_fused_logits_enter_loss_with_their_weight():
    p = hand_case()
    p.fused_logits = np.array([[LN3, 0], [0, 0], [0, LN3]])
    base = compute_balance(hand_case(), "loss", LossWeights(0.1, 0.9)).raw["loss"]
    with_fused = compute_balance(p, "loss", LossWeights(0.1, 0.9)).raw["loss"]
    ce_fused = np.array([-np.log(0.75), np.log(2), -np.log(0.25)])
    np.testing.assert_allclose(with_fused - base, 0.1 * ce_fused)


def random_predictions(n=50, m=3, c=4, seed=0) -> Predictions:
    rng = np.random.default_rng(seed)
    return Predictions(
        labels=rng.integers(0, c, n),
        logits={f"m{i}": rng.normal(size=(n, c)) * 2 for i in range(m)},
        fused_logits=rng.normal(size=(n, c)),
        embeddings={f"m{i}": rng.normal(size=(n, 8)) for i in range(m)},
        grad_norm=rng.gamma(2.0, size=n),
    )


@pytest.mark.parametrize("name", list(CRITERIA))
def test_every_criterion_range_and_direction(name):
    r = compute_balance(random_predictions(), name)
    crit = CRITERIA[name]
    lo = -len(crit.against)
    hi = len(crit.toward)
    assert r.balance.min() >= lo - 1e-12 and r.balance.max() <= hi + 1e-12
    for v in r.normalised.values():
        assert v.min() == 0.0 and v.max() == 1.0
    assert set(r.raw) == set(crit.parts)


@pytest.mark.parametrize("name", list(CRITERIA))
def test_every_criterion_is_permutation_equivariant(name):
    p = random_predictions(seed=3)
    perm = np.random.default_rng(1).permutation(len(p.labels))
    q = Predictions(labels=p.labels[perm], logits={k: v[perm] for k, v in p.logits.items()},
                    fused_logits=p.fused_logits[perm], embeddings={k: v[perm] for k, v in p.embeddings.items()},
                    grad_norm=p.grad_norm[perm])
    np.testing.assert_allclose(compute_balance(q, name).balance, compute_balance(p, name).balance[perm])


def test_loss_criterion_prefers_low_loss_and_similarity_prefers_agreement():
    p = random_predictions(seed=5)
    r = compute_balance(p, "loss")
    assert r.balance[np.argmin(r.raw["loss"])] == 0.0
    r = compute_balance(p, "prediction-sim")
    assert r.balance[np.argmax(r.raw["pred_sim"])] == 1.0


def test_minmax_constant_column_is_zero():
    assert minmax(np.full(4, 2.5)).tolist() == [0.0] * 4
    assert minmax(np.array([1.0, 3.0, 2.0])).tolist() == [0.0, 1.0, 0.5]


def test_pairwise_mean_over_three_modalities():
    z = np.array([[5.0, 0.0]])
    p = Predictions(labels=np.array([0]), logits={"a": z, "b": z, "c": -z})
    r = compute_balance(p, "prediction-sim").raw["pred_sim"]
    s = np.exp(z) / np.exp(z).sum()
    t = s[:, ::-1]
    cross = (s * t).sum() / (np.linalg.norm(s) * np.linalg.norm(t))
    np.testing.assert_allclose(r, [(1 + 2 * cross) / 3])


def test_missing_inputs_and_unknown_name_say_what_to_do():
    p = hand_case()
    with pytest.raises(PredictionsError, match="gradient needs per-sample gradient norms"):
        compute_balance(p, "gradient")
    with pytest.raises(PredictionsError, match="feature-sim needs an embedding"):
        compute_balance(p, "feature-sim+loss")
    with pytest.raises(ConfigError, match="unknown criterion 'nope'; choose one of: feature-sim"):
        get_criterion("nope")


def test_alpha_weighs_similarity_against_loss_and_half_is_exactly_the_default():
    from bss_cli.scoring.criteria import Predictions, compute_balance

    rng = np.random.default_rng(0)
    p = Predictions(labels=rng.integers(0, 3, 50), logits={"a": rng.normal(size=(50, 3)), "b": rng.normal(size=(50, 3))},
                    fused_logits=rng.normal(size=(50, 3)))
    base = compute_balance(p, "prediction-sim+loss")
    half = compute_balance(p, "prediction-sim+loss", alpha=0.5)
    assert np.array_equal(base.balance, half.balance)  # bit for bit
    sim, loss = base.normalised["pred_sim"], base.normalised["loss"]
    np.testing.assert_allclose(compute_balance(p, "prediction-sim+loss", alpha=0.8).balance, 1.6 * sim - 0.4 * loss)
    np.testing.assert_allclose(compute_balance(p, "prediction-sim+loss", alpha=1.0).balance, 2 * sim)
    with pytest.raises(ConfigError, match="--alpha 1.5"):
        compute_balance(p, "prediction-sim+loss", alpha=1.5)
