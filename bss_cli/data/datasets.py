"""A manifest's samples as tensors (torch): vectors held in memory, audio and images decoded on
demand (in DataLoader workers when ``workers`` > 0, with an optional on-disk spectrogram cache)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bss_cli.data.manifest import Manifest
from bss_cli.data.media import cached_spectrogram, clip_plan, load_frames, load_volume


class ManifestData:
    """``batch(rows)`` gives ({modality: tensor [B, ...]}, labels [B]) for manifest rows.

    Vector modalities are one [N, D] float32 tensor each on ``device``, so their batches are
    index lookups, far faster than a per-sample ``__getitem__``. Audio becomes a log spectrogram
    [F, T], images [frames, 3, S, S]; ``train=True`` batches get the image augmentations.
    """

    def __init__(self, manifest: Manifest, device: str | torch.device = "cpu", workers: int = 0,
                 cache_dir: str | Path | None = None):
        if manifest.modalities and not (manifest.features or manifest.paths):
            raise ValueError("ManifestData needs a manifest loaded with load_features=True")
        self.workers = workers
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.media = manifest.media
        self.kinds = {m: mod.kind for m, mod in manifest.modalities.items()}
        self.raw = {m: manifest.paths[m] for m in manifest.paths}
        # with workers the batches are built in other processes, so the data stays on the CPU
        self.device = torch.device(device) if workers == 0 else torch.device("cpu")
        self.names = manifest.modality_names
        self.x = {m: torch.from_numpy(np.ascontiguousarray(manifest.features[m])).to(self.device)
                  for m in manifest.features}
        self.y = torch.from_numpy(manifest.labels.astype(np.int64)).to(self.device)
        self.dims: dict[str, int | list[int]] = {m: int(v.shape[1]) for m, v in self.x.items()}
        for m, mod in manifest.modalities.items():
            if mod.kind == "array":  # flattened in x; the encoder sees the [A, B] shape
                self.dims[m] = list(mod.shape)
        self.layouts = {m: mod.layout for m, mod in manifest.modalities.items() if mod.kind == "volume"}
        self.images = manifest.images  # per image modality: channels and normalisation (depth: 1, none)
        self.clip = manifest.clip  # modalities sampled in step inside each row's window (NVGesture)
        size = self.media.image_size
        for m in self.raw:
            kind = self.kinds[m]
            self.dims[m] = self.media.spectrogram_shape if kind == "audio" else \
                [self.media.frames, self.images.get(m, {}).get("channels", 3), size, size] if kind == "image" else \
                [manifest.modalities[m].shape[0], self.media.frames, size, size]
        self.dims = {m: self.dims[m] for m in self.names}
        self.n_classes = manifest.n_classes

    @property
    def has_raw(self) -> bool:
        return bool(self.raw)

    def _decode(self, m: str, row: int, train: bool, plan=None) -> torch.Tensor:
        """One row's tensor of raw modality ``m``; ``plan`` = (window steps, crop) of a clip."""
        steps, crop = (None, None) if plan is None or m not in self.clip["from"] else plan
        if steps is not None:
            steps = steps + int(self.clip["from"][m][row])
        if self.kinds[m] == "audio":
            return cached_spectrogram(self.raw[m][row], self.media, self.cache_dir)
        if self.kinds[m] == "volume":
            return load_volume(self.raw[m][row], self.media, self.layouts[m], steps=steps, crop=crop)
        image = self.images.get(m, {})
        return load_frames(self.raw[m][row], self.media, train, indices=steps, crop=crop,
                           channels=image.get("channels", 3), normalize=image.get("normalize", "imagenet"))

    def batch(self, idx, train: bool = False) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        idx = torch.as_tensor(idx, dtype=torch.long)
        on_device = idx.to(self.device)
        out = {m: v.index_select(0, on_device) for m, v in self.x.items()}
        rows = idx.tolist()
        # one plan per sample, shared by its modalities: the same window steps and the same crop
        plans = [clip_plan(int(self.clip["length"][r]), self.media, train) for r in rows] if self.clip else [None] * len(rows)
        for m in self.raw:
            out[m] = torch.stack([self._decode(m, r, train, p) for r, p in zip(rows, plans)]).to(self.device)
        return {m: out[m] for m in self.names}, self.y.index_select(0, on_device)

    def iter_batches(self, rows: np.ndarray, batch_size: int):
        """(inputs, labels) of ``rows`` in order; raw modalities are decoded by the workers."""
        if not self.has_raw or self.workers == 0:
            for start in range(0, len(rows), batch_size):
                yield self.batch(rows[start:start + batch_size])
            return
        batches = [rows[s:s + batch_size].tolist() for s in range(0, len(rows), batch_size)]
        loader = torch.utils.data.DataLoader(_Batches(self, train=False), batch_sampler=batches,
                                             num_workers=self.workers, collate_fn=_as_is)
        for _, x, y in loader:
            yield x, y

    def standardisation(self, rows: np.ndarray) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per-feature mean and std of the vector modalities over ``rows`` (the train split)."""
        idx = torch.as_tensor(rows, device=self.device, dtype=torch.long)
        return {m: (v[idx].mean(0), v[idx].std(0, unbiased=False)) for m, v in self.x.items()}


class _Batches(torch.utils.data.Dataset):
    """Batched access for a DataLoader: ``__getitems__`` fetches a whole batch in one call."""

    def __init__(self, data: ManifestData, train: bool):
        self.data, self.train = data, train

    def __len__(self) -> int:
        return len(self.data.y)

    def __getitem__(self, i: int):
        return self.__getitems__([i])

    def __getitems__(self, rows):
        """``rows``: a list (from a DataLoader) or a numpy slice of a schedule's order (read-only:
        copied, 8 bytes a row)."""
        rows_t = torch.tensor(rows, dtype=torch.long)
        x, y = self.data.batch(rows_t, train=self.train)
        return rows_t, x, y


def _as_is(batch):
    return batch


def batch_loader(data: ManifestData, sampler, batch_size: int, device: torch.device, train: bool = True,
                 min_size: int = 1):
    """A DataLoader over ``sampler``'s order yielding (rows, inputs, labels) training batches.

    With ``data.workers`` > 0 batches are assembled (and files decoded) in worker processes and
    pinned for a fast copy to a GPU.
    """
    batches = sampler.batches(batch_size, min_size=min_size) if hasattr(sampler, "batches") else \
        torch.utils.data.BatchSampler(sampler, batch_size, drop_last=False)
    if data.workers == 0:  # in this process: the batches themselves, without a DataLoader's per-batch cost
        source = _Batches(data, train)
        return (source.__getitems__(rows) for rows in (batches.slices() if hasattr(batches, "slices") else batches))
    pin = torch.device(device).type == "cuda"
    return torch.utils.data.DataLoader(_Batches(data, train), batch_sampler=batches, num_workers=data.workers,
                                       collate_fn=_as_is, pin_memory=pin,
                                       prefetch_factor=4 if data.workers > 0 else None)


class ManifestDataset(torch.utils.data.Dataset):
    """One split of a manifest as a map-style Dataset, for your own trainer.

    Item ``i`` is ``{modality: tensor, "labels": class id}`` of the split's ``i``-th row, in
    manifest order, decoded as ``bss train`` decodes it (audio as a log spectrogram, images as
    [frames, 3, S, S] with the train split's augmentations, text as token ids). Vector modalities
    are standardised with the train split's mean and std, as ``bss train`` does (``standardise=False``
    keeps the raw values). ``sample_ids`` lists the split's ids in dataset order, which is what
    ``ScheduleSampler(schedule, dataset=...)`` maps a schedule through; ``modalities``,
    ``n_classes`` and ``classes`` describe the items.
    """

    def __init__(self, manifest: str | Path | Manifest, split: str = "train", *, standardise: bool = True,
                 cache_dir: str | Path | None = None):
        from bss_cli.data.manifest import load_manifest

        m = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
        self.split, self.classes = split, list(m.classes)
        self.rows = m.indices(split)
        self.sample_ids = m.sample_ids.take(self.rows).to_pylist()
        self.modalities = m.modality_names
        self.n_classes = m.n_classes
        self._data = ManifestData(m, cache_dir=cache_dir)
        self._stats = {}
        if standardise:
            stats = self._data.standardisation(m.indices("train"))
            self._stats = {k: (mean, torch.where(std > 0, std, torch.ones_like(std))) for k, (mean, std) in stats.items()
                           if m.modalities[k].kind in ("vector", "array")}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -len(self.rows) <= int(i) < len(self.rows):
            raise IndexError(f"index {i} is out of range for the {len(self.rows)} {self.split} rows")
        x, y = self._data.batch([int(self.rows[i])], train=self.split == "train")
        item = {}
        for k, v in x.items():
            v = v[0]
            if k in self._stats:
                mean, std = self._stats[k]
                v = (v - mean) / std
            item[k] = v
        item["labels"] = y[0]
        return item
