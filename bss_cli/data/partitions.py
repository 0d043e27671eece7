"""Partitioned Parquet: one data set written as many files under a folder (as Spark, Ray, Dask
and ``bss ... --engine ray`` write it), read as one table in a fixed order.

The order is the files' paths below the folder, sorted (so ``part-00000`` comes before
``part-00001``), then each file's rows. A row's global number (its ``row``) is its position in
that order, whichever engine reads it. Files or folders whose name starts with ``_`` or ``.``
(``_SUCCESS``, ``.crc``, an engine's temporary files) are not part of the set; a link that leads
outside the folder is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bss_cli.errors import ArtifactError


@dataclass(frozen=True)
class Piece:
    """One row group of one file: the unit of work an engine hands a worker."""

    path: str  # the file
    name: str  # its path below the set's folder, for messages
    group: int  # row group number in the file
    start: int  # global row number of its first row
    rows: int
    first: int = 0  # row number of its first row in the file


@dataclass
class PartitionedSet:
    root: Path
    files: list[Path]
    schema: pa.Schema  # without metadata; the same in every file
    metadata: dict[str, str]  # the first file's schema metadata
    pieces: list[Piece]
    file_rows: list[int]

    @property
    def rows(self) -> int:
        return sum(self.file_rows)

    @property
    def is_folder(self) -> bool:
        return self.root.is_dir()

    def name(self, path: Path) -> str:
        return path.name if not self.is_folder else path.relative_to(self.root).as_posix()

    def read(self, columns: list[str] | None = None) -> pa.Table:
        """The whole set as one table, files in order (one machine)."""
        tables = [pq.read_table(f, columns=columns) for f in self.files]
        return pa.concat_tables([t.replace_schema_metadata(None) for t in tables]) if tables else \
            self.schema.empty_table()


def fingerprint(pset: PartitionedSet, file_hashes: list[str] | None = None) -> str:
    """The set's content fingerprint: a file's own (:func:`bss_cli.artifacts.fingerprint_file`), or for
    a folder the sha256 over each file's path below it and sha256. ``file_hashes`` (full sha256 of
    each file, in order) when they were computed elsewhere (by the workers of an engine)."""
    import hashlib

    from bss_cli.artifacts import fingerprint_file

    hashes = file_hashes if file_hashes is not None else [fingerprint_file(f, 64) for f in pset.files]
    if not pset.is_folder:
        return hashes[0][:16]
    h = hashlib.sha256()
    for f, fp in zip(pset.files, hashes):
        h.update(pset.name(f).encode() + b"\0" + fp.encode())
    return h.hexdigest()[:16]


def _hidden(rel: Path) -> bool:
    return any(part.startswith(("_", ".")) for part in rel.parts)


def list_files(root: Path) -> list[Path]:
    """The set's Parquet files below ``root``, in order; links leading out of ``root`` are refused."""
    real_root = root.resolve()
    files = []
    for path in root.rglob("*.parquet"):
        rel = path.relative_to(root)
        if _hidden(rel):
            continue
        try:
            path.resolve().relative_to(real_root)
        except ValueError:
            raise ArtifactError(f"{path}: a link that leads outside {root}; bss reads a folder's own files only "
                                "(copy the file in)") from None
        if path.is_file():
            files.append(path)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _plain(schema: pa.Schema) -> pa.Schema:
    return schema.remove_metadata()


def schema_difference(a: pa.Schema, b: pa.Schema) -> str:
    only_a = [f.name for f in a if f.name not in b.names]
    only_b = [f.name for f in b if f.name not in a.names]
    typed = [f"'{f.name}' is {b.field(f.name).type}, not {f.type}" for f in a
             if f.name in b.names and b.field(f.name).type != f.type]
    parts = ([f"lacks column(s) {', '.join(only_a)}"] if only_a else []) + \
        ([f"has extra column(s) {', '.join(only_b)}"] if only_b else []) + typed
    if not parts and a.names != b.names:
        parts = [f"has the columns in another order ({', '.join(b.names)})"]
    return "; ".join(parts)


def open_set(path: str | Path, what: str = "data set") -> PartitionedSet:
    """A Parquet file or a folder of Parquet partitions, checked: every file readable, the same
    columns and types in every file. Reads footers only."""
    root = Path(path)
    if root.is_dir():
        files = list_files(root)
        if not files:
            raise ArtifactError(f"{root}: a folder with no .parquet files; expected a {what} written as Parquet "
                                "partitions")
    elif root.is_file():
        files = [root]
    else:
        raise ArtifactError(f"{root}: no such file or folder")
    pieces: list[Piece] = []
    file_rows: list[int] = []
    schema = metadata = None
    start = 0
    for f in files:
        name = f.name if f is root else f.relative_to(root).as_posix()
        try:
            meta = pq.ParquetFile(f).metadata
            file_schema = meta.schema.to_arrow_schema()
        except (pa.ArrowException, OSError) as exc:
            raise ArtifactError(f"{f}: not a readable Parquet file ({str(exc)[:200]})") from None
        if schema is None:
            schema, metadata = _plain(file_schema), {k.decode(): v.decode() for k, v in
                                                     (file_schema.metadata or {}).items()}
        elif not _plain(file_schema).equals(schema):
            raise ArtifactError(f"{f}: its schema differs from {files[0]}'s: it "
                                f"{schema_difference(schema, _plain(file_schema))}; every partition of a {what} "
                                "needs the same columns and types")
        first = 0
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            if n:
                pieces.append(Piece(str(f), name, g, start, n, first))
            start += n
            first += n
        file_rows.append(meta.num_rows)
    return PartitionedSet(root, files, schema, metadata, pieces, file_rows)
