"""Evaluation metrics (numpy): accuracy, macro-F1, mean average precision, per-head accuracy."""

from __future__ import annotations

import numpy as np


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float((pred == y).mean()) if len(y) else float("nan")


def macro_f1(pred: np.ndarray, y: np.ndarray, n_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in ``y`` or ``pred``."""
    pred, y = np.asarray(pred, np.int64), np.asarray(y, np.int64)
    tp = np.bincount(y[pred == y], minlength=n_classes)[:n_classes]
    fp = np.bincount(pred, minlength=n_classes)[:n_classes] - tp
    fn = np.bincount(y, minlength=n_classes)[:n_classes] - tp
    present = tp + fp + fn > 0
    f1 = 2 * tp[present] / (2 * tp[present] + fp[present] + fn[present])
    return float(np.mean(f1)) if len(f1) else float("nan")


def average_precision(score: np.ndarray, positive: np.ndarray) -> float:
    """AP = sum over thresholds of (recall gain) x precision, as scikit-learn's
    ``average_precision_score`` and torchmetrics compute it: tied scores form one threshold, so each
    positive counts the precision at the *end* of its group of ties (no order among ties is assumed)."""
    return float(_average_precisions(np.asarray(score)[None, :], np.asarray(positive, bool)[None, :])[0])


def _average_precisions(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """:func:`average_precision` of each row of ``scores`` [K, N] against ``positive`` [K, N]."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranked = np.take_along_axis(scores, order, axis=1)
    hits = np.take_along_axis(positive, order, axis=1).astype(np.float64)
    k, n = hits.shape
    n_pos = hits.sum(1)
    tp = np.cumsum(hits, axis=1)
    # the last position of each position's group of tied scores (a reversed running minimum)
    is_end = np.ones((k, n), bool)
    is_end[:, :-1] = ranked[:, :-1] != ranked[:, 1:]
    ends = np.where(is_end, np.arange(n), n - 1)
    ends = np.minimum.accumulate(ends[:, ::-1], axis=1)[:, ::-1]
    precision = np.take_along_axis(tp, ends, axis=1) / (ends + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_pos > 0, (precision * hits).sum(1) / n_pos, np.nan)


def mean_average_precision(scores: np.ndarray, y: np.ndarray, block: int = 1 << 22) -> float:
    """One-vs-rest AP per class with at least one positive, averaged (classes taken a block of
    about ``block`` scores at a time, so memory stays bounded for many classes)."""
    y = np.asarray(y)
    classes = np.flatnonzero(np.bincount(y, minlength=scores.shape[1])[:scores.shape[1]])
    step = max(1, block // max(len(y), 1))
    aps = [_average_precisions(np.ascontiguousarray(scores[:, cs].T), y[None, :] == cs[:, None])
           for cs in (classes[i:i + step] for i in range(0, len(classes), step))]
    return float(np.mean(np.concatenate(aps))) if len(classes) else float("nan")


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


UNSTABLE_DROP = 0.10  # validation accuracy falling more than this below its peak marks a run unstable
EARLY_BEST = 2  # a best epoch at or before this (of a run of EARLY_MIN_EPOCHS or more) marks it unstable
EARLY_MIN_EPOCHS = 10


def stability(val_acc: list[float], drop: float = UNSTABLE_DROP) -> dict:
    """The instability signature of a run from its per-epoch validation accuracy.

    ``peak_drop`` = the peak minus the lowest accuracy of any later epoch. A run is ``unstable``
    when that exceeds ``drop`` (training lost what it had learnt: a too-high learning rate, no
    warm-up) or when its best epoch is <= 2 of 10 or more *and* the later epochs stay well below
    it (median more than ``drop`` / 2 lower: it never recovered). A run that reaches its plateau
    by epoch 2 and stays there is not flagged: an early best is then saturation, not instability.
    A scheduler that "wins" against an unstable baseline may only be rescuing its optimisation.
    """
    acc = np.asarray([np.nan if v is None else v for v in val_acc], np.float64)
    if not len(acc) or np.isnan(acc).all():
        return {"best_epoch": None, "peak_drop": None, "unstable": False, "why": ""}
    best = int(np.nanargmax(acc))  # the first best, as the trainer selects
    later = acc[best + 1:]
    peak_drop = float(acc[best] - np.nanmin(later)) if len(later) and not np.isnan(later).all() else 0.0
    why = []
    if peak_drop > drop:
        why.append(f"val accuracy fell {peak_drop:.3f} below its peak (epoch {best}) later")
    if best <= EARLY_BEST and len(acc) >= EARLY_MIN_EPOCHS and acc[best] - np.nanmedian(later) > drop / 2:
        why.append(f"best epoch {best} of {len(acc)}, the later epochs a median "
                   f"{acc[best] - np.nanmedian(later):.3f} below it")
    return {"best_epoch": best, "peak_drop": peak_drop, "unstable": bool(why), "why": "; ".join(why)}
