"""Lightning: a callback that makes every epoch train on exactly that epoch's schedule rows.

Lightning sizes an epoch from ``len(train_dataloader)`` when the loader is built, so a growing
curriculum is cut to its first epoch's size unless the loader is rebuilt *for* each epoch. The
callback builds it (``callback.dataloader(dataset, batch_size=...)`` in your
``train_dataloader()``), checks the Trainer settings that would silently break the order, and at
the end of every epoch checks that every scheduled batch was trained. Its state (the epoch and the
position its trained batches reached) is saved in Lightning checkpoints, so a checkpoint taken
mid-epoch resumes with the rest of that epoch's order, on any number of processes.

    sampler = ScheduleSampler("schedule.parquet", dataset=train_set)
    bss = ScheduleCallback(sampler)
    trainer = L.Trainer(callbacks=[bss], reload_dataloaders_every_n_epochs=1, use_distributed_sampler=False)
    # in the LightningModule or DataModule:
    def train_dataloader(self):
        return bss.dataloader(train_set, batch_size=32, num_workers=4)
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from bss_cli.errors import ConfigError
from bss_cli.scheduling.sampler import ScheduleSampler


class ScheduleCallback(Callback):
    """``log``: at each epoch's start, log the order's BSS quantities (``bss/epoch_size``,
    ``bss/prefix_fraction``, ``bss/mean_balance``) to the Trainer's loggers, at the step Lightning's
    own LearningRateMonitor uses; a TensorBoard logger also gets histograms of the epoch's balance
    scores and sampling probabilities."""

    def __init__(self, sampler: ScheduleSampler, drop_last: bool = False, log: bool = True):
        self.sampler, self.drop_last, self.log = sampler, drop_last, log
        self.trainer = None
        self._scheduled = self._done = 0
        self._batch_size = 0
        self._start = 0  # the global position of the epoch's order this epoch's loader started at
        self._already = 0  # batches of this epoch Lightning counts as done when it builds the loader (a resume)
        self._restored: dict | None = None  # a checkpoint's position, used by the loader of its epoch

    # --- Lightning checkpoints: the position reached in the epoch's order ----------------------
    def state_dict(self) -> dict:
        """Saved in every Lightning checkpoint: the epoch and the global position its trained
        batches reached (any world size can continue from it)."""
        if self.trainer is None:
            return {}
        offset = self.sampler.offset_after(self.sampler.epoch, self._start, self._done, self._batch_size)
        return {"epoch": int(self.sampler.epoch), "offset": int(offset)}

    def load_state_dict(self, state: dict) -> None:
        self._restored = dict(state) if state else None

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
        if (self.sampler.rank, self.sampler.world_size) != (trainer.global_rank, trainer.world_size):
            if not self.sampler.auto_shard:
                raise ConfigError(f"the sampler shards as rank {self.sampler.rank} of {self.sampler.world_size} but "
                                  f"this Trainer process is rank {trainer.global_rank} of {trainer.world_size}; pass "
                                  "ScheduleSampler(..., rank=trainer.global_rank, world_size=trainer.world_size) or "
                                  "ScheduleDataModule(..., rank=..., world_size=...), or leave both out so that the "
                                  "Trainer's are used")
            # made before Lightning's own launcher started the processes: shard as the Trainer does
            self.sampler.shard_as(trainer.global_rank, trainer.world_size)
        _count_schedule_steps(trainer, self)

    def estimated_stepping_batches(self, trainer) -> int | float:
        """The optimizer steps the whole run takes on this schedule: per epoch, this process's
        batches over ``accumulate_grad_batches`` (rounded up: Lightning steps an epoch's last,
        partial group at its end), summed over ``max_epochs`` and capped by ``max_steps``.
        ``trainer.estimated_stepping_batches`` answers this once the callback is set up (Lightning's
        own formula multiplies the first epoch's batches by max_epochs, which a growing curriculum
        makes too small: a linear or one-cycle lr schedule would end early)."""
        if trainer.train_dataloader is None:
            trainer.fit_loop.setup_data()  # builds this epoch's loader, as Lightning's own property does
        if not self._batch_size or trainer.max_epochs in (None, -1):
            return trainer.max_steps if trainer.max_epochs in (None, -1) else 0
        acc = max(1, int(trainer.accumulate_grad_batches))
        total = sum(-(-self.sampler.batch_count(e, self._batch_size, self.drop_last) // acc)
                    for e in range(int(trainer.max_epochs)))
        return min(total, trainer.max_steps) if trainer.max_steps not in (-1, None) else total

    def dataloader(self, dataset, batch_size: int, **loader_kwargs) -> DataLoader:
        """The train DataLoader for the Trainer's current epoch (call it from ``train_dataloader()``)."""
        if self.trainer is None:  # Lightning calls setup() before train_dataloader(): the callback is not in use
            raise ConfigError("ScheduleCallback.dataloader() was called, but the callback is not registered with "
                              "the Trainer, so every epoch would train epoch 0's order: pass "
                              "L.Trainer(callbacks=[callback], ...)")
        epoch = self.trainer.current_epoch
        restored, self._restored = self._restored, None
        # Lightning skips as many batches of an epoch's loader as its own progress counter says were
        # done, but only while it restarts from a checkpoint: then those trained before the
        # checkpoint (and, from a checkpoint taken at an epoch's last batch, that count again in the
        # next epoch). The loader yields only what is left and is padded in length by exactly that
        # many. Between two epochs of a plain run the counter still holds the previous epoch's
        # batches when the loader is built (Lightning resets it afterwards), so it counts for
        # nothing: the loader's length is this epoch's batches, and Lightning validates, steps
        # per-epoch lr schedules and closes the last gradient-accumulation group at the epoch's end.
        already = _lightning_batches_done(self.trainer) if _restarting(self.trainer) else 0
        if restored and restored.get("epoch") == epoch:  # resumed mid-epoch: only the rest of its order
            self.sampler.load_state_dict(restored)
            self._start = int(restored["offset"])
        else:
            self.sampler.set_epoch(epoch)
            self._start = 0
        self._already = already
        batches = self.sampler.batches(batch_size, self.drop_last)
        self._scheduled, self._batch_size = len(batches), batch_size
        if self._already:
            # Lightning resumes an epoch by iterating len(loader) - done batches of a loader it takes
            # from its start; this one yields only the rest, so it reports the done ones in its length
            batches = _AfterResume(batches, self._already)
        return DataLoader(dataset, batch_sampler=batches, **loader_kwargs)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.sampler.epoch != trainer.current_epoch:
            raise ConfigError(f"epoch {trainer.current_epoch}: the train DataLoader was built for epoch "
                              f"{self.sampler.epoch}; return ScheduleCallback.dataloader(...) from train_dataloader()")
        self._done = 0
        if self.log and trainer.loggers:
            self._log_epoch(trainer)

    def _log_epoch(self, trainer) -> None:
        values, arrays = self.sampler.epoch_quantities()
        step = trainer.fit_loop.epoch_loop._batches_that_stepped  # the step LearningRateMonitor logs at
        for logger in trainer.loggers:
            logger.log_metrics({**values, "epoch": float(trainer.current_epoch)}, step=step)
            add_histogram = getattr(getattr(logger, "experiment", None), "add_histogram", None)
            if trainer.is_global_zero and callable(add_histogram):  # TensorBoard's SummaryWriter
                for tag, a in arrays.items():
                    add_histogram(tag, a, step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._done += 1

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        stopped = trainer.should_stop or (trainer.max_steps not in (-1, None) and trainer.global_step >= trainer.max_steps)
        if self._done != self._scheduled and not stopped:
            raise ConfigError(f"epoch {trainer.current_epoch}: trained {self._done} batches, the schedule gives this "
                              f"process {self._scheduled}; something cut the epoch (a loader not built by "
                              "ScheduleCallback.dataloader, limit_train_batches)")


def _count_schedule_steps(trainer, callback: ScheduleCallback) -> None:
    """Make ``trainer.estimated_stepping_batches`` count the schedule's real steps: the property
    lives on the Trainer's class, so this Trainer becomes an instance of a subclass that answers
    from the callback (everything else is the Trainer's own)."""
    trainer._bss_schedule = callback
    if getattr(type(trainer), "_bss_counts_schedule", False):
        return
    base = type(trainer)
    trainer.__class__ = type(f"Scheduled{base.__name__}", (base,), {
        "_bss_counts_schedule": True, "__module__": base.__module__,
        "estimated_stepping_batches": property(lambda self: self._bss_schedule.estimated_stepping_batches(self),
                                               doc=L.Trainer.estimated_stepping_batches.__doc__)})


def _restarting(trainer) -> bool:
    """Whether Lightning is resuming from a checkpoint, and so keeps its restored batch counter
    (it skips that many batches of the loader) instead of starting the epoch's count at 0."""
    try:
        return bool(trainer.fit_loop.epoch_loop.restarting)
    except AttributeError:
        return False


def _lightning_batches_done(trainer) -> int:
    """The batches of the current epoch Lightning's restored progress counts as processed."""
    try:
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
    except AttributeError:  # another Lightning layout: fall back to what the checkpoint recorded
        return 0


class _AfterResume:
    """A batch sampler yielding ``inner``'s batches, whose length also counts ``done`` batches of
    the epoch that were trained before a mid-epoch checkpoint (so Lightning's loop, which skips
    that many, iterates exactly the rest)."""

    def __init__(self, inner, done: int):
        self.inner, self.done = inner, done

    def __len__(self) -> int:
        return len(self.inner) + self.done

    def __iter__(self):
        return iter(self.inner)


class ScheduleDataModule(L.LightningDataModule):
    """The common case in two lines: a map-style dataset with ``sample_ids`` (or ``ids=``) and a
    schedule file; ``callback`` and ``trainer_kwargs`` go to the Trainer.

        dm = ScheduleDataModule(train_set, "schedule.parquet", batch_size=32, num_workers=4)
        trainer = L.Trainer(max_epochs=30, callbacks=[dm.callback], **dm.trainer_kwargs)
        trainer.fit(model, datamodule=dm)

    Create it in every process (under torchrun the sampler shards by rank; under Lightning's own
    launcher, devices=N without torchrun, it takes each process's rank from the Trainer at setup).
    """

    trainer_kwargs = {"reload_dataloaders_every_n_epochs": 1, "use_distributed_sampler": False}

    def __init__(self, dataset, schedule, batch_size: int, *, ids=None, drop_last: bool = False,
                 rank: int | None = None, world_size: int | None = None, **loader_kwargs):
        super().__init__()
        shard = {"rank": rank, "world_size": world_size}  # None: the Trainer's processes, known at setup
        sampler = ScheduleSampler(schedule, dataset=dataset, **shard) if ids is None else \
            ScheduleSampler(schedule, ids=ids, dataset=dataset, **shard)
        self.dataset, self.batch_size, self.loader_kwargs = dataset, batch_size, loader_kwargs
        self.callback = ScheduleCallback(sampler, drop_last=drop_last)

    def train_dataloader(self) -> DataLoader:
        return self.callback.dataloader(self.dataset, batch_size=self.batch_size, **self.loader_kwargs)
