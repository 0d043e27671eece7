"""The benchmarks' baselines do the work they stand for (a ratio to a baseline that does less, or
something else, would mean nothing)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from bss_cli.scoring.criteria import LossWeights
from bss_cli.scoring.scores import score_manifest, write_scores

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))


def test_the_bare_scoring_baseline_gives_bss_scores(tmp_path):
    import bench_score

    bench_score._write_files(tmp_path, 3000, classes=7, seed=3, shuffled=False, ids="str")
    assert bench_score.bare_scores(tmp_path) == 3000
    bare = pq.read_table(tmp_path / "scores.parquet")
    write_scores(score_manifest(tmp_path / "manifest.parquet", predictions=tmp_path / "preds.parquet",
                                criterion="prediction-sim+loss", weights=LossWeights()), tmp_path / "scores.parquet")
    ours = pq.read_table(tmp_path / "scores.parquet")
    assert bare.schema.names == ours.schema.names
    for name in ours.schema.names:
        a, b = bare[name], ours[name]
        if name in ("sample_id", "split", "row", "label", "rank"):
            assert a.to_pylist() == b.to_pylist(), name
        else:
            assert a.type == b.type, name
            np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-6 if a.type.bit_width == 32 else 1e-12,
                                       atol=1e-14, err_msg=name)
