"""Parquet artifact I/O: atomic writes, provenance metadata, fingerprints, kind checks."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator, Self, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from bss_cli import __version__
from bss_cli import schema as S
from bss_cli.errors import ArtifactError

T = TypeVar("T")
U = TypeVar("U")


def fingerprint_file(path: str | os.PathLike, length: int = 16) -> str:
    """sha256 of a file's bytes, first ``length`` hex digits."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]


def prefetched(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """``items``, produced by a thread up to ``depth`` ahead of the consumer (decoding and numpy both
    release the GIL: reading the next chunk overlaps working on this one). An exception in the
    producer is raised in the consumer; a consumer that stops early stops the producer."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as exc:  # handed to the consumer, raised there
            put((done, exc))

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if item is done:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        thread.join()


def ordered_map(fn: Callable[[T], U], items: Iterable[T], workers: int) -> Iterator[U]:
    """``fn(item)`` for each of ``items``, in order, computed by ``workers`` threads up to two per
    thread ahead of the consumer (for numpy work, which releases the GIL: the cores share it).
    ``items`` is drawn in the consumer's thread; an exception in ``fn`` is raised there, in order."""
    if workers <= 1:
        yield from map(fn, items)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers, thread_name_prefix="bss-work") as pool:
        pending: deque = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def fingerprint_bytes(data: bytes, length: int = 16) -> str:
    """:func:`fingerprint_file` of a file holding ``data`` (no re-read of what was just written)."""
    return hashlib.sha256(data).hexdigest()[:length]


def table_bytes(table: pa.Table, metadata: dict[str, str], **kwargs) -> bytes:
    """``table`` with ``metadata`` as Parquet bytes (small tables: hash and write them at once)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata}), sink, **kwargs)
    return sink.getvalue().to_pybytes()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """``path`` holds ``data`` afterwards, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


_TEMPORARIES = itertools.count()


def _temporary(target: Path) -> Path:
    """Create an empty temporary file next to ``target`` with the usual permissions (the system
    applies the umask: no chmod, unlike mkstemp's 0600) and return its path."""
    for attempt in itertools.count():
        tmp = target.parent / f".{target.name}.{os.getpid()}-{next(_TEMPORARIES)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666))
            return tmp
        except FileExistsError:  # left by an earlier process of the same pid: take another name
            if attempt > 100:
                raise


class FileWriter:
    """Writes files on one background thread, in the order they were asked for.

    A training epoch hands over what it wrote (checkpoint bytes, metrics, artifacts) and goes on
    training; the writes' system calls wait on the disk in the thread. Order is kept, so a file
    written after another (a checkpoint after the plan file it names) never lands before it, and a
    kill leaves whatever had landed: each file is atomic on its own. A write that failed is raised
    (as :class:`ArtifactError`) by the next call, by :meth:`flush` or on leaving the ``with``, and
    every write queued after it is dropped, as a kill would: a checkpoint never lands after a file
    it names (an epoch's artifacts, a plan file) failed to.
    ``background=False`` writes at once, in the caller.

    :meth:`hold` keeps what is asked for in memory, in order, until :meth:`release` hands it to the
    thread (a trainer holds an epoch's files until it checkpoints); held work that was never
    released is dropped on leaving the ``with`` on an error, so the folder stays as it was at the
    last release.
    """

    def __init__(self, background: bool = True):
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bss-writer") if background else None
        self._pending: list = []
        self._failed = False  # set by the thread when a write fails: later writes are dropped
        self._held: list | None = None
        self.held_bytes = 0  # the size of the held data (bytes to write)

    def hold(self) -> None:
        """From now on, keep what is asked for until :meth:`release`."""
        if self._held is None:
            self._held = []

    def release(self) -> None:
        """Hand everything held to the thread, in order (held tables are encoded now), and stop holding."""
        held, self._held, self.held_bytes = self._held or [], None, 0
        for again in held:
            again()

    def write(self, path: str | os.PathLike, data: bytes) -> None:
        if self._held is not None:
            self._held.append(lambda: self.write(path, data))
            self.held_bytes += len(data)
            return
        self.call(write_bytes, path, data)

    def write_table(self, path: str | os.PathLike, table: pa.Table, metadata: dict[str, str], **kwargs) -> None:
        """:func:`write_table`: encoded in the caller (when held: at release), written on the thread.
        (Encoding on the thread as well was slower on a 2-core machine: it competes with torch's
        threads for the cores.)"""
        if self._held is not None:
            self._held.append(lambda: self.write_table(path, table, metadata, **kwargs))
            self.held_bytes += table.nbytes
            return
        self.write(path, table_bytes(table, metadata, **kwargs))

    def call(self, fn, *args, **kwargs) -> None:
        """Run ``fn(*args, **kwargs)`` (a file operation) after everything asked for before it."""
        if self._held is not None:
            self._held.append(lambda: self.call(fn, *args, **kwargs))
            return
        self._raise_failed()
        if self._pool is None:
            fn(*args, **kwargs)
        else:
            self._pending.append(self._pool.submit(self._guarded, fn, *args, **kwargs))

    def _guarded(self, fn, *args, **kwargs) -> None:
        if self._failed:  # an earlier write failed: nothing after it may land
            return
        try:
            fn(*args, **kwargs)
        except BaseException:
            self._failed = True
            raise

    def _raise_failed(self) -> None:
        done, pending = [], []
        for f in self._pending:  # one look per future: one that finishes meanwhile stays pending, not lost
            (done if f.done() else pending).append(f)
        self._pending = pending
        for f in done:
            f.result()  # raises what the write raised

    def flush(self) -> None:
        """Wait until every write handed to the thread has landed (held work stays held); raise the
        first that failed."""
        pending, self._pending = self._pending, []
        for f in pending:
            f.result()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        try:
            if kind is None:
                self.release()
                self.flush()
            else:  # the writes of finished epochs still land; the error in flight is the one to report
                with contextlib.suppress(Exception):
                    self.flush()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)


def fingerprint_text(text: str, length: int = 16) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def base_metadata(kind: str, **extra: object) -> dict[str, str]:
    """Metadata every artifact carries, plus ``extra`` (non-strings are JSON-encoded)."""
    meta = {S.META_KIND: kind, S.META_FORMAT_VERSION: S.format_version(kind), S.META_BSS_VERSION: __version__}
    for key, value in extra.items():
        meta[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return meta


# Folders (run and study folders) inside which bss never writes through a symbolic link: a link
# planted at RUN/epochs, RUN/csv or STUDY/runs/<variant> would send files elsewhere. The folder
# itself may be a link (a scratch disk); what bss creates or enters below it may not.
_GUARDED: list[Path] = []


@contextlib.contextmanager
def guarded(folder: str | os.PathLike) -> Iterator[None]:
    """While the body runs, every write under ``folder`` is refused where a folder between
    ``folder`` and the file is a symbolic link (see :func:`make_dir`, :func:`atomic_path`)."""
    root = Path(os.path.abspath(folder))
    _GUARDED.append(root)
    try:
        yield
    finally:
        _GUARDED.remove(root)


def link_below(root: str | os.PathLike, path: str | os.PathLike) -> Path | None:
    """The first symbolic link among the entries from just below ``root`` down to ``path``
    (included); None when there is none or ``path`` is not under ``root``."""
    root, path = Path(os.path.abspath(root)), Path(os.path.abspath(path))
    try:
        rel = path.relative_to(root)
    except ValueError:
        return None
    current = root
    for part in rel.parts:
        current = current / part
        if current.is_symlink():
            return current
    return None


def check_no_link(folder: str | os.PathLike) -> None:
    """Refuse ``folder`` (to create or write into) where it, or a folder above it, is a symbolic
    link below a guarded run or study folder."""
    for root in list(_GUARDED):
        link = link_below(root, folder)
        if link is not None:
            raise ArtifactError(f"{link} is a symbolic link inside {root}; bss never writes through one. Remove it "
                                "and run again")


def make_dir(folder: str | os.PathLike) -> Path:
    """``folder`` created (with its parents) after :func:`check_no_link`, and checked again after."""
    folder = Path(folder)
    check_no_link(folder)
    folder.mkdir(parents=True, exist_ok=True)
    check_no_link(folder)  # a link swapped in between is still caught before anything is written
    return folder


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` only on success.

    An exception (or a kill) leaves the target untouched and removes the temporary file. Inside a
    :func:`guarded` folder no folder on the way may be a symbolic link.
    """
    target = Path(path)
    if target.is_dir():
        raise ArtifactError(f"{target}: is a folder; name a file to write")
    check_no_link(target.parent)
    try:
        make_dir(target.parent)
        tmp = _temporary(target)
    except OSError as exc:
        raise ArtifactError(f"cannot write {target}: {_why(exc)}; nothing was written") from None
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # a full disk, a file-size limit, a folder gone read-only
            kept = " (the existing file is unchanged)" if target.exists() else ""
            raise ArtifactError(f"cannot write {target}: {_why(exc)}; nothing was written{kept}") from None
        raise


def _why(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    return f"{text} ({exc.filename})" if exc.filename and "tmp" not in str(exc.filename) else text


def file_in_the_way(path: Path) -> Path | None:
    """The nearest existing parent of ``path`` when it is a file (so ``path`` cannot be created)."""
    for parent in Path(path).parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def check_output(path: str | os.PathLike, force: bool) -> None:
    """The one overwrite rule: an existing output is refused unless ``force``; then it is replaced
    atomically (readers see the old file or the new one, never a mix). Checked before any work."""
    target = Path(path)
    if target.is_dir():
        raise ArtifactError(f"-o {target}: is a folder; name a file to write")
    blocked = file_in_the_way(target)
    if blocked:
        raise ArtifactError(f"-o {target}: {blocked} is a file, not a folder")
    if target.exists() and not target.is_file():
        raise ArtifactError(f"-o {target}: exists and is not a regular file (a FIFO, device or socket); bss "
                            "replaces regular files only, even with --force; choose another path")
    if target.exists() and not force:
        raise ArtifactError(f"-o {target}: the file exists; pass --force to replace it, or choose another path")


def write_table(table: pa.Table, path: str | os.PathLike, metadata: dict[str, str], **kwargs) -> None:
    """Write ``table`` with ``metadata`` atomically. Same table and metadata -> same bytes."""
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **kwargs)


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """``dst`` becomes a byte copy of ``src``, atomically."""
    import shutil

    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def require_regular_file(path: str | os.PathLike, label: str = "") -> Path:
    """``path`` as a Path, refused unless it is a regular file (following links): a FIFO would block
    a reader forever, a device or socket is no data. ``label`` prefixes the message (a flag)."""
    p = Path(path)
    where = f"{label} {p}" if label else str(p)
    try:
        if p.is_file():
            return p
        exists = p.exists()
    except (OSError, ValueError):
        exists = False
    if not exists:
        raise ArtifactError(f"{where}: no such file")
    if p.is_dir():
        raise ArtifactError(f"{where}: is a folder; name a file")
    raise ArtifactError(f"{where}: not a regular file (a FIFO, device or socket); bss reads regular files only")


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``bss.*`` metadata of a Parquet file (empty for a foreign Parquet file)."""
    require_regular_file(path)
    try:
        raw = pq.read_schema(path).metadata or {}
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such file") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise ArtifactError(f"{path}: not a readable Parquet file ({exc})") from None
    out = {}
    for k, v in raw.items():
        key = k.decode(errors="replace")
        if key.startswith("bss."):
            out[key] = v.decode(errors="replace")
    return out


def detect_kind(path: str | os.PathLike) -> str | None:
    """The artifact kind of a Parquet file, or None when it carries no ``bss.kind``."""
    return read_metadata(path).get(S.META_KIND)


def require_kind(path: str | os.PathLike, kind: str) -> dict[str, str]:
    """Check that ``path`` is a ``kind`` artifact of a supported version; return its metadata."""
    meta = read_metadata(path)
    found = meta.get(S.META_KIND)
    if found != kind:
        what = f"a '{found}' artifact" if found else "a Parquet file without bss metadata"
        raise ArtifactError(f"{path}: expected a '{kind}' artifact, found {what}")
    version = meta.get(S.META_FORMAT_VERSION)
    readable = S.readable_versions(kind)
    if version not in readable:
        raise ArtifactError(
            f"{path}: format version {version!r} is not supported (this bss reads version "
            f"{' or '.join(readable)}); re-create it with this version of bss"
        )
    return meta


def meta_json(meta: dict[str, str], key: str, default: object = None) -> object:
    """Decode a JSON-valued metadata entry."""
    if key not in meta:
        return default
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError:
        return meta[key]


def check_output_folder(path: str | os.PathLike, force: bool) -> None:
    """The overwrite rule for a partitioned output (a folder of Parquet files): an existing folder is
    refused unless ``force``; then it is replaced whole, once the new one is complete."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise ArtifactError(f"-o {target}: exists and is not a folder; an engine writes a folder of Parquet "
                            "partitions: name a folder")
    blocked = file_in_the_way(target)
    if blocked:
        raise ArtifactError(f"-o {target}: {blocked} is a file, not a folder")
    if target.is_dir() and not force:
        raise ArtifactError(f"-o {target}: the folder exists; pass --force to replace it, or choose another path")


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path`` (an old
    folder there is moved aside first, then removed). On failure or a kill before the rename,
    ``path`` is untouched and the temporary folder removed."""
    import shutil

    target = Path(path)
    check_no_link(target.parent)
    try:
        make_dir(target.parent)
        tmp = target.parent / f".{target.name}.{os.getpid()}-{next(_TEMPORARIES)}.tmp"
        tmp.mkdir()
    except OSError as exc:
        raise ArtifactError(f"cannot write {target}: {_why(exc)}; nothing was written") from None
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.{os.getpid()}-{next(_TEMPORARIES)}.old"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise ArtifactError(f"cannot write {target}: {_why(exc)}; nothing was written") from None
        raise
