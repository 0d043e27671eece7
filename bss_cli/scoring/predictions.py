"""Predictions files: per-sample model outputs from bss or any other trainer (no torch here).

Schema (Parquet; extra columns are ignored):

========================  ==================  =========================================
column                    type                meaning
========================  ==================  =========================================
``sample_id``             string or integer   matches the manifest's ``sample_id``
``logits_<modality>``     list<float>, C      unimodal head logits; two or more modalities
``logits_fused``          list<float>, C      optional fused-head logits (loss term w_mm)
``embedding_<modality>``  list<float>, D      optional encoder features (feature-sim)
``grad_norm``             float               optional per-sample gradient norm (gradient)
========================  ==================  =========================================

C is the number of classes: logits index the manifest's class codes (integer labels as they
are, string labels in sorted order).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bss_cli import schema as S
from bss_cli.artifacts import fingerprint_file
from bss_cli.data.columns import vector_column
from bss_cli.data.manifest import Manifest
from bss_cli.errors import PredictionsError
from bss_cli.errors import rows_text as _rows
from bss_cli.scoring.criteria import Predictions


@dataclass
class LoadedPredictions:
    predictions: Predictions
    rows: np.ndarray  # manifest row index of each prediction row
    fingerprint: str


def _matrix(path: Path, name: str, col: pa.ChunkedArray, problems: list[str]) -> np.ndarray | None:
    arr = col.combine_chunks()
    t = arr.type
    if pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        arr = arr.cast(pa.list_(t.value_type))
    elif not pa.types.is_list(t):
        problems.append(f"column '{name}' has type {t}; expected list<float>")
        return None
    value_type = arr.type.value_type
    if not (pa.types.is_integer(value_type) or pa.types.is_floating(value_type)):
        problems.append(f"column '{name}' holds lists of {value_type}; expected list<float>")
        return None
    nulls = np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))
    if len(nulls):
        problems.append(f"{_rows(nulls)}: column '{name}' is empty")
        return None
    lengths = pc.list_value_length(arr).to_numpy()
    bad = np.flatnonzero(lengths != lengths[0])
    if len(bad):
        problems.append(f"{_rows(bad)}: column '{name}' has {lengths[bad[0]]} values, expected {lengths[0]} (the first row's length)")
        return None
    x = arr.flatten().fill_null(np.nan).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    x = x.reshape(len(arr), int(lengths[0]))
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad):
        problems.append(f"{_rows(bad)}: column '{name}' holds NaN or infinite values")
        return None
    return x


def read_predictions(path: str | Path, manifest: Manifest, split: str) -> LoadedPredictions:
    """Read a predictions file and align it with ``manifest``'s rows of ``split``.

    Every sample of the split needs a prediction (the scores are normalised over the whole split);
    predictions for other samples are ignored. All problems are reported together.
    """
    path = Path(path)
    if not path.is_file():
        raise PredictionsError(f"{path}: no such predictions file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise PredictionsError(f"{path}: not a readable Parquet file ({exc})") from None
    names = table.column_names
    logit_cols = [c for c in names if c.startswith(S.LOGITS_PREFIX) and c != S.FUSED_LOGITS]
    problems: list[str] = []
    if S.SAMPLE_ID not in names:
        problems.append("missing column 'sample_id'")
    if len(logit_cols) < 2:
        problems.append(
            f"found {len(logit_cols)} unimodal logits column(s); expected 'logits_<modality>' for two or "
            "more modalities (see the predictions schema in the README)"
        )
    if problems:
        raise PredictionsError(f"{path}: " + "; ".join(problems))

    # Align: keep the rows whose id is in the scored split, then check the split is covered.
    wanted = manifest.indices(split)
    manifest_ids = manifest.sample_ids.cast(pa.string())
    pred_ids = table[S.SAMPLE_ID].combine_chunks().cast(pa.string())
    if len(pc.unique(pred_ids)) != len(pred_ids):
        raise PredictionsError(f"{path}: column 'sample_id' has duplicate values; one prediction per sample")
    found = pc.index_in(pred_ids, value_set=manifest_ids)
    unknown = np.flatnonzero(found.is_null().to_numpy(zero_copy_only=False))
    if len(unknown):
        raise PredictionsError(
            f"{path}: {_rows(unknown)}: sample_id {pred_ids[int(unknown[0])].as_py()!r} is not in the manifest "
            f"{manifest.path}; predictions must come from the same data set"
        )
    pos = found.fill_null(-1).to_numpy().astype(np.int64)
    in_split = np.zeros(manifest.n, bool)
    in_split[wanted] = True
    keep = np.flatnonzero(in_split[pos])
    covered = np.zeros(manifest.n, bool)
    covered[pos[keep]] = True
    missing = wanted[~covered[wanted]]
    if len(missing):
        raise PredictionsError(
            f"{path}: no prediction for {len(missing)} sample(s) of split '{split}' of {manifest.path}, e.g. "
            f"{manifest_ids[int(missing[0])].as_py()!r} (manifest row {int(missing[0])}); predict every sample of the split"
        )
    # Sort by manifest row so the scores come out in manifest order whatever the file's order.
    keep = keep[np.argsort(pos[keep], kind="stable")]
    rows = pos[keep]
    table = table.take(pa.array(keep))

    logits = {c[len(S.LOGITS_PREFIX):]: _matrix(path, c, table[c], problems) for c in logit_cols}
    fused = _matrix(path, S.FUSED_LOGITS, table[S.FUSED_LOGITS], problems) if S.FUSED_LOGITS in names else None
    emb = {c[len(S.EMBEDDING_PREFIX):]: _matrix(path, c, table[c], problems) for c in names if c.startswith(S.EMBEDDING_PREFIX)}
    grad = None
    if S.GRAD_NORM in names:
        t = table[S.GRAD_NORM].type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
            problems.append(f"column 'grad_norm' has type {t}; expected float")
        else:
            grad = table[S.GRAD_NORM].to_numpy(zero_copy_only=False).astype(np.float64)
            bad = np.flatnonzero(~np.isfinite(grad) | (grad < 0))
            if len(bad):
                problems.append(f"{_rows(bad)}: column 'grad_norm' must be finite and >= 0")
    widths = {c: m.shape[1] for c, m in {**logits, "fused": fused}.items() if m is not None}
    if len(set(widths.values())) > 1:
        problems.append(f"logits columns differ in width {widths}; every head predicts the same C classes")
    labels = manifest.labels[rows]
    wrong = {c: w for c, w in widths.items() if w != manifest.n_classes}
    if wrong:
        problems.append(
            f"logits columns {', '.join(f'{c} ({w} values)' for c, w in wrong.items())} do not match the "
            f"manifest's {manifest.n_classes} classes; logits need one value per class code 0..{manifest.n_classes - 1}"
        )
    if problems:
        raise PredictionsError(f"{path}: " + "\n  - ".join(["problems in the predictions file:"] + problems))
    preds = Predictions(labels=labels, logits=logits, fused_logits=fused, embeddings=emb, grad_norm=grad)
    return LoadedPredictions(preds, rows, fingerprint_file(path))


def predictions_table(sample_ids: pa.Array, p: Predictions) -> pa.Table:
    """The predictions-file table for ``p`` (used by bss's own model and by tests)."""
    cols = {S.SAMPLE_ID: sample_ids}
    cols.update({S.LOGITS_PREFIX + m: vector_column(z) for m, z in p.logits.items()})
    if p.fused_logits is not None:
        cols[S.FUSED_LOGITS] = vector_column(p.fused_logits)
    cols.update({S.EMBEDDING_PREFIX + m: vector_column(e) for m, e in p.embeddings.items()})
    if p.grad_norm is not None:
        cols[S.GRAD_NORM] = pa.array(np.asarray(p.grad_norm, np.float64))
    return pa.table(cols)
