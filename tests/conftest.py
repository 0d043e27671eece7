from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"


def vectors(x: np.ndarray) -> pa.Array:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1]).cast(pa.list_(pa.float32()))


def make_manifest_table(n: int = 60, seed: int = 0, n_classes: int = 3, dims=(5, 4)) -> pa.Table:
    """Tiny seeded two-modality data set; modality 'a' is informative, 'b' weakly so."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    cols = {"sample_id": pa.array([f"s{i:03d}" for i in range(n)]), "label": pa.array(y),
            "split": pa.array(["train" if i % 5 < 3 else ("val" if i % 5 == 3 else "test") for i in range(n)])}
    for k, (name, d) in enumerate(zip("abc", dims)):
        centers = rng.normal(size=(n_classes, d)) * (2.0 if k == 0 else 0.5)
        cols[name] = vectors(centers[y] + rng.normal(size=(n, d)))
    return pa.table(cols)


@pytest.fixture
def tiny_manifest(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.parquet"
    pq.write_table(make_manifest_table(), path)
    return path


@pytest.fixture
def htad() -> Path:
    path = SAMPLE / "htad.parquet"
    if not path.exists():
        pytest.skip("sample_data/htad.parquet is built by `make setup`")
    return path


@pytest.fixture
def mfeat() -> Path:
    return SAMPLE / "mfeat.parquet"
