"""Effect study: none vs curriculum vs learned on both sample data sets, over seeds.

For every (data set, scheduler, seed): train with the defaults of ``bss train`` (except the
seed), select the epoch on validation accuracy, test that checkpoint once. Reported: test
accuracy mean and standard deviation over seeds, per-modality head accuracies, and the paired
difference to ``none`` (same seed = same initialisation) with a 95 % t-interval.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# two-sided 95 % Student t quantiles by degrees of freedom
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 19: 2.093, 24: 2.064, 29: 2.045}


def t95(df: int) -> float:
    return T95.get(df, T95[max(k for k in T95 if k <= df)] if df > 1 else T95[1])


def paired(diff: np.ndarray) -> dict:
    n = len(diff)
    mean, sd = float(diff.mean()), float(diff.std(ddof=1)) if n > 1 else float("nan")
    half = t95(n - 1) * sd / math.sqrt(n) if n > 1 else float("nan")
    return {"mean": mean, "ci95": [mean - half, mean + half], "wins": int((diff > 0).sum()), "losses": int((diff < 0).sum())}


def run(seeds: int = 10, datasets=("htad", "mfeat"), schedulers=("none", "curriculum", "learned"), **overrides) -> dict:
    from bss_cli.training.config import TrainConfig
    from bss_cli.training.trainer import train

    results = {}
    for ds in datasets:
        manifest = ROOT / "sample_data" / f"{ds}.parquet"
        per = {}
        for sched in schedulers:
            rows = []
            for seed in range(seeds):
                with tempfile.TemporaryDirectory() as tmp:
                    r = train(TrainConfig(manifest=str(manifest), out=f"{tmp}/run", scheduler=sched, seed=seed,
                                          epoch_artifacts=False, quiet=True, **overrides))
                rows.append({"seed": seed, "best_epoch": r.best_epoch, **r.test})
                print(f"{ds} {sched} seed {seed}: test acc {r.test['acc']:.4f} (best epoch {r.best_epoch})",
                      file=sys.stderr, flush=True)
            per[sched] = rows
        summary = {}
        base = np.array([r["acc"] for r in per[schedulers[0]]])
        for sched, rows in per.items():
            acc = np.array([r["acc"] for r in rows])
            heads = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k.startswith("acc_")}
            summary[sched] = {"test_acc_mean": float(acc.mean()), "test_acc_std": float(acc.std(ddof=1)),
                              "macro_f1_mean": float(np.mean([r["macro_f1"] for r in rows])),
                              "head_acc_mean": heads, "imbalance_mean": float(np.mean([r["imbalance"] for r in rows])),
                              "best_epoch_mean": float(np.mean([r["best_epoch"] for r in rows]))}
            if sched != schedulers[0]:
                summary[sched]["paired_diff_vs_none"] = paired(acc - base)
        results[ds] = {"summary": summary, "runs": per}
    return {"seeds": seeds, "settings": overrides or "bss train defaults", "results": results}


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    print(json.dumps(run(n), indent=2))
