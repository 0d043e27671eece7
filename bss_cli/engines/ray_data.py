"""The Ray Data engine: ``bss score SET --engine ray`` and ``bss schedule SCORES --engine ray``.

The partitions are read and scored inside Ray Data's ``map_batches``, by the same per-piece code as
one machine (:func:`bss_cli.scoring.sets.piece_parts`); what needs the whole set runs as Ray tasks
over the resulting blocks: min-max ranges as a reduction, and the balance rank, every epoch's order
and the duplicate-id check as a distributed sort (:class:`Sorter`: sample, range-partition, merge;
a sorted block's positions start after the rows of the blocks before it). Ray Data's own ``sort``
and ``groupby`` give the same orders, but cost seconds of fixed overhead each, once per epoch.
Each block is written by a Ray task into a temporary folder beside the output, renamed into place
when every block is written.

Ray is imported only here, and only when asked for (``pip install 'bss[ray]'``). ``RAY_ADDRESS``
names the cluster; without it a local Ray instance starts for the command. Every node needs bss
installed, and the input and output folders on storage every node can read and write.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bss_cli import schema as S
from bss_cli.errors import BSSError, ConfigError

RAY_HINT = "pip install 'bss[ray]' (Ray Data) on this machine and every node"


def _reachable(address: str) -> str | None:
    """None when ``host:port`` answers a TCP connection within 5 s, else why not."""
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return None  # "auto", "local" or another form: let Ray decide
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def connect():
    """The ``ray`` module, connected: to ``RAY_ADDRESS`` when set, else to a local instance."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError(f"--engine ray needs Ray Data, which is not installed: {RAY_HINT}; or drop --engine ray "
                          "to run on this machine") from None
    if ray.is_initialized():
        return _quiet(ray)
    address = os.environ.get("RAY_ADDRESS", "").strip()
    if address:
        why = _reachable(address)
        if why:
            raise ConfigError(f"RAY_ADDRESS={address}: no Ray cluster answers there ({why}); start one (ray start "
                              "--head) or unset RAY_ADDRESS to run on a local Ray instance")
    try:
        ray.init(address=address or "local", logging_level="ERROR", log_to_driver=False, include_dashboard=False,
                 configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"RAY_ADDRESS={address}" if address else "a local Ray instance"
        raise ConfigError(f"{where}: cannot connect ({str(exc).splitlines()[0][:200]}); start a cluster with ray "
                          "start --head, or unset RAY_ADDRESS") from None
    return _quiet(ray)


def _quiet(ray):
    """Ray Data set up for bss: no progress lines (they are not bss's output), blocks kept in order."""
    import logging

    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = True
    ctx.execution_options.verbose_progress = False
    return ray


def _bss_error(exc: BaseException) -> BSSError | None:
    """The bss error a worker raised, from the wrappers Ray puts around it."""
    seen = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, BSSError):
            return type(e)(str(e)) if type(e).__init__ is BSSError.__init__ else e
        stack += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return None


def run(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``; an error a worker raised for bad input comes back as itself."""
    try:
        return fn(*args, **kwargs)
    except BSSError:
        raise
    except Exception as exc:
        found = _bss_error(exc)
        if found is not None:
            raise found from None
        raise


# --- work on the blocks (Ray Data map_batches, then Ray tasks) ----------------------------------------

def _score_pieces(batch: pa.Table, spec) -> pa.Table:
    from bss_cli.data.partitions import Piece
    from bss_cli.scoring.sets import piece_parts

    return pa.concat_tables([piece_parts(Piece(**{k: v for k, v in item.items() if k != "index"}), spec, item["index"])
                             for item in batch.to_pylist()])


def _read_scores_pieces(batch: pa.Table, columns: list[str]) -> pa.Table:
    from bss_cli.data.partitions import Piece

    out = []
    for item in batch.to_pylist():
        piece = Piece(**{k: v for k, v in item.items() if k != "index"})
        t = pq.ParquetFile(piece.path).read_row_group(piece.group, columns=columns).replace_schema_metadata(None)
        balance = t[S.BALANCE].to_numpy()
        bad = np.flatnonzero(~np.isfinite(balance))
        if len(bad):
            raise ConfigError(f"{piece.path}: row {piece.first + int(bad[0])}: column 'balance' holds "
                              f"{balance[bad[0]]}; scores must be finite (re-create them with bss score)")
        out.append(t.append_column("piece", pa.array(np.full(t.num_rows, item["index"], np.int32))))
    return pa.concat_tables(out)


BLOCK_ROWS = 1 << 20  # rows a block aims at: what one task holds, whatever the set's size


def _blocks(ray, pieces: list) -> int:
    """Blocks for the set's pieces (row groups): about BLOCK_ROWS rows each, and at least 2 per CPU
    of the cluster while there are pieces for them. A worker holds a few blocks' rows, so its memory
    does not grow with the set (a row group is never split: one larger than BLOCK_ROWS makes a
    larger block)."""
    cpus = int(ray.cluster_resources().get("CPU", 1))
    rows = sum(p.rows for p in pieces)
    return max(1, min(len(pieces), max(2 * cpus, -(-rows // BLOCK_ROWS))))


def _read(ray, pset, fn, **kwargs) -> list:
    """The set's pieces through ``fn`` in Ray Data's ``map_batches``: the blocks' refs, in order."""
    items = [{**asdict(p), "index": i} for i, p in enumerate(pset.pieces)]
    if not items:
        return []
    return (ray.data.from_items(items, override_num_blocks=_blocks(ray, pset.pieces))
            .map_batches(fn, batch_size=None, batch_format="pyarrow", fn_kwargs=kwargs)
            .to_arrow_refs())


def _stats(block: pa.Table, columns: list[str]) -> dict:
    """The block's row count and each column's min and max (a reduction's partial)."""
    out = {"count": block.num_rows}
    for c in columns:
        v = block[c].to_numpy()
        out[c] = (float(v.min()), float(v.max())) if len(v) else None
    return out


def _reduce(partials: list[dict], columns: list[str]) -> tuple[int, dict[str, tuple[float, float]]]:
    live = [p for p in partials if p["count"]]
    return (sum(p["count"] for p in live),
            {c: (min(p[c][0] for p in live), max(p[c][1] for p in live)) for c in columns} if live else {})


def _finish_scores(block: pa.Table, spec, ranges) -> pa.Table:
    """A parts block as scores columns (the rank comes later, from the sorted blocks' offsets)."""
    from bss_cli.scoring.scores import finish_balance, score_columns
    from bss_cli.scoring.sets import LOSS, RAW, SPLIT_CODE

    names = block.column_names
    raw = {c[len(RAW):]: block[c].to_numpy() for c in names if c.startswith(RAW)}
    balance = finish_balance(raw, ranges, spec.criterion, spec.alpha)
    cols = score_columns(ids=lambda: block[S.SAMPLE_ID], rows=block[S.ROW].to_numpy(),
                         labels=block[S.LABEL].to_numpy(), split_codes=lambda: block[SPLIT_CODE].to_numpy(),
                         raw=raw, ranges=ranges, balance=balance, rank=np.zeros(block.num_rows, np.int64),
                         head_loss={c[len(LOSS):]: block[c].to_numpy() for c in names if c.startswith(LOSS)})
    return pa.table(cols)


def _set_positions(block: pa.Table, start: int, column: str) -> pa.Table:
    values = pa.array(np.arange(start, start + block.num_rows, dtype=np.int64))
    if column in block.column_names:
        return block.set_column(block.schema.get_field_index(column), column, values)
    return block.append_column(column, values)


def _write(block: pa.Table, path: str, metadata: dict, row_group: int, options: dict) -> int:
    table = block.replace_schema_metadata(metadata)
    with pq.ParquetWriter(path, table.schema, **options) as writer:
        writer.write_table(table, row_group_size=max(1, row_group))
    return block.num_rows


def _column(block: pa.Table, column: str, dtype) -> np.ndarray:
    return np.ascontiguousarray(block[column].to_numpy(), dtype)


def _balance_sum(block: pa.Table) -> float:
    return float(block[S.BALANCE].to_numpy().sum())


def _holders(block: pa.Table, value) -> list[int]:
    return block.filter(pc.equal(block[S.SAMPLE_ID], value))["piece"].to_pylist()


# --- a distributed sort over Ray blocks -----------------------------------------------------------------

_SAMPLES = 64  # values each block offers for the partition boundaries


def _sample(block: pa.Table, column: str, descending: bool) -> list:
    n = block.num_rows
    if not n:
        return []
    col = block[column]
    order = pc.sort_indices(col, sort_keys=[("", "descending" if descending else "ascending")])
    picks = np.unique(np.linspace(0, n - 1, min(_SAMPLES, n)).astype(np.int64))
    return col.take(order.take(pa.array(picks))).to_pylist()


class _Values:
    """A sorted Arrow column as a sequence of Python values (for :mod:`bisect`: a few probes)."""

    def __init__(self, column):
        self.column = column

    def __len__(self):
        return len(self.column)

    def __getitem__(self, i):
        return self.column[i].as_py()


def _split(block: pa.Table, keys: list[tuple[str, str]], boundaries: list) -> tuple:
    """The block sorted by ``keys``, cut where its first key crosses each boundary: part j holds
    the first-key values between boundary j-1 and j (equal values always in the same part)."""
    import bisect

    block = block.take(pc.sort_indices(block, sort_keys=keys))
    first, order = keys[0]
    n = block.num_rows
    values = _Values(block[first])
    if order == "ascending":  # part j: boundary[j-1] <= v < boundary[j]
        cuts = [bisect.bisect_left(values, b) for b in boundaries]
    else:  # descending: part j: boundary[j-1] >= v > boundary[j]
        cuts = [_first_not_above(values, b) for b in boundaries]
    edges = [0, *cuts, n]
    parts = tuple(block.slice(a, b - a) for a, b in zip(edges[:-1], edges[1:]))
    return parts if len(parts) > 1 else parts[0]


def _first_not_above(values, b) -> int:
    lo, hi = 0, len(values)
    while lo < hi:  # the first index whose value is <= b, in a descending sequence
        mid = (lo + hi) // 2
        if values[mid] > b:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _merge(keys: list[tuple[str, str]], *parts: pa.Table) -> pa.Table:
    table = pa.concat_tables([p for p in parts if p.num_rows] or parts[:1])
    return table.take(pc.sort_indices(table, sort_keys=keys))


def _first_duplicate(block: pa.Table, column: str):
    values = block[column]
    if block.num_rows < 2:
        return None
    same = pc.equal(values.slice(1), values.slice(0, block.num_rows - 1))
    hits = np.flatnonzero(same.to_numpy(zero_copy_only=False))
    return values[int(hits[0])].as_py() if len(hits) else None


class Sorter:
    """Sort blocks by (column, "ascending" | "descending") keys across the cluster: each block
    offers evenly spaced values of the first key, the driver picks boundaries from them, each block
    is sorted and cut at the boundaries, and part j of every block is merged into sorted block j.
    Blocks come back in order: block j's rows all sort before block j+1's."""

    def __init__(self, ray):
        self.ray = ray
        self.sample = ray.remote(_sample)
        self.split = ray.remote(_split)
        self.merge = ray.remote(_merge)
        self.count = ray.remote(lambda block: block.num_rows)

    def sort(self, refs: list, keys: list[tuple[str, str]], partitions: int | None = None) -> list:
        ray = self.ray
        if not refs:
            return []
        first, order = keys[0]
        partitions = max(1, partitions or len(refs))
        samples = sorted(v for vs in ray.get([self.sample.remote(r, first, order == "descending") for r in refs])
                         for v in vs)
        if order == "descending":
            samples.reverse()
        boundaries = [samples[(len(samples) * j) // partitions] for j in range(1, partitions)] if samples else []
        if not boundaries:
            return [self.merge.remote(keys, *refs)]
        cut = [self.split.options(num_returns=len(boundaries) + 1).remote(r, keys, boundaries) for r in refs]
        return [self.merge.remote(keys, *[c[j] for c in cut]) for j in range(len(boundaries) + 1)]

    def offsets(self, refs: list) -> tuple[list[int], list[int]]:
        """Each sorted block's first position, and its row count."""
        counts = self.ray.get([self.count.remote(r) for r in refs])
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist() if counts else []
        return starts, counts

    def first_duplicate(self, refs: list, column: str):
        """A value of ``column`` that two rows share, or None."""
        ray = self.ray
        select = ray.remote(lambda block: block.select([column]))
        ordered = self.sort([select.remote(r) for r in refs], [(column, "ascending")])
        found = ray.get([ray.remote(_first_duplicate).remote(r, column) for r in ordered])
        hits = [v for v in found if v is not None]
        if hits:
            return hits[0]
        # a value that ends one sorted block and starts the next is in both only if equal: boundaries
        # keep equal values in one block, so no pair spans two blocks
        return None


def _on(ray, fn):
    return ray.remote(fn)


# --- score --------------------------------------------------------------------------------------------

def score(path: str | Path, out: str | Path, *, criterion: str, weights, split: str, alpha: float,
          progress=None) -> dict:
    """Score a predictions set on Ray and write the scores folder ``out`` (atomically); return
    rows, balance summary and criterion."""
    from bss_cli.artifacts import atomic_folder, fingerprint_file
    from bss_cli.data.partitions import fingerprint as set_fingerprint
    from bss_cli.data.partitions import open_set
    from bss_cli.scoring.scores import CHUNK_ROWS, WRITE_OPTIONS, scores_metadata
    from bss_cli.scoring.sets import LOSS, RAW, duplicate_error, plan, source_name

    pset = open_set(path, "predictions set")
    spec = plan(pset, criterion=criterion, weights=weights, split=split, alpha=alpha)
    ray = connect()

    def job() -> dict:
        sorter = Sorter(ray)
        hashes = [_on(ray, fingerprint_file).remote(str(f), 64) for f in pset.files]
        parts = _read(ray, pset, _score_pieces, spec=spec)
        names = ray.get(_on(ray, lambda b: b.column_names).remote(parts[0]))
        raw_cols = [c for c in names if c.startswith(RAW)]
        n, ranges = _reduce(ray.get([_on(ray, _stats).remote(r, raw_cols) for r in parts]), raw_cols)
        if n == 0:
            raise ConfigError(f"{pset.root}: no row of split '{split}'; nothing to score (choose a split with rows)")
        twice = sorter.first_duplicate(parts, S.SAMPLE_ID)
        if twice is not None:
            held = [i for h in ray.get([_on(ray, _holders).remote(r, twice) for r in parts]) for i in h]
            raise duplicate_error(pset, twice, held)
        ranges = {c[len(RAW):]: r for c, r in ranges.items()}
        finished = [_on(ray, _finish_scores).remote(r, spec, ranges) for r in parts]
        by_balance = sorter.sort(finished, [(S.BALANCE, "descending"), (S.ROW, "ascending")])
        starts, _ = sorter.offsets(by_balance)
        ranked = [_on(ray, _set_positions).remote(r, s, S.RANK) for r, s in zip(by_balance, starts)]
        by_row = sorter.sort(ranked, [(S.ROW, "ascending")])
        _, counts = sorter.offsets(by_row)
        meta = scores_metadata(criterion=criterion, source=source_name(pset),
                               source_fingerprint=set_fingerprint(pset, ray.get(hashes)), manifest_fingerprint="",
                               seed=None, modalities=[c[len(LOSS):] for c in names
                                                      if c.startswith(LOSS) and c != LOSS + "fused"],
                               classes=[str(c) for c in range(spec.n_classes)], weights=weights, split=split,
                               alpha=alpha)
        with atomic_folder(out) as tmp:
            live = [r for r, c in zip(by_row, counts) if c]
            ray.get([_on(ray, _write).remote(r, str(tmp / f"part-{k:05d}.parquet"), meta, CHUNK_ROWS, WRITE_OPTIONS)
                     for k, r in enumerate(live)])
        lo, hi = _reduce(ray.get([_on(ray, _stats).remote(r, [S.BALANCE]) for r in live]), [S.BALANCE])[1][S.BALANCE]
        return {"rows": n, "criterion": criterion, "balance": {"mean": float(np.sum(ray.get(
            [_on(ray, _balance_sum).remote(r) for r in live]))) / n, "min": lo, "max": hi}}

    return run(job)


# --- schedule -----------------------------------------------------------------------------------------

RAY_SCHEDULERS = ("curriculum", "anti-curriculum", "paced-random", "learned", "random")


def _weights(block: pa.Table, cfg, zmax: float) -> pa.Table:
    """The learned rule's weight w_i per row (schedulers.learned_weights, with the set's max)."""
    from bss_cli.scheduling.schedulers import learned_weights

    return block.append_column("w", pa.array(learned_weights(block[S.BALANCE].to_numpy(), cfg, zmax)))


def _exact_partial(block: pa.Table) -> dict[int, int]:
    from bss_cli.scheduling.sums import partial

    return partial(block["w"].to_numpy())


def _control_key(block: pa.Table, seed: int) -> pa.Table:
    from bss_cli.scheduling import keys

    rows = block[S.ROW].to_numpy().astype(np.int64)
    return block.append_column("key", pa.array(keys.keys64(seed, keys.CONTROL_STREAM, rows)))


def _epoch_keys(block: pa.Table, cfg, epoch: int, total: float | None, keep: int | None) -> pa.Table:
    """One epoch's sort key per row, and the rows that take part: the schedulers' arithmetic row by
    row (keys.py), so any block gives the same keys."""
    from bss_cli.scheduling import keys

    rows = block[S.ROW].to_numpy().astype(np.int64)
    if cfg.scheduler == "learned":
        p = block["w"].to_numpy() / total
        block = block.append_column(S.PROBABILITY, pa.array(p))
        key = pa.array(keys.exponential(cfg.seed, epoch, rows) / p)
    elif cfg.scheduler == "random":
        key = pa.array(keys.keys64(cfg.seed, epoch, rows))
    else:  # a curriculum: the epoch's prefix of the rank, shuffled or in rank order
        inside = block["rank"].to_numpy() < keep
        block = block.filter(pa.array(inside))
        key = pa.array(keys.keys64(cfg.seed, epoch, rows[inside])) if cfg.shuffle else block["rank"]
    return block.append_column("key", key)


def _write_epoch(block: pa.Table, path: str, epoch: int, start: int, size: int, schema, options) -> int:
    """A sorted block of one epoch as schedule rows from position ``start`` (a paced draw keeps only
    its first ``size`` positions)."""
    block = block.slice(0, max(0, min(block.num_rows, size - start)))
    k = block.num_rows
    prob = block[S.PROBABILITY] if S.PROBABILITY in block.column_names else pa.array(np.full(k, 1.0 / size))
    cols = {S.EPOCH: pa.array(np.full(k, epoch, np.int32)),
            S.POSITION: pa.array(np.arange(start, start + k, dtype=np.int64)),
            S.SAMPLE_ID: block[S.SAMPLE_ID], S.ROW: block[S.ROW], S.PROBABILITY: prob, S.BALANCE: block[S.BALANCE]}
    if S.LABEL in schema.names:
        cols[S.LABEL] = block[S.LABEL]
    table = pa.table(cols).cast(schema)
    pq.write_table(table, path, row_group_size=max(1, k), **options)
    return k


def _scores_set(path):
    from bss_cli.data.partitions import open_set
    from bss_cli.scoring.scores import check_scores_folder

    pset = open_set(path, "scores folder")
    meta = check_scores_folder(pset)
    missing = [c for c in (S.SAMPLE_ID, S.ROW, S.BALANCE) if c not in pset.schema.names]
    if missing:
        raise ConfigError(f"{pset.files[0]}: scores lack column(s) {', '.join(missing)}; re-create them with bss score")
    return pset, meta


def schedule(scores_path: str | Path, out: str | Path, cfg, epochs: list[int], progress=None) -> int:
    """Write ``epochs`` of the schedule ``cfg`` for a scores folder (or file) as the folder ``out``
    (``epoch=NNNNN/part-NNNNN.parquet``), atomically; return the rows written."""
    import hashlib

    from bss_cli.artifacts import atomic_folder
    from bss_cli.scheduling.pacing import check_pacing, subset_size
    from bss_cli.scheduling.schedule_io import EPOCH_FOLDER, PARQUET_OPTIONS, schedule_metadata, schedule_schema
    from bss_cli.scheduling.sums import merge, total
    from bss_cli.scoring.sets import duplicate_error

    if cfg.scheduler not in RAY_SCHEDULERS:
        raise ConfigError(f"--scheduler {cfg.scheduler}: --engine ray draws {', '.join(RAY_SCHEDULERS)}")
    for flag, on in (("--stratify", cfg.stratify), ("--shuffle-scores", cfg.shuffle_scores),
                     ("--accumulate", cfg.accumulate)):
        if on:
            raise ConfigError(f"{flag} runs on one machine only (it needs every score at once); drop --engine ray, "
                              f"or drop {flag}")
    pset, meta = _scores_set(scores_path)
    has_label = S.LABEL in pset.schema.names
    columns = [S.SAMPLE_ID, S.ROW, S.BALANCE] + ([S.LABEL] if has_label else [])
    curriculum = cfg.scheduler in ("curriculum", "anti-curriculum", "paced-random")
    pace = check_pacing(cfg.pacing, cfg.lambda0, cfg.t_grow) if curriculum or cfg.paced else None
    ray = connect()
    say = progress or (lambda stage, done, total_: None)

    def job() -> int:
        sorter = Sorter(ray)
        base = _read(ray, pset, _read_scores_pieces, columns=columns)
        _, counts = sorter.offsets(base)
        n = sum(counts)
        if n == 0:
            raise ConfigError(f"{pset.root}: no scores to schedule")
        twice = sorter.first_duplicate(base, S.SAMPLE_ID)
        if twice is not None:
            held = [i for h in ray.get([_on(ray, _holders).remote(r, twice) for r in base]) for i in h]
            raise duplicate_error(pset, twice, held)
        # The scores fingerprint (schedule_io.scores_fingerprint): sha256 of every row, then every
        # balance, in the set's order; streamed through this process, 16 bytes a row.
        digest = hashlib.sha256()
        for column, dtype in ((S.ROW, np.int64), (S.BALANCE, np.float64)):
            for r in base:
                digest.update(ray.get(_on(ray, _column).remote(r, column, dtype)).tobytes())
        fingerprint = digest.hexdigest()[:16]
        data, grand = base, None
        if cfg.scheduler == "learned":
            zmax = 0.0
            if cfg.rule == "paper":
                zmax = _reduce(ray.get([_on(ray, _stats).remote(r, [S.BALANCE]) for r in base]),
                               [S.BALANCE])[1][S.BALANCE][1] / cfg.temperature  # max(s / T) = max(s) / T
            data = [_on(ray, _weights).remote(r, cfg, zmax) for r in base]
            grand = total(merge(*ray.get([_on(ray, _exact_partial).remote(r) for r in data])))
        elif curriculum:
            if cfg.scheduler == "paced-random":
                keyed = [_on(ray, _control_key).remote(r, cfg.seed) for r in base]
                by = [("key", "ascending"), (S.ROW, "ascending")]
            else:
                keyed = base
                by = [(S.BALANCE, "descending" if cfg.scheduler == "curriculum" else "ascending"),
                      (S.ROW, "ascending")]
            ordered = sorter.sort(keyed, by)
            starts, _ = sorter.offsets(ordered)
            data = [_on(ray, _set_positions).remote(r, s, "rank") for r, s in zip(ordered, starts)]
            if cfg.scheduler == "paced-random":
                data = [_on(ray, lambda b: b.drop_columns(["key"])).remote(r) for r in data]
        metadata = schedule_metadata(meta, cfg, epochs, n, fingerprint)
        schema = schedule_schema(pset.schema.field(S.SAMPLE_ID).type, metadata, labels=has_label)
        written = 0
        with atomic_folder(out) as tmp:
            for i, e in enumerate(epochs):
                size = subset_size(n, pace(e + 1, lambda0=cfg.lambda0, t_grow=cfg.t_grow)) if pace else n
                keyed = [_on(ray, _epoch_keys).remote(r, cfg, e, grand, size if curriculum else None) for r in data]
                ordered = sorter.sort(keyed, [("key", "ascending"), (S.ROW, "ascending")])
                starts, counts = sorter.offsets(ordered)
                folder = tmp / EPOCH_FOLDER.format(e)
                folder.mkdir()
                live = [(r, s) for r, s, c in zip(ordered, starts, counts) if c and s < size]
                written += sum(ray.get([_on(ray, _write_epoch).remote(r, str(folder / f"part-{k:05d}.parquet"), e, s,
                                                                      size, schema, PARQUET_OPTIONS)
                                        for k, (r, s) in enumerate(live)]))
                say("epochs", i + 1, len(epochs))
        return written

    return run(job)
