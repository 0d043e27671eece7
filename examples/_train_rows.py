"""The dataset both trainer examples use: a manifest's train rows, exposing their sample ids.

Vectors inline in the manifest (as the sample data has them) are concatenated and standardised;
each item is a dict, as Lightning and Hugging Face models like, with the dataset index so a model
can record what it trained on.
"""

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
