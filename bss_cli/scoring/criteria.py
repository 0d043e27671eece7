"""Balance criteria (method.md section 3): pure numpy functions over per-sample predictions.

Every raw criterion maps a :class:`Predictions` bundle to one value per sample. A named
criterion in :data:`CRITERIA` min-max normalises its raw parts over the scored set and combines
them with equal weights, similarity counting towards balance and loss or gradient against it::

    balance_i = sum(norm(toward)_i) - sum(norm(against)_i)

so ``prediction-sim+loss`` (the paper's final method) is ``sim~ - l~`` in [-1, 1]; a
similarity alone lies in [0, 1] and a loss or gradient alone in [-1, 0]. Higher = more balanced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from bss_cli.errors import ConfigError, PredictionsError


@dataclass
class Predictions:
    """Per-sample model outputs for N samples and C classes (float arrays, row i = sample i)."""

    labels: np.ndarray  # [N] int class codes
    logits: dict[str, np.ndarray]  # modality -> [N, C] unimodal logits
    fused_logits: np.ndarray | None = None  # [N, C]
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # modality -> [N, D]
    grad_norm: np.ndarray | None = None  # [N]
    _softmax: dict = field(default_factory=dict, repr=False, compare=False)

    def heads(self) -> dict[str, np.ndarray]:
        """Every head's logits: the modalities, then ``fused`` when present."""
        return {**self.logits, **({"fused": self.fused_logits} if self.fused_logits is not None else {})}

    def softmax(self, head: str) -> tuple[np.ndarray, np.ndarray]:
        """A head's class-major exp(z - max) [C, N] (softmax up to each column's positive scale:
        enough for a cosine) and per-sample CE(z, y) [N], float64, once per head (see
        :func:`softmax_and_loss`)."""
        if head not in self._softmax:
            self._softmax[head] = softmax_and_loss(self.heads()[head], self.labels)
        return self._softmax[head]

    def head_loss(self, head: str) -> np.ndarray:
        """Per-sample CE(z_head, y) >= 0."""
        return self.softmax(head)[1]


@dataclass(frozen=True)
class LossWeights:
    """L = fused * CE(z_mm, y) + unimodal * sum_m CE(z_m, y) (method.md section 2)."""

    fused: float = 1.0
    unimodal: float = 1.0


def softmax_and_loss(z: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """exp(z - max) of logits ``z`` [N, C], class-major ([C, N]), and CE(z_i, y_i) [N], float64.

    Class-major because rows of C values are short: the max and the sum then run across C
    contiguous arrays of N values (vectorised), not along N tiny rows; one exp per value. The
    softmax is column i divided by its sum; the cosine of two softmaxes needs no division (a
    cosine ignores positive scale), so none is made.
    """
    zt = np.array(np.asarray(z).T, dtype=np.float64, order="C")
    zt -= zt.max(axis=0)
    shifted_y = zt[np.asarray(labels), np.arange(zt.shape[1])]
    np.exp(zt, out=zt)
    return zt, np.log(zt.sum(axis=0)) - shifted_y


def _cosine(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
    """Cosine of matching vectors along ``axis`` (1: rows of [N, D]; 0: columns of class-major [C, N])."""
    if axis == 1:
        num, aa, bb = np.einsum("ij,ij->i", a, b), np.einsum("ij,ij->i", a, a), np.einsum("ij,ij->i", b, b)
    else:
        num, aa, bb = (a * b).sum(axis=0), (a * a).sum(axis=0), (b * b).sum(axis=0)
    na, nb = np.sqrt(aa), np.sqrt(bb)
    den = na * nb
    out = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    # Two zero vectors agree perfectly; one zero vector has no direction to agree with.
    out[(na == 0) & (nb == 0)] = 1.0
    return out


def _mean_pairwise_cosine(vectors: list[np.ndarray], axis: int = 1) -> np.ndarray:
    pairs = list(combinations(range(len(vectors)), 2))
    total = np.zeros(vectors[0].shape[1 - axis], dtype=np.float64)
    for i, j in pairs:
        total += _cosine(vectors[i], vectors[j], axis)
    return total / len(pairs)


def prediction_similarity(p: Predictions, weights: LossWeights) -> np.ndarray:
    """Mean over modality pairs of cosine(softmax(z_a), softmax(z_b)); in (0, 1], higher = agree.
    (Computed on exp(z - max), which is each softmax times a positive number: the same cosine.)"""
    return _mean_pairwise_cosine([p.softmax(m)[0] for m in p.logits], axis=0)


def feature_similarity(p: Predictions, weights: LossWeights) -> np.ndarray:
    """Mean over modality pairs of cosine(e_a, e_b); in [-1, 1]. Needs equal embedding sizes."""
    if len(p.embeddings) < 2:
        raise PredictionsError(
            "criterion feature-sim needs an embedding per modality (columns embedding_<modality>); "
            "the predictions have none, choose a criterion without feature-sim"
        )
    dims = {m: e.shape[1] for m, e in p.embeddings.items()}
    if len(set(dims.values())) > 1:
        raise PredictionsError(f"feature-sim needs embeddings of one size across modalities, found {dims}")
    return _mean_pairwise_cosine([np.asarray(e, np.float64) for e in p.embeddings.values()], axis=1)


def training_loss(p: Predictions, weights: LossWeights) -> np.ndarray:
    """Per-sample training loss L (fused term left out when no fused logits exist); >= 0."""
    loss = weights.unimodal * sum(p.head_loss(m) for m in p.logits)
    if p.fused_logits is not None:
        loss = loss + weights.fused * p.head_loss("fused")
    return np.asarray(loss, dtype=np.float64)


def gradient_magnitude(p: Predictions, weights: LossWeights) -> np.ndarray:
    """Per-sample L2 norm of dL/dparameters, as supplied by the model side; >= 0."""
    if p.grad_norm is None:
        raise PredictionsError(
            "criterion gradient needs per-sample gradient norms (column grad_norm); score with a bss "
            "model, add the column to your predictions file, or choose a criterion without gradient"
        )
    return np.asarray(p.grad_norm, dtype=np.float64)


# raw column name -> function. These names are the score file's raw columns.
RAW = {
    "pred_sim": prediction_similarity,
    "feat_sim": feature_similarity,
    "loss": training_loss,
    "grad_norm": gradient_magnitude,
}


@dataclass(frozen=True)
class Criterion:
    toward: tuple[str, ...]  # raw parts that count towards balance
    against: tuple[str, ...]  # raw parts that count against it

    @property
    def parts(self) -> tuple[str, ...]:
        return self.toward + self.against


# The eight measurers of the paper's ablation; the default is the paper's final method.
CRITERIA = {
    "feature-sim": Criterion(("feat_sim",), ()),
    "prediction-sim": Criterion(("pred_sim",), ()),
    "loss": Criterion((), ("loss",)),
    "gradient": Criterion((), ("grad_norm",)),
    "feature-sim+gradient": Criterion(("feat_sim",), ("grad_norm",)),
    "feature-sim+loss": Criterion(("feat_sim",), ("loss",)),
    "prediction-sim+gradient": Criterion(("pred_sim",), ("grad_norm",)),
    "prediction-sim+loss": Criterion(("pred_sim",), ("loss",)),
}
DEFAULT_CRITERION = "prediction-sim+loss"


def get_criterion(name: str) -> Criterion:
    if name not in CRITERIA:
        raise ConfigError(f"unknown criterion {name!r}; choose one of: {', '.join(CRITERIA)}")
    return CRITERIA[name]


def minmax(x: np.ndarray) -> np.ndarray:
    """(x - min) / (max - min) in [0, 1]; a constant column maps to all zeros."""
    x = np.asarray(x, dtype=np.float64)
    return normalise(x, x.min(), x.max())


def normalise(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """:func:`minmax` with the range of the whole scored set given, so it applies chunk by chunk
    with the same result, bit for bit."""
    x = np.asarray(x, dtype=np.float64)
    if not hi > lo:
        return np.zeros_like(x)
    return (x - lo) / (hi - lo)


def combine(norm: dict[str, np.ndarray], criterion: str, alpha: float = 0.5) -> np.ndarray:
    """s = 2 alpha sum(similarities~) - 2 (1 - alpha) sum(losses or gradients~), elementwise."""
    crit = get_criterion(criterion)
    toward, against = 2.0 * alpha, 2.0 * (1.0 - alpha)
    balance = np.zeros(len(next(iter(norm.values()))), dtype=np.float64)
    for name in crit.toward:
        balance += toward * norm[name]
    for name in crit.against:
        balance -= against * norm[name]
    return balance


@dataclass
class RowParts:
    """What scoring keeps of each sample, O(1) floats per sample whatever C and D are: its label,
    the criterion's raw parts and every head's loss (the scores table's ``loss_<head>`` columns).

    Raw parts are per sample; only their min-max normalisation needs the whole scored set. So
    predictions are reduced to parts batch by batch (a predictions file) or rank by rank (torchrun),
    and the parts concatenated; :func:`balance_from_parts` then finishes the score.
    """

    labels: np.ndarray  # [N] int class codes (the smallest integer type that holds them)
    raw: dict[str, np.ndarray]  # criterion part -> [N] float64 (the ranking is computed from these)
    head_loss: dict[str, np.ndarray]  # head -> [N] CE(z_head, y), float32 (descriptive: no ranking reads it)

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def concat(cls, parts: list["RowParts"]) -> "RowParts":
        first = parts[0]
        return cls(np.concatenate([p.labels for p in parts]),
                   {k: np.concatenate([p.raw[k] for p in parts]) for k in first.raw},
                   {k: np.concatenate([p.head_loss[k] for p in parts]) for k in first.head_loss})

    def to_matrix(self) -> np.ndarray:
        """[N, 1 + parts + heads] float64 (labels are exact in float64): one tensor for collectives."""
        return np.column_stack([self.labels.astype(np.float64), *self.raw.values(), *self.head_loss.values()])

    def from_matrix(self, m: np.ndarray) -> "RowParts":
        """The inverse of :meth:`to_matrix`, with this object's column names."""
        names = [*self.raw, *self.head_loss]
        cols = dict(zip(names, (np.ascontiguousarray(m[:, 1 + i]) for i in range(len(names)))))
        return RowParts(m[:, 0].astype(self.labels.dtype), {k: cols[k] for k in self.raw},
                        {k: cols[k].astype(np.float32) for k in self.head_loss})

    def take(self, index: np.ndarray) -> "RowParts":
        return RowParts(self.labels[index], {k: v[index] for k, v in self.raw.items()},
                        {k: v[index] for k, v in self.head_loss.items()})


def row_parts(p: Predictions, criterion: str, weights: LossWeights = LossWeights()) -> RowParts:
    """Reduce predictions to the per-sample values scoring keeps (see :class:`RowParts`)."""
    crit = get_criterion(criterion)
    raw = {name: RAW[name](p, weights) for name in crit.parts}
    labels = np.asarray(p.labels)
    labels = labels.astype(np.min_scalar_type(int(labels.max()) if len(labels) else 0), copy=False)
    return RowParts(labels, raw, {head: p.head_loss(head).astype(np.float32) for head in p.heads()})


@dataclass
class CriterionResult:
    raw: dict[str, np.ndarray]
    normalised: dict[str, np.ndarray]
    balance: np.ndarray


def balance_from_parts(raw: dict[str, np.ndarray], criterion: str, alpha: float = 0.5) -> CriterionResult:
    """Min-max normalise each raw part over the scored samples and combine them into

        s = 2 alpha sum(similarities~) - 2 (1 - alpha) sum(losses or gradients~)

    ``alpha`` weighs the similarity criterion against the loss/gradient one; 0.5 is the paper's
    equal weighting, exactly (both factors are 1). Higher = more balanced.
    """
    if not 0 <= alpha <= 1:
        raise ConfigError(f"--alpha {alpha}: expected a value in [0, 1]")
    crit = get_criterion(criterion)
    norm = {name: minmax(raw[name]) for name in crit.parts}
    return CriterionResult({name: raw[name] for name in crit.parts}, norm, combine(norm, criterion, alpha))


def compute_balance(p: Predictions, criterion: str, weights: LossWeights = LossWeights(),
                    alpha: float = 0.5) -> CriterionResult:
    """Raw parts, their min-max normalisation over the given samples, and the balance score
    (:func:`balance_from_parts` of :func:`row_parts`)."""
    return balance_from_parts({name: RAW[name](p, weights) for name in get_criterion(criterion).parts}, criterion, alpha)


TIE_SLICE = 1 << 20  # sorted positions checked for ties at a time


def stable_argsort(values: np.ndarray) -> np.ndarray:
    """``np.argsort(values, kind="stable")``, the same array, faster when ties are few: an unstable
    sort (no merge buffer; 1.5-1.8x faster at 1e7), then each run of equal values put back in
    index order. Many ties (over one position in 8) or NaNs: the stable sort itself."""
    n = len(values)
    order = np.argsort(values)
    if n < 2 or np.isnan(values[order[-1]]):  # NaNs sort last
        return np.argsort(values, kind="stable") if n >= 2 else order
    step = TIE_SLICE
    ties, count = [], 0
    for start in range(0, n - 1, step):  # positions p with values[order[p]] == values[order[p + 1]]
        v = values[order[start:min(start + step + 1, n)]]
        p = np.flatnonzero(v[1:] == v[:-1])
        if len(p):
            ties.append(p + start)
            count += len(p)
            if count > n // 8:
                return np.argsort(values, kind="stable")
    if ties:
        p = np.concatenate(ties)
        inside = np.zeros(n, bool)
        inside[p] = inside[p + 1] = True
        at = np.flatnonzero(inside)  # every position inside a run of equal values
        del inside
        # Equal values sit together in sorted order, so a run is a stretch of consecutive positions
        # of one value; sorting (run, index) keys orders each run by index and keeps the runs put.
        new_run = np.ones(len(at), bool)
        new_run[1:] = (np.diff(at) != 1) | (values[order[at[1:]]] != values[order[at[:-1]]])
        keys = (np.cumsum(new_run) - 1) * n + order[at]
        keys.sort()
        order[at] = keys % n
    return order


def balance_rank(balance: np.ndarray) -> np.ndarray:
    """Rank of each sample, 0 = most balanced; ties keep the input order.

    Lean at scale: the sign is flipped in place (exact, and undone) instead of sorting a negated
    copy, the rank is int32 below 2**31 samples, and it is filled a slice at a time. A caller that
    can let the balance go before the rank is filled calls :func:`balance_order` and
    :func:`rank_from_order` itself (the peak is then the order and the rank, not the balance too).
    """
    return rank_from_order(balance_order(balance))


def balance_order(balance: np.ndarray, keep: bool = True) -> np.ndarray:
    """Samples from most to least balanced, ties in input order. ``keep`` False: ``balance`` is
    left negated (no pass to undo the flip)."""
    if not (isinstance(balance, np.ndarray) and balance.dtype == np.float64 and balance.flags.writeable):
        balance = np.array(balance, dtype=np.float64)
    np.negative(balance, out=balance)
    try:
        return stable_argsort(balance)
    finally:
        if keep:
            np.negative(balance, out=balance)


def rank_from_order(order: np.ndarray) -> np.ndarray:
    """The inverse permutation of ``order``: each sample's position in it."""
    n = len(order)
    rank = np.empty(n, dtype=np.int32 if n < 2**31 else np.int64)
    step = 1 << 20
    for start in range(0, n, step):  # a slice of positions at a time: no second n-long array beside order
        rank[order[start:start + step]] = np.arange(start, min(start + step, n), dtype=rank.dtype)
    return rank
