"""Experiment trackers, each through its own library: TensorBoard (tensorboard's writer), MLflow
(a local file store by default), Weights & Biases (offline by default) and a CSV folder (no
library, the layout of Lightning's ``CSVLogger``).

A backend is told where to write (:class:`Target`) and then receives scalars per step,
histograms per step, and at the end the settings as hyper-parameters with the final figures.
Backends are driven from one background thread (:mod:`bss_cli.tracking.hub`); they never see
the run's tensors or random state.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bss_cli.artifacts import make_dir, write_bytes
from bss_cli.errors import ConfigError

PROBE_SECONDS = 5.0  # how long a remote tracker may take to accept a connection before the run is refused


def _append(path: Path):
    """``path`` opened to append text, never through a symbolic link (a link planted there is
    refused, not followed)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
    return open(fd, "a", newline="")


def probe(uri: str, what: str) -> None:
    """An http(s) tracking server must accept a TCP connection within PROBE_SECONDS: one that
    cannot be reached fails the run at once, not after the client's minutes of retries."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((parts.hostname or "", port), timeout=PROBE_SECONDS).close()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise ConfigError(f"{what} {uri}: cannot be reached ({reason}); start the server, fix the address, or "
                          "unset it to log to a local folder") from None


@dataclass
class Target:
    """Where one run's tracking goes.

    ``folder``: the base folder (the run folder, or a study folder); ``name``: the run's name under
    it (``variant/seed=3`` in a study, empty for a lone run); ``group``: what groups runs (the
    study's name: an MLflow experiment, a W&B group); ``tags``: searchable labels (variant, seed).
    ``resume_ids``: the tracker run ids of an interrupted run, to continue the same tracker run.
    """

    folder: Path
    name: str = ""
    group: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    resume_ids: dict[str, str] = field(default_factory=dict)

    def path(self, kind: str) -> Path:
        return self.folder / kind / self.name if self.name else self.folder / kind

    @property
    def display_name(self) -> str:
        return self.name or self.folder.name


def _typed_params(settings: dict) -> dict:
    """Settings for ``hparams.json``: numbers, booleans and None keep their JSON types; lists of
    plain values stay lists; anything else becomes its text."""
    def plain(v):
        if v is None or isinstance(v, (bool, int, str)) or (isinstance(v, float) and v == v and abs(v) != float("inf")):
            return v
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return str(v)
    return {k: plain(v) for k, v in settings.items()}


def flat_params(settings: dict) -> dict[str, str]:
    """Settings as hyper-parameter strings (lists joined, None as 'none'), in key order."""
    out = {}
    for k, v in settings.items():
        if isinstance(v, (list, tuple)):
            v = ",".join(map(str, v))
        out[k] = "none" if v is None else str(v)
    return out


class CsvBackend:
    """``metrics.csv`` (one row per step, one column per value, rewritten with a wider header when a
    new value appears, as Lightning's CSVLogger does), ``histograms.csv`` (step, tag, bin edges,
    count) and ``hparams.json``."""

    name = "csv"

    def start(self, target: Target, settings: dict) -> None:
        self.folder = make_dir(target.path("csv"))
        self.rows: list[dict] = []
        self.keys: list[str] = ["step"]
        metrics = self.folder / "metrics.csv"
        if target.resume_ids.get(self.name) and metrics.is_file():  # a resumed run continues the file
            with open(metrics, newline="") as f:
                reader = csv.DictReader(f)
                self.keys = list(reader.fieldnames or ["step"])
                self.rows = list(reader)
        write_bytes(self.folder / "hparams.json", (json.dumps(_typed_params(settings), indent=2) + "\n").encode())
        self.id = str(self.folder)

    def held_steps(self) -> set[int]:
        """The epochs metrics.csv holds (read back: what a resumed run must not log again)."""
        return {int(r["step"]) for r in self.rows if str(r.get("step", "")).isdigit() and r.get("train/loss")}

    def scalars(self, values: dict[str, float], step: int) -> None:
        # a step logged again (a resumed run redoing an epoch, the final figures) updates its row
        row = next((r for r in self.rows if str(r.get("step")) == str(step)), None)
        new = [k for k in values if k not in self.keys]
        self.keys += new
        if row is None:
            self.rows.append({"step": step, **values})
            if not new and (self.folder / "metrics.csv").exists():  # the common case: one appended line
                with _append(self.folder / "metrics.csv") as f:
                    csv.DictWriter(f, self.keys).writerow(self.rows[-1])
                return
        else:
            row.update(values)
        self._write()

    def _write(self) -> None:
        import io

        text = io.StringIO(newline="")
        w = csv.DictWriter(text, self.keys)
        w.writeheader()
        w.writerows(sorted(self.rows, key=lambda r: int(r["step"])))
        write_bytes(self.folder / "metrics.csv", text.getvalue().encode())  # a fresh temporary, renamed into place

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        counts, edges = np.histogram(values, bins=30)
        path = self.folder / "histograms.csv"
        new = not path.exists()
        with _append(path) as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "tag", "bin_low", "bin_high", "count"])
            w.writerows([step, tag, repr(float(lo)), repr(float(hi)), int(c)]
                        for lo, hi, c in zip(edges[:-1], edges[1:], counts))

    def final(self, settings: dict, results: dict[str, float], step: int) -> None:
        self.scalars(results, step)

    def close(self) -> None:
        pass


class TensorBoardBackend:
    """Event files under ``<folder>/tensorboard/<name>``: scalars, histograms, and the settings in
    the HPARAMS tab with the final figures as its metrics (as Lightning's TensorBoardLogger does)."""

    name = "tensorboard"

    def start(self, target: Target, settings: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.dir = make_dir(target.path("tensorboard"))  # its library writes the event files: no link on the way
        self.writer = SummaryWriter(log_dir=str(self.dir), flush_secs=5)  # a killed run loses at most 5 s of events
        self.id = str(self.dir)

    def scalars(self, values: dict[str, float], step: int) -> None:
        # one event holding every value of the step (add_scalar would write one event per value, at
        # ten times the cost); TensorBoard reads each value as its own scalar series
        from tensorboard.compat.proto.summary_pb2 import Summary

        summary = Summary(value=[Summary.Value(tag=k, simple_value=float(v)) for k, v in values.items()])
        self.writer.file_writer.add_summary(summary, step)

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        self.writer.add_histogram(tag, np.asarray(values, np.float64), step)

    def flush(self) -> None:
        self.writer.flush()

    def held_steps(self) -> set[int]:
        """The epochs whose train/loss the event files under the run's folder hold (read back)."""
        from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

        steps = set()
        for path in sorted(self.dir.glob("events.out.tfevents.*")):
            try:
                for event in EventFileLoader(str(path)).Load():
                    if any(v.tag == "train/loss" for v in event.summary.value):
                        steps.add(int(event.step))
            except Exception:  # a file cut by a kill: what was read before the cut counts
                continue
        return steps

    def final(self, settings: dict, results: dict[str, float], step: int) -> None:
        from torch.utils.tensorboard.summary import hparams

        params = {k: (v if isinstance(v, (int, float, bool)) and not isinstance(v, bool) else str(v))
                  for k, v in settings.items()}
        for summary in hparams(params, results):
            self.writer.file_writer.add_summary(summary)
        self.scalars(results, step)

    def close(self) -> None:
        self.writer.close()


class MlflowBackend:
    """One MLflow run per bss run: experiment = the group (the study) or 'bss', run name = the
    run's name, tags bss.*; metrics with the epoch as step; settings as params; histograms as JSON
    artifacts (MLflow has no histogram type). The store is ``MLFLOW_TRACKING_URI`` when set, else a
    local file store ``<folder>/mlruns``."""

    name = "mlflow"
    FLUSH_SECONDS = 2.0

    def start(self, target: Target, settings: dict) -> None:
        uri = os.environ.get("MLFLOW_TRACKING_URI") or make_dir(target.folder / "mlruns").resolve().as_uri()
        probe(uri, "MLFLOW_TRACKING_URI")
        # a server that stops answering mid-run: a few quick retries, not MLflow's minutes of them (the
        # tracker is then dropped with a warning and the run goes on)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        if uri.startswith("file:"):
            # MLflow 3 keeps its file store in maintenance and refuses it unless asked: a local folder is
            # what this tracker is for (no server, no database); set here, for this process only
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.uri = uri
        experiment = target.group or "bss"
        run_id = target.resume_ids.get(self.name)
        if run_id:
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                try:
                    exp_id = self.client.create_experiment(experiment)
                except Exception:  # a study's parallel run created it first
                    found = self.client.get_experiment_by_name(experiment)
                    if found is None:
                        raise
                    exp_id = found.experiment_id
            else:
                exp_id = found.experiment_id
            run = self.client.create_run(exp_id, run_name=target.display_name, tags=target.tags)
            self.run_id = run.info.run_id
            from mlflow.entities import Param

            params = [Param(k, v[:6000]) for k, v in flat_params(settings).items()]
            for i in range(0, len(params), 100):
                self.client.log_batch(self.run_id, params=params[i:i + 100])
        self.id = self.run_id
        self.pending: list = []
        self.flushed = time.monotonic()

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Buffered: one ``log_batch`` every FLUSH_SECONDS (each batch costs a read of the run's
        metadata in a file store), and at every histogram, the end and close."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), now, step) for k, v in values.items()]
        if time.monotonic() - self.flushed >= self.FLUSH_SECONDS:
            self._flush()

    def flush(self) -> None:
        self._flush()

    def held_steps(self) -> set[int]:
        """The epochs the MLflow run holds a train/loss for (asked of the store)."""
        return {int(m.step) for m in self.client.get_metric_history(self.run_id, "train/loss")}

    def _flush(self) -> None:
        for i in range(0, len(self.pending), 1000):  # MLflow's batch limit
            self.client.log_batch(self.run_id, metrics=self.pending[i:i + 1000])
        self.pending, self.flushed = [], time.monotonic()

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        self._flush()
        counts, edges = np.histogram(values, bins=30)
        self.client.log_dict(self.run_id, {"tag": tag, "step": step, "bin_edges": edges.tolist(),
                                           "counts": counts.tolist()},
                             f"histograms/{tag.replace('/', '.')}/step={step}.json")

    def final(self, settings: dict, results: dict[str, float], step: int) -> None:
        self.scalars(results, step)
        self._flush()
        self.client.set_terminated(self.run_id, "FINISHED")

    def close(self) -> None:
        if self.pending:
            self._flush()


class WandbBackend:
    """One W&B run per bss run, offline unless ``WANDB_MODE`` says otherwise (``wandb sync`` uploads
    it later): project ``WANDB_PROJECT`` or 'bss', group = the study, job type = the variant,
    config = the settings, histograms as ``wandb.Histogram``, the final figures in the summary.
    Files: ``<folder>/wandb/offline-run-*`` (a study's runs side by side: ``wandb sync STUDY/wandb/offline-run-*``).
    Console capture and system statistics are off: they would touch the run's own output."""

    name = "wandb"

    def start(self, target: Target, settings: dict) -> None:
        import wandb

        folder = target.folder  # wandb writes under <folder>/wandb/, one offline-run-* folder per run
        make_dir(folder / "wandb")
        run_id = target.resume_ids.get(self.name)
        before = _children()
        self.run = wandb.init(
            dir=str(folder), mode=os.environ.get("WANDB_MODE", "offline"),
            project=os.environ.get("WANDB_PROJECT", "bss"), group=target.group,
            job_type=target.tags.get("bss.variant"), name=target.display_name, config=settings,
            tags=[f"{k}={v}" for k, v in target.tags.items()] or None,
            id=run_id, resume="allow" if run_id else None, reinit="create_new",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True, x_disable_meta=True,
                                    save_code=False))
        self.wandb = wandb
        self.id = self.run.id
        for pid in _children() - before:  # W&B's service process: it writes the run while training runs,
            try:  # so it waits for idle CPU as the tracker thread does (hub._lowest_priority)
                os.setpriority(os.PRIO_PROCESS, pid, 19)
            except (AttributeError, OSError):
                pass

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log(dict(values), step=step)

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        self.run.log({tag: self.wandb.Histogram(np.asarray(values, np.float64))}, step=step)

    def final(self, settings: dict, results: dict[str, float], step: int) -> None:
        self.run.log(dict(results), step=step)
        self.run.summary.update(results)

    def close(self) -> None:
        self.run.finish()


def _children() -> set[int]:
    """This process's child processes (Linux /proc; elsewhere none are found)."""
    found = set()
    for task in Path("/proc/self/task").glob("*") if Path("/proc/self/task").is_dir() else []:
        try:
            found.update(int(p) for p in (task / "children").read_text().split())
        except (OSError, ValueError):
            pass
    return found


# name -> (backend, the module it needs, the pip extra that installs it)
BACKENDS = {
    "tensorboard": (TensorBoardBackend, "tensorboard", "tensorboard"),
    "mlflow": (MlflowBackend, "mlflow", "mlflow"),
    "wandb": (WandbBackend, "wandb", "wandb"),
    "csv": (CsvBackend, None, None),
}


def parse_names(items: list[str] | None, flag: str = "--log") -> list[str]:
    """``--log tensorboard --log mlflow`` or ``--log tensorboard,mlflow``: the tracker names, each
    once, in the order given; unknown names and missing libraries are errors naming the extra."""
    names = []
    for item in items or []:
        for name in str(item).split(","):
            name = name.strip().lower()
            if name and name not in names:
                names.append(name)
    problems = []
    for name in names:
        if name not in BACKENDS:
            problems.append(f"{flag} {name!r}: expected one of {', '.join(BACKENDS)}")
            continue
        module, extra = BACKENDS[name][1:]
        if module and importlib.util.find_spec(module) is None:
            problems.append(f"{flag} {name}: the {module} package is not installed; install the extra: "
                            f"pip install 'bss[{extra}]'")
    if problems:
        raise ConfigError("; ".join(problems))
    return names
