"""Partitioned Parquet on one machine: predictions sets (labels in the rows, one file or a folder of
partitions) score exactly as a manifest plus its predictions file does; scores and schedule folders
read like files; every bad partition is named. The Ray engine's own tests are in test_ray.py."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_manifest_table
from typer.testing import CliRunner

from bss_cli import schema as S
from bss_cli.cli.app import app
from bss_cli.data.partitions import open_set
from bss_cli.errors import ArtifactError
from bss_cli.scheduling.sampler import ScheduleSampler
from bss_cli.scheduling.schedule_io import EPOCH_FOLDER, ScheduleFolder, open_schedule
from bss_cli.scheduling.sums import exact_sum, merge, partial, total
from bss_cli.scoring.criteria import Predictions
from bss_cli.scoring.predictions import predictions_table
from bss_cli.scoring.scores import read_scores

runner = CliRunner()
N, C = 240, 4


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def pair(tmp_path):
    """A manifest with its predictions file, and the same predictions as a labelled table."""
    manifest = make_manifest_table(n=N, n_classes=C, seed=3)
    pq.write_table(manifest, tmp_path / "m.parquet")
    rng = np.random.default_rng(5)
    labels = manifest[S.LABEL].to_numpy()
    preds = Predictions(labels=labels, logits={"audio": rng.normal(size=(N, C)), "video": rng.normal(size=(N, C))},
                        fused_logits=rng.normal(size=(N, C)))
    table = predictions_table(manifest[S.SAMPLE_ID], preds)
    pq.write_table(table, tmp_path / "p.parquet")
    labelled = table.append_column(S.LABEL, manifest[S.LABEL]).append_column(S.SPLIT, manifest[S.SPLIT])
    return tmp_path, labelled


def write_parts(table: pa.Table, folder, parts: int, row_group: int = 17):
    folder.mkdir(parents=True)
    edges = np.linspace(0, table.num_rows, parts + 1).astype(int)
    for k in range(parts):
        pq.write_table(table.slice(edges[k], edges[k + 1] - edges[k]), folder / f"part-{k:05d}.parquet",
                       row_group_size=row_group)
    return folder


def plain(path) -> pa.Table:
    return read_scores(path).table.replace_schema_metadata(None)


def test_a_predictions_set_scores_as_its_manifest_and_predictions_file(pair):
    tmp, labelled = pair
    assert invoke("score", tmp / "m.parquet", "--predictions", tmp / "p.parquet", "-o", tmp / "ref.parquet").exit_code == 0
    want = plain(tmp / "ref.parquet")
    for parts in (1, 2, 4):
        folder = write_parts(labelled, tmp / f"set{parts}", parts)
        r = invoke("score", folder, "-o", tmp / f"s{parts}.parquet")
        assert r.exit_code == 0, r.output
        assert plain(tmp / f"s{parts}.parquet").equals(want)
        meta = read_scores(tmp / f"s{parts}.parquet").metadata
        assert meta[S.META_CLASSES] == '["0", "1", "2", "3"]' and meta[S.META_MANIFEST_FINGERPRINT] == ""
    # one labelled file is a set too
    pq.write_table(labelled, tmp / "one.parquet")
    assert invoke("score", tmp / "one.parquet", "-o", tmp / "one_s.parquet").exit_code == 0
    assert plain(tmp / "one_s.parquet").equals(want)
    # --split val scores the val rows; row numbers stay those of the whole set
    assert invoke("score", tmp / "set2", "-o", tmp / "val.parquet", "--split", "val").exit_code == 0
    assert invoke("score", tmp / "m.parquet", "--predictions", tmp / "p.parquet", "-o", tmp / "refval.parquet",
                  "--split", "val").exit_code == 0
    assert plain(tmp / "val.parquet").equals(plain(tmp / "refval.parquet"))


def test_scores_and_schedules_read_a_scores_folder_as_one_file(pair):
    tmp, labelled = pair
    write_parts(labelled, tmp / "set", 3)
    assert invoke("score", tmp / "set", "-o", tmp / "s.parquet").exit_code == 0
    scores = pq.read_table(tmp / "s.parquet")
    folder = tmp / "sf"
    folder.mkdir()
    for k, (a, b) in enumerate([(0, 50), (50, 51), (51, scores.num_rows)]):
        pq.write_table(scores.slice(a, b - a), folder / f"part-{k:05d}.parquet")
    assert read_scores(folder).table.equals(read_scores(tmp / "s.parquet").table)
    for scheduler in ("curriculum", "learned"):
        assert invoke("schedule", tmp / "s.parquet", "-o", tmp / f"{scheduler}.parquet", "--scheduler", scheduler,
                      "--epochs", 3).exit_code == 0
        r = invoke("schedule", folder, "-o", tmp / f"{scheduler}_f.parquet", "--scheduler", scheduler, "--epochs", 3)
        assert r.exit_code == 0, r.output
        assert (tmp / f"{scheduler}.parquet").read_bytes() == (tmp / f"{scheduler}_f.parquet").read_bytes()
    # and a pipe reads the folder too
    r = invoke("schedule", folder, "-o", "-", "--epoch", 1, "--format", "csv")
    assert r.exit_code == 0 and r.output.splitlines()[0].startswith('"epoch","position","sample_id"')


def split_schedule(path, folder, cuts=(1, 2)):
    """The layout bss schedule --engine ray writes, from a schedule file (each epoch cut in pieces)."""
    f = open_schedule(path)
    meta = {k.encode(): v.encode() for k, v in f.metadata.items()}
    for e in f.epochs:
        t = f.epoch(e)
        d = folder / EPOCH_FOLDER.format(e)
        d.mkdir(parents=True)
        edges = [0, *[t.num_rows * c // (len(cuts) + 1) for c in cuts], t.num_rows]
        for k, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
            pq.write_table(t.slice(a, b - a).replace_schema_metadata(meta), d / f"part-{k:05d}.parquet")


def test_a_schedule_folder_reads_like_the_file_in_samplers(pair):
    tmp, labelled = pair
    write_parts(labelled, tmp / "set", 2)
    assert invoke("score", tmp / "set", "-o", tmp / "s.parquet").exit_code == 0
    assert invoke("schedule", tmp / "s.parquet", "-o", tmp / "sc.parquet", "--scheduler", "learned",
                  "--epochs", 3).exit_code == 0
    split_schedule(tmp / "sc.parquet", tmp / "scf")
    folder, file = open_schedule(tmp / "scf"), open_schedule(tmp / "sc.parquet")
    assert isinstance(folder, ScheduleFolder) and folder.epochs == file.epochs == [0, 1, 2]
    assert folder.metadata == file.metadata
    for e in file.epochs:
        assert folder.epoch(e).equals(file.epoch(e).replace_schema_metadata(None))
    for world in (1, 2):
        for rank in range(world):
            a = ScheduleSampler(tmp / "scf", rank=rank, world_size=world, rows=True)
            b = ScheduleSampler(tmp / "sc.parquet", rank=rank, world_size=world, rows=True)
            for e in range(3):
                a.set_epoch(e), b.set_epoch(e)
                assert list(a) == list(b) and len(a) == len(b)
    with pytest.raises(Exception, match="not epoch 7"):
        folder.epoch(7)
    # a folder that is not the layout, or misses an epoch, is refused by name
    (tmp / "scf" / "stray").mkdir()
    with pytest.raises(ArtifactError, match="stray: not an epoch folder"):
        ScheduleFolder(tmp / "scf")
    (tmp / "scf" / "stray").rmdir()
    import shutil

    shutil.rmtree(tmp / "scf" / EPOCH_FOLDER.format(1))
    with pytest.raises(ArtifactError, match="folder is missing or extra"):
        ScheduleFolder(tmp / "scf")


def test_bad_partitions_are_named_and_nothing_is_written(pair):
    tmp, labelled = pair
    folder = write_parts(labelled, tmp / "set", 3)
    out = tmp / "s.parquet"
    # a partition with another schema
    pq.write_table(labelled.drop_columns([S.SPLIT]).slice(0, 5), folder / "part-00009.parquet")
    r = invoke("score", folder, "-o", out)
    assert r.exit_code == 1 and "part-00009.parquet: its schema differs" in r.output and "lacks column(s) split" in r.output
    assert "Traceback" not in r.output and not out.exists()
    (folder / "part-00009.parquet").unlink()
    # the same sample in two partitions
    pq.write_table(labelled.slice(10, 1), folder / "part-00010.parquet")
    r = invoke("score", folder, "-o", out)
    assert r.exit_code == 1 and not out.exists()
    assert "part-00000.parquet and" in r.output and "part-00010.parquet" in r.output and "appears in" in r.output
    (folder / "part-00010.parquet").unlink()
    # a label outside the logits' classes, named by file and row
    bad = labelled.slice(0, 20).set_column(labelled.schema.get_field_index(S.LABEL), S.LABEL,
                                           pa.array([0] * 19 + [C], pa.int64()))
    pq.write_table(bad, folder / "part-00011.parquet")
    r = invoke("score", folder, "-o", out)
    assert r.exit_code == 1 and "part-00011.parquet" in r.output and "row 19" in r.output and "class code" in r.output
    (folder / "part-00011.parquet").unlink()
    # files that are not part of the set: hidden, engine markers, other suffixes
    (folder / "_SUCCESS").write_text("")
    (folder / ".part-00000.parquet.crc").write_text("x")
    (folder / "notes.txt").write_text("x")
    assert [f.name for f in open_set(folder).files] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert invoke("score", folder, "-o", out).exit_code == 0


def test_a_link_out_of_the_folder_is_refused(pair):
    tmp, labelled = pair
    folder = write_parts(labelled, tmp / "set", 2)
    pq.write_table(labelled.slice(0, 3), tmp / "outside.parquet")
    (folder / "part-00005.parquet").symlink_to(tmp / "outside.parquet")
    r = invoke("score", folder, "-o", tmp / "s.parquet")
    assert r.exit_code == 1 and "leads outside" in r.output


def test_flags_that_do_not_fit_a_set_are_refused(pair):
    tmp, labelled = pair
    folder = write_parts(labelled, tmp / "set", 2)
    r = invoke("score", folder, "-o", tmp / "s.parquet", "--predictions", tmp / "p.parquet")
    assert r.exit_code == 1 and "drop --predictions" in r.output
    r = invoke("score", tmp / "m.parquet", "-o", tmp / "s", "--engine", "ray")
    assert r.exit_code == 1 and "is a manifest" in r.output
    r = invoke("schedule", tmp / "s.parquet", "-o", "-", "--engine", "ray")
    assert r.exit_code == 1 and "writes a folder" in r.output
    nosplit = write_parts(labelled.drop_columns([S.SPLIT]), tmp / "nosplit", 1)
    r = invoke("score", nosplit, "-o", tmp / "s.parquet", "--split", "val")
    assert r.exit_code == 1 and "no 'split' column" in r.output


def test_a_missing_ray_is_one_line(pair, tmp_path):
    tmp, labelled = pair
    folder = write_parts(labelled, tmp / "set", 2)
    code = ("import sys; sys.modules['ray'] = None\n"
            "from bss_cli.cli.app import main\n"
            f"sys.argv = ['bss', 'score', {str(folder)!r}, '-o', {str(tmp / 'out')!r}, '--engine', 'ray']\n"
            "main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "needs Ray Data, which is not installed" in r.stderr and "bss[ray]" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp / "out").exists()


def test_exact_sum_is_the_correctly_rounded_sum_in_any_partition():
    rng = np.random.default_rng(0)
    for x in (rng.random(10_001) + 1, rng.normal(size=5000) * 1e12, np.array([1e-300, 1.0, -1.0, 3e-310]),
              np.exp(rng.normal(size=3000) * 30)):
        want = math.fsum(x)
        assert exact_sum(x) == want
        for k in (2, 3, 7):
            pieces = np.array_split(rng.permutation(x), k)
            assert total(merge(*[partial(p) for p in pieces])) == want
    assert exact_sum(np.array([])) == 0.0
