from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Parallel workers share the cores: one thread each for torch, numpy's BLAS and pyarrow (two
    # workers of two OpenMP threads on two cores wait on each other). Set before they are imported.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"


def run_processes(cmd, *, timeout: float, env=None, cwd=None) -> subprocess.CompletedProcess:
    """Run a command that starts several processes (torchrun and its ranks).

    Past ``timeout`` every process of its tree gets SIGABRT first, so each Python rank prints where
    it is stuck (``PYTHONFAULTHANDLER``), then SIGKILL: the failure shows the stacks, and no rank is
    left behind to slow the rest of the suite (torchrun starts each rank in a session of its own,
    so killing torchrun alone leaves them running). Returns the CompletedProcess, with returncode
    ``"timeout"`` when it had to be stopped."""
    env = {**(os.environ if env is None else env), "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    try:
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        tree = _descendants(proc.pid) + [proc.pid]
        for sig, wait in ((signal.SIGABRT, 5), (signal.SIGKILL, 0)):
            for pid in tree:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(wait)
        out, err = proc.communicate()
        return subprocess.CompletedProcess(cmd, "timeout", out, f"[stopped after {timeout:.0f} s]\n" + err)


def _descendants(pid: int) -> list[int]:
    """Child processes of ``pid``, deepest first (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found += _descendants(child) + [child]
    return found


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sarcasm_folder(root: Path, sizes: dict[str, int], texts: tuple[str, str], json_list=()) -> Path:
    """A Sarcasm-layout folder: ``dataset_image/`` and one ``SPLIT.json`` per split of ``sizes``,
    each with 2 * n items (labels 0 and 1, image shade and text by label), as JSON lines, or as one
    JSON list for the splits in ``json_list``."""
    import json

    from PIL import Image

    (root / "dataset_image").mkdir(parents=True)
    for split, n in sizes.items():
        items = []
        for i in range(n):
            for k in range(2):
                name = f"{split}{i}{k}"
                Image.new("RGB", (12, 10), (120 * k, 60, 60)).save(root / "dataset_image" / f"{name}.jpg")
                items.append({"image": name, "text": texts[k], "label": k})
        text = json.dumps(items) if split in json_list else "\n".join(json.dumps(x) for x in items)
        (root / f"{split}.json").write_text(text)
    return root


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
