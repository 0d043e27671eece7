"""Paired-seed statistics of a study (numpy only): what a careful reader of a results table wants.

Every variant is trained with the same seeds; seed s of a variant is compared with seed s of the
baseline (same initialisation, same data), so the difference of each pair removes the seed's own
luck. Reported: mean and sd per variant, the mean paired difference with a 95 % t-interval
(exact Student-t quantiles), wins / losses / ties, how the weakest modality head of the baseline
changed, the *ordering effect* (a variant against its random-order control: what the order
itself adds beyond pacing or weighting), how many runs show the instability signature, and, when
the runs recorded it, the paper's best-test-epoch figure beside ours.
"""

from __future__ import annotations

import math

import numpy as np

def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` > 0 degrees of freedom, p in (0.5, 1).

    Exact to about 1e-12 for every df (no table): solves P(|T| > q) = I_x(df/2, 1/2) = 2 (1 - p) for
    x = df / (df + q^2) by bisection (I_x is increasing in x), then q = sqrt(df (1 - x) / x).
    """
    if not 0.5 < p < 1 or not df > 0:
        return math.nan
    target, lo, hi = 2.0 * (1.0 - p), 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if betainc(df / 2.0, 0.5, mid) < target:
            lo = mid
        else:
            hi = mid
    x = 0.5 * (lo + hi)
    return math.sqrt(df * (1.0 - x) / x)


def t95(df: int) -> float:
    """The two-sided 95 % critical value of t with ``df`` degrees of freedom (nan for df < 1)."""
    return t_quantile(0.975, df) if df >= 1 else math.nan


ONE_CLASS_SHARE = 0.9  # a first epoch with this share of one class trains that class alone, in effect
MIN_VERDICT_SEEDS = 3  # fewer paired seeds draw no verdict: a 2-seed interval has 1 degree of freedom


def paired(values: dict[int, float], base: dict[int, float], tie: float = 1e-9) -> dict:
    """Paired difference values - base over the seeds both have.

    ``significant`` needs at least MIN_VERDICT_SEEDS seeds and an interval that is not degenerate
    (every paired difference the same: sd 0, a zero-width interval and p = 0 that say nothing about
    the spread the next seed would show); ``degenerate`` and ``too_few`` say why not."""
    seeds = sorted(set(values) & set(base))
    d = np.array([values[s] - base[s] for s in seeds], float)
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    half = t95(n - 1) * sd / math.sqrt(n) if n > 1 else math.nan
    degenerate = bool(n > 1 and sd <= tie)
    too_few = n < MIN_VERDICT_SEEDS
    return {"n": n, "mean": mean, "sd": sd, "low": mean - half, "high": mean + half,
            "wins": int((d > tie).sum()), "losses": int((d < -tie).sum()), "ties": int((abs(d) <= tie).sum()),
            "significant": bool(not too_few and not degenerate and (mean - half > 0 or mean + half < 0)),
            "degenerate": degenerate, "too_few": too_few,
            "p": t_test_p(mean, sd, n) if not degenerate else math.nan}


def t_test_p(mean: float, sd: float, n: int) -> float:
    """Two-sided p-value of the paired t-test of mean 0: P(|T| >= |t|) = I_x(df/2, 1/2), x = df / (df + t^2)."""
    if n < 2 or not math.isfinite(mean):
        return math.nan
    if not sd > 0:
        return 0.0 if mean != 0 else 1.0
    t, df = mean / (sd / math.sqrt(n)), n - 1
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values of a family of tests (name -> p)."""
    ordered = sorted(pvalues.items(), key=lambda kv: kv[1])
    m, out, running = len(ordered), {}, 0.0
    for i, (name, p) in enumerate(ordered):
        running = max(running, min(1.0, (m - i) * p))
        out[name] = running
    return out


def summarise(rows: list[dict], baseline: str, metric: str = "test_acc",
              controls: dict[str, str] | None = None, reverses: dict[str, str] | None = None) -> dict:
    """Per variant: mean, sd, paired difference to ``baseline`` and to its control (``controls``:
    variant -> its random-order control; ``reverses``: curriculum -> its anti-curriculum), the weak
    head's change, instability and paper figures. The ordering effects form one family of tests:
    each carries its Holm-adjusted p-value (``p_holm``, ``significant_holm``)."""
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    by = {v: {r["seed"]: r for r in rows if r["variant"] == v} for v in variants}
    heads = sorted({k[len("test_acc_"):] for r in rows for k in r if k.startswith("test_acc_") and r[k] is not None})
    weak = None
    if heads and baseline in by and by[baseline]:
        means = {h: np.mean([r.get(f"test_acc_{h}") for r in by[baseline].values()]) for h in heads}
        weak = min(means, key=means.get)
    out = {"baseline": baseline, "metric": metric, "weak_head": weak, "order": variants, "variants": {}}

    def values(v: str, key: str) -> dict[int, float]:
        return {s: r[key] for s, r in by.get(v, {}).items() if r.get(key) is not None}

    for v in variants:
        vals = values(v, metric)
        x = np.array(list(vals.values()), float)
        unstable = sorted(s for s, r in by[v].items() if r.get("unstable"))
        entry = {"runs": len(x), "mean": float(x.mean()) if len(x) else math.nan,
                 "sd": float(x.std(ddof=1)) if len(x) > 1 else math.nan,
                 "imbalance": float(np.mean([r.get("test_imbalance", math.nan) for r in by[v].values()])),
                 "unstable_seeds": unstable,
                 "one_class_first": sorted(s for s, r in by[v].items()
                                           if (r.get("first_class_share") or 0) >= ONE_CLASS_SHARE),
                 "mean_best_epoch": float(np.mean([r.get("best_epoch", math.nan) for r in by[v].values()]))}
        if v != baseline and baseline in by:
            entry["vs_baseline"] = paired(vals, values(baseline, metric))
            if weak:
                key = f"test_acc_{weak}"
                entry["weak_head_change"] = paired(values(v, key), values(baseline, key))
        control = (controls or {}).get(v)
        if control in by:
            entry["control"] = control
            entry["vs_control"] = paired(vals, values(control, metric))
        reverse = (reverses or {}).get(v)
        if reverse in by:  # the same order reversed: is it *balanced first* that matters?
            entry["reverse"] = reverse
            entry["vs_reverse"] = paired(vals, values(reverse, metric))
        paper = values(v, "paper_test_acc")
        if paper:  # best test epoch: selected on test, so optimistic; shown to see how much it inflates
            p = np.array(list(paper.values()), float)
            entry["paper_protocol"] = {"mean": float(p.mean()), "inflation": paired(paper, vals)}
            if v != baseline and baseline in by:
                entry["paper_protocol"]["vs_baseline"] = paired(paper, values(baseline, "paper_test_acc"))
        out["variants"][v] = entry
    for v, r in (reverses or {}).items():
        if r in out["variants"]:
            out["variants"][r]["reversed_of"] = v
    family = {v: e["vs_control"]["p"] for v, e in out["variants"].items()
              if e.get("vs_control") and not math.isnan(e["vs_control"]["p"])}
    for v, p in holm(family).items():
        d = out["variants"][v]["vs_control"]
        d["p_holm"], d["significant_holm"] = p, bool(p < 0.05)
    out["ordering_tests"] = len(family)
    return out


def conclusion(summary: dict) -> list[str]:
    """What the study says, in plain sentences, from its own figures only."""
    base = summary["baseline"]
    variants = summary["variants"]
    lines = []
    b = variants.get(base)
    if b and b["unstable_seeds"]:
        lines.append(f"WARNING: the baseline {base!r} shows the instability signature in {len(b['unstable_seeds'])} of "
                     f"{b['runs']} seeds (its validation accuracy collapses after a peak, or it peaks in the first "
                     "epochs): a variant that beats it may only be rescuing its optimisation (a curriculum's small "
                     "early epochs act as a warm-up). Tune the learning rate (--tune-lr) or use a warm-up, then compare.")
    for v, e in variants.items():
        if e.get("one_class_first"):
            lines.append(f"WARNING: {v}'s first epoch draws at least {ONE_CLASS_SHARE:.0%} of its rows from one class "
                         f"(seed(s) {', '.join(map(str, e['one_class_first']))}): ranked by an untrained model, its "
                         "order put one class first, so its early epochs train that class alone. Rank within each "
                         "class (--set stratify=true) or by a warmed-up model (--set warmup=2), then compare.")
    ordering = [(v, e) for v, e in variants.items() if e.get("vs_control") and e["vs_control"]["n"] > 1]
    k = len(ordering)
    for v, e in ordering:
        d, c = e["vs_control"], e["control"]
        if d.get("too_few") or d.get("degenerate"):
            e["balance_aware_gain"] = False
            why = (f"every seed's difference is {d['mean']:+.4f}, so the interval has zero width and says nothing "
                   "about the next seed" if d.get("degenerate") else "")
            few = f"only {d['n']} paired seed(s), fewer than the {MIN_VERDICT_SEEDS} a verdict needs"
            lines.append(f"{v} vs its random-order control {c}: {d['mean']:+.4f} over "
                         f"{d['n']} seed(s) -> no verdict: " + "; ".join(x for x in (few if d.get("too_few") else "",
                                                                                       why) if x) + ".")
            continue
        holds = d.get("significant_holm", d["significant"])
        r = e.get("vs_reverse")
        reversed_as_good = bool(r and r["n"] > 1 and not (r["significant"] and r["mean"] > 0))
        anti = bool(e.get("reversed_of"))  # least balanced first: never a gain *for* BSS
        e["balance_aware_gain"] = bool(holds and d["mean"] > 0 and not reversed_as_good and not anti)
        verdict = ((f"the least-balanced-first order {'helps' if d['mean'] > 0 else 'hurts'}" if holds else
                    f"not significant once the {k} ordering tests are counted (Holm)" if d["significant"]
                    else "no ordering effect detected") if anti else
                   "an ordering effect, but not a balance-aware one (see the reversed order below)"
                   if holds and d["mean"] > 0 and reversed_as_good else
                   "balance-aware order helps" if holds and d["mean"] > 0 else
                   "balance-aware order hurts" if holds else
                   f"not significant once the {k} ordering tests are counted (Holm)" if d["significant"] else
                   "no ordering effect detected")
        lines.append(f"{v} vs its random-order control {c}: {d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}], "
                     f"p = {d['p']:.3f}" + (f" (Holm-adjusted {d['p_holm']:.3f})" if k > 1 else "") + f" -> {verdict}.")
        if reversed_as_good and d["significant"] and d["mean"] > 0:
            lines.append(f"{v} vs {e['reverse']} (the same order reversed, least balanced first): {r['mean']:+.4f} "
                         f"[{r['low']:+.4f}, {r['high']:+.4f}]: the reversed order does as well, so what helps is not "
                         "putting balanced samples first.")
        vb = e.get("vs_baseline")
        cb = variants[c].get("vs_baseline") if c in variants else None
        if vb and vb["significant"] and vb["mean"] > 0 and not (holds and d["mean"] > 0):
            extra = (f" (the control alone gains {cb['mean']:+.4f})" if cb and cb["n"] > 1 else "")
            lines.append(f"{v}'s gain over {base} ({vb['mean']:+.4f}) is not explained by its order: its "
                         f"random-order control does as well{extra}; the gain comes from pacing or weighting.")
    lines += _every_significant(summary)
    if not ordering:
        lines.append("No variant has its random-order control in this study, so a difference to the baseline cannot "
                     "be told apart from pacing (add paced-random for a curriculum, learned-shuffled for learned).")
    elif not any(e["balance_aware_gain"] for _, e in ordering):
        lines.append("Overall: no evidence here that balance-aware ordering improves test accuracy.")
    return lines
def _interval_text(d: dict) -> str:
    return f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"


def _every_significant(summary: dict) -> list[str]:
    """One sentence for each significant difference besides the ordering verdicts: every gain or
    loss against the baseline (a control's own gain is pacing or weighting), every change of the
    weak modality's head, every contrast with the reversed order."""
    base, weak, out = summary["baseline"], summary.get("weak_head"), []
    controls = {e.get("control"): v for v, e in summary["variants"].items() if e.get("control")}
    for v, e in summary["variants"].items():
        b = e.get("vs_baseline")
        if b and b["significant"]:
            what = ("gains" if b["mean"] > 0 else "loses") + f" against {base}: {_interval_text(b)}"
            if v in controls:
                what += (f" (a random-order control, so this is {'what pacing or weighting alone gives' if b['mean'] > 0 else 'a cost of pacing or weighting alone'};"
                         f" {controls[v]} is compared with it above)")
            out.append(f"Significant: {v} {what}.")
        h = e.get("weak_head_change")
        if h and h["significant"] and weak:
            out.append(f"Significant: {v} {'raises' if h['mean'] > 0 else 'lowers'} the weak head ({weak}) against "
                       f"{base}: {_interval_text(h)}.")
        r = e.get("vs_reverse")
        if r and r["significant"]:
            out.append(f"Significant: {v} (balanced first) against {e['reverse']} (the same order reversed): "
                       f"{_interval_text(r)} -> balanced first is {'better' if r['mean'] > 0 else 'worse'}.")
        if e.get("lr") is not None and e.get("control") in summary["variants"]:
            other = summary["variants"][e["control"]].get("lr")
            if other is not None and other != e["lr"]:
                out.append(f"WARNING: {v} ran at lr {e['lr']:g} and its control {e['control']} at lr {other:g}: their "
                           "contrast mixes the order with the learning rate, so it is no ordering effect.")
    return out


def select_rate(rows: list[dict], variant: str, grid: list[float], n_seeds: int,
                metric: str = "val_acc") -> float | None:
    """The rate of ``grid`` with the best mean *validation* accuracy of ``variant`` over its seeds
    (ties: the lower rate); None until every rate has all ``n_seeds`` runs."""
    means = rate_means(rows, variant, metric)
    if any(len(v) < n_seeds for v in (means.get(lr, []) for lr in grid)) or not means:
        return None
    return max(grid, key=lambda lr: (float(np.mean(means[lr])), -lr))


def rate_means(rows: list[dict], variant: str, metric: str = "val_acc") -> dict[float, list[float]]:
    out: dict[float, list[float]] = {}
    for r in rows:
        if r["variant"] == variant and r.get("lr") is not None and r.get(metric) is not None:
            out.setdefault(r["lr"], []).append(r[metric])
    return out


def summarise_study(rows: list[dict], baseline: str, controls: dict[str, str] | None = None,
                    lr_grid: list[float] | None = None, tune: str = "per-variant", n_seeds: int = 0,
                    reverses: dict[str, str] | None = None) -> dict:
    """The study's summary: with a grid, each variant's rate is selected on validation first and
    only that rate's runs are compared; then :func:`summarise` with the controls."""
    tuning = {}
    if lr_grid is not None:
        variants = list(dict.fromkeys(r["variant"] for r in rows))
        chosen = {}
        shared = select_rate(rows, baseline, lr_grid, n_seeds) if tune == "shared" else None
        # per variant, a variant and its random-order control are tuned together (one rate for the
        # pair, the best mean validation accuracy of the two): their contrast is the ordering effect
        # only if nothing else differs
        pair_of = {}
        for v, c in (controls or {}).items():
            if v in variants and c in variants:
                pair_of[v] = pair_of[c] = (v, c)
        for v in variants:
            rate = shared if tune == "shared" else select_rate(
                [{**r, "variant": v} for r in rows if r["variant"] in pair_of[v]], v, lr_grid, 2 * n_seeds) \
                if v in pair_of else select_rate(rows, v, lr_grid, n_seeds)
            means = {lr: float(np.mean(x)) for lr, x in sorted(rate_means(rows, v).items())}
            tuning[v] = {"selected_lr": rate, "val_acc_by_lr": {f"{lr:g}": m for lr, m in means.items()},
                         "at_grid_edge": rate is not None and len(lr_grid) > 1 and rate in (lr_grid[0], lr_grid[-1])
                         and (tune == "per-variant" or v == baseline)}
            if rate is not None:
                chosen[v] = rate
        rows = [r for r in rows if chosen.get(r["variant"]) == r.get("lr")]
    out = summarise(rows, baseline, controls=controls, reverses=reverses)
    for v, entry in out["variants"].items():
        if v in tuning:
            entry["lr"] = tuning[v]["selected_lr"]
            entry["tuning"] = tuning[v]
    out["tuned"] = None if lr_grid is None else {"grid": lr_grid, "mode": tune, "selected_on": "val_acc"}
    out["conclusion"] = conclusion(out)
    return out
