"""``bss report``: one self-contained HTML page for a run folder, a study folder or a scores file.

What a reviewer wants first: for a run, every head's curve, the imbalance, how the schedule grew
and what classes each epoch held, the score distribution and the diagnosis; for a study, each
variant's paired difference with its interval, wins and losses, the ordering effect against its
control and the baseline's stability; for scores, the distribution per class and per part of the
criterion. Inline SVG and CSS only (no script, no network, prints on paper); the same inputs give
the same bytes (nothing from the clock).
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from bss_cli import __version__
from bss_cli import schema as S
from bss_cli.artifacts import meta_json, read_metadata
from bss_cli.errors import ArtifactError
from bss_cli.report import svg
from bss_cli.report.summary import summarise

MAX_CLASS_PANELS = 12  # per-class histograms drawn; more classes get a table of quantiles

PAGE_CSS = """
body{font:14px/1.45 -apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#222;max-width:1060px;
margin:24px auto;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#555;margin:0 0 12px}
table{border-collapse:collapse;margin:8px 0 12px;font-size:13px}
th,td{padding:3px 10px;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{background:#f6f6f6}
.grid2{display:flex;flex-wrap:wrap;gap:8px 16px}
figure.plot{margin:6px 0;page-break-inside:avoid;break-inside:avoid}
figure.plot figcaption{font-size:12px;color:#555;max-width:500px}
.tw{overflow-x:auto}
.verdict{background:#f4f7fb;border-left:4px solid #0072B2;padding:8px 12px;margin:10px 0}
.warn{background:#fdf3ea;border-left:4px solid #D55E00;padding:8px 12px;margin:10px 0}
.small{font-size:12px;color:#555}
code{font-size:12px;background:#f3f3f3;padding:1px 4px}
@media (max-width:640px){svg.chart{max-width:none}figure.plot,.tw{overflow-x:auto;max-width:100%}}
@media print{body{margin:0;max-width:none;font-size:11px}h2{page-break-after:avoid}.grid2{display:block}
.tw{overflow:visible}table{font-size:8px;width:100%}th,td{padding:1px 3px;white-space:normal}
svg.chart{max-width:100%}}
@page{size:A4 landscape;margin:10mm}
"""


# --- page assembly ------------------------------------------------------------------------------
def figure(name: str, chart: str, caption: str) -> str:
    return (f'<figure class="plot" data-plot="{escape(name)}">{chart}<figcaption>{escape(caption)}</figcaption>'
            "</figure>")


def table(header: list[str], rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(_cell(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f'<div class="tw"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "-" if not math.isfinite(v) else f"{v:.4f}"
    return str(v)


def page(title: str, subtitle: str, sections: list[str]) -> str:
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{PAGE_CSS}{svg.CSS}</style></head><body>"
            f"<h1>{escape(title)}</h1><p class=\"sub\">{escape(subtitle)}</p>"
            + "".join(sections)
            + f'<p class="small">Made by bss {escape(__version__)} (bss report). Selection is on validation; '
              "test figures are of the checkpoint selected on validation, evaluated once.</p></body></html>\n")


def _interval(d: dict | None) -> str:
    if not d or d.get("n", 0) < 2:
        return "-"
    return f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"


def _hist(values: np.ndarray, edges: np.ndarray) -> tuple[list, list]:
    counts, _ = np.histogram(values, bins=edges)
    return [int(c) for c in counts], [float(e) for e in edges]


def _edges(values: np.ndarray, bins: int = 30) -> np.ndarray:
    values = values[np.isfinite(values)]
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1e-6
    return np.linspace(lo, hi, bins + 1)


# --- a run --------------------------------------------------------------------------------------
def _epoch_files(run: Path, name: str) -> list[tuple[int, Path]]:
    from bss_cli.training import runs

    folder = run / runs.EPOCHS_DIR
    found = [(runs.epoch_of(p), p / name) for p in folder.glob("epoch=*") if (p / name).is_file()] \
        if folder.is_dir() else []
    return sorted(found)


def run_report(run: Path) -> str:
    s = summarise(run)
    settings, epochs, summary = s["settings"], s["epochs"], s["summary"] or {}
    xs = [r["epoch"] for r in epochs]
    heads = [k for k in (epochs[0] if epochs else {}) if k.startswith("val_acc_")]
    best = summary.get("best_epoch")
    marks = {"best": best} if best is not None and best >= 0 else {}
    sections = []
    # the figures a reviewer looks for first
    test = summary.get("test") or {}
    lead = [f"<p>scheduler <b>{escape(str(settings.get('scheduler')))}</b>, {len(epochs)} of "
            f"{settings.get('epochs')} epochs, manifest <code>{escape(str(settings.get('manifest')))}</code>. "]
    if summary:
        lead.append(f"Best epoch by validation accuracy: <b>{best}</b> ({summary.get('best_val_acc', float('nan')):.4f});"
                    f" test accuracy of that checkpoint <b>{test.get('acc', float('nan')):.4f}</b>.</p>")
    else:
        lead.append("The run has not finished: no test figures yet.</p>")
    sections.append("<h2>Result</h2>" + "".join(lead))
    if test:
        sections.append(table(["test metric", "value"], [[k, v] for k, v in test.items()]))
    diag = s.get("diagnosis")
    if s["stability"].get("unstable"):
        sections.append(f'<div class="warn">Unstable run: {escape(s["stability"]["why"])}. A scheduler that beats an '
                        "unstable baseline may only be rescuing its optimisation.</div>")
    if diag:
        sections.append(f'<div class="verdict"><b>Diagnosis.</b> {escape(diag["verdict"])}</div>')
    if epochs:
        charts = [figure("accuracy", svg.line_chart(
            "Validation accuracy, model and each head", xs,
            {"model": [r.get("val_acc") for r in epochs], **{h[8:]: [r.get(h) for r in epochs] for h in heads}},
            y_label="accuracy", marks=marks), "Each modality's own head beside the model's prediction; the dashed "
                                              "line is the epoch selected on validation.")]
        charts.append(figure("loss", svg.line_chart("Training loss", xs, {"train loss": [r.get("train_loss") for r in epochs]},
                                                    y_label="loss", marks=marks), "Mean loss of the epoch's batches."))
        if heads:
            charts.append(figure("imbalance", svg.line_chart(
                "Imbalance: best minus worst head accuracy (val)", xs,
                {"imbalance": [r.get("val_imbalance") for r in epochs]}, y_label="accuracy gap", marks=marks),
                "0 = the heads are level; BSS aims to lower this by training balanced samples first."))
        charts.append(figure("lr", svg.line_chart("Learning rate", xs, {"lr": [r.get("lr") for r in epochs]},
                                                  y_label="lr"), "The rate at each epoch's start."))
        sections.append("<h2>Curves</h2><div class=\"grid2\">" + "".join(charts) + "</div>")
    sections.append(_schedule_section(run, epochs))
    sections.append(_scores_section(run, s["balance"]))
    sections.append("<h2>Settings</h2>" + table(["setting", "value"], [[k, _setting(v)] for k, v in settings.items()]))
    return page(f"bss run: {run.name}", str(run), sections)


def _setting(v) -> str:
    return ",".join(map(str, v)) if isinstance(v, list) else str(v)


def _classes(meta: dict, n: int) -> list[str]:
    names = [str(c) for c in meta_json(meta, S.META_CLASSES, []) or []]
    return names if len(names) >= n else [str(c) for c in range(n)]


def _schedule_section(run: Path, epochs: list[dict]) -> str:
    files = _epoch_files(run, "schedule.parquet")
    xs = [r["epoch"] for r in epochs]
    n_train = None
    parts = []
    if files:
        per_epoch, meta = [], read_metadata(files[0][1])
        for e, path in files:
            f = pq.ParquetFile(path)  # one open: its row count, and its labels when it has them
            labels = f.read(columns=[S.LABEL])[S.LABEL].to_numpy() if S.LABEL in f.schema_arrow.names else None
            per_epoch.append((e, f.metadata.num_rows, labels))
        n_train = int(meta.get(S.META_N_SAMPLES, "0") or 0) or None
        if all(lab is not None for _, _, lab in per_epoch):
            k = max(int(lab.max()) + 1 for _, _, lab in per_epoch if len(lab))
            names = _classes(meta, k)
            stacks = {names[c]: [int((lab == c).sum()) for _, _, lab in per_epoch] for c in range(k)}
            parts.append(figure("composition", svg.stacked_bars(
                "Samples per epoch, by class", [e for e, _, _ in per_epoch], stacks, y_label="samples"),
                "How the schedule grew and which classes each epoch held (a curriculum without --stratify can leave "
                "a class out of its early epochs)."))
    sizes = [r.get("subset_size") for r in epochs]
    if xs and sizes:
        n = n_train or max(s for s in sizes if s is not None)
        parts.insert(0, figure("growth", svg.line_chart(
            "Epoch size (fraction of the train split)", xs, {"fraction": [s / n if s is not None else None
                                                                          for s in sizes]},
            y_label="fraction", y_range=(0, 1)), f"Samples trained each epoch over the {n} of the train split."))
    if not parts:
        return ""
    return "<h2>Schedule</h2><div class=\"grid2\">" + "".join(parts) + "</div>"


def _scores_section(run: Path, balance: list[dict]) -> str:
    """``balance``: the run summary's per-epoch score statistics (every scores file, read once there);
    only the first, middle and last scoring are read again, for their histograms on shared bins."""
    files = _epoch_files(run, "scores.parquet")
    if not files:
        return ('<h2>Balance scores</h2><p class="small">This run kept no scores (a scheduler that needs none, or '
                "--no-epoch-artifacts).</p>")
    chosen = [files[0]] if len(files) == 1 else [files[0], files[len(files) // 2], files[-1]]
    chosen = list(dict.fromkeys(chosen))
    values = {e: pq.read_table(p, columns=[S.BALANCE])[S.BALANCE].to_numpy() for e, p in chosen}
    edges = _edges(np.concatenate(list(values.values())))
    chart = svg.histogram_chart("Balance scores of the train split", {f"epoch {e}": _hist(v, edges)
                                                                      for e, v in values.items()},
                                x_label="balance (higher = modalities agree more)")
    means = {b["epoch"]: b["mean"] for b in balance}
    charts = [figure("scores", chart, "The scores that ordered the epochs: first, middle and last scoring.")]
    if len(means) > 1:
        charts.append(figure("mean-balance", svg.line_chart(
            "Mean balance score of the train split", list(means), {"mean balance": list(means.values())},
            y_label="balance"), "Rises as the heads come to agree on more samples."))
    return "<h2>Balance scores</h2><div class=\"grid2\">" + "".join(charts) + "</div>"


# --- a study ------------------------------------------------------------------------------------
def study_report(study: Path) -> str:
    s = summarise(study)
    design, rows, summary = s["design"], s["runs"], s["summary"]
    variants = summary.get("variants") or {}
    order = summary.get("order") or list(variants)
    base = summary.get("baseline", design.get("baseline"))
    sections = [f"<p>{len(design['variants'])} variants &times; {len(design['seeds'])} paired seeds on "
                f"<code>{escape(str(design['manifest']))}</code>; baseline <b>{escape(str(base))}</b>; "
                f"{len(rows)} runs finished.</p>"]
    if not variants:
        return page(f"bss study: {study.name}", str(study), sections + ["<p>No finished runs yet.</p>"])
    conclusions = summary.get("conclusion") or []
    if conclusions:
        sections.append("<h2>What the study found</h2>" + "".join(
            f'<div class="{"warn" if c.startswith("WARNING") else "verdict"}">{escape(c)}</div>' for c in conclusions))
    diffs = [(n, v["vs_baseline"]) for n in order if (v := variants[n]).get("vs_baseline")]
    charts = []
    if diffs:
        charts.append(figure("vs-baseline", svg.interval_chart(
            f"Test accuracy minus {base}'s, paired by seed (95 % CI)",
            [(n, d["mean"], d.get("low"), d.get("high"), f"W/L/T {d['wins']}/{d['losses']}/{d['ties']}")
             for n, d in diffs], x_label="difference in test accuracy"),
            "Filled: the interval excludes 0. W/L/T: seeds won, lost, tied against the baseline."))
    ctrl = [(n, variants[n]["vs_control"], variants[n].get("control")) for n in order
            if variants[n].get("vs_control")]
    if ctrl:
        charts.append(figure("vs-control", svg.interval_chart(
            "Ordering effect: each scheduler minus its random-order control (95 % CI)",
            [(f"{n}", d["mean"], d.get("low"), d.get("high"),
              f"vs {c}; Holm p {d.get('p_holm', d.get('p', float('nan'))):.3f}") for n, d, c in ctrl],
            x_label="difference in test accuracy"),
            "The control keeps everything but the balance-aware part of the order (same pacing, same weights "
            "shuffled): only this difference is an effect of balance-aware ordering."))
    seeds = {}
    for r in rows:
        if r.get("variant") in variants and (variants[r["variant"]].get("lr") is None
                                             or r.get("lr") == variants[r["variant"]].get("lr")):
            seeds.setdefault(r["variant"], {})[int(r["seed"])] = r.get("test_acc")
    if seeds:
        charts.append(figure("seeds", svg.strip_chart("Test accuracy per seed (grey lines join a seed)",
                                                      {n: seeds.get(n, {}) for n in order}, y_label="test accuracy"),
                             "Each dot one run; a seed's runs share the initial model and data order seed."))
    sections.append("<h2>Paired differences</h2><div class=\"grid2\">" + "".join(charts) + "</div>")
    header = ["variant", "lr", "n", "mean", "sd", "vs baseline [95 % CI]", "W/L/T", "control", "ordering effect",
              "Holm sig.", "imbalance", "unstable runs"]
    body = []
    for n in order:
        v = variants[n]
        d, c = v.get("vs_baseline"), v.get("vs_control")
        body.append([n, None if v.get("lr") is None else f"{v['lr']:g}", v["runs"], v["mean"],
                     v["sd"] if v["runs"] > 1 else None, _interval(d),
                     f"{d['wins']}/{d['losses']}/{d['ties']}" if d else None, v.get("control"), _interval(c),
                     (c.get("significant_holm", c.get("significant")) if c else None), v.get("imbalance"),
                     f"{len(v.get('unstable_seeds') or [])}/{v['runs']}"])
    sections.append("<h2>Every variant</h2>" + table(header, body))
    unstable = [r for r in rows if r.get("unstable")]
    stab = ("<h2>Stability</h2>"
            + (f'<div class="warn">{len(unstable)} run(s) show the instability signature (validation accuracy '
               "falling well below its peak, or peaking at epoch 0-2 and not recovering). A variant that beats an "
               f"unstable {escape(str(base))} may only be rescuing its optimisation.</div>"
               + table(["variant", "seed", "lr", "best epoch", "why"],
                       [[r["variant"], r["seed"], r.get("lr"), r.get("best_epoch"), r.get("unstable_why")]
                        for r in unstable])
               if unstable else "<p>No run of this study shows the instability signature.</p>"))
    sections.append(stab)
    tuned = summary.get("tuned")
    if tuned:
        grid = tuned["grid"]
        body = []
        for n in order:
            tu = variants[n].get("tuning") or {}
            by = tu.get("val_acc_by_lr", {})
            body.append([n] + [(f"{by[f'{lr:g}']:.4f}" + ("*" if lr == tu.get("selected_lr") else ""))
                               if f"{lr:g}" in by else "-" for lr in grid])
        sections.append(f"<h2>Learning-rate tuning ({escape(tuned['mode'])})</h2><p class=\"small\">Mean validation "
                        "accuracy per rate; * = selected (test was not looked at).</p>"
                        + table(["variant"] + [f"{lr:g}" for lr in grid], body))
    return page(f"bss study: {study.name}", str(study), sections)


# --- a scores file ------------------------------------------------------------------------------
def scores_report(path: Path) -> str:
    s = summarise(path)
    t = pq.read_table(path)
    meta = s["metadata"]
    balance = t[S.BALANCE].to_numpy()
    edges = _edges(balance)
    sections = [f"<p>{s['rows']:,} samples scored with <b>{escape(str(meta.get('criterion')))}</b>; modalities "
                f"{escape(', '.join(meta.get('modalities') or []))}.</p>",
                table(["", "mean", "sd", "min", "median", "max"],
                      [["balance", *(s["balance"][k] for k in ("mean", "std", "min", "median", "max"))]])]
    charts = [figure("balance", svg.histogram_chart("Balance scores", {"all": _hist(balance, edges)},
                                                    x_label="balance (higher = modalities agree more)"),
                     "All scored samples.")]
    if S.LABEL in t.column_names:
        labels = t[S.LABEL].to_numpy()
        k = int(labels.max()) + 1 if len(labels) else 0
        names = [str(c) for c in meta.get("classes") or []]
        names = names if len(names) >= k else [str(c) for c in range(k)]
        present = [c for c in range(k) if (labels == c).any()]
        if len(present) <= MAX_CLASS_PANELS:
            for c in present:
                charts.append(figure(f"class-{c}", svg.histogram_chart(
                    f"Class {names[c]}", {names[c]: _hist(balance[labels == c], edges)}, x_label="balance"),
                    f"{int((labels == c).sum())} samples."))
        sections_tail = table(["class", "samples", "mean", "q25", "median", "q75"],
                              [[names[c], int((labels == c).sum()), float(balance[labels == c].mean()),
                                *[float(q) for q in np.quantile(balance[labels == c], [0.25, 0.5, 0.75])]]
                               for c in present])
    else:
        sections_tail = ""
    sections.append("<h2>Distribution, overall and per class</h2><div class=\"grid2\">" + "".join(charts) + "</div>"
                    + sections_tail)
    parts = [c for c in ("pred_sim", "feat_sim", "loss", "grad_norm") if c in t.column_names]
    modalities = meta.get("modalities") or []
    per_head = [(f"{S.PTRUE_PREFIX}{m}", f"p(true class), {m} head") for m in modalities
                if f"{S.PTRUE_PREFIX}{m}" in t.column_names]
    per_head += [(f"{S.LOSS_PREFIX}{m}", f"loss, {m} head") for m in modalities if f"{S.LOSS_PREFIX}{m}" in t.column_names]
    pcharts = []
    for c in parts:
        v = t[c].to_numpy().astype(np.float64)
        pcharts.append(figure(f"part-{c}", svg.histogram_chart(f"Criterion part: {c}", {c: _hist(v, _edges(v))},
                                                               x_label=c), _PART_NOTES.get(c, "")))
    if per_head:
        groups = {}
        for col, title in per_head:
            groups.setdefault(title.split(",")[0], []).append((col, title))
        for kind, cols in groups.items():
            vals = {title.split(", ")[1]: t[col].to_numpy().astype(np.float64) for col, title in cols}
            e = _edges(np.concatenate(list(vals.values())))
            pcharts.append(figure(f"heads-{kind}", svg.histogram_chart(
                f"{kind} per modality head", {k: _hist(v, e) for k, v in vals.items()}, x_label=kind),
                "A head far below the others on most samples is the under-trained modality."))
    if pcharts:
        sections.append("<h2>Parts of the criterion</h2><div class=\"grid2\">" + "".join(pcharts) + "</div>")
    ext = [["most balanced", r["sample_id"], r["label"], r["balance"]] for r in s["most_balanced"]] + \
          [["least balanced", r["sample_id"], r["label"], r["balance"]] for r in s["least_balanced"]]
    sections.append("<h2>Extremes</h2>" + table(["", "sample", "label", "balance"], ext))
    return page(f"bss scores: {path.name}", str(path), sections)


_PART_NOTES = {"pred_sim": "Cosine similarity of the modality heads' predicted distributions (counts toward "
                           "balance: higher = the heads agree).",
               "feat_sim": "Cosine similarity of the modalities' embeddings (counts toward balance).",
               "loss": "The sample's training loss, every head summed (counts against balance: a hard sample).",
               "grad_norm": "The sample's gradient norm (counts against balance)."}


def report(path: str | Path) -> str:
    """The HTML page for ``path``: a study folder, a run folder or a scores file."""
    from bss_cli.study.runner import DESIGN

    path = Path(path)
    if path.is_dir():
        return study_report(path) if (path / DESIGN).exists() else run_report(path)
    if path.suffix.lower() in (".parquet", ".pq") and path.is_file() and \
            read_metadata(path).get(S.META_KIND) == S.KIND_SCORES:
        return scores_report(path)
    if not path.exists():
        raise ArtifactError(f"{path}: no such file or folder")
    raise ArtifactError(f"{path}: bss report reads a run folder, a study folder or a scores file (bss score); "
                        "for other artifacts use bss inspect")
