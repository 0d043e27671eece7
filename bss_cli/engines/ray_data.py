"""The Ray Data engine: ``bss score SET --engine ray`` and ``bss schedule SCORES --engine ray``.

The same per-piece and per-row code as one machine runs inside Ray Data's ``map_batches``; what
needs the whole set is done the way an engine does it: min-max ranges as a reduction, the balance
rank and every epoch's order as a distributed sort (``Dataset.sort``, then each sorted block's
offset from the blocks before it), duplicate ids as a ``groupby``. Each block is written by a Ray
task into a temporary folder beside the output, renamed into place when every block is written.

Ray is imported only here, and only when asked for (``pip install 'bss[ray]'``). ``RAY_ADDRESS``
names the cluster; without it a local Ray instance starts for the command. Every node needs bss
installed, and the input and output folders on storage every node can read and write.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict
from pathlib import Path

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
        return ray
    address = os.environ.get("RAY_ADDRESS", "").strip()
    if address:
        why = _reachable(address)
        if why:
            raise ConfigError(f"RAY_ADDRESS={address}: no Ray cluster answers there ({why}); start one (ray start "
                              "--head) or unset RAY_ADDRESS to run on a local Ray instance")
    try:
        ray.init(address=address or None, logging_level="ERROR", log_to_driver=False, include_dashboard=False,
                 configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"RAY_ADDRESS={address}" if address else "a local Ray instance"
        raise ConfigError(f"{where}: cannot connect ({str(exc).splitlines()[0][:200]}); start a cluster with ray "
                          "start --head, or unset RAY_ADDRESS") from None
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


# --- map_batches functions (run on the workers) -------------------------------------------------

def _score_pieces(batch: pa.Table, spec) -> pa.Table:
    from bss_cli.data.partitions import Piece
    from bss_cli.scoring.sets import piece_parts

    return pa.concat_tables([piece_parts(Piece(**{k: v for k, v in item.items() if k != "index"}), spec, item["index"])
                             for item in batch.to_pylist()])


def _stats(batch: pa.Table, columns: list[str]) -> pa.Table:
    """One row: the block's row count and each column's min and max (a reduction's partial)."""
    row = {"count": [batch.num_rows]}
    for c in columns:
        v = batch[c].to_numpy() if batch.num_rows else np.array([np.nan])
        row[f"min:{c}"], row[f"max:{c}"] = [float(v.min())], [float(v.max())]
    return pa.table(row)


def _reduce(partials: list[dict], columns: list[str]) -> tuple[int, dict[str, tuple[float, float]]]:
    live = [p for p in partials if p["count"]]
    return sum(p["count"] for p in live), {c: (min(p[f"min:{c}"] for p in live), max(p[f"max:{c}"] for p in live))
                                          for c in columns}


def _finish_scores(batch: pa.Table, spec, ranges) -> pa.Table:
    """A parts block as scores columns (the rank comes later, from the sorted blocks' offsets)."""
    from bss_cli.scoring.scores import finish_balance, score_columns
    from bss_cli.scoring.sets import LOSS, RAW, SPLIT_CODE

    names = batch.column_names
    raw = {c[len(RAW):]: batch[c].to_numpy() for c in names if c.startswith(RAW)}
    balance = finish_balance(raw, ranges, spec.criterion, spec.alpha)
    cols = score_columns(ids=lambda: batch[S.SAMPLE_ID], rows=batch[S.ROW].to_numpy(),
                         labels=batch[S.LABEL].to_numpy(), split_codes=lambda: batch[SPLIT_CODE].to_numpy(),
                         raw=raw, ranges=ranges, balance=balance, rank=np.zeros(batch.num_rows, np.int64),
                         head_loss={c[len(LOSS):]: batch[c].to_numpy() for c in names if c.startswith(LOSS)})
    return pa.table(cols)


def _duplicates(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.greater(batch["count()"], 1))


def _holders(batch: pa.Table, value) -> pa.Table:
    from bss_cli.scoring.sets import PIECE

    return batch.filter(pc.equal(batch[S.SAMPLE_ID], value)).select([PIECE])


# --- tasks on sorted blocks -----------------------------------------------------------------------

def _tasks(ray):
    @ray.remote
    def num_rows(block) -> int:
        return block.num_rows

    @ray.remote
    def set_position(block, start: int, column: str, dtype: str):
        values = pa.array(np.arange(start, start + block.num_rows, dtype=dtype))
        return block.set_column(block.schema.get_field_index(column), column, values)

    @ray.remote
    def write(block, path: str, metadata: dict, row_group: int, options: dict) -> int:
        schema = block.schema.with_metadata(metadata)
        with pq.ParquetWriter(path, schema, **options) as writer:
            writer.write_table(block.replace_schema_metadata(metadata), row_group_size=max(1, row_group))
        return block.num_rows

    return num_rows, set_position, write


def _offsets(ray, refs, num_rows) -> list[int]:
    counts = ray.get([num_rows.remote(r) for r in refs])
    return list(np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int)) if counts else [], counts


# --- score --------------------------------------------------------------------------------------------

def score(path: str | Path, out: str | Path, *, criterion: str, weights, split: str, alpha: float,
          progress=None) -> dict:
    """Score a predictions set on Ray and write the scores folder ``out`` (atomically); return
    rows, balance summary and criterion."""
    from bss_cli.artifacts import atomic_folder, fingerprint_file
    from bss_cli.data.partitions import open_set
    from bss_cli.scoring.scores import CHUNK_ROWS, WRITE_OPTIONS, scores_metadata
    from bss_cli.scoring.sets import RAW, duplicate_error, plan, set_fingerprint, source_name  # noqa: F401

    pset = open_set(path, "predictions set")
    spec = plan(pset, criterion=criterion, weights=weights, split=split, alpha=alpha)
    ray = connect()
    say = progress or (lambda stage: None)

    def job():
        fp_task = ray.remote(fingerprint_file)
        hashes = [fp_task.remote(str(f), 64) for f in pset.files]
        items = [{**asdict(p), "index": i} for i, p in enumerate(pset.pieces)]
        say("scoring the pieces")
        parts = (ray.data.from_items(items, override_num_blocks=len(items))
                 .map_batches(_score_pieces, batch_size=1, batch_format="pyarrow",
                              fn_kwargs={"spec": spec})
                 .materialize())
        raw_cols = [c for c in parts.schema().names if c.startswith(RAW)]
        partials = parts.map_batches(_stats, batch_size=None, batch_format="pyarrow",
                                     fn_kwargs={"columns": raw_cols}).take_all()
        n, ranges = _reduce(partials, raw_cols)
        if n == 0:
            raise ConfigError(f"{pset.root}: no row of split '{split}'; nothing to score (choose a split with rows)")
        say("checking for duplicate ids")
        twice = (parts.select_columns([S.SAMPLE_ID]).groupby(S.SAMPLE_ID).count()
                 .map_batches(_duplicates, batch_format="pyarrow").take(1))
        if twice:
            value = twice[0][S.SAMPLE_ID]
            held = parts.map_batches(_holders, batch_format="pyarrow", fn_kwargs={"value": value}).take_all()
            raise duplicate_error(pset, value, [h["piece"] for h in held])
        ranges = {c[len(RAW):]: r for c, r in ranges.items()}
        say("balance and rank")
        finished = parts.map_batches(_finish_scores, batch_size=None, batch_format="pyarrow",
                                     fn_kwargs={"spec": spec, "ranges": ranges})
        by_balance = finished.sort([S.BALANCE, S.ROW], descending=[True, False]).to_arrow_refs()
        num_rows, set_position, write = _tasks(ray)
        starts, _ = _offsets(ray, by_balance, num_rows)
        ranked = [set_position.remote(r, s, S.RANK, "int64") for r, s in zip(by_balance, starts)]
        bounds = sorted({p.start for p in pset.pieces[1:]})
        by_row = ray.data.from_arrow_refs(ranked).sort(S.ROW, boundaries=bounds or None).to_arrow_refs()
        meta = scores_metadata(criterion=criterion, source=source_name(pset),
                               source_fingerprint=set_fingerprint(pset, ray.get(hashes)), manifest_fingerprint="",
                               seed=None, modalities=[c[len("loss:"):] for c in parts.schema().names
                                                      if c.startswith("loss:") and c != "loss:fused"],
                               classes=[str(c) for c in range(spec.n_classes)], weights=weights, split=split,
                               alpha=alpha)
        say("writing")
        counts = ray.get([num_rows.remote(r) for r in by_row])
        with atomic_folder(out) as tmp:
            written = [write.remote(r, str(tmp / f"part-{k:05d}.parquet"), meta, CHUNK_ROWS, WRITE_OPTIONS)
                       for k, r in enumerate(r for r, c in zip(by_row, counts) if c)]
            ray.get(written)
        live = [p for p in _partials_of(ray, by_row) if p["count"]]
        return {"rows": n, "criterion": criterion,
                "balance": {"mean": sum(p["sum"] for p in live) / n, "min": min(p["min"] for p in live),
                            "max": max(p["max"] for p in live)}}

    return run(job)


def _partials_of(ray, refs):
    @ray.remote
    def summary(block):
        b = block[S.BALANCE].to_numpy()
        return {"count": len(b), "sum": float(b.sum()) if len(b) else 0.0,
                "min": float(b.min()) if len(b) else np.inf, "max": float(b.max()) if len(b) else -np.inf}

    return ray.get([summary.remote(r) for r in refs])
