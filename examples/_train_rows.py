"""What the trainer examples share: a manifest's train rows, and leaving torch.distributed together.

Vectors inline in the manifest (as the sample data has them) are concatenated and standardised;
each item is a dict, as Lightning and Hugging Face models like, with the dataset index so a model
can record what it trained on.
"""

from datetime import timedelta

import numpy as np
import pyarrow.parquet as pq
import torch


class TrainRows(torch.utils.data.Dataset):
    def __init__(self, manifest: str):
        t = pq.read_table(manifest)
        train = np.flatnonzero(np.asarray(t["split"].to_pylist()) == "train")
        mods = [c for c in t.column_names if c not in ("sample_id", "label", "split") and not c.startswith("meta_")]
        x = np.concatenate([np.stack(t[m].to_numpy(zero_copy_only=False)) for m in mods], axis=1)[train]
        self.x = torch.tensor((x - x.mean(0)) / (x.std(0) + 1e-6), dtype=torch.float32)
        labels = t["label"].to_pylist()
        classes = sorted(set(labels))
        self.y = torch.tensor([classes.index(labels[i]) for i in train])
        self.sample_ids = [t["sample_id"][int(i)].as_py() for i in train]  # what ScheduleSampler maps through
        self.n_classes, self.dim = len(classes), self.x.shape[1]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "labels": self.y[i], "index": i}


def leave_process_group(wait_s: float = 60) -> None:
    """Leave torch.distributed together, once the function that trained has returned.

    Call it after everything holding the DDP model is gone (``main()`` returned): a DDP model keeps
    the process group alive, and on CPU (gloo) a group that is destroyed while one still holds it
    can hang in torch when that model is freed later (its worker threads never join; seen with the
    Trainer's ``end()`` in this repository's tests). A rank that exits while a peer still talks to
    it can abort that peer ("terminate called without an active exception"), so the ranks first
    meet at a monitored barrier that waits at most ``wait_s`` (if it times out, a peer has left and
    there is nothing more to wait for). `bss train` leaves the same way."""
    import gc

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        gc.collect()  # a model held only in a reference cycle goes now, while its group is still whole
        if dist.get_backend() == "gloo":
            try:
                dist.monitored_barrier(timeout=timedelta(seconds=wait_s))
            except RuntimeError:
                pass
        else:
            dist.barrier()
        dist.destroy_process_group()
