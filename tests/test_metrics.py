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


def test_evaluate_heads_and_imbalance():
    y = np.array([0, 1, 0, 1])
    a = np.array([[2, 0], [0, 2], [2, 0], [0, 2]], float)  # always right
    b = np.array([[0, 1], [0, 1], [0, 1], [0, 1]], float)  # always says 1
    out = evaluate({"a": a, "b": b}, None, y, 2)
    assert out["acc_a"] == 1.0 and out["acc_b"] == 0.5 and out["imbalance"] == 0.5 and out["acc"] == 1.0
