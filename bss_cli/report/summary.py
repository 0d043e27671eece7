"""What an artifact holds, as plain dicts (the CLI renders them; ``--json`` prints them).

numpy and pyarrow only: ``bss inspect`` must start fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bss_cli import schema as S
from bss_cli.artifacts import meta_json, read_metadata, require_regular_file
from bss_cli.data.manifest import READERS, load_manifest
from bss_cli.errors import ArtifactError

HIST_BINS = 20
N_EXTREMES = 5


def histogram(values: np.ndarray, bins: int = HIST_BINS) -> dict:
    counts, edges = np.histogram(values, bins=bins)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def describe(values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=np.float64)
    q = np.quantile(values, [0.0, 0.25, 0.5, 0.75, 1.0]) if len(values) else [np.nan] * 5
    return {"mean": float(values.mean()), "std": float(values.std()), "min": float(q[0]), "q25": float(q[1]),
            "median": float(q[2]), "q75": float(q[3]), "max": float(q[4])}


def _metadata(path: Path) -> dict:
    if path.is_dir():  # a folder of partitions: each carries the same metadata (checked when read)
        from bss_cli.data.partitions import list_files

        files = list_files(path)
        meta = read_metadata(files[0]) if files else {}
    else:
        meta = read_metadata(path) if path.suffix.lower() in (".parquet", ".pq") else {}
    return {k.removeprefix("bss."): meta_json(meta, k) for k in sorted(meta)}


def summarise_manifest(path: Path) -> dict:
    m = load_manifest(path, load_features=True)
    per_split = {s: int((m.split_codes == k).sum()) for k, s in enumerate(S.SPLITS)}
    per_class = {}
    meta = _metadata(path)
    names = meta.get("classes") if isinstance(meta.get("classes"), list) else None
    for code, name in enumerate(m.classes):
        mask = m.labels == code
        label = str(name)
        if names and isinstance(name, (int, np.integer)) and 0 <= int(name) < len(names) and str(names[int(name)]) != label:
            label = f"{name} ({names[int(name)]})"  # the layout's class name beside its id
        per_class[label] = {s: int((mask & (m.split_codes == k)).sum()) for k, s in enumerate(S.SPLITS)}
    modalities = {}
    size, frames = m.media.image_size, m.media.frames
    for name, mod in m.modalities.items():
        if name in m.paths:  # audio / image / volume: files checked, shape from the media settings
            shape = m.media.spectrogram_shape if mod.kind == "audio" else \
                [frames, m.images.get(name, {}).get("channels", 3), size, size] if mod.kind == "image" else \
                [(mod.shape or [1])[0], frames, size, size]
            modalities[name] = {"kind": mod.kind, "source": mod.source, "dim": "x".join(map(str, shape)),
                                "files": len(m.paths[name])}
            continue
        x = m.features[name]
        modalities[name] = {"kind": mod.kind, "source": mod.source, "dim": mod.dim,
                            "mean": float(x.mean()), "std": float(x.std()),
                            "min": float(x.min()), "max": float(x.max())}
    return {"kind": S.KIND_MANIFEST, "path": str(path), "fingerprint": m.fingerprint, "metadata": meta,
            "rows": m.n, "classes": len(m.classes), "splits": per_split, "per_class": per_class,
            "modalities": modalities}


def summarise_scores(path: Path) -> dict:
    if path.is_dir():
        from bss_cli.scoring.scores import read_scores

        table = _checked_scores(path, read_scores(path).table, "scores folder")
    else:
        table = _checked_scores(path, _read_rows(path, table=True), "scores file")
    meta = _metadata(path)
    balance = table[S.BALANCE].to_numpy()
    order = np.argsort(-balance, kind="stable")
    modalities = meta.get("modalities") or []
    heads = [m for m in modalities if S.PTRUE_PREFIX + m in table.column_names]
    ptrue = {m: table[S.PTRUE_PREFIX + m].to_numpy() for m in heads}
    loss = {m: table[S.LOSS_PREFIX + m].to_numpy() for m in heads}
    per_modality = {m: {"mean_loss": float(loss[m].mean()), "mean_p_true": float(ptrue[m].mean())} for m in heads}
    if heads:
        best = np.argmax(np.stack([ptrue[m] for m in heads]), axis=0)
        for i, m in enumerate(heads):
            per_modality[m]["dominates"] = int((best == i).sum())

    classes = [str(c) for c in meta.get("classes") or []]

    def sample(i: int) -> dict:
        code = int(table[S.LABEL][int(i)].as_py())
        row = {"sample_id": table[S.SAMPLE_ID][int(i)].as_py(), "balance": float(balance[i]),
               "label": classes[code] if code < len(classes) else code}
        row.update({f"p_true_{m}": float(ptrue[m][i]) for m in heads})
        return row

    raw = [c for c in ("pred_sim", "feat_sim", "loss", "grad_norm") if c in table.column_names]
    return {"kind": S.KIND_SCORES, "path": str(path), "metadata": meta, "rows": table.num_rows,
            "balance": describe(balance), "histogram": histogram(balance),
            "criteria": {c: describe(table[c].to_numpy()) for c in raw},
            "per_modality": per_modality,
            "most_balanced": [sample(i) for i in order[:N_EXTREMES]],
            "least_balanced": [sample(i) for i in order[::-1][:N_EXTREMES]]}


def _tenths(balance: np.ndarray) -> list[float]:
    """Mean balance score of each tenth of an epoch, in training order."""
    return [float(part.mean()) if len(part) else None for part in np.array_split(balance, 10)]  # None: no sample


def _consecutive(prev_rows: np.ndarray, rows: np.ndarray) -> dict:
    """Jaccard overlap of two epochs' sample sets, and the rank correlation of the common samples' positions."""
    common, i_prev, i_cur = np.intersect1d(prev_rows, rows, assume_unique=True, return_indices=True)
    jaccard = len(common) / (len(prev_rows) + len(rows) - len(common))
    corr = float("nan")
    if len(common) > 2:
        a = np.argsort(np.argsort(i_prev)).astype(np.float64)
        b = np.argsort(np.argsort(i_cur)).astype(np.float64)
        corr = float(np.corrcoef(a, b)[0, 1])
    return {"overlap": float(jaccard), "position_corr": corr}


def summarise_schedule(path: Path) -> dict:
    from bss_cli.scheduling.schedule_io import ScheduleFile, ScheduleFolder, TableSchedule, open_schedule

    f = open_schedule(path)
    if not isinstance(f, (ScheduleFile, ScheduleFolder)):
        f = TableSchedule(f)
    has_labels = S.LABEL in f.columns
    classes = [str(c) for c in meta_json(f.metadata, S.META_CLASSES, []) or []]
    epochs, prev, warnings = [], None, []
    for e in f.epochs:
        t = f.epoch(e, columns=[S.ROW, S.BALANCE] + ([S.LABEL] if has_labels else []))
        rows, balance = t[S.ROW].to_numpy(), t[S.BALANCE].to_numpy()
        info = {"epoch": e, "size": len(rows), "mean_balance": float(balance.mean()), "tenths": _tenths(balance)}
        info.update(_consecutive(prev, rows) if prev is not None else {"overlap": None, "position_corr": None})
        if has_labels:
            labels = t[S.LABEL].to_numpy()
            n_classes = max(len(classes), int(labels.max()) + 1 if len(labels) else 0)
            counts = np.bincount(labels, minlength=n_classes)
            names = classes if len(classes) == n_classes else [str(c) for c in range(n_classes)]
            info["per_class"] = {names[c]: int(k) for c, k in enumerate(counts)}
            missing = [names[c] for c in np.flatnonzero(counts == 0)]
            if missing:
                warnings.append(f"epoch {e} leaves out class(es) {', '.join(missing)}; a curriculum with --stratify "
                                "keeps every class in every epoch")
        epochs.append(info)
        prev = rows
    return {"kind": S.KIND_SCHEDULE, "path": str(path), "metadata": _metadata(path), "epochs": epochs,
            "rows": sum(e["size"] for e in epochs), "warnings": warnings,
            "format": "parquet partitions" if path.is_dir() else path.suffix.lstrip(".").lower()}


def summarise_run(path: Path) -> dict:
    """A run folder: settings, per-epoch metrics, best epoch and test, balance scores over epochs."""

    from bss_cli.training import runs

    if not (path / runs.SETTINGS).exists():
        raise ArtifactError(f"{path}: a folder, but not a bss run folder (no {runs.SETTINGS})")
    settings = _checked_settings(path / runs.SETTINGS, _read_json(path / runs.SETTINGS))
    metrics = _checked_epochs(path / runs.METRICS, _read_rows(path / runs.METRICS, table=True)) \
        if (path / runs.METRICS).exists() else []
    timings = {r["epoch"]: r for r in _checked_epochs(path / runs.TIMINGS, _read_rows(path / runs.TIMINGS, table=True))} \
        if (path / runs.TIMINGS).exists() else {}
    metrics = [{**r, **timings.get(r.get("epoch"), {})} for r in metrics]
    summary = _checked_summary(path / runs.SUMMARY, _read_json(path / runs.SUMMARY)) \
        if (path / runs.SUMMARY).exists() else None
    balance = []
    folders = sorted((path / runs.EPOCHS_DIR).glob("epoch=*"), key=runs.epoch_of) \
        if (path / runs.EPOCHS_DIR).exists() else []
    for folder in folders:
        scores = folder / runs.SCORES_FILE
        if scores.exists():
            b = _checked_scores(scores, _read_rows(scores, table=True), "run folder")[S.BALANCE].to_numpy()
            balance.append({"epoch": runs.epoch_of(folder), **describe(b), "histogram": histogram(b)})
    from bss_cli.training.metrics import stability

    return {"kind": "run", "path": str(path), "settings": settings, "epochs": metrics, "summary": summary,
            "balance": balance, "stability": stability([r.get("val_acc") for r in metrics]),
            "diagnosis": diagnose(metrics, summary)}


LEVEL, IMBALANCED = 0.05, 0.10  # spread of the heads' accuracies: the old rule's "level" and "imbalanced"
# What the diagnosis may claim: benchmarks/studies/README.md measured BSS on these data sets with
# tuned baselines, random-order controls and 10 paired seeds. On none of them did a balance-aware
# order improve test accuracy, whatever the heads' spread (EVIDENCE_SPREADS: the `none` runs'
# validation spread at their selected epoch), so no signal of a single run is known to predict a gain.
EVIDENCE_SETS = ("digits-av", "htad", "mfeat", "digits-av-clean", "mfeat-mor-fac", "mfeat-zer-kar")
EVIDENCE_SPREADS = (0.039, 0.301)
EVIDENCE_PAGE = "bss's own studies, which ship with its benchmarks"  # said on shared pages: no repository path


def diagnose(metrics: list[dict], summary: dict | None) -> dict | None:
    """How imbalanced the modality heads ended, and over time; and what that does (not) tell.

    The old rule ("likely to matter" when one head ends >= 0.10 below another) was measured and did
    not predict anything: on every data set measured, imbalanced or level, the balance-aware order
    gained nothing over its random-order control once the baseline was tuned. So the verdict states
    the signals and says plainly that they do not predict the effect; only a study measures it.
    """
    from bss_cli.training.metrics import stability

    heads = [k[len("val_acc_"):] for k in (metrics[0] if metrics else {}) if k.startswith("val_acc_")]
    if len(heads) < 2:
        return None
    test = (summary or {}).get("test") or {}
    source = "test" if all(f"acc_{h}" in test for h in heads) else "val (last epoch)"
    final = {h: test[f"acc_{h}"] for h in heads} if source == "test" else \
        {h: metrics[-1][f"val_acc_{h}"] for h in heads}
    spread = max(final.values()) - min(final.values())
    weak, strong = min(final, key=final.get), max(final, key=final.get)
    over_time = [{"epoch": r["epoch"], "imbalance": r.get("val_imbalance")} for r in metrics]
    stable = stability([r.get("val_acc") for r in metrics])
    lo, hi = EVIDENCE_SPREADS
    if stable["unstable"]:
        verdict = (f"not judged: this run is unstable ({stable['why']}). Fix the optimisation first (a lower --lr, "
                   "--clip-grad, --lr-warmup); a scheduler that beats an unstable baseline may only be rescuing it")
    else:
        verdict = (f"not predictable from this run: the {weak} head ends {spread:.3f} below the {strong} head, but "
                   f"on the {len(EVIDENCE_SETS)} data sets measured with tuned baselines and random-order controls "
                   f"(head spreads {lo:.2f} to {hi:.2f}) a balance-aware order never improved test accuracy, so neither "
                   f"this spread nor any other signal we measured predicts a gain ({EVIDENCE_PAGE}). Measure it on "
                   "this data: bss study DATA --tune-lr 0.01,0.03,0.1")
    return {"heads": final, "from": source, "spread": spread, "weak_head": weak, "strong_head": strong,
            "imbalance_over_epochs": over_time, "unstable": stable["unstable"], "verdict": verdict}


def summarise_study(path: Path) -> dict:
    """A study folder: its design, one row per finished run, and the paired statistics, computed
    from the run folders themselves (so a running study shows the runs finished so far)."""
    from bss_cli.errors import BSSError
    from bss_cli.study import stats
    from bss_cli.study.runner import DESIGN, StudyDesign, collect

    raw = _read_json(path / DESIGN)
    if not isinstance(raw, dict):
        raise ArtifactError(f"{path / DESIGN}: not a bss study design (not a JSON object); the study folder is damaged")
    try:
        design = StudyDesign(**raw)
        design.validate()
    except (TypeError, ValueError, AttributeError, KeyError, BSSError) as exc:
        raise ArtifactError(f"{path / DESIGN}: not a bss study design ({exc}); the study folder is damaged") from None
    rows = collect(path, design)
    summary = stats.summarise_study(rows, design.baseline, controls=design.controls(), reverses=design.reverses(),
                                    lr_grid=design.lr_grid, tune=design.tune, n_seeds=len(design.seeds)) if rows else {}
    return {"kind": "study", "path": str(path), "design": design.to_dict(), "runs": rows, "summary": summary}


def _damaged(path: Path, what: str) -> ArtifactError:
    return ArtifactError(f"{path}: {what}; the run folder is damaged (nothing drawn from it)")


def _checked_scores(path: Path, t, where: str):
    """A scores table with a finite floating-point 'balance' and, when present, labels >= 0."""
    if S.BALANCE not in t.column_names or not pa.types.is_floating(t.schema.field(S.BALANCE).type):
        raise ArtifactError(f"{path}: no floating-point 'balance' column; the {where} is damaged")
    if not np.isfinite(t[S.BALANCE].to_numpy(zero_copy_only=False)).all():
        raise ArtifactError(f"{path}: 'balance' holds NaN or infinite values; the {where} is damaged")
    if S.LABEL in t.column_names and (not pa.types.is_integer(t.schema.field(S.LABEL).type)
                                     or (t.num_rows and pc.min(t[S.LABEL]).as_py() < 0)):
        raise ArtifactError(f"{path}: column 'label' is not integers >= 0; the {where} is damaged")
    return t


def _checked_settings(path: Path, data) -> dict:
    if not isinstance(data, dict):
        raise _damaged(path, f"holds a JSON {type(data).__name__}, expected the run's settings (an object)")
    return data


def _number(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _checked_summary(path: Path, data) -> dict:
    """summary.json: an object; best_epoch an integer; best_val_acc a number; test an object of numbers."""
    if not isinstance(data, dict):
        raise _damaged(path, f"holds a JSON {type(data).__name__}, expected the run's summary (an object)")
    if not (data.get("best_epoch") is None or (isinstance(data["best_epoch"], int)
                                               and not isinstance(data["best_epoch"], bool))):
        raise _damaged(path, f"best_epoch is {data['best_epoch']!r}, expected an integer")
    if not _number(data.get("best_val_acc")):
        raise _damaged(path, f"best_val_acc is {data['best_val_acc']!r}, expected a number")
    test = data.get("test", {})
    if not isinstance(test, dict) or not all(isinstance(k, str) and _number(v) for k, v in test.items()):
        raise _damaged(path, "test is not an object of metric names and numbers")
    return data


def _checked_epochs(path: Path, table) -> list[dict]:
    """metrics.parquet / timings.parquet: an integer 'epoch' column, every other column numeric."""
    if "epoch" not in table.column_names or not pa.types.is_integer(table.schema.field("epoch").type):
        raise _damaged(path, "no integer 'epoch' column")
    wrong = [f.name for f in table.schema if not (pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
                                                   or pa.types.is_boolean(f.type) or pa.types.is_null(f.type))]
    if wrong:
        raise _damaged(path, f"column(s) {', '.join(map(repr, wrong[:5]))} are not numbers")
    return table.to_pylist()


def _read_json(path: Path):
    import json

    require_regular_file(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not readable JSON ({exc}); the run folder is damaged") from None
    except RecursionError:
        raise ArtifactError(f"{path}: JSON nested too deeply to be a bss file; the run folder is damaged") from None


def _read_rows(path: Path, columns=None, table: bool = False):
    import pyarrow as pa

    try:
        t = pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise ArtifactError(f"{path}: not a readable Parquet file ({str(exc)[:200]}); the run folder is "
                            "damaged") from None
    return t if table else t.to_pylist()


def summarise_checkpoint(path: Path) -> dict:
    """A checkpoint's contents, read safely (tensors and plain values only; torch imported here)."""
    import json

    from bss_cli.models import checkpoints as C

    state = C.load_checkpoint(path)
    params = {k: list(v.shape) for k, v in state[C.MODEL_STATE].items() if hasattr(v, "shape")}
    trainer = state.get(C.TRAINER_STATE) or {}
    saved = json.loads(trainer["json"]) if isinstance(trainer.get("json"), str) else {}
    return {"kind": "checkpoint", "path": str(path), "format": state.get(C.FORMAT), "epoch": state.get(C.EPOCH),
            "model_config": state[C.MODEL_CONFIG], "model_factory": state.get(C.MODEL_FACTORY),
            "parameters": int(sum(np.prod(s) for s in params.values())), "tensors": params,
            "best": saved.get("best"), "epochs_recorded": len(saved.get("history", []))}


def _is_schedule_text(path: Path) -> bool:
    """A CSV / JSON Lines file whose header (first line) names the schedule columns."""
    with open(path, "rb") as f:
        head = f.readline(65536).decode(errors="replace")
    return all(c in head for c in (S.EPOCH, S.POSITION, S.ROW)) and S.SPLIT not in head


def summarise_json(path: Path) -> dict:
    """A run's ``summary.json`` or ``settings.json``."""
    from dataclasses import fields

    from bss_cli.training.config import TrainConfig

    data = _read_json(path)
    if isinstance(data, dict) and {"best_epoch", "test"} <= set(data):
        return {"kind": "summary", "path": str(path), **_checked_summary(path, data)}
    known = {f.name for f in fields(TrainConfig)}
    if isinstance(data, dict) and data and set(data) <= known:
        return {"kind": "settings", "path": str(path), "settings": data}
    raise ArtifactError(f"{path}: a JSON file, but not a bss run's summary.json or settings.json")


def summarise_metrics(path: Path) -> dict:
    return {"kind": S.KIND_METRICS, "path": str(path), "metadata": _metadata(path),
            "epochs": pq.read_table(path).to_pylist()}


SUMMARISERS: dict[str, Callable[[Path], dict]] = {
    S.KIND_MANIFEST: summarise_manifest,
    S.KIND_SCORES: summarise_scores,
    S.KIND_SCHEDULE: summarise_schedule,
    S.KIND_METRICS: summarise_metrics,
}


def summarise(path: str | Path) -> dict:
    """A summary of any bss artifact; a Parquet/CSV/JSONL file without bss metadata is read as a manifest."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: no such file or folder")
    if not path.is_dir():
        require_regular_file(path)
    if path.is_dir():
        from bss_cli.study.runner import DESIGN

        if (path / DESIGN).exists():
            return summarise_study(path)
        if any(child.name.startswith("epoch=") for child in path.iterdir()):
            return summarise_schedule(path)  # bss schedule --engine ray's folder
        if not (path / "settings.json").exists() and _metadata(path).get("kind") == S.KIND_SCORES:
            return summarise_scores(path)  # bss score --engine ray's folder
        return summarise_run(path)
    if path.suffix.lower() in (".pt", ".pth"):
        return summarise_checkpoint(path)
    if path.suffix.lower() == ".json":
        return summarise_json(path)
    if path.suffix.lower() in (".csv", ".jsonl") and _is_schedule_text(path):
        return summarise_schedule(path)
    kind = None
    if path.suffix.lower() in (".parquet", ".pq"):
        kind = read_metadata(path).get(S.META_KIND)
    if kind is None:
        if path.suffix.lower() not in READERS:
            raise ArtifactError(f"{path}: not a bss artifact (expected a Parquet, CSV or JSON Lines file)")
        kind = S.KIND_MANIFEST
    if kind not in SUMMARISERS:
        raise ArtifactError(f"{path}: bss cannot inspect '{kind}' artifacts yet; it knows {', '.join(SUMMARISERS)}")
    return SUMMARISERS[kind](path)
