"""Scoring throughput from a predictions file (no torch), against reading the same file.

Baseline: ``pyarrow.parquet.read_table`` of the predictions file, measured in the same run; the
ratio says how much scoring adds on top of just reading the inputs.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from common import best_of  # noqa: E402

from bss_cli.data.manifest import load_manifest  # noqa: E402
from bss_cli.scoring.criteria import (
    LossWeights,  # noqa: E402
    Predictions,  # noqa: E402
)
from bss_cli.scoring.predictions import predictions_table  # noqa: E402
from bss_cli.scoring.scores import score_from_predictions, write_scores  # noqa: E402


def lists(x):
    return pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1]).cast(pa.list_(pa.float32()))


def run(n: int = 1_000_000, classes: int = 10, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    tmp = Path(tempfile.mkdtemp(prefix="bss-bench-"))
    ids = pa.array([f"id{i:08d}" for i in range(n)])
    labels = rng.integers(0, classes, n)
    pq.write_table(pa.table({"sample_id": ids, "label": labels, "split": pa.array(["train"] * n),
                             "audio": lists(np.zeros((n, 2), np.float32)), "video": lists(np.zeros((n, 2), np.float32))}),
                   tmp / "manifest.parquet")
    z = {m: rng.normal(size=(n, classes)).astype(np.float32) for m in ("audio", "video")}
    p = Predictions(labels=labels, logits=z, fused_logits=rng.normal(size=(n, classes)).astype(np.float32))
    pq.write_table(predictions_table(ids, p), tmp / "preds.parquet")

    read = best_of(lambda: pq.read_table(tmp / "preds.parquet"))
    manifest = load_manifest(tmp / "manifest.parquet", load_features=False)

    def score():
        s = score_from_predictions(manifest, tmp / "preds.parquet", criterion="prediction-sim+loss",
                                   weights=LossWeights())
        write_scores(s, tmp / "scores.parquet")

    total = best_of(score)
    load = best_of(lambda: load_manifest(tmp / "manifest.parquet", load_features=False), repeat=1)
    return {"name": f"score from predictions, {n:,} rows x {classes} classes x 2 modalities",
            "seconds": total, "rows_per_s": n / total, "baseline": "pyarrow read_table of the predictions file",
            "baseline_seconds": read, "ratio": total / read, "manifest_load_seconds": load}


if __name__ == "__main__":
    import json

    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000), indent=2))
