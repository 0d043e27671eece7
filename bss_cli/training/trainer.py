"""``bss train``: BSS training end to end (torch). One process, or many under torchrun.

Per epoch: take the epoch's order from the planner (the same code as ``bss schedule``), shard it
over ranks, train, evaluate on val, re-score for the next epoch (learned), and at most every
``--save-every`` seconds (and after the last epoch) save the run folder: last.pt, best.pt, metrics,
the held epoch files. At the end, the best-by-validation checkpoint is tested once. Everything an
epoch needs from the past is in ``last.pt``, so a run killed at any point and resumed computes the
same thing.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bss_cli import __version__
from bss_cli.artifacts import FileWriter, copy_file, fingerprint_text, guarded
from bss_cli.data.datasets import ManifestData, batch_loader
from bss_cli.data.manifest import load_manifest
from bss_cli.errors import BSSError, ConfigError
from bss_cli.models import checkpoints as C
from bss_cli.models.distributed import DistInfo, barrier, merge_owned, setup, teardown
from bss_cli.models.step import OptimConfig, make_optimizer, min_batch, train_step
from bss_cli.scheduling.sampler import ScheduleSampler
from bss_cli.scheduling.schedule_io import one_epoch_file
from bss_cli.scoring.criteria import LossWeights, Predictions, RowParts, row_parts
from bss_cli.scoring.predict import (
    ModelSource,
    fresh_model,
    model_for_source,
    predict,
    predict_parts,
)
from bss_cli.scoring.scores import SCHEDULE_COLUMNS, Scores, build_scores
from bss_cli.training import lr as LR
from bss_cli.training import runs
from bss_cli.training.config import RESUME_FREE, STATIC_SCORED, TrainConfig
from bss_cli.training.metrics import evaluate
from bss_cli.training.planner import (
    Planner,
    PlanState,
    load_scores_file,
    save_scores_file,
)


HELD_BYTES = 64 << 20  # the run folder is brought up to date early when the held files grow past this


@dataclass
class Callbacks:
    """Progress hooks (the CLI wires them to rich). Exceptions raised here stop the run."""

    on_epoch_start: Callable[[int, int], None] | None = None  # (epoch, samples this rank)
    on_batch: Callable[[int, int, float], None] | None = None  # (epoch, samples, loss)
    on_epoch_end: Callable[[dict], None] | None = None  # the metrics row
    on_message: Callable[[str], None] | None = None
    on_warning: Callable[[str], None] | None = None  # shown even when quiet (a tracker that failed)
    on_progress: Callable[[str, int, int], None] | None = None  # (stage, done, total), e.g. checking media


class TrainingDiverged(BSSError):
    """The loss became NaN or infinite; the run stops, keeping its last good checkpoint."""


@dataclass
class TrainResult:
    run: Path
    history: list[dict]
    best_epoch: int
    test: dict
    summary: dict = field(default_factory=dict)


class Trainer:
    def __init__(self, cfg: TrainConfig, info: DistInfo, device: str, callbacks: Callbacks):
        self.cfg, self.info, self.device, self.cb = cfg, info, torch.device(device), callbacks
        self.run = Path(cfg.out)
        self.manifest = load_manifest(cfg.manifest, progress=callbacks.on_progress if info.is_main else None,
                                      text=cfg.text, text_options=cfg.text_options())
        m = self.manifest
        self.train_rows, self.val_rows, self.test_rows = m.indices("train"), m.indices("val"), m.indices("test")
        if len(self.val_rows) == 0:
            raise ConfigError(f"{m.path}: the val split is empty; bss selects the checkpoint on validation, "
                              "so mark some rows 'val'")
        self.has_checkpoint = runs.check_run_folder(self.run, cfg.to_dict(), cfg.resume, RESUME_FREE)
        self.weights = LossWeights(cfg.fused_weight, cfg.unimodal_weight)
        self.data = ManifestData(m, device=self.device, workers=cfg.workers, cache_dir=cfg.cache_dir)
        self.model, self.model_cfg = self._fresh_model()
        self.model_text = str(self.model_cfg.to_dict())  # in every scores fingerprint; fixed for the run
        self.model.to(self.device)
        self.min_batch = min_batch(self.model)  # BatchNorm cannot train on a final batch of one
        self.opt = make_optimizer(self.model, OptimConfig(cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay))
        self.planner = Planner(cfg, m, self.train_rows)  # checks a --schedule file before anything is written
        self.plan = PlanState()
        self.plan_files: dict[str, dict | None] = {"plan": None, "static": None}  # what last.pt names
        self.files = FileWriter(background=False)  # fit() replaces it with a background writer
        self.saved_epoch: int | None = None  # the epoch last.pt holds
        # the plan file of the scores that order the next epoch: (path, bytes, entry), encoded when
        # first needed (a save naming it, an epoch artifact); bytes None: already on disk (resumed)
        self._plan_epoch, self._plan_cache, self._plan_written = 0, None, None
        self._saved_at = 0.0  # when the run folder was last brought up to date (perf_counter)
        self._best_state: dict | None = None  # best.pt's state, held while the folder is not up to date
        self.history: list[dict] = []
        self.best = {"epoch": -1, "val_acc": -math.inf}
        self.start_epoch = 0
        self.amp = cfg.amp and self.device.type == "cuda"
        self.pos_of_row = np.full(m.n, -1, np.int64)  # manifest row -> train position
        self.pos_of_row[self.train_rows] = np.arange(len(self.train_rows))
        self.tracking = None  # experiment trackers (--log), rank 0 only

    def _model_settings(self) -> dict:
        """The run's model settings beside hidden and --model (the warm-up model is built the same)."""
        cfg = self.cfg
        return dict(encoder=cfg.encoder, array_encoder=cfg.array_encoder,
                    **({"extra": {"image_encoder": cfg.image_encoder}} if cfg.image_encoder != "resnet18" else {}),
                    layers=cfg.layers, dropout=cfg.dropout, encoder_weights=cfg.weights_by_modality())

    def _fresh_model(self):
        cfg = self.cfg
        return fresh_model(self.manifest, self.data, cfg.seed, cfg.hidden, cfg.model, **self._model_settings())

    # --- scoring -------------------------------------------------------------------------
    def _predict_split(self, rows: np.ndarray, model=None) -> RowParts:
        """Scoring parts for ``rows``, the rows split across ranks and gathered back in order."""
        return predict_parts(model or self.model, self.data, rows, self.info, criterion=self.cfg.criterion,
                             weights=self.weights, amp=self.amp)

    def _scores(self, preds: RowParts, source: str) -> Scores:
        fp = fingerprint_text(f"{source}|seed={self.cfg.seed}|{self.model_text}|{self.manifest.fingerprint}")
        # without epoch artifacts nobody reads more than the scheduler's columns: build only those
        only = None if self.cfg.epoch_artifacts else SCHEDULE_COLUMNS
        return build_scores(self.manifest, self.train_rows, preds, only, criterion=self.cfg.criterion,
                            weights=self.weights,
                            source=source, source_fingerprint=fp, seed=self.cfg.seed, split="train",
                            alpha=self.cfg.alpha)

    def _initial_scores(self) -> None:
        cfg = self.cfg
        if cfg.scheduler in STATIC_SCORED and cfg.scores:
            pass  # the planner read and checked the --scores file
        elif cfg.scheduler in STATIC_SCORED and cfg.warmup:
            # the warm-up trains as the run does: its optimiser, clipping and --model plug-in
            src = ModelSource(kind="warmup", warmup_epochs=cfg.warmup, seed=cfg.seed, hidden=cfg.hidden, lr=cfg.lr,
                              batch_size=cfg.batch_size, model=cfg.model, optimizer=cfg.optimizer,
                              momentum=cfg.momentum, weight_decay=cfg.weight_decay, clip_grad=cfg.clip_grad,
                              model_settings=self._model_settings())
            warm, _ = model_for_source(src, self.manifest, self.data, self.weights, self.info)
            torch.manual_seed(cfg.seed)  # the main model's dropout stream does not depend on the warm-up
            self.planner.set_static_scores(self._scores(self._predict_split(self.train_rows, warm), src.describe()))
        elif self.planner.needs_initial_scores:
            scores = self._scores(self._predict_split(self.train_rows), "init")
            if cfg.scheduler in STATIC_SCORED:
                self.planner.set_static_scores(scores)
            else:
                self.planner.update(self.plan, scores)

    # --- one epoch -----------------------------------------------------------------------
    def _train_epoch(self, epoch: int, model, table, online: dict | None) -> tuple[float, int]:
        sampler = ScheduleSampler(table, rows=True, rank=self.info.rank, world_size=self.info.world_size)
        loader = batch_loader(self.data, sampler, self.cfg.batch_size, self.device, min_size=self.min_batch)
        if self.cb.on_epoch_start:
            self.cb.on_epoch_start(epoch, len(sampler))
        model.train()
        warming, total = LR.warming(self.cfg, epoch), max(len(sampler), 1)
        self._set_lr(LR.lr_at(self.cfg, epoch))
        sums, count = [], 0  # per-batch loss sums stay on the device: no host sync per batch
        for batch, (rows, xb, yb) in enumerate(loader):
            xb = {k: v.to(self.device, non_blocking=True) for k, v in xb.items()}
            yb = yb.to(self.device, non_blocking=True)
            if warming:  # the rate grows every step; past the warm-up it is set once per epoch
                self._set_lr(LR.lr_at(self.cfg, epoch, min(1.0, (count + len(yb)) / total)))
            out, loss = train_step(model, self.opt, xb, yb, self.weights, self.amp, clip=self.cfg.clip_grad)
            if online is not None:  # statistics of the training pass itself, no extra forward:
                online["rows"].append(rows)  # kept as they are; scattered once at the epoch's end
                for head, z in {**out.logits, "fused": out.fused}.items():
                    if z is not None:
                        online[head].append(z.detach())
            sums.append(loss.sum())
            count += len(yb)
            if self.cb.on_batch:  # progress bars want the loss now (a sync, only when someone watches)
                value = float(sums[-1])
                if not math.isfinite(value):
                    raise TrainingDiverged(self._divergence(epoch, batch, value))
                self.cb.on_batch(epoch, len(yb), value / len(yb))
        if not sums:
            return 0.0, 0
        sums = torch.stack(sums).float().cpu()
        bad = torch.nonzero(~torch.isfinite(sums)).flatten()
        if len(bad):  # the epoch's weights are not saved: last.pt keeps the previous epoch
            raise TrainingDiverged(self._divergence(epoch, int(bad[0]), float(sums[bad[0]])))
        return float(sums.sum()) / max(count, 1), count

    def _set_lr(self, value: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = value

    def _divergence(self, epoch: int, batch: int, value: float) -> str:
        kept = (f"{self.run / runs.LAST} keeps epoch {self.saved_epoch}" if self.saved_epoch is not None
                else "no checkpoint was written")
        return (f"training diverged: the loss is {value} at epoch {epoch}, batch {batch}; the run stopped ({kept}). "
                f"Try a lower --lr (now {self.cfg.lr}), a longer --lr-warmup, --clip-grad 1, or check the inputs for extreme values; "
                "then start a new run in another --out")

    def _online_buffers(self) -> dict:
        """Per-batch lists of the training pass's rows and logits (appending costs nothing per batch)."""
        return {"rows": [], **{m: [] for m in self.manifest.modality_names}, "fused": []}

    def _online_logits(self, online: dict) -> dict:
        """The epoch's logits per head as [N, C] float32 arrays in train-row order (zeros where a
        sample was not trained on), and ``seen``; one scatter per head, a later batch winning."""
        n, c = len(self.train_rows), self.manifest.n_classes
        rows = torch.cat(online["rows"]).cpu().numpy() if online["rows"] else np.zeros(0, np.int64)
        pos = self.pos_of_row[rows]
        last = len(pos) - 1 - np.unique(pos[::-1], return_index=True)[1]  # each sample's last batch
        out = {"seen": np.zeros(n, bool)}
        out["seen"][pos] = True
        for head in [*self.manifest.modality_names, "fused"]:
            buf = np.zeros((n, c), np.float32)
            if online[head]:
                z = torch.cat(online[head]).float().cpu().numpy()
                buf[pos[last]] = z[last]
            out[head] = buf
        return out

    def _online_predictions(self, buf: dict) -> RowParts:
        """Each rank reduces the logits it saw this epoch to scoring parts; two tensor all_reduces
        merge them (a sample's values come from the rank that saw it)."""
        local = self._online_logits(buf)
        labels = self.manifest.labels[self.train_rows]
        preds = Predictions(labels=labels, logits={m: local[m] for m in self.manifest.modality_names},
                            fused_logits=local["fused"])
        parts = row_parts(preds, self.cfg.criterion, self.weights)
        if not self.info.enabled:
            return parts
        return parts.from_matrix(merge_owned(parts.to_matrix(), local["seen"], self.info))

    def _evaluate(self, rows: np.ndarray, model=None) -> dict:
        p = predict(model or self.model, self.data, rows, weights=self.weights, amp=self.amp)
        return evaluate(p.logits, p.fused_logits, p.labels, self.manifest.n_classes, self.cfg.predict_with)

    # --- checkpoints -----------------------------------------------------------------------
    def _state(self, epoch: int) -> dict:
        self.plan_files["plan"] = self._plan_file()[2]  # the scores that order the next epoch
        return {
            C.MODEL_STATE: self.model.state_dict(), C.MODEL_CONFIG: self.model_cfg.to_dict(),
            C.MODEL_FACTORY: self.cfg.model, C.OPTIMIZER_STATE: self.opt.state_dict(),
            C.LR_SCHEDULER_STATE: {"lr_at_epoch_end": LR.lr_at(self.cfg, epoch)},  # a pure function: no state
            C.EPOCH: epoch,
            C.RNG_STATE: {"torch": torch.get_rng_state(),
                          "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            C.TRAINER_STATE: {
                "json": json.dumps({"history": [runs.without_timings(r) for r in self.history], "best": self.best,
                                    "manifest_fingerprint": self.manifest.fingerprint,
                                    # the scores stay in their Parquet files under RUN/plan/; named here
                                    # not sort_keys: a resumed run's metrics keep the columns' order
                                    "plan_files": self.plan_files}),
            },
        }

    def _resume(self) -> None:
        state = C.load_checkpoint(self.run / runs.LAST)
        self.model.load_state_dict(state[C.MODEL_STATE])
        self.opt.load_state_dict(state[C.OPTIMIZER_STATE])
        torch.set_rng_state(state[C.RNG_STATE]["torch"])
        if state[C.RNG_STATE]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state[C.RNG_STATE]["cuda"])
        t = state[C.TRAINER_STATE]
        saved = json.loads(t["json"])
        if saved["manifest_fingerprint"] != self.manifest.fingerprint:
            raise ConfigError(f"--resume: the manifest {self.cfg.manifest} changed since the run started (fingerprint "
                              f"{self.manifest.fingerprint}, run: {saved['manifest_fingerprint']}); resume with the "
                              "manifest the run was started with")
        timings = runs.read_timings(self.run)  # wall-clock figures are not part of the checkpoint
        self.history = [{**r, **timings.get(r["epoch"], {})} for r in saved["history"]]
        self.best = saved["best"]
        try:
            files = saved["plan_files"]
            self.plan = PlanState.load(self.run, files["plan"])
            static = files["static"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"--resume: {self.run / runs.LAST} does not name its plan files ({exc}); it was "
                              "written by another version of bss train; start the run again") from None
        self.planner.static = None if static is None else load_scores_file(self.run, static)[0]
        self.plan_files = files
        if files["plan"] is not None:  # on disk, checked against its fingerprint above
            self._plan_cache = (self.run / files["plan"]["file"], None, files["plan"])
            self._plan_written = files["plan"]
        self.start_epoch = state[C.EPOCH] + 1
        self.saved_epoch = state[C.EPOCH]

    # --- the run ---------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        if self.cb.on_message and self.info.is_main:
            self.cb.on_message(text)

    def _warn(self, text: str) -> None:
        if self.info.is_main:
            (self.cb.on_warning or self._say)(f"warning: {text}")

    def fit(self) -> TrainResult:
        """Train under the run folder's lock (rank 0 holds it; the other ranks write nothing).

        Files are written by a background thread in the order asked for (checkpoints, metrics and
        artifacts land while the next epoch trains); the run waits for them before it ends.
        """
        log_dir = Path(self.cfg.log_dir) if self.cfg.log_dir else self.run
        with guarded(self.run), guarded(log_dir), runs.run_lock(self.run) if self.info.is_main else _nothing(), \
                FileWriter(self.info.is_main) as files:
            self.files = files
            barrier(self.info)
            try:
                return self._fit()
            finally:
                self._close_tracking()

    def _fit(self) -> TrainResult:
        cfg, main = self.cfg, self.info.is_main
        if main:  # re-checked under the lock: another run may have finished in between
            self.has_checkpoint = runs.check_run_folder(self.run, cfg.to_dict(), cfg.resume, RESUME_FREE)
        if main and cfg.log:  # before anything is written: a tracker that cannot start leaves no run behind
            self._open_tracking()
        if self.has_checkpoint:
            self._resume()  # reads and checks last.pt before anything in the folder changes
            self._say(f"resuming {self.run} at epoch {self.start_epoch}")
            if self.tracking is not None:  # the saved epochs a kill left some tracker without
                from bss_cli.tracking import epoch_values

                self.tracking.replay(self.history, lambda row: epoch_values(row, len(self.train_rows)))
        if main and cfg.resume:
            for stale in runs.remove_stale_temporaries(self.run):
                self._say(f"removed {stale.name}, left by an interrupted write")
        if main and not self.has_checkpoint:
            runs.write_json(self.run / runs.SETTINGS, runs.run_settings(cfg.to_dict()))
        if not self.has_checkpoint:
            if cfg.resume:
                self._say(f"{self.run} has no checkpoint yet (killed before its first epoch ended); starting it over")
            self._initial_scores()
            self._save_plan(0)
            if main and self.planner.static is not None:
                self.plan_files["static"] = save_scores_file(runs.plan_path(self.run, None), self.planner.static,
                                                             write=self.files.write)
        model = self.model
        if self.info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.files.hold()  # each epoch's files wait in memory until the folder is brought up to date
        self._saved_at = time.perf_counter()
        for epoch in range(self.start_epoch, cfg.epochs):
            self._run_epoch(epoch, model)
        return self._finish()

    def _save_plan(self, epoch: int) -> None:
        """The scores that order ``epoch`` on are new: their plan file is encoded when first needed and
        written by the next save, before the checkpoint that names it (a plan superseded before any
        save names it is never written)."""
        self._plan_epoch, self._plan_cache = epoch, None

    def _plan_file(self) -> tuple[Path, bytes | None, dict | None]:
        if self._plan_cache is None:
            path = runs.plan_path(self.run, self._plan_epoch)
            encoded = self.plan.encode(path)
            self._plan_cache = (path, *encoded) if encoded else (path, None, None)
        return self._plan_cache

    def _run_epoch(self, epoch: int, model) -> None:
        cfg, main = self.cfg, self.info.is_main
        t0 = time.perf_counter()
        table, job = self.planner.epoch_table(epoch, self.plan)
        if main and cfg.epoch_artifacts and job is not None:
            folder = runs.epoch_dir(self.run, epoch)
            file_table, options = one_epoch_file(job, table)  # encoded when the folder is next saved
            self.files.write_table(folder / runs.SCHEDULE_FILE, file_table, {}, **options)
            if cfg.scheduler == "learned" and self.plan.scores is not None:  # the plan file's bytes
                path, data, _ = self._plan_file()
                if data is not None:
                    self.files.write(folder / runs.SCORES_FILE, data)
                else:  # a resumed run's plan file, on disk
                    self.files.call(copy_file, path, folder / runs.SCORES_FILE)
            elif epoch == 0 and self.plan_files["static"] is not None and \
                    self.planner.static.metadata.get("bss.kind") == "scores":
                self.files.call(copy_file, self.run / self.plan_files["static"]["file"], folder / runs.SCORES_FILE)
        rescore_now = self.planner.rescoring and epoch + 1 < cfg.epochs and (epoch + 1) % cfg.rescore_every == 0
        online = self._online_buffers() if rescore_now and cfg.rescore == "online" else None
        t1 = time.perf_counter()
        loss, seen = self._train_epoch(epoch, model, table, online)
        t2 = time.perf_counter()
        if rescore_now:  # k = floor(t / E): new scores after every E-th epoch
            preds = self._online_predictions(online) if online is not None else self._predict_split(self.train_rows)
            self.planner.update(self.plan, self._scores(preds, f"{cfg.rescore}:epoch-{epoch}"))
            self._save_plan(epoch + 1)
        t3 = time.perf_counter()
        val = self._evaluate(self.val_rows)
        paper = {}  # the paper's protocol (a test figure every epoch), reported beside ours only, never selected on
        if cfg.test_every_epoch and len(self.test_rows):
            paper = {f"paper_test_{k}": v for k, v in self._evaluate(self.test_rows).items()
                     if k in ("acc", "macro_f1", "map")}
        t4 = time.perf_counter()
        balance = table.column("balance").to_numpy()
        # the largest class's share of the epoch's rows: a curriculum ranked by an untrained model
        # can put one class first, so that its early epochs train on one class alone
        counts = np.bincount(self.manifest.labels[table.column("row").to_numpy()], minlength=self.manifest.n_classes)
        row = {"epoch": epoch, "train_loss": loss, "lr": LR.lr_at(cfg, epoch),
               "subset_size": table.num_rows, "mean_balance": float(balance.mean()),
               "top_class_share": float(counts.max() / max(counts.sum(), 1)), "rescored": rescore_now,
               **{f"val_{k}": v for k, v in val.items()}, **paper,
               "plan_seconds": t1 - t0, "train_seconds": t2 - t1, "score_seconds": t3 - t2, "eval_seconds": t4 - t3,
               "samples_per_s": seen * self.info.world_size / max(t2 - t1, 1e-9)}
        self.history.append(row)
        improved = val["acc"] > self.best["val_acc"]
        if improved:
            self.best = {"epoch": epoch, "val_acc": val["acc"]}
        if main:
            if self._save_due(epoch):
                self._save(epoch, improved)
            elif improved:  # best.pt is written at the next save, with this epoch's state
                self._best_state = copy.deepcopy(self._state(epoch))
        if self.tracking is not None:
            self._track_epoch(epoch, row, table)
        barrier(self.info)
        if self.cb.on_epoch_end and main:
            self.cb.on_epoch_end(row)

    # --- experiment trackers (--log) ------------------------------------------------------------
    def _open_tracking(self) -> None:
        from bss_cli.tracking import Target, Tracking
        from bss_cli.tracking.hub import read_ids

        cfg = self.cfg
        tags = {"bss.scheduler": cfg.scheduler, "bss.seed": str(cfg.seed)}
        if cfg.log_group:  # a study: its name, and the variant (the first part of the run's name)
            tags.update({"bss.study": cfg.log_group, "bss.variant": (cfg.log_name or self.run.name).split("/")[0]})
        target = Target(Path(cfg.log_dir) if cfg.log_dir else self.run, cfg.log_name or "", cfg.log_group, tags,
                        read_ids(self.run) if self.has_checkpoint else {})
        self.tracking = Tracking(cfg.log, target, runs.run_settings(cfg.to_dict()), self.run)
        self._say("logging to " + ", ".join(f"{k} ({v})" for k, v in self.tracking.where.items()))


    def _track_epoch(self, epoch: int, row: dict, table) -> None:
        """Queue the epoch's values (and, when the epoch's order came from new scores, histograms of
        the balance scores and sampling probabilities that ordered it) for the trackers."""
        from bss_cli.tracking import epoch_values

        self.tracking.scalars(epoch_values(row, len(self.train_rows)), epoch)
        # epoch 0's order, and each learned epoch after a re-scoring (history[-1] is this epoch's row)
        fresh = epoch == 0 or (self.planner.rescoring and len(self.history) > 1 and self.history[-2]["rescored"])
        if fresh and (self.planner.file is not None or self.cfg.scheduler in (*STATIC_SCORED, "learned")):
            self.tracking.histogram("bss/balance_scores", table.column("balance").to_numpy(), epoch)
            if "probability" in table.column_names:
                self.tracking.histogram("bss/sampling_probability", table.column("probability").to_numpy(), epoch)
        for text in self.tracking.drain_messages():
            self._warn(text)

    def _close_tracking(self) -> None:
        if self.tracking is not None:
            for text in self.tracking.close():
                self._warn(text)
            self.tracking = None

    def _save_due(self, epoch: int) -> bool:
        return (epoch + 1 == self.cfg.epochs or time.perf_counter() - self._saved_at >= self.cfg.save_every
                or self.files.held_bytes >= HELD_BYTES)

    def _save(self, epoch: int, improved: bool) -> None:
        """Bring the run folder up to date with ``epoch``: the files the epochs since the last save
        held back (plan files, epoch artifacts), best.pt when a better epoch came since, the metrics,
        and last, last.pt: a kill at any instant leaves a last.pt whose every file is on disk, and the
        resumed run rewrites the newer ones with the same bytes. Encoded here; written by the writer
        thread, in this order, while the next epoch trains."""
        path, data, entry = self._plan_file()
        if entry is not None and entry != self._plan_written:  # before the checkpoint that names it
            self.files.write(path, data)
            self._plan_written = entry
        checkpoint = C.checkpoint_bytes(self._state(epoch))
        # best.pt lands before the last.pt that records it as the best: a kill in between leaves a
        # last.pt of the previous save, and the resumed run recomputes (and rewrites) the same best.pt
        if improved:  # the same bytes, not serialised twice
            self.files.write(self.run / runs.BEST, checkpoint)
        elif self._best_state is not None:
            self.files.write(self.run / runs.BEST, C.checkpoint_bytes(self._best_state))
        self._best_state = None
        # the metrics too: last.pt lands last, so whatever it records is on disk before it
        runs.write_metrics(self.run, self.history, {"bss.scheduler": self.cfg.scheduler}, self.files)
        self.files.write(self.run / runs.LAST, checkpoint)
        self.files.call(runs.remove_plan_files, self.run, {e["file"] for e in self.plan_files.values() if e})
        self.files.release()
        self.files.hold()
        self.saved_epoch, self._saved_at = epoch, time.perf_counter()

    def _finish(self) -> TrainResult:
        self.files.flush()
        barrier(self.info)  # best.pt has landed before any rank reads it
        best = C.load_checkpoint(self.run / runs.BEST)
        model, _ = self._fresh_model()
        model.load_state_dict(best[C.MODEL_STATE])
        model.to(self.device)
        test = self._evaluate(self.test_rows, model) if len(self.test_rows) else {}
        settings = {k: v for k, v in runs.run_settings(self.cfg.to_dict()).items() if k not in RESUME_FREE}
        summary = {"bss_version": __version__, "manifest_fingerprint": self.manifest.fingerprint,
                   "settings_fingerprint": fingerprint_text(json.dumps(settings, sort_keys=True)),
                   "scheduler": self.cfg.scheduler, "epochs": self.cfg.epochs,
                   "best_epoch": self.best["epoch"], "best_val_acc": self.best["val_acc"],
                   "test": test, "final_val": {k: v for k, v in self.history[-1].items() if k.startswith("val_")}}
        if self.info.is_main:
            runs.write_json(self.run / runs.SUMMARY, summary)
        if self.tracking is not None:
            from bss_cli.tracking import final_values

            self.tracking.final(runs.run_settings(self.cfg.to_dict()), final_values(summary), self.cfg.epochs - 1)
        return TrainResult(self.run, self.history, self.best["epoch"], test, {"run": str(self.run), **summary})


@contextlib.contextmanager
def _nothing():
    yield



def train(cfg: TrainConfig, callbacks: Callbacks | None = None) -> TrainResult:
    """Train as ``cfg`` says; under torchrun, every rank calls this."""
    cfg.validate()
    info, device = setup(cfg.device, cfg.threads)
    try:
        return Trainer(cfg, info, device, callbacks or Callbacks()).fit()
    except BaseException as err:
        if info.enabled:  # the DDP model in the failed frames goes before its process group (see teardown)
            traceback.clear_frames(err.__traceback__)
        raise
    finally:
        teardown(info)
