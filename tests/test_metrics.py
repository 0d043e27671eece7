import numpy as np
import pytest

from bss_cli.training.metrics import average_precision, evaluate, macro_f1, mean_average_precision


def test_macro_f1_hand_case():
    y = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0])
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp0 fp0 fn1 -> 0
    assert macro_f1(pred, y, 3) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_average_precision_hand_case():
    # ranks: pos, neg, pos -> precisions 1, 2/3 -> AP = (1 + 2/3) / 2
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True])) == pytest.approx(5 / 6)
    perfect = np.eye(3)[[0, 1, 2, 1]]
    assert mean_average_precision(perfect, np.array([0, 1, 2, 1])) == 1.0


def test_average_precision_counts_tied_scores_as_one_threshold():
    # scores 0.5 tie between a positive and a negative: the positive gets the precision at the end
    # of the tie (1/2), whatever order a sort puts them in; then 2/3 -> AP = (1/2 + 2/3) / 2
    assert average_precision(np.array([0.5, 0.5, 0.1]), np.array([True, False, True])) == pytest.approx(7 / 12)
    assert average_precision(np.array([0.5, 0.5, 0.1]), np.array([False, True, True])) == pytest.approx(7 / 12)


def test_average_precision_matches_the_threshold_definition_with_many_ties():
    rng = np.random.default_rng(3)
    for _ in range(50):
        s = np.round(rng.random(40), 1)
        y = rng.random(40) < 0.3
        if not y.any():
            continue
        ap, prev = 0.0, 0.0
        for t in np.unique(s)[::-1]:  # sum over distinct thresholds of (recall gain) x precision
            sel = s >= t
            rec = (y & sel).sum() / y.sum()
            ap += (rec - prev) * (y & sel).sum() / sel.sum()
            prev = rec
        assert average_precision(s, y) == pytest.approx(ap, abs=1e-12)


def test_evaluate_heads_and_imbalance():
    y = np.array([0, 1, 0, 1])
    a = np.array([[2, 0], [0, 2], [2, 0], [0, 2]], float)  # always right
    b = np.array([[0, 1], [0, 1], [0, 1], [0, 1]], float)  # always says 1
    out = evaluate({"a": a, "b": b}, None, y, 2)
    assert out["acc_a"] == 1.0 and out["acc_b"] == 0.5 and out["imbalance"] == 0.5 and out["acc"] == 1.0
