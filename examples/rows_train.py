"""Schedule order for data read by row index (no map-style dataset): ScheduledRows over a Parquet
file read a row group at a time, with DataLoader workers and ranks.

    bss score data.parquet -o scores.parquet
    bss schedule scores.parquet -o schedule.parquet --epochs 10 --t-grow 5
    python examples/rows_train.py data.parquet schedule.parquet --epochs 10 --workers 2
    torchrun --nproc_per_node 2 examples/rows_train.py data.parquet schedule.parquet --epochs 10

The manifest itself is the row store here (the schedule's rows are its rows); any Parquet file with
one row per manifest row, in manifest order, serves.
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
from _train_rows import leave_process_group  # noqa: E402

from bss_cli.scheduling.streaming import ParquetRows, ScheduledRows  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest")
    ap.add_argument("schedule")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--record", help="write the sample ids each epoch trained on (per rank) to RECORD.rankN.json")
    args = ap.parse_args(argv)
    rows = ScheduledRows(args.schedule, ParquetRows(args.manifest, columns=["sample_id", "label"]),
                         batch_size=args.batch_size, collate=lambda items: items)  # rank from torchrun
    loader = DataLoader(rows, batch_size=None, num_workers=args.workers)
    trained: dict[int, list] = {}
    for epoch in range(args.epochs):
        rows.set_epoch(epoch)
        for batch in loader:  # one item = one batch of row dicts, in schedule order
            trained.setdefault(epoch, []).extend(r["sample_id"] for r in batch)
            labels = torch.tensor([r["label"] for r in batch])  # ... your model's step here
    rank = rows.sampler.rank
    if args.record:
        Path(f"{args.record}.rank{rank}.json").write_text(json.dumps(trained))
    if rank == 0:
        print(f"read {args.epochs} epochs: " + ", ".join(str(len(v)) for v in trained.values())
              + " rows per epoch on rank 0")


if __name__ == "__main__":
    main()
    leave_process_group()  # after main(): its DDP model is freed while the process group is still whole
