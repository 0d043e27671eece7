"""ScheduledRows: schedule order for data read by row index (Parquet row groups), with DataLoader
workers, ranks, and exact resume; checked against the schedule file itself."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_manifest_table
from typer.testing import CliRunner

from bss_cli.cli.app import app
from bss_cli.errors import ConfigError
from bss_cli.scheduling.sampler import shard
from bss_cli.scheduling.schedule_io import ScheduleFile
from bss_cli.scheduling.streaming import ParquetRows, ScheduledRows

EPOCHS = 4


@pytest.fixture
def setup(tmp_path):
    table = make_manifest_table(n=90)
    pq.write_table(table, tmp_path / "m.parquet", row_group_size=7)  # many row groups
    runner = CliRunner()
    assert runner.invoke(app, ["score", str(tmp_path / "m.parquet"), "-o", str(tmp_path / "s.parquet")]).exit_code == 0
    r = runner.invoke(app, ["schedule", str(tmp_path / "s.parquet"), "-o", str(tmp_path / "sc.parquet"), "--epochs",
                            str(EPOCHS), "--t-grow", "3"])
    assert r.exit_code == 0, r.output
    source = pa.table({"row": np.arange(90), "sample_id": table["sample_id"]})
    pq.write_table(source, tmp_path / "rows.parquet", row_group_size=11)
    return tmp_path / "sc.parquet", tmp_path / "rows.parquet"


def rows_of(loader, rows: ScheduledRows, epoch: int) -> list[int]:
    rows.set_epoch(epoch)
    return [int(r) for batch in loader for r in batch["row"]]


@pytest.mark.parametrize("workers", [0, 2])
def test_every_epoch_in_schedule_order_with_workers(setup, workers):
    from torch.utils.data import DataLoader

    schedule, source = setup
    rows = ScheduledRows(schedule, ParquetRows(source), batch_size=4, rank=0, world_size=1)
    loader = DataLoader(rows, batch_size=None, num_workers=workers)
    f = ScheduleFile(schedule)
    sizes = set()
    for e in range(EPOCHS):
        want = f.epoch(e)["row"].to_pylist()
        assert rows_of(loader, rows, e) == want
        sizes.add(len(want))
    assert len(sizes) > 1  # a growing curriculum


def test_ranks_shard_the_epoch_and_resume_on_another_world_size(setup):
    schedule, source = setup
    order = np.array(ScheduleFile(schedule).epoch(1)["row"].to_pylist())
    two = [ScheduledRows(schedule, ParquetRows(source), batch_size=3, rank=r, world_size=2) for r in range(2)]
    for r, ds in enumerate(two):
        ds.set_epoch(1)
        assert [int(x) for b in ds for x in b["row"]] == shard(order, r, 2).tolist()
    state = two[0].state_at(1, 2)  # two batches of 3 on each of 2 ranks
    assert state == {"epoch": 1, "offset": 12}
    one = ScheduledRows(schedule, ParquetRows(source), batch_size=3, rank=0, world_size=1)
    one.load_state_dict(state)
    assert [int(x) for b in one for x in b["row"]] == order[12:].tolist()
    assert one.state_at(1, 1) == {"epoch": 1, "offset": 15}  # counted from where the resumed pass started


def test_parquet_rows_reads_by_index_and_refuses_what_it_lacks(setup, tmp_path):
    _, source = setup
    p = ParquetRows(source, columns=["row"])
    assert [r["row"] for r in p.take(np.array([89, 0, 45, 12, 11]))] == [89, 0, 45, 12, 11]
    with pytest.raises(ConfigError, match="row 90 is scheduled but the file has 90 rows"):
        p.take(np.array([90]))
    small = tmp_path / "small.parquet"
    pq.write_table(pa.table({"row": np.arange(5)}), small)
    with pytest.raises(ConfigError, match="has no sample_id column, so the rows it returns cannot be checked"):
        ScheduledRows(setup[0], ParquetRows(small), batch_size=4, rank=0, world_size=1)
    with pytest.raises(ConfigError, match="the source has 5 rows"):
        ScheduledRows(setup[0], ParquetRows(small), batch_size=4, rank=0, world_size=1, trust_row_order=True)


@pytest.mark.parametrize("layout", ["sorted by label", "train rows only", "reversed row groups"])
def test_a_file_in_another_row_order_or_with_only_the_train_rows_trains_the_scheduled_samples(setup, tmp_path,
                                                                                                 layout):
    """The rows are looked up by sample_id: the same 90 rows sorted by label (it trained 127-155
    wrong samples an epoch when read by row number), or only the train rows, give every epoch's
    scheduled samples, in order."""
    from torch.utils.data import DataLoader

    schedule, _ = setup
    manifest = pq.read_table(setup[0].parent / "m.parquet")
    table = manifest.select(["sample_id", "label", "split"])
    if layout == "sorted by label":
        table = table.sort_by([("label", "ascending"), ("sample_id", "descending")])
    elif layout == "train rows only":
        table = table.filter(pa.compute.equal(table["split"], "train"))
    else:
        table = table.take(pa.array(np.arange(table.num_rows)[::-1]))
    pq.write_table(table, tmp_path / "other.parquet", row_group_size=13)
    rows = ScheduledRows(schedule, ParquetRows(tmp_path / "other.parquet"), batch_size=4, rank=0, world_size=1,
                         collate=lambda items: items)
    loader = DataLoader(rows, batch_size=None, num_workers=2)
    f = ScheduleFile(schedule)
    for e in range(EPOCHS):
        rows.set_epoch(e)
        assert [r["sample_id"] for batch in loader for r in batch] == f.epoch(e)["sample_id"].to_pylist()


def test_a_file_without_some_scheduled_samples_is_refused(setup, tmp_path):
    schedule, _ = setup
    table = pq.read_table(setup[0].parent / "m.parquet").select(["sample_id", "label"]).slice(0, 40)
    pq.write_table(table, tmp_path / "part.parquet")
    with pytest.raises(ConfigError, match="sample"):
        ScheduledRows(schedule, ParquetRows(tmp_path / "part.parquet"), batch_size=4, rank=0, world_size=1)
