"""Hugging Face: a ``Trainer`` mixin that makes every epoch train on exactly that epoch's schedule rows.

``transformers.Trainer`` sizes every epoch (and the total step count that ends training and
drives the LR schedule) from ``len(train_dataloader)`` at epoch 0, so a growing curriculum is cut
to its first epoch's size. The mixin builds the train loader from the schedule, sums the steps of
every epoch, gives each epoch its own length, and maps a checkpoint's step back to (epoch, step)
on resume. Under DDP the sampler shards by rank itself (accelerate does not re-shard it).

    class BSSTrainer(ScheduleTrainerMixin, Trainer):
        pass

    sampler = ScheduleSampler("schedule.parquet", dataset=train_set)
    trainer = BSSTrainer(model=model, args=args, train_dataset=train_set, bss_sampler=sampler)
"""

from __future__ import annotations

import math

from torch.utils.data import DataLoader

from bss_cli.errors import ConfigError
from bss_cli.scheduling.sampler import ScheduleSampler


SAMPLER_FILE = "bss_sampler.json"  # in each checkpoint folder: the process count its steps were counted in


class ScheduleTrainerMixin:
    """Put before ``transformers.Trainer`` in the bases; pass ``bss_sampler=`` to the constructor."""

    def __init__(self, *args, bss_sampler: ScheduleSampler, **kwargs):
        super().__init__(*args, **kwargs)
        parent = super()
        missing = [m for m in ("_run_epoch", "set_initial_training_values", "_init_training_state")
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

    def _update_steps(self, epoch: int) -> int:
        """Optimiser steps of ``epoch`` on this process."""
        self.bss_sampler.set_epoch(epoch)
        batches = len(self.bss_sampler.batches(self._train_batch_size, self.args.dataloader_drop_last))
        return max(math.ceil(batches / self.args.gradient_accumulation_steps), 1)

    def set_initial_training_values(self, args, dataloader):
        values = list(super().set_initial_training_values(args, dataloader))
        epochs = values[0]
        values[-1] = sum(self._update_steps(e) for e in range(epochs))  # max_steps over every epoch's own length
        self.bss_sampler.set_epoch(0)
        return tuple(values)

    def _init_training_state(self, max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint,
                             trial):
        epochs_trained, steps = super()._init_training_state(max_steps, num_update_steps_per_epoch, num_train_epochs,
                                                             resume_from_checkpoint, trial)
        if resume_from_checkpoint is None or self.state.global_step == 0:
            return epochs_trained, steps
        self._check_saved_world_size(resume_from_checkpoint)
        left, epoch = self.state.global_step, 0  # walk the epochs' own lengths up to the checkpoint's step
        while epoch < num_train_epochs and left >= self._update_steps(epoch):
            left -= self._update_steps(epoch)
            epoch += 1
        skip = 0 if self.args.ignore_data_skip else left * self.args.gradient_accumulation_steps
        return epoch, skip

    # --- checkpoints: the process count the step was counted in ---------------------------------
    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            import json
            import os

            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            if os.path.isdir(folder):
                with open(os.path.join(folder, SAMPLER_FILE), "w") as f:
                    json.dump({"world_size": self.args.world_size, "global_step": self.state.global_step}, f)

    def _check_saved_world_size(self, checkpoint) -> None:
        """A step counts one batch per process: mapped to (epoch, batch) with another process count it
        lands elsewhere in the schedule, silently. Refuse that, and a checkpoint that cannot tell."""
        import json
        import os

        path = os.path.join(str(checkpoint), SAMPLER_FILE)
        try:
            with open(path) as f:
                saved = int(json.load(f)["world_size"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigError(f"{checkpoint}: lacks a readable {SAMPLER_FILE} (written by ScheduleTrainerMixin with "
                              "each checkpoint), so the process count its steps were counted in is unknown; resume "
                              "from a checkpoint this mixin wrote") from None
        if saved != self.args.world_size:
            raise ConfigError(f"{checkpoint}: written by {saved} process(es), resumed on {self.args.world_size}; a "
                              "Trainer step is one batch per process, so its place in the schedule depends on the "
                              f"process count. Resume on {saved} process(es)")

    def _run_epoch(self, *, epoch, train_dataloader, steps_in_epoch, num_update_steps_per_epoch, **kwargs):
        updates = self._update_steps(epoch)  # also sets the sampler's epoch before the loader is iterated
        batches = len(train_dataloader)
        return super()._run_epoch(epoch=epoch, train_dataloader=train_dataloader, steps_in_epoch=batches,
                                  num_update_steps_per_epoch=updates, **kwargs)


def _is_hf_dataset(dataset) -> bool:
    try:
        import datasets
    except ImportError:
        return False
    return isinstance(dataset, datasets.Dataset)
