"""The Ray Data engine against a real cluster: a head and a second node started with ``ray start``
on 127.0.0.1 (token authentication on, as Ray's default), the CLI pointed at it through
RAY_ADDRESS. Scores and schedules from Ray are the one-machine bytes, with 1, 2 and 4 partitions.

One test function holds every check: two xdist workers must not each start a cluster (a cluster's
processes are found by its port and stopped at the end, nothing else's)."""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import free_port

from bss_cli import schema as S
from bss_cli.scheduling.sampler import ScheduleSampler
from bss_cli.scheduling.schedule_io import open_schedule
from bss_cli.scoring.scores import read_scores

pytestmark = pytest.mark.integration
if importlib.util.find_spec("ray") is None:  # found, not imported: the default tier collects this file
    pytest.skip("make test-integration installs ray", allow_module_level=True)

BIN = Path(sys.executable).parent
N, C = 100_000, 6


def predictions_set(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    za, zv = rng.normal(size=(n, C)).astype(np.float32), rng.normal(size=(n, C)).astype(np.float32)

    def lists(z):
        return pa.FixedSizeListArray.from_arrays(pa.array(z.ravel()), C).cast(pa.list_(pa.float32()))

    return pa.table({S.SAMPLE_ID: pa.array([f"vid-{i:07d}" for i in range(n)]),
                     S.LABEL: pa.array(rng.integers(0, C, n)),
                     S.SPLIT: pa.array(np.array(["train", "val", "test"])[rng.choice(3, n, p=[0.8, 0.1, 0.1])]),
                     "logits_audio": lists(za), "logits_video": lists(zv)})


def write_parts(table: pa.Table, folder: Path, parts: int) -> Path:
    folder.mkdir(parents=True)
    edges = np.linspace(0, table.num_rows, parts + 1).astype(int)
    for k in range(parts):
        pq.write_table(table.slice(edges[k], edges[k + 1] - edges[k]), folder / f"part-{k:05d}.parquet",
                       row_group_size=20_000)
    return folder


def _cluster_pids(port: int) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"127.0.0.1:{port}" in cmd or f"--port={port}" in cmd or f"gcs_server_port={port}" in cmd:
            pids.append(int(proc.name))
    return pids


class Cluster:
    """A head and a worker node on 127.0.0.1, one CPU each."""

    def __init__(self, folder: Path):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                    "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
        self.env.pop("RAY_ADDRESS", None)
        common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats", "--block"]
        self.logs = [open(folder / "head.log", "w"), open(folder / "node.log", "w")]
        self.procs = [subprocess.Popen([str(BIN / "ray"), "start", "--head", f"--port={self.port}",
                                        "--include-dashboard=false", *common], env=self.env,
                                       stdout=self.logs[0], stderr=subprocess.STDOUT)]
        self._wait(1)
        self.procs.append(subprocess.Popen([str(BIN / "ray"), "start", f"--address={self.address}", *common],
                                           env=self.env, stdout=self.logs[1], stderr=subprocess.STDOUT))
        self._wait(2)

    def _wait(self, nodes: int) -> None:
        code = ("import ray; ray.init(address=%r, logging_level='ERROR'); "
                "print(sum(n['Alive'] for n in ray.nodes()))" % self.address)
        deadline = time.time() + 90
        while time.time() < deadline:
            r = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=60)
            if r.returncode == 0 and r.stdout.strip().splitlines()[-1:] == [str(nodes)]:
                return
            time.sleep(1)
        raise RuntimeError(f"the Ray cluster at {self.address} did not reach {nodes} node(s)")

    def bss(self, *args, address: str | None = None) -> subprocess.CompletedProcess:
        env = {**self.env, "RAY_ADDRESS": address or self.address}
        return subprocess.run([str(BIN / "bss"), *map(str, args)], env=env, capture_output=True, text=True, timeout=300)

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        time.sleep(1)
        for pid in _cluster_pids(self.port):
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        for f in self.logs:
            f.close()


def local(*args) -> None:
    r = subprocess.run([str(BIN / "bss"), *map(str, args)], capture_output=True, text=True, timeout=300,
                       env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    assert r.returncode == 0, r.stderr


def same_schedule(a, b) -> None:
    fa, fb = open_schedule(a), open_schedule(b)
    assert fa.epochs == fb.epochs and fa.metadata == fb.metadata
    for e in fa.epochs:
        assert fa.epoch(e).replace_schema_metadata(None).equals(fb.epoch(e).replace_schema_metadata(None)), e


def test_ray_cluster_gives_the_one_machine_bytes(tmp_path):
    table = predictions_set(N)
    cluster = Cluster(tmp_path)
    try:
        # scores: 1, 2 and 4 partitions, each against the one-machine file
        local("score", write_parts(table, tmp_path / "set1", 1), "-o", tmp_path / "one.parquet")
        want = read_scores(tmp_path / "one.parquet")
        for parts in (1, 2, 4):
            folder = tmp_path / f"set{parts}" if parts == 1 else write_parts(table, tmp_path / f"set{parts}", parts)
            r = cluster.bss("score", folder, "-o", tmp_path / f"scores{parts}", "--engine", "ray")
            assert r.returncode == 0, r.stderr
            got = read_scores(tmp_path / f"scores{parts}")
            assert got.metadata == {**want.metadata, S.META_SOURCE: f"predictions:set{parts}",
                                    S.META_SOURCE_FINGERPRINT: got.metadata[S.META_SOURCE_FINGERPRINT]}
            assert got.table.replace_schema_metadata(None).equals(want.table.replace_schema_metadata(None))
        # schedules: every scheduler the engine draws, against one machine on the same scores folder
        scores = tmp_path / "scores4"
        variants = {"curriculum": ["--t-grow", 2], "ordered": ["--ordered", "--t-grow", 2],
                    "anti-curriculum": ["--t-grow", 2], "paced-random": ["--t-grow", 2], "random": [],
                    "learned": [], "paper": ["--rule", "paper", "--temperature", 0.3],
                    "paced": ["--paced", "--t-grow", 2]}
        for name, extra in variants.items():
            scheduler = {"ordered": "curriculum", "paper": "learned", "paced": "learned"}.get(name, name)
            args = ["schedule", scores, "--scheduler", scheduler, "--epochs", 3, "--seed", 11, *extra]
            local(*args, "-o", tmp_path / f"{name}.parquet")
            r = cluster.bss(*args, "-o", tmp_path / f"{name}_ray", "--engine", "ray")
            assert r.returncode == 0, r.stderr
            same_schedule(tmp_path / f"{name}.parquet", tmp_path / f"{name}_ray")
        # the learned order from 1 and 2 score partitions is the same bytes too
        for parts in (1, 2):
            r = cluster.bss("schedule", tmp_path / f"scores{parts}", "-o", tmp_path / f"learned{parts}_ray",
                            "--scheduler", "learned", "--epochs", 3, "--seed", 11, "--engine", "ray")
            assert r.returncode == 0, r.stderr
            a, b = open_schedule(tmp_path / f"learned{parts}_ray"), open_schedule(tmp_path / "learned.parquet")
            for e in range(3):
                assert a.epoch(e)[S.ROW].equals(b.epoch(e)[S.ROW])
        # consumers read the folder as the file
        for world in (1, 2):
            for rank in range(world):
                x = ScheduleSampler(tmp_path / "learned_ray", rank=rank, world_size=world, rows=True)
                y = ScheduleSampler(tmp_path / "learned.parquet", rank=rank, world_size=world, rows=True)
                for e in range(3):
                    x.set_epoch(e), y.set_epoch(e)
                    assert list(x) == list(y)
        r = cluster.bss("inspect", tmp_path / "learned_ray")
        assert r.returncode == 0 and "schedule" in r.stdout, r.stdout + r.stderr

        # bad input: one line, the file or the address named, nothing written
        dup = write_parts(table.slice(0, 30_000), tmp_path / "dup", 3)
        pq.write_table(table.slice(12_345, 1), dup / "part-00007.parquet")
        r = cluster.bss("score", dup, "-o", tmp_path / "dup_scores", "--engine", "ray")
        assert r.returncode == 1 and "vid-0012345" in r.stderr and "part-00001.parquet and" in r.stderr
        assert "part-00007.parquet" in r.stderr and "Traceback" not in r.stderr
        assert not (tmp_path / "dup_scores").exists() and not list(tmp_path.glob(".dup_scores*"))
        odd = write_parts(table.slice(0, 1000), tmp_path / "odd", 2)
        pq.write_table(table.slice(0, 10).drop_columns([S.SPLIT]), odd / "part-00002.parquet")
        r = cluster.bss("score", odd, "-o", tmp_path / "odd_scores", "--engine", "ray")
        assert r.returncode == 1 and "part-00002.parquet: its schema differs" in r.stderr
        assert not (tmp_path / "odd_scores").exists()
        closed = free_port()
        r = cluster.bss("score", tmp_path / "set2", "-o", tmp_path / "nowhere", "--engine", "ray",
                        address=f"127.0.0.1:{closed}")
        assert r.returncode == 1 and f"RAY_ADDRESS=127.0.0.1:{closed}: no Ray cluster answers there" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "nowhere").exists()
        # an existing output is refused without --force, replaced whole with it
        r = cluster.bss("score", tmp_path / "set2", "-o", tmp_path / "scores2", "--engine", "ray")
        assert r.returncode == 1 and "the folder exists; pass --force" in r.stderr
        (tmp_path / "scores2" / "stale.parquet").write_bytes(b"old")
        r = cluster.bss("score", tmp_path / "set2", "-o", tmp_path / "scores2", "--engine", "ray", "--force")
        assert r.returncode == 0 and not (tmp_path / "scores2" / "stale.parquet").exists()
        assert read_scores(tmp_path / "scores2").table.replace_schema_metadata(None).equals(
            want.table.replace_schema_metadata(None))
    finally:
        cluster.stop()
    assert not _cluster_pids(cluster.port)
    shutil.rmtree(tmp_path, ignore_errors=True)
