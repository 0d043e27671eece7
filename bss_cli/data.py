"""In-memory tensors for a manifest's vector modalities (torch)."""

from __future__ import annotations

import numpy as np
import torch

from bss_cli.manifest import Manifest


class VectorData:
    """Every modality as one [N, D] float32 tensor; batches are index lookups (no DataLoader).

    For vector features that fit in memory this is far faster than a DataLoader with a
    per-sample ``__getitem__``, and it is deterministic.
    """

    def __init__(self, manifest: Manifest, device: str | torch.device = "cpu"):
        if not manifest.features:
            raise ValueError("VectorData needs a manifest loaded with load_features=True")
        self.device = torch.device(device)
        self.names = manifest.modality_names
        self.x = {m: torch.from_numpy(np.ascontiguousarray(manifest.features[m])).to(self.device) for m in self.names}
        self.y = torch.from_numpy(manifest.labels.astype(np.int64)).to(self.device)
        self.dims = {m: int(v.shape[1]) for m, v in self.x.items()}
        self.n_classes = manifest.n_classes

    def batch(self, idx: torch.Tensor | np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        idx = torch.as_tensor(idx, device=self.device, dtype=torch.long)
        return {m: v.index_select(0, idx) for m, v in self.x.items()}, self.y.index_select(0, idx)

    def standardisation(self, rows: np.ndarray) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per-feature mean and std over ``rows`` (the train split), for the model's buffers."""
        idx = torch.as_tensor(rows, device=self.device, dtype=torch.long)
        return {m: (v[idx].mean(0), v[idx].std(0, unbiased=False)) for m, v in self.x.items()}


class _Batches(torch.utils.data.Dataset):
    """Batched access for a DataLoader: ``__getitems__`` fetches a whole batch in one lookup."""

    def __init__(self, data: VectorData):
        self.data = data

    def __len__(self) -> int:
        return len(self.data.y)

    def __getitem__(self, i: int):
        return self.__getitems__([i])

    def __getitems__(self, rows: list[int]):
        rows_t = torch.as_tensor(rows, dtype=torch.long)
        x, y = self.data.batch(rows_t.to(self.data.device))
        return rows_t, x, y


def _as_is(batch):
    return batch


def batch_loader(data: VectorData, sampler, batch_size: int, workers: int, device: torch.device):
    """A DataLoader over ``sampler``'s order yielding (rows, inputs, labels) batches.

    With ``workers`` > 0 the batches are assembled in worker processes (data on the CPU) and
    pinned for a fast copy to a GPU.
    """
    batches = torch.utils.data.BatchSampler(sampler, batch_size, drop_last=False)
    pin = workers > 0 and torch.device(device).type == "cuda"
    return torch.utils.data.DataLoader(_Batches(data), batch_sampler=batches, num_workers=workers,
                                       collate_fn=_as_is, pin_memory=pin, persistent_workers=False)
