"""Hugging Face: a ``Trainer`` mixin that makes every epoch train on exactly that epoch's schedule rows.

``transformers.Trainer`` sizes every epoch (and the total step count that ends training and
drives the LR schedule) from ``len(train_dataloader)`` at epoch 0, so a growing curriculum is cut
to its first epoch's size. The mixin builds the train loader from the schedule, sums the steps of
every epoch, and gives each epoch its own length. Each checkpoint records the epoch and the global
position reached in its order (``bss_sampler.json``); a resumed run continues there, on the same
number of processes or another (a step is one batch per process, so the remaining step count is
recomputed for the new count). Under DDP the sampler shards by rank itself (accelerate does not
re-shard it).

    class BSSTrainer(ScheduleTrainerMixin, Trainer):
        pass

    sampler = ScheduleSampler("schedule.parquet", dataset=train_set)
    trainer = BSSTrainer(model=model, args=args, train_dataset=train_set, bss_sampler=sampler)

At each epoch's start the order's ``bss/epoch_size``, ``bss/prefix_fraction`` and
``bss/mean_balance`` go through ``Trainer.log`` (log_history and every ``report_to`` integration,
which names them ``train/bss/...``); ``bss_log=False`` turns that off.
"""

from __future__ import annotations

import math

from torch.utils.data import DataLoader

from bss_cli.errors import ConfigError
from bss_cli.scheduling.sampler import ScheduleSampler


SAMPLER_FILE = "bss_sampler.json"  # in each checkpoint folder: the epoch and global position reached


class ScheduleTrainerMixin:
    """Put before ``transformers.Trainer`` in the bases; pass ``bss_sampler=`` to the constructor."""

    def __init__(self, *args, bss_sampler: ScheduleSampler, bss_log: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.bss_log = bss_log  # log the order's BSS quantities at each epoch's start through Trainer.log (report_to)
        parent = super()
        missing = [m for m in ("_run_epoch", "set_initial_training_values", "_init_training_state",
                               "_save_checkpoint", "_remove_unused_columns", "_load_optimizer_and_scheduler")
                   if not hasattr(parent, m)]
        if missing:
            import transformers

            raise ConfigError(f"transformers {transformers.__version__} lacks Trainer.{', '.join(missing)}, which "
                              "ScheduleTrainerMixin adapts; use transformers >= 4.57")
        if self.args.max_steps > 0:
            raise ConfigError("ScheduleTrainerMixin: set num_train_epochs, not max_steps (the schedule decides each "
                              "epoch's length)")
        self.bss_sampler = bss_sampler

    def get_train_dataloader(self) -> DataLoader:
        self.bss_sampler.set_epoch(0)
        # what the Trainer's own loader does: a datasets.Dataset loses the columns forward() does not
        # take (sample_id, raw text ...); any other dataset has them dropped by the collator
        dataset, collator = self.train_dataset, self.data_collator
        if _is_hf_dataset(dataset):
            dataset = self._remove_unused_columns(dataset, description="training")
        else:
            collator = self._get_collator_with_removed_columns(self.data_collator, description="training")
        return DataLoader(dataset, batch_sampler=self.bss_sampler.batches(
                              self._train_batch_size, self.args.dataloader_drop_last),
                          collate_fn=collator, num_workers=self.args.dataloader_num_workers,
                          pin_memory=self.args.dataloader_pin_memory)

    def _update_steps(self, epoch: int, offset: int = 0) -> int:
        """Optimiser steps of ``epoch`` (from global position ``offset``) on this process."""
        batches = self.bss_sampler.batch_count(epoch, self._train_batch_size, self.args.dataloader_drop_last, offset)
        return max(math.ceil(batches / self.args.gradient_accumulation_steps), 1)

    def set_initial_training_values(self, args, dataloader):
        values = list(super().set_initial_training_values(args, dataloader))
        epochs = values[0]
        values[-1] = sum(self._update_steps(e) for e in range(epochs))  # max_steps over every epoch's own length
        self._epochs = epochs
        return tuple(values)

    # --- resume: the epoch and the global position reached, on any number of processes -----------
    def _init_training_state(self, max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint,
                             trial):
        epochs_trained, steps = super()._init_training_state(max_steps, num_update_steps_per_epoch, num_train_epochs,
                                                             resume_from_checkpoint, trial)
        self._resume_at = self._lr_done = None
        if resume_from_checkpoint is None or self.state.global_step == 0:
            return epochs_trained, steps
        epoch, offset = self._saved_position(resume_from_checkpoint)
        self._resume_at = (epoch, offset)
        # the rest of training in this process count's steps: a step is one batch per process, so the
        # count after a change of processes differs from the one the Trainer computed from scratch
        rest = (self._update_steps(epoch, offset) if epoch < num_train_epochs else 0) + \
            sum(self._update_steps(e) for e in range(epoch + 1, num_train_epochs))
        self.state.max_steps = self.state.global_step + rest
        # the lr schedule was made for max_steps, this process count's steps over the whole run; in
        # those steps the run is max_steps - rest along (the checkpoint's own step count differs
        # when the process count did)
        self._lr_done = max_steps - rest
        return epoch, 0  # no batch skipping: the resumed epoch's loader yields only the rest of its order

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        done = getattr(self, "_lr_done", None)
        if done is not None and self.lr_scheduler is not None:
            _move_lr_schedule(self.lr_scheduler, done, self.bss_sampler.world_size)

    def _saved_position(self, checkpoint) -> tuple[int, int]:
        import json
        import os

        path = os.path.join(str(checkpoint), SAMPLER_FILE)
        try:
            with open(path) as f:
                saved = json.load(f)
            return int(saved["epoch"]), int(saved["offset"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigError(f"{checkpoint}: lacks a readable {SAMPLER_FILE} (written by ScheduleTrainerMixin with "
                              "each checkpoint: the epoch and the position reached in its order), so where to continue "
                              "is unknown; resume from a checkpoint this mixin wrote") from None

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            import json
            import os

            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            epoch, start, step0 = self._epoch_start
            done = (self.state.global_step - step0) * self.args.gradient_accumulation_steps  # batches per process
            offset = self.bss_sampler.offset_after(epoch, start, done, self._train_batch_size)
            if offset >= len(self.bss_sampler.order(epoch)):  # the epoch is done: the next starts at its beginning
                epoch, offset = epoch + 1, 0
            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            if os.path.isdir(folder):
                with open(os.path.join(folder, SAMPLER_FILE), "w") as f:
                    json.dump({"epoch": epoch, "offset": offset, "world_size": self.bss_sampler.world_size,
                               "global_step": self.state.global_step}, f)

    def _run_epoch(self, *, epoch, train_dataloader, steps_in_epoch, num_update_steps_per_epoch, **kwargs):
        resume, self._resume_at = getattr(self, "_resume_at", None), None
        offset = resume[1] if resume is not None and resume[0] == epoch else 0
        updates = self._update_steps(epoch, offset)
        self.bss_sampler.load_state_dict({"epoch": epoch, "offset": offset})  # before the loader is iterated
        self._epoch_start = (epoch, offset, self.state.global_step)
        if self.bss_log:  # through the Trainer's own log: log_history and every report_to integration
            self.log(self.bss_sampler.epoch_quantities(epoch)[0])
        return super()._run_epoch(epoch=epoch, train_dataloader=train_dataloader, steps_in_epoch=len(train_dataloader),
                                  num_update_steps_per_epoch=updates, **kwargs)


def _move_lr_schedule(scheduler, done: int, world_size: int) -> None:
    """Put a restored lr schedule at step ``done`` of the run as counted now. A checkpoint's own
    step count is that of the process count that wrote it; resumed on another, the same step would
    be another point of the run (1 -> 2 processes: the lr jumped ahead and the last steps ran at
    lr 0). HF's schedules (LambdaLR: linear, cosine, constant, with warmup) are functions of the
    step, so they move exactly; any other is refused when it would have to move."""
    from torch.optim.lr_scheduler import LambdaLR

    inner = getattr(scheduler, "scheduler", scheduler)  # accelerate wraps it
    if inner.last_epoch == done:
        return
    if not isinstance(inner, LambdaLR):
        raise ConfigError(f"resuming on {world_size} process(es) moves the run to step {done} of the lr schedule "
                          f"(the checkpoint says {inner.last_epoch}, counted on another number of processes); "
                          f"{type(inner).__name__} cannot be moved there. Resume on the checkpoint's number of "
                          "processes, or use one of transformers' schedules (lr_scheduler_type)")
    inner.last_epoch = done
    lrs = [base * fn(done) for fn, base in zip(inner.lr_lambdas, inner.base_lrs)]
    for group, lr in zip(inner.optimizer.param_groups, lrs):
        group["lr"] = lr
    inner._last_lr = lrs


def _is_hf_dataset(dataset) -> bool:
    try:
        import datasets
    except ImportError:
        return False
    return isinstance(dataset, datasets.Dataset)
