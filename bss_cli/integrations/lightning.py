"""Lightning: a callback that makes every epoch train on exactly that epoch's schedule rows.

Lightning sizes an epoch from ``len(train_dataloader)`` when the loader is built, so a growing
curriculum is cut to its first epoch's size unless the loader is rebuilt *for* each epoch. The
callback builds it (``callback.dataloader(dataset, batch_size=...)`` in your
``train_dataloader()``), checks the Trainer settings that would silently break the order, and at
the end of every epoch checks that every scheduled batch was trained.

    sampler = ScheduleSampler("schedule.parquet", dataset=train_set)
    bss = ScheduleCallback(sampler)
    trainer = L.Trainer(callbacks=[bss], reload_dataloaders_every_n_epochs=1, use_distributed_sampler=False)
    # in the LightningModule or DataModule:
    def train_dataloader(self):
        return bss.dataloader(train_set, batch_size=32, num_workers=4)
"""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from bss_cli.errors import ConfigError
from bss_cli.scheduling.sampler import ScheduleSampler


class ScheduleCallback(Callback):
    def __init__(self, sampler: ScheduleSampler, drop_last: bool = False):
        self.sampler, self.drop_last = sampler, drop_last
        self.trainer = None
        self._scheduled = self._done = 0

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        self.trainer = trainer
        problems = []
        if trainer.reload_dataloaders_every_n_epochs != 1:
            problems.append("reload_dataloaders_every_n_epochs=1 (the loader is rebuilt for each epoch's size)")
        if trainer._accelerator_connector.use_distributed_sampler:
            problems.append("use_distributed_sampler=False (the sampler shards by rank itself)")
        if trainer.limit_train_batches not in (1.0, None):
            problems.append("no limit_train_batches (it would cut every epoch's schedule)")
        if problems:
            raise ConfigError("ScheduleCallback needs Trainer(" + ", ".join(problems) + ")")
        if self.sampler.world_size != trainer.world_size:
            raise ConfigError(f"the sampler shards over {self.sampler.world_size} process(es) but the Trainer runs "
                              f"{trainer.world_size}; create the sampler after the process group starts (in "
                              "setup() or train_dataloader()) or pass rank/world_size")

    def dataloader(self, dataset, batch_size: int, **loader_kwargs) -> DataLoader:
        """The train DataLoader for the Trainer's current epoch (call it from ``train_dataloader()``)."""
        if self.trainer is None:  # Lightning calls setup() before train_dataloader(): the callback is not in use
            raise ConfigError("ScheduleCallback.dataloader() was called, but the callback is not registered with "
                              "the Trainer, so every epoch would train epoch 0's order: pass "
                              "L.Trainer(callbacks=[callback], ...)")
        epoch = self.trainer.current_epoch
        self.sampler.set_epoch(epoch)
        batches = self.sampler.batches(batch_size, self.drop_last)
        self._scheduled = len(batches)
        return DataLoader(dataset, batch_sampler=batches, **loader_kwargs)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.sampler.epoch != trainer.current_epoch:
            raise ConfigError(f"epoch {trainer.current_epoch}: the train DataLoader was built for epoch "
                              f"{self.sampler.epoch}; return ScheduleCallback.dataloader(...) from train_dataloader()")
        self._done = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._done += 1

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        stopped = trainer.should_stop or (trainer.max_steps not in (-1, None) and trainer.global_step >= trainer.max_steps)
        if self._done != self._scheduled and not stopped:
            raise ConfigError(f"epoch {trainer.current_epoch}: trained {self._done} batches, the schedule gives this "
                              f"process {self._scheduled}; something cut the epoch (a loader not built by "
                              "ScheduleCallback.dataloader, limit_train_batches)")
