"""bss's metrics against the libraries the field trusts (integration tier: scikit-learn is
installed by `make test-integration`, never by the default tier)."""

from __future__ import annotations

import numpy as np
import pytest

from bss_cli.training.metrics import average_precision, macro_f1, mean_average_precision

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sklearn_metrics():  # imported when a test runs, not when the default tier collects this file
    return pytest.importorskip("sklearn.metrics", reason="make test-integration installs scikit-learn")


@pytest.mark.parametrize("decimals", [1, 2, None])
def test_map_with_tied_scores_equals_scikit_learn(decimals, sklearn_metrics):
    rng = np.random.default_rng(7)
    for _ in range(20):
        n, c = 200, 6
        y = rng.integers(0, c, n)
        logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y]
        prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        if decimals is not None:  # many ties, as rounded or low-precision (bf16) scores have
            prob = np.round(prob, decimals)
        ref = np.mean([sklearn_metrics.average_precision_score(y == k, prob[:, k]) for k in range(c)])
        assert mean_average_precision(prob, y) == pytest.approx(ref, abs=1e-12)
        k = int(rng.integers(c))
        assert average_precision(prob[:, k], y == k) == pytest.approx(
            sklearn_metrics.average_precision_score(y == k, prob[:, k]), abs=1e-12)


def test_macro_f1_equals_scikit_learn(sklearn_metrics):
    rng = np.random.default_rng(8)
    y, pred = rng.integers(0, 5, 300), rng.integers(0, 5, 300)
    assert macro_f1(pred, y, 5) == pytest.approx(sklearn_metrics.f1_score(y, pred, average="macro"), abs=1e-12)
