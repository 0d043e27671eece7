"""Evaluation metrics (numpy): accuracy, macro-F1, mean average precision, per-head accuracy."""

from __future__ import annotations

import numpy as np


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float((pred == y).mean()) if len(y) else float("nan")


def macro_f1(pred: np.ndarray, y: np.ndarray, n_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in ``y`` or ``pred``."""
    f1s = []
    for c in range(n_classes):
        tp = np.sum((pred == c) & (y == c))
        fp = np.sum((pred == c) & (y != c))
        fn = np.sum((pred != c) & (y == c))
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else float("nan")


def average_precision(score: np.ndarray, positive: np.ndarray) -> float:
    """AP = mean over positives of the precision at their rank (scores sorted descending)."""
    order = np.argsort(-score, kind="stable")
    hits = positive[order].astype(np.float64)
    if hits.sum() == 0:
        return float("nan")
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def mean_average_precision(scores: np.ndarray, y: np.ndarray) -> float:
    """One-vs-rest AP per class with at least one positive, averaged."""
    aps = [average_precision(scores[:, c], y == c) for c in range(scores.shape[1]) if (y == c).any()]
    return float(np.mean(aps)) if aps else float("nan")


def evaluate(head_logits: dict[str, np.ndarray], fused: np.ndarray | None, y: np.ndarray, n_classes: int,
             predict_with: str = "sum") -> dict[str, float]:
    """Metrics of the model's prediction and of each modality's own head.

    ``predict_with``: ``sum`` = argmax of the summed logits (z_mm plus every z_m, the scripts'
    default), ``unimodal`` = the summed unimodal logits only (the scripts' CREMA-D rule),
    ``fused`` = the fused head alone. ``imbalance`` = max - min of the heads' accuracies.
    """
    total = sum(head_logits.values())
    if predict_with == "sum" and fused is not None:
        total = total + fused
    elif predict_with == "fused" and fused is not None:
        total = fused
    pred = total.argmax(1)
    shifted = total - total.max(1, keepdims=True)
    prob = np.exp(shifted) / np.exp(shifted).sum(1, keepdims=True)
    out = {"acc": accuracy(pred, y), "macro_f1": macro_f1(pred, y, n_classes), "map": mean_average_precision(prob, y)}
    heads = {m: accuracy(z.argmax(1), y) for m, z in head_logits.items()}
    out.update({f"acc_{m}": v for m, v in heads.items()})
    out["imbalance"] = float(max(heads.values()) - min(heads.values())) if heads else float("nan")
    return out
