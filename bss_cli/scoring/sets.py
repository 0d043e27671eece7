"""Predictions sets: predictions that carry their own labels, scored with no manifest.

At web scale the manifest is not one file a process can hold: the predictions are written as a
folder of Parquet partitions, each row carrying its ``sample_id``, its class code ``label`` and
(optionally) its ``split``, beside the predictions-file columns (:mod:`bss_cli.scoring.predictions`).
A row's ``row`` is its position in the set (files in path order, then rows; see
:mod:`bss_cli.data.partitions`), so schedules key their draws on it as on a manifest row.

The work is cut into pieces (one row group each); :func:`piece_parts` turns a piece into
per-sample parts, whichever engine runs it: a loop here (:func:`score_set_local`), or Ray Data's
``map_batches`` (:mod:`bss_cli.engines.ray_data`). Only the min-max ranges and the rank need the
whole set. numpy and pyarrow only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bss_cli import schema as S
from bss_cli.artifacts import prefetched
from bss_cli.data.partitions import PartitionedSet, Piece, open_set
from bss_cli.data.partitions import fingerprint as set_fingerprint
from bss_cli.errors import ConfigError, PredictionsError
from bss_cli.errors import rows_text as _rows
from bss_cli.scoring.criteria import LossWeights, RowParts, get_criterion, row_parts
from bss_cli.scoring.predictions import _column_type_problems, batch_predictions, criterion_columns

RAW = "raw:"  # column prefixes of a piece's parts table (kept apart from the scores' own names)
LOSS = "loss:"
PIECE = "piece"  # the piece a row came from (to name the file of a duplicate id)
SPLIT_CODE = "split_code"


def is_predictions_set(path: str | Path) -> bool:
    """A folder, or a Parquet file with logits columns and a ``label`` column (not a manifest)."""
    path = Path(path)
    if path.is_dir():
        return True
    if path.suffix.lower() != ".parquet" or not path.is_file():
        return False
    try:
        names = pq.read_schema(path).names
    except (pa.ArrowException, OSError):
        return False
    return S.LABEL in names and sum(n.startswith(S.LOGITS_PREFIX) and n != S.FUSED_LOGITS for n in names) >= 2


@dataclass(frozen=True)
class SetSpec:
    """What every piece needs to score its rows the same way, worked out once from the footers and
    the first row."""

    root: str
    criterion: str
    weights: LossWeights
    split: str
    alpha: float
    n_classes: int
    columns: tuple[str, ...]  # the prediction columns the criterion reads
    widths: dict = field(default_factory=dict)  # embedding column -> width
    has_split: bool = False


def plan(pset: PartitionedSet, *, criterion: str, weights: LossWeights, split: str, alpha: float) -> SetSpec:
    """Check the set's columns (and the first row) and say how to score it; one error per problem."""
    from bss_cli.scoring.scores import check_split

    check_split(split)
    get_criterion(criterion)  # an unknown criterion fails before any reading
    if not 0 <= alpha <= 1:
        raise ConfigError(f"--alpha {alpha}: expected a value in [0, 1]")
    schema, where = pset.schema, pset.files[0]
    names = schema.names
    problems = []
    for name, ok, what in ((S.SAMPLE_ID, lambda t: pa.types.is_integer(t) or pa.types.is_string(t) or
                            pa.types.is_large_string(t), "strings or integers"),
                           (S.LABEL, pa.types.is_integer, "integer class codes 0..C-1")):
        if name not in names:
            problems.append(f"missing column '{name}' ({what})")
        elif not ok(schema.field(name).type):
            problems.append(f"column '{name}' is {schema.field(name).type}; expected {what}")
    has_split = S.SPLIT in names
    if has_split and not (pa.types.is_string(schema.field(S.SPLIT).type) or
                          pa.types.is_large_string(schema.field(S.SPLIT).type) or
                          pa.types.is_dictionary(schema.field(S.SPLIT).type)):
        problems.append(f"column 'split' is {schema.field(S.SPLIT).type}; expected strings (train, val, test)")
    logits = [c for c in names if c.startswith(S.LOGITS_PREFIX) and c != S.FUSED_LOGITS]
    if len(logits) < 2:
        problems.append(f"found {len(logits)} unimodal logits column(s); expected 'logits_<modality>' for two or "
                        "more modalities")
    if problems:
        raise PredictionsError(f"{where}: " + "; ".join(problems))
    if split != "all" and split != "train" and not has_split:
        raise ConfigError(f"--split {split}: {pset.root} has no 'split' column, so every row is a training sample; "
                          "score --split train (or all), or add a split column")
    columns = criterion_columns(names, logits, criterion)
    problems = _column_type_problems(schema, columns)
    if problems:
        raise PredictionsError(f"{where}: " + "\n  - ".join(["problems in the predictions set:"] + problems))
    if not pset.pieces:
        raise PredictionsError(f"{pset.root}: the predictions set has no rows")
    first = pset.pieces[0]
    head = pq.ParquetFile(first.path).read_row_group(first.group, columns=columns).slice(0, 1)
    widths = {}
    for c in columns:
        value = head.column(c)[0].as_py()
        if c.startswith(S.EMBEDDING_PREFIX) and value is not None:
            widths[c] = len(value)
    n_classes = len(head.column(logits[0])[0].as_py() or [])
    if n_classes < 2:
        raise PredictionsError(f"{first.path}: row 0: column '{logits[0]}' has {n_classes} value(s); expected one "
                               "logit per class (two or more)")
    return SetSpec(str(pset.root), criterion, weights, split, alpha, n_classes, tuple(columns), widths, has_split)


def piece_parts(piece: Piece, spec: SetSpec, index: int = 0) -> pa.Table:
    """A piece's rows of the scored split as a table: ``sample_id``, ``row``, ``label``,
    ``split_code``, the criterion's raw parts (``raw:<name>``), each head's loss (``loss:<head>``)
    and ``piece`` = ``index``. Every value is checked; a message names the file and its rows."""
    where = Path(piece.path)
    read = [S.SAMPLE_ID, S.LABEL] + ([S.SPLIT] if spec.has_split else []) + list(spec.columns)
    batch = pq.ParquetFile(where).read_row_group(piece.group, columns=read)
    offset = piece.first
    problems: list[str] = []
    ids = batch.column(S.SAMPLE_ID)
    if ids.null_count:
        bad = np.flatnonzero(ids.is_null().to_numpy(zero_copy_only=False))
        problems.append(f"{_rows(offset + bad)}: column 'sample_id' is empty")
    labels_col = batch.column(S.LABEL)
    labels = labels_col.to_numpy(zero_copy_only=False) if not labels_col.null_count else None
    if labels is None:
        bad = np.flatnonzero(labels_col.is_null().to_numpy(zero_copy_only=False))
        problems.append(f"{_rows(offset + bad)}: column 'label' is empty")
    else:
        bad = np.flatnonzero((labels < 0) | (labels >= spec.n_classes))
        if len(bad):
            problems.append(f"{_rows(offset + bad)}: column 'label' holds {labels[bad[0]]}; expected a class code "
                            f"0..{spec.n_classes - 1} (one per logit)")
    if spec.has_split:
        codes = pc.index_in(batch.column(S.SPLIT).cast(pa.string()), value_set=pa.array(S.SPLITS))
        if codes.null_count:
            bad = np.flatnonzero(codes.is_null().to_numpy(zero_copy_only=False))
            value = batch.column(S.SPLIT)[int(bad[0])].as_py()
            problems.append(f"{_rows(offset + bad)}: column 'split' holds {value!r}; expected train, val or test")
        codes = codes.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int8)
    else:
        codes = np.zeros(batch.num_rows, np.int8)  # no split column: every row is a training sample
    if problems:
        raise PredictionsError(f"{where}: " + "\n  - ".join(["problems in the predictions set:"] + problems))
    keep = np.arange(batch.num_rows) if spec.split == "all" else np.flatnonzero(codes == S.SPLITS.index(spec.split))
    if len(keep) < batch.num_rows:
        batch = batch.take(pa.array(keep))
    preds = batch_predictions(where, batch, list(spec.columns), spec.n_classes, dict(spec.widths),
                              lambda i: offset + keep[i], labels[keep], whose="the first row's")
    part = row_parts(preds, spec.criterion, spec.weights)
    cols = {S.SAMPLE_ID: batch.column(S.SAMPLE_ID), S.ROW: pa.array(piece.start + keep, pa.int64()),
            S.LABEL: pa.array(labels[keep].astype(np.int64)), SPLIT_CODE: pa.array(codes[keep])}
    cols.update({RAW + k: pa.array(v, pa.float64()) for k, v in part.raw.items()})
    cols.update({LOSS + h: pa.array(v, pa.float32()) for h, v in part.head_loss.items()})
    cols[PIECE] = pa.array(np.full(len(keep), index, np.int32))
    return pa.table(cols)


def parts_of(table: pa.Table) -> RowParts:
    """A parts table (from :func:`piece_parts`) as :class:`RowParts`."""
    names = table.column_names
    return RowParts(table[S.LABEL].to_numpy(),
                    {c[len(RAW):]: table[c].to_numpy() for c in names if c.startswith(RAW)},
                    {c[len(LOSS):]: table[c].to_numpy() for c in names if c.startswith(LOSS)})


def duplicate_error(pset: PartitionedSet, value, pieces: list[int]) -> PredictionsError:
    files = sorted({pset.pieces[i].path for i in pieces})
    where = " and ".join(files) if len(files) > 1 else f"{files[0]} (twice)"
    return PredictionsError(f"sample_id {value!r} appears in {where}; a predictions set holds one prediction per "
                            "sample (drop the duplicates, or score each partition set apart)")


def check_no_duplicates(pset: PartitionedSet, table: pa.Table) -> None:
    ids = table[S.SAMPLE_ID]
    if len(pc.unique(ids)) == len(ids):
        return
    counts = pc.value_counts(ids)
    twice = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"]
    holders = table.filter(pc.equal(table[S.SAMPLE_ID], twice))[PIECE].to_pylist()
    raise duplicate_error(pset, twice.as_py(), holders)


def source_name(pset: PartitionedSet) -> str:
    return f"predictions:{pset.root.name}"


def score_set_local(path: str | Path, *, criterion: str, weights: LossWeights = LossWeights(),
                    split: str = "train", alpha: float = 0.5, progress=None):
    """Scores of a predictions set on this machine: the pieces in order, then the whole-set steps
    (ranges, balance, rank) of :func:`bss_cli.scoring.scores.score_set`."""
    from bss_cli.scoring.scores import score_set

    pset = open_set(path, "predictions set")
    spec = plan(pset, criterion=criterion, weights=weights, split=split, alpha=alpha)
    tables = []
    done = 0
    for i, t in enumerate(prefetched(piece_parts(p, spec, i) for i, p in enumerate(pset.pieces))):
        tables.append(t)
        done += pset.pieces[i].rows
        if progress:
            progress(done, pset.rows)
    table = pa.concat_tables(tables)
    del tables
    if table.num_rows == 0:
        raise PredictionsError(f"{pset.root}: no row of split '{split}'; nothing to score (choose a split with rows)")
    check_no_duplicates(pset, table)
    fingerprint = set_fingerprint(pset)
    return score_set(None, table[S.ROW].to_numpy(), parts_of(table), criterion=criterion, weights=weights,
                     source=source_name(pset), source_fingerprint=fingerprint, seed=None, split=split, alpha=alpha,
                     ids=table[S.SAMPLE_ID].combine_chunks(), split_codes=table[SPLIT_CODE].to_numpy(),
                     classes=[str(c) for c in range(spec.n_classes)])

