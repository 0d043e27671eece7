"""Score tables: balance scores for a manifest's samples from any prediction source (no torch).

The model-side sources (fresh model, checkpoint, warm-up) live in :mod:`bss_cli.scoring.predict`; they
produce the same :class:`~bss_cli.scoring.criteria.Predictions` that a predictions file gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from bss_cli import schema as S
from bss_cli.artifacts import atomic_path, base_metadata, prefetched, require_kind, write_table
from bss_cli.data.manifest import READERS, Manifest
from bss_cli.errors import ArtifactError, ConfigError
from bss_cli.scoring.criteria import (
    CRITERIA,
    LossWeights,
    RowParts,
    balance_order,
    balance_rank,
    combine,
    normalise,
    rank_from_order,
)

SCORED_SPLITS = ("train", "val", "test", "all")


@dataclass
class Scores:
    """A scores table and its metadata, in manifest row order."""

    table: pa.Table
    metadata: dict[str, str]

    @property
    def balance(self) -> np.ndarray:
        return self.table[S.BALANCE].to_numpy()

    @property
    def rows(self) -> np.ndarray:
        return self.table[S.ROW].to_numpy()


def check_split(split: str) -> str:
    if split not in SCORED_SPLITS:
        raise ConfigError(f"--split {split!r} is not a split; choose one of: {', '.join(SCORED_SPLITS)}")
    return split


# Rows per chunk (and Parquet row group) when a score set is written: two chunks are alive at once
# (one encoded, the next built), about 10 MiB, whatever the set's size.
CHUNK_ROWS = 1 << 16
# Dictionary pages only where values repeat: trying them on unique ids and floats costs 3x the write.
WRITE_OPTIONS = {"use_dictionary": [S.SPLIT, S.LABEL]}


@dataclass
class ScoreSet:
    """Balance scores before they are a table: O(1) numbers per sample (manifest rows, the
    criterion's parts, the head losses, balance and rank). :meth:`to_scores` builds the table in
    memory; :meth:`write` streams it to Parquet a chunk at a time, so scoring 1e8 samples never
    holds the table's 16 columns at once."""

    manifest: Manifest
    rows: np.ndarray
    parts: RowParts
    criterion: str
    alpha: float
    ranges: dict[str, tuple[float, float]]  # raw part -> (min, max) over the scored samples
    _balance: np.ndarray | None  # None: computed from the parts when asked for (see balance_of)
    rank: np.ndarray
    metadata: dict[str, str]
    # Without a manifest (a predictions set that carries its labels): the ids and split codes, row i
    # = sample i (``manifest`` is then None).
    ids: pa.Array | None = None
    split_codes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def balance_of(self, start: int, stop: int) -> np.ndarray:
        """The balance of samples ``start:stop``: elementwise from the raw parts and their ranges,
        so the same bits whatever the chunk (the full array is not kept while the set is ranked
        and written: 8 bytes a row less at the peak)."""
        if self._balance is not None:
            return self._balance[start:stop]
        return finish_balance({k: v[start:stop] for k, v in self.parts.raw.items()}, self.ranges, self.criterion,
                              self.alpha)

    @property
    def balance(self) -> np.ndarray:
        """Every sample's balance (built, chunk by chunk, at the first use and then kept)."""
        if self._balance is None:
            out = np.empty(len(self), np.float64)
            for start in range(0, len(self), CHUNK_ROWS):
                out[start:start + CHUNK_ROWS] = self.balance_of(start, start + CHUNK_ROWS)
            self._balance = out
        return self._balance

    def columns(self, start: int, stop: int, only: tuple[str, ...] | None = None) -> dict[str, pa.Array]:
        """The scores table's columns for samples ``start:stop`` (any chunk gives the same values);
        ``only``: just these columns (e.g. :data:`SCHEDULE_COLUMNS`, all a scheduler reads)."""
        rows = self.rows[start:stop]
        return score_columns(
            ids=(lambda: self.ids.slice(start, stop - start)) if self.ids is not None else
            (lambda: self.manifest.sample_ids.take(pa.array(rows))), rows=rows, labels=self.parts.labels[start:stop],
            split_codes=(lambda: self.split_codes[start:stop]) if self.split_codes is not None else
            (lambda: self.manifest.split_codes[rows]),
            raw={k: v[start:stop] for k, v in self.parts.raw.items()}, ranges=self.ranges,
            balance=self.balance_of(start, stop), rank=self.rank[start:stop],
            head_loss={h: v[start:stop] for h, v in self.parts.head_loss.items()}, only=only)

    def to_scores(self, only: tuple[str, ...] | None = None) -> Scores:
        return Scores(pa.table(self.columns(0, len(self), only)), self.metadata)

    @property
    def table(self) -> pa.Table:
        """The whole table, built on each access (at scale, :meth:`write` streams instead)."""
        return self.to_scores().table

    def write(self, path: str | Path) -> None:
        """Write the scores file atomically, one chunk (row group) at a time."""
        import pyarrow.parquet as pq

        chunks = (pa.table(self.columns(start, min(start + CHUNK_ROWS, len(self))))
                  for start in range(0, max(len(self), 1), CHUNK_ROWS))
        with atomic_path(path) as tmp:
            writer = None
            try:
                # the next chunk's columns are built while this one is encoded; one ahead, not two:
                # as fast here, and memory freed across threads is not handed back as readily
                for chunk in prefetched(chunks, depth=1):
                    if writer is None:
                        schema = chunk.schema.with_metadata(self.metadata)
                        writer = pq.ParquetWriter(tmp, schema, **WRITE_OPTIONS)
                    writer.write_table(chunk.cast(schema), row_group_size=CHUNK_ROWS)
            finally:
                if writer is not None:
                    writer.close()


def score_columns(*, ids, rows: np.ndarray, labels: np.ndarray, split_codes, raw: dict[str, np.ndarray],
                  ranges: dict[str, tuple[float, float]], balance: np.ndarray, rank: np.ndarray,
                  head_loss: dict[str, np.ndarray], only: tuple[str, ...] | None = None) -> dict[str, pa.Array]:
    """The scores table's columns, in the file's order and types, for some samples (a chunk of a
    :class:`ScoreSet`, or a block on an engine). ``ids`` and ``split_codes`` are called only when
    their column is wanted."""
    want = (lambda name: True) if only is None else (lambda name: name in only)  # noqa: E731
    cols: dict[str, pa.Array] = {}
    if want(S.SAMPLE_ID):
        cols[S.SAMPLE_ID] = ids()
    if want(S.ROW):
        cols[S.ROW] = pa.array(rows, pa.int64())
    if want(S.LABEL):
        cols[S.LABEL] = pa.array(labels.astype(np.int64))
    if want(S.SPLIT):
        cols[S.SPLIT] = pa.array(S.SPLITS).take(pa.array(split_codes()))
    for name, values in raw.items():
        if want(name):
            cols[name] = pa.array(values, pa.float64())
    for name, values in raw.items():
        if want(name + S.NORM_SUFFIX):
            cols[name + S.NORM_SUFFIX] = pa.array(normalise(values, *ranges[name]), pa.float64())
    if want(S.BALANCE):
        cols[S.BALANCE] = pa.array(balance, pa.float64())
    if want(S.RANK):
        cols[S.RANK] = pa.array(rank.astype(np.int64))
    for head, loss in head_loss.items():
        if want(S.LOSS_PREFIX + head):
            cols[S.LOSS_PREFIX + head] = pa.array(loss, pa.float32())
        if want(S.PTRUE_PREFIX + head):
            cols[S.PTRUE_PREFIX + head] = pa.array(np.exp(-loss), pa.float32())
    return cols


def score_set(
    manifest: Manifest | None,
    rows: np.ndarray,
    parts: RowParts,
    *,
    criterion: str,
    weights: LossWeights,
    source: str,
    source_fingerprint: str,
    seed: int | None,
    split: str,
    alpha: float = 0.5,
    ids: pa.Array | None = None,
    split_codes: np.ndarray | None = None,
    classes: list[str] | None = None,
) -> ScoreSet:
    """Balance scores for manifest ``rows`` (row i of ``parts`` = manifest row ``rows[i]``).

    Without a manifest (a predictions set carrying its labels), ``ids``, ``split_codes`` and
    ``classes`` stand in for it."""
    if not 0 <= alpha <= 1:
        raise ConfigError(f"--alpha {alpha}: expected a value in [0, 1]")
    ranges = {name: (float(v.min()), float(v.max())) for name, v in parts.raw.items()}
    meta = scores_metadata(
        criterion=criterion, source=source, source_fingerprint=source_fingerprint,
        manifest_fingerprint=manifest.fingerprint if manifest is not None else "", seed=seed,
        modalities=[h for h in parts.head_loss if h != "fused"],
        classes=[str(c) for c in manifest.classes] if manifest is not None else list(classes or []),
        weights=weights, split=split, alpha=alpha)
    out = ScoreSet(manifest, rows, parts, criterion, alpha, ranges, None, np.empty(0, np.int32), meta, ids, split_codes)
    if len(rows) < CHUNK_ROWS:
        out.rank = balance_rank(out.balance)  # small: the balance is kept
        return out
    balance, out._balance = out.balance, None  # large: let go once sorted (recomputed by chunks when written)
    order = balance_order(balance, keep=False)
    del balance
    out.rank = rank_from_order(order)
    return out


def finish_balance(raw: dict[str, np.ndarray], ranges: dict[str, tuple[float, float]], criterion: str,
                   alpha: float) -> np.ndarray:
    """Balance from raw parts, given each part's range over the whole scored set: elementwise, so
    any chunk or partition of the samples gives the same values, bit for bit."""
    if not 0 <= alpha <= 1:
        raise ConfigError(f"--alpha {alpha}: expected a value in [0, 1]")
    return combine({name: normalise(v, *ranges[name]) for name, v in raw.items()}, criterion, alpha)


def scores_metadata(*, criterion: str, source: str, source_fingerprint: str, manifest_fingerprint: str,
                    seed: int | None, modalities: list[str], classes: list[str], weights: LossWeights, split: str,
                    alpha: float) -> dict[str, str]:
    return base_metadata(
        S.KIND_SCORES,
        **{
            S.META_CRITERION: criterion,
            S.META_SOURCE: source,
            S.META_SOURCE_FINGERPRINT: source_fingerprint,
            S.META_MANIFEST_FINGERPRINT: manifest_fingerprint,
            S.META_SEED: "" if seed is None else str(seed),
            S.META_MODALITIES: modalities,
            S.META_CLASSES: classes,
            S.META_LOSS_WEIGHTS: {"fused": weights.fused, "unimodal": weights.unimodal},
            S.META_SCORED_SPLIT: split,
            "bss.alpha": alpha,
        },
    )


def build_scores(manifest: Manifest, rows: np.ndarray, parts: RowParts, only: tuple[str, ...] | None = None,
                 **kwargs) -> Scores:
    """:func:`score_set` as an in-memory table (the trainer's scores), of ``only`` these columns."""
    return score_set(manifest, rows, parts, **kwargs).to_scores(only)


def score_from_predictions(manifest: Manifest, predictions_path: str | Path, *, criterion: str,
                           weights: LossWeights, split: str = "train", alpha: float = 0.5,
                           progress=None, manifest_stat: tuple[int, int] | None = None) -> ScoreSet:
    """Scores from a predictions file written by any trainer, read a row group at a time
    (numpy and pyarrow only): memory holds O(1) numbers per sample, whatever C and D are.

    ``manifest_stat``: the Parquet manifest's (size, mtime_ns) from before it was loaded
    (:meth:`StoredIds.stat_of`). Given it, once the predictions are read and every id checked,
    ``manifest.sample_ids`` becomes a :class:`StoredIds` that reads them back from the file when
    the scores are written: 1e8 string ids stay on disk while the scores are ranked."""
    from bss_cli.data.manifest import StoredIds
    from bss_cli.scoring.predictions import read_parts

    check_split(split)
    if criterion not in CRITERIA:
        raise ConfigError(f"unknown criterion {criterion!r}; choose one of: {', '.join(CRITERIA)}")
    loaded = read_parts(predictions_path, manifest, split, criterion, weights, progress=progress)
    if (manifest_stat is not None and READERS.get(manifest.path.suffix.lower()) == "parquet"
            and not isinstance(manifest.sample_ids, StoredIds)):
        manifest.sample_ids = StoredIds(manifest.path, manifest_stat, manifest.sample_ids.type)
    pa.default_memory_pool().release_unused()  # the decoders' buffers, kept by the pool, back to the OS
    return score_set(manifest, loaded.rows, loaded.parts, criterion=criterion, weights=weights,
                     source=f"predictions:{Path(predictions_path).name}",
                     source_fingerprint=loaded.fingerprint, seed=None, split=split, alpha=alpha)


def write_scores(scores: Scores | ScoreSet, path: str | Path) -> None:
    if isinstance(scores, ScoreSet):
        scores.write(path)
    else:
        write_table(scores.table, path, scores.metadata, **WRITE_OPTIONS)


SCHEDULE_COLUMNS = (S.SAMPLE_ID, S.ROW, S.BALANCE, S.LABEL)


def read_scores(path: str | Path, columns: tuple[str, ...] | None = None) -> Scores:
    """Read a scores artifact, checking its kind, version and the columns schedulers need.

    ``columns``: read only these (those present), e.g. :data:`SCHEDULE_COLUMNS` for scheduling,
    so memory is proportional to what is used; default every column.
    """
    import pyarrow.parquet as pq

    if Path(path).is_dir():  # a folder of partitions (bss score --engine ray writes one)
        meta, table = _read_scores_folder(Path(path), columns)
    else:
        meta = require_kind(path, S.KIND_SCORES)
        if columns is not None:
            present = pq.read_schema(path).names
            columns = [c for c in columns if c in present]
        table = pq.read_table(path, columns=columns)
    missing = [c for c in (S.SAMPLE_ID, S.ROW, S.BALANCE) if c not in table.column_names]
    if missing:
        raise ArtifactError(f"{path}: scores file lacks column(s) {', '.join(missing)}; re-create it with bss score")
    expected = {S.ROW: (pa.types.is_integer, "integers"), S.BALANCE: (pa.types.is_floating, "floating-point numbers"),
                S.LABEL: (pa.types.is_integer, "integers")}
    wrong = [f"'{c}' holds {table.schema.field(c).type}, expected {what}" for c, (ok, what) in expected.items()
             if c in table.column_names and not ok(table.schema.field(c).type)]
    if wrong:
        raise ArtifactError(f"{path}: the scores file is damaged: column {'; column '.join(wrong)}; re-create it "
                            "with bss score")
    balance = table[S.BALANCE].to_numpy()
    if not np.isfinite(balance).all():
        raise ArtifactError(f"{path}: column 'balance' holds NaN or infinite values")
    return Scores(table, meta)


def check_scores_folder(pset) -> dict[str, str]:
    """Every partition a scores artifact with the same metadata; return it."""
    meta = require_kind(pset.files[0], S.KIND_SCORES)
    for f in pset.files[1:]:
        if require_kind(f, S.KIND_SCORES) != meta:
            raise ArtifactError(f"{f}: its metadata differs from {pset.files[0]}'s; the partitions of a scores folder "
                                "come from one bss score run (re-create the folder)")
    return meta


def _read_scores_folder(path: Path, columns) -> tuple[dict[str, str], pa.Table]:
    """A scores folder: every partition a scores artifact with the same metadata and columns."""
    from bss_cli.data.partitions import open_set

    pset = open_set(path, "scores folder")
    meta = check_scores_folder(pset)
    if columns is not None:
        columns = [c for c in columns if c in pset.schema.names]
    return meta, pset.read(columns)


def _check_rows(manifest: Manifest, split: str) -> None:
    if manifest.count(split) == 0:
        raise ConfigError(f"--split {split}: {manifest.path} has no rows in that split; nothing to score "
                          f"(choose a split with rows, e.g. --split train)")


def score_manifest(manifest_path: str | Path, *, criterion: str = "prediction-sim+loss",
                   predictions: str | Path | None = None, source=None, weights: LossWeights = LossWeights(),
                   split: str = "train", device: str = "cpu", batch_size: int = 512, workers: int = 0,
                   cache_dir: str | Path | None = None, progress=None, info=None, alpha: float = 0.5) -> ScoreSet:
    """Balance scores for a manifest, from a predictions file or a bss model (``source``).

    ``source`` is a :class:`bss_cli.scoring.predict.ModelSource`; torch is imported only on that path.
    ``info`` (a :class:`~bss_cli.models.distributed.DistInfo` under torchrun) shards the model's
    scoring pass across ranks; every rank gets the same scores. ``progress(stage, done, total)``
    hears of the warm-up epochs (stage "warm-up") and the scoring pass (stage "scoring").
    """
    from bss_cli.data.manifest import load_manifest
    from bss_cli.scoring.criteria import get_criterion

    check_split(split)
    get_criterion(criterion)  # an unknown criterion fails before any work
    if predictions is not None:
        from bss_cli.data.manifest import StoredIds

        stat = StoredIds.stat_of(manifest_path) if Path(manifest_path).is_file() else None
        manifest = load_manifest(manifest_path, load_features=False, ids_stat=stat)  # in-order ids stay on disk
        pa.default_memory_pool().release_unused()  # the read's buffers, kept by the pool, back to the OS
        _check_rows(manifest, split)
        return score_from_predictions(manifest, predictions, criterion=criterion, weights=weights, split=split,
                                      alpha=alpha, progress=progress and (lambda d, t: progress("scoring", d, t)),
                                      manifest_stat=stat)

    from bss_cli.data.datasets import ManifestData
    from bss_cli.models.distributed import DistInfo
    from bss_cli.scoring.predict import ModelSource, model_for_source, predict_parts

    source = source or ModelSource()
    manifest = load_manifest(manifest_path, progress=progress)
    _check_rows(manifest, split)
    data = ManifestData(manifest, device=device, workers=workers, cache_dir=cache_dir)
    info = info or DistInfo()
    stage = (lambda name: (lambda done, total: progress(name, done, total))) if progress else (lambda name: None)
    model, fp = model_for_source(source, manifest, data, weights, info, progress=stage("warm-up"))
    rows = manifest.indices(split)
    parts = predict_parts(model, data, rows, info, criterion=criterion, weights=weights, batch_size=batch_size,
                          progress=stage("scoring"))
    return score_set(manifest, rows, parts, criterion=criterion, weights=weights, source=source.describe(),
                     source_fingerprint=fp, seed=source.seed, split=split, alpha=alpha)
