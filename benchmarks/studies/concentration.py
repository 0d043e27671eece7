"""End-of-epoch concentration of the least balanced samples in the learned runs of the digits-av
diagnosis study (reads the epoch artifacts of /tmp/studies/digits-diag; see README, Findings)."""
import json

import numpy as np
import pyarrow.parquet as pq

out = {}
for variant in ["learned", "learned-T4", "learned-T025", "learned-online", "learned-every5", "learned-paper-b1"]:
    lows, firsts, lasts = [], [], []
    for seed in range(10):
        for e in (5, 15, 25):
            f = f"/tmp/studies/digits-diag/runs/{variant}/seed={seed}/epochs/epoch={e}/schedule.parquet"
            try:
                t = pq.read_table(f, columns=["balance"])["balance"].to_numpy()
            except Exception:
                continue
            n = len(t); tenth = n // 10
            low = t <= np.quantile(t, 0.1)  # the least balanced tenth of the epoch's samples
            lows.append(low[-tenth:].mean())  # share of the last tenth of positions that are such samples
            firsts.append(t[:tenth].mean()); lasts.append(t[-tenth:].mean())
    if lows:
        out[variant] = {"share_of_last_tenth_that_is_least_balanced_tenth": round(float(np.mean(lows)), 3),
                        "mean_balance_first_tenth": round(float(np.mean(firsts)), 3),
                        "mean_balance_last_tenth": round(float(np.mean(lasts)), 3), "epochs_read": len(lows)}
print(json.dumps(out, indent=1))
