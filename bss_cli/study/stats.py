"""Paired-seed statistics of a study (numpy only): what a careful reader of a results table wants.

Every variant is trained with the same seeds; seed s of a variant is compared with seed s of the
baseline (same initialisation, same data), so the difference of each pair removes the seed's own
luck. Reported: mean and sd per variant, the mean paired difference with a 95 % t-interval,
wins / losses / ties, and how the weakest modality head of the baseline changed.
"""

from __future__ import annotations

import math

import numpy as np

# two-sided 95 % critical values of Student's t, by degrees of freedom
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
        29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t95(df: int) -> float:
    """The two-sided 95 % quantile of t with ``df`` degrees of freedom (table; 1.96 past 120)."""
    if df < 1:
        return math.nan
    if df in _T95:
        return _T95[df]
    bigger = [k for k in _T95 if k > df]
    return _T95[min(bigger)] if bigger else 1.960  # conservative: the next tabulated df down in value


def paired(values: dict[int, float], base: dict[int, float], tie: float = 1e-9) -> dict:
    """Paired difference values - base over the seeds both have."""
    seeds = sorted(set(values) & set(base))
    d = np.array([values[s] - base[s] for s in seeds], float)
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    half = t95(n - 1) * sd / math.sqrt(n) if n > 1 else math.nan
    return {"n": n, "mean": mean, "sd": sd, "low": mean - half, "high": mean + half,
            "wins": int((d > tie).sum()), "losses": int((d < -tie).sum()), "ties": int((abs(d) <= tie).sum()),
            "significant": bool(n > 1 and (mean - half > 0 or mean + half < 0))}


def summarise(rows: list[dict], baseline: str, metric: str = "test_acc") -> dict:
    """Per variant: mean, sd, paired difference to ``baseline``, and the weak head's change."""
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    by = {v: {r["seed"]: r for r in rows if r["variant"] == v} for v in variants}
    heads = sorted({k[len("test_acc_"):] for r in rows for k in r if k.startswith("test_acc_") and r[k] is not None})
    weak = None
    if heads and baseline in by and by[baseline]:
        means = {h: np.mean([r.get(f"test_acc_{h}") for r in by[baseline].values()]) for h in heads}
        weak = min(means, key=means.get)
    out = {"baseline": baseline, "metric": metric, "weak_head": weak, "order": variants, "variants": {}}
    for v in variants:
        vals = {s: r[metric] for s, r in by[v].items() if r.get(metric) is not None}
        x = np.array(list(vals.values()), float)
        entry = {"runs": len(x), "mean": float(x.mean()) if len(x) else math.nan,
                 "sd": float(x.std(ddof=1)) if len(x) > 1 else math.nan,
                 "imbalance": float(np.mean([r.get("test_imbalance", math.nan) for r in by[v].values()]))}
        if v != baseline and baseline in by:
            entry["vs_baseline"] = paired(vals, {s: r[metric] for s, r in by[baseline].items()})
            if weak:
                key = f"test_acc_{weak}"
                entry["weak_head_change"] = paired({s: r[key] for s, r in by[v].items()},
                                                   {s: r[key] for s, r in by[baseline].items()})
        out["variants"][v] = entry
    return out
