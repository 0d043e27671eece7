"""A run's trackers, driven from one background thread so the training loop only queues plain
numbers (microseconds per epoch), and what BSS logs, named once.

A tracker that fails mid-run is dropped with one message and the run goes on; the run's own
files never depend on a tracker (nothing here touches the model, the data or any random state).
"""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path

import numpy as np

from bss_cli.errors import ConfigError
from bss_cli.tracking.backends import BACKENDS, Target

IDS_FILE = "trackers.json"  # in the run folder: the tracker run ids, so --resume continues the same tracker runs
LOGGED_FILE = "trackers-logged.json"  # in the run folder: per tracker, the last epoch it holds for sure
CLOSE_TIMEOUT = 120.0  # seconds the end of a run waits for its trackers to flush


def epoch_values(row: dict, n_train: int) -> dict[str, float]:
    """One epoch's metrics row as tracker values.

    ``train/loss``, ``train/lr``; ``val/acc``, ``val/macro_f1``, ``val/map``, ``val/acc_<modality>``
    (each head), ``val/imbalance``; ``bss/epoch_size``, ``bss/prefix_fraction`` (the epoch's size
    over the train split), ``bss/mean_balance``, ``bss/rescored``, ``bss/rescore_seconds``;
    ``time/epoch_seconds``, ``time/samples_per_s``; under --test-every-epoch ``paper/test_acc`` ...
    """
    out = {"train/loss": row["train_loss"], "train/lr": row["lr"]}
    out.update({f"val/{k[4:]}": v for k, v in row.items() if k.startswith("val_")})
    out.update({"bss/epoch_size": row["subset_size"], "bss/prefix_fraction": row["subset_size"] / max(n_train, 1),
                "bss/mean_balance": row["mean_balance"], "bss/rescored": int(bool(row["rescored"])),
                "bss/rescore_seconds": row.get("score_seconds", 0.0)})
    seconds = sum(row.get(k) or 0.0 for k in ("plan_seconds", "train_seconds", "score_seconds", "eval_seconds"))
    out.update({"time/epoch_seconds": seconds, "time/samples_per_s": row.get("samples_per_s", 0.0)})
    out.update({f"paper/{k[6:]}": v for k, v in row.items() if k.startswith("paper_")})
    return {k: float(v) for k, v in out.items() if v is not None and np.isfinite(v)}


def final_values(summary: dict) -> dict[str, float]:
    """``test/<metric>`` of the best-by-validation checkpoint, ``best/epoch``, ``best/val_acc``."""
    out = {f"test/{k}": v for k, v in (summary.get("test") or {}).items()}
    out.update({"best/epoch": summary.get("best_epoch"), "best/val_acc": summary.get("best_val_acc")})
    return {k: float(v) for k, v in out.items() if v is not None and np.isfinite(v)}


def _lowest_priority() -> None:
    """Run this thread at the lowest CPU priority (Linux: a thread's nice value is its own): when
    the cores are busy training, the trackers wait for an idle moment (data loading, the epoch's
    end) instead of taking a core from the training's threads. Elsewhere: normal priority."""
    import os

    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass


def read_logged(run: Path) -> dict[str, int]:
    try:
        logged = json.loads((Path(run) / LOGGED_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in logged.items() if isinstance(v, int) and not isinstance(v, bool)} \
        if isinstance(logged, dict) else {}


def read_ids(run: Path) -> dict[str, str]:
    try:
        ids = json.loads((Path(run) / IDS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in ids.items()} if isinstance(ids, dict) else {}


class Tracking:
    """The trackers of one run. ``scalars``/``histogram``/``final`` queue work and return at once."""

    def __init__(self, names: list[str], target: Target, settings: dict, run: Path, say=None):
        self.messages: list[str] = []  # failures, for the main thread to report
        self.run = Path(run)
        # per tracker, the epochs it holds: a resumed run replays the saved epochs a tracker lacks and
        # skips those it has, so every epoch reaches every tracker exactly once even after a kill -9.
        # Read back from the tracker's own store where it can be (CSV, TensorBoard, MLflow); W&B's
        # offline files cannot be read back, so for it the run's note of the last epoch flushed counts.
        noted = read_logged(run) if target.resume_ids else {}
        self.logged = noted
        self._lock = threading.Lock()
        self.backends = []
        for name in names:
            backend = BACKENDS[name][0]()
            try:
                backend.start(target, settings)
            except Exception as exc:  # at the start, a tracker that cannot start stops the run: nothing trained yet
                self._close_all()
                raise ConfigError(f"--log {name}: the tracker did not start ({type(exc).__name__}: "
                                  f"{str(exc)[:300]}); fix it or drop --log {name}") from None
            self.backends.append(backend)
        self.held: dict[str, set[int]] = {}
        for backend in self.backends:
            if not target.resume_ids.get(backend.name):
                self.held[backend.name] = set()
                continue
            try:
                self.held[backend.name] = backend.held_steps() if hasattr(backend, "held_steps") else \
                    set(range(noted.get(backend.name, -1) + 1))
            except Exception:  # unreadable: fall back to the note
                self.held[backend.name] = set(range(noted.get(backend.name, -1) + 1))
        self.where = {b.name: b.id for b in self.backends}  # also what --resume reads back
        from bss_cli.artifacts import atomic_path

        with atomic_path(Path(run) / IDS_FILE) as tmp:
            tmp.write_text(json.dumps(self.where, indent=2, sort_keys=True) + "\n")
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="bss-trackers", daemon=True)
        self._thread.start()

    def scalars(self, values: dict[str, float], step: int) -> None:
        self._queue.put(("scalars", (dict(values), step)))

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        self._queue.put(("histogram", (tag, np.array(values, np.float64), step)))

    def final(self, settings: dict, results: dict[str, float], step: int) -> None:
        self._queue.put(("final", (dict(settings), dict(results), step)))

    def drain_messages(self) -> list[str]:
        with self._lock:
            out, self.messages = self.messages, []
        return out

    def close(self, timeout: float = CLOSE_TIMEOUT) -> list[str]:
        """Flush and close every tracker (waiting at most ``timeout`` seconds); the messages left."""
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._fail_note(f"the trackers did not finish writing within {timeout:.0f} s; their last values may "
                            "be missing (the run's own files are complete)")
        return self.drain_messages()

    def _work(self) -> None:
        _lowest_priority()
        while True:
            item = self._queue.get()
            if item is None:
                self._close_all()
                return
            method, args = item
            noted = False
            for backend in list(self.backends):
                if method == "scalars" and args[1] in self.held.get(backend.name, ()):
                    continue  # an epoch this tracker already holds (logged before a kill, or replayed)
                try:
                    getattr(backend, method)(*args)
                    if method == "scalars":
                        if hasattr(backend, "flush"):
                            backend.flush()  # durable before it is noted as logged
                        self.logged[backend.name] = max(args[1], self.logged.get(backend.name, -1))
                        self.held.setdefault(backend.name, set()).add(args[1])
                        noted = True
                except Exception as exc:  # a tracker's fault never stops the run: drop it, say so once
                    self.backends.remove(backend)
                    self._fail_note(f"--log {backend.name} failed ({type(exc).__name__}: {str(exc)[:200]}); the run "
                                    f"goes on without it (its own files are complete)")
                    try:
                        backend.close()
                    except Exception:
                        pass
            if noted:
                self._note_logged()

    def _note_logged(self) -> None:
        from bss_cli.artifacts import write_bytes

        try:
            write_bytes(self.run / LOGGED_FILE, (json.dumps(self.logged, sort_keys=True) + "\n").encode())
        except Exception as exc:  # the note is the trackers' bookkeeping: losing it costs a replay, not the run
            self._fail_note(f"the trackers' progress note could not be written ({str(exc)[:200]})")

    def replay(self, rows: list[dict], values) -> None:
        """Queue the saved epochs (``rows`` of metrics.parquet, ``values(row)`` their tracker
        values): each tracker receives those it does not hold yet (a kill -9 can leave a tracker
        behind the saved epochs: it writes on its own thread)."""
        for row in rows:
            self.scalars(values(row), int(row["epoch"]))

    def _close_all(self) -> None:
        for backend in self.backends:
            try:
                backend.close()
            except Exception as exc:
                self._fail_note(f"--log {backend.name}: closing failed ({type(exc).__name__}: {str(exc)[:200]})")
        self.backends = []

    def _fail_note(self, text: str) -> None:
        with self._lock:
            self.messages.append(text)
