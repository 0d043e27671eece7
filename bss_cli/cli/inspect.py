"""``bss inspect``: what an artifact holds (tables on a terminal, JSON for scripts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from bss_cli.cli.common import err, handle_errors, out

BARS = " ▏▎▍▌▋▊▉█"


def bar(count: int, peak: int, width: int = 40) -> str:
    if peak <= 0:
        return ""
    eighths = round(count / peak * width * 8)
    return "█" * (eighths // 8) + (BARS[eighths % 8] if eighths % 8 else "")


def _kv_table(title: str, items: dict) -> Table:
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    for k, v in items.items():  # as text, never as rich markup: names come from users' files
        t.add_row(Text(str(k)), Text(v if isinstance(v, str) else json.dumps(v)))
    return t


def _records_table(title: str, rows: list[dict], fmt: str = "{:.3f}") -> Table:
    t = Table(title=title, title_justify="left")
    if not rows:
        return t
    for col in rows[0]:
        t.add_column(Text(str(col)), justify="right")
    for r in rows:
        t.add_row(*[Text(fmt.format(v) if isinstance(v, float) else str(v)) for v in r.values()])
    return t


def render_histogram(title: str, hist: dict) -> Table:
    t = Table(title=title, title_justify="left", show_header=False, box=None)
    peak = max(hist["counts"]) if hist["counts"] else 0
    edges = hist["edges"]
    for i, c in enumerate(hist["counts"]):
        t.add_row(f"[{edges[i]: .3f}, {edges[i + 1]: .3f})", f"{c:>7,}", bar(c, peak))
    return t


def render_manifest(s: dict) -> None:
    out.print(f"[bold]manifest[/] {escape(str(s['path']))}  ({s['rows']:,} rows, {s['classes']} classes, fingerprint {s['fingerprint']})")
    out.print(_kv_table("samples per split", s["splits"]))
    rows = [{"class": c, **v} for c, v in s["per_class"].items()]
    out.print(_records_table("samples per class", rows))
    rows = [{"modality": m, **v} for m, v in s["modalities"].items()]
    out.print(_records_table("modalities", rows))
    meta = s.get("metadata") or {}
    built = {k: meta[k] for k in ("layout", "media", "split", "val_from_train", "label_from", "label_encoding",
                                  "sarcasm", "target", "clip", "images", "arrays", "val_subjects") if k in meta}
    for key in ("dropped_clips", "missing_clips"):
        if isinstance(meta.get(key), list) and meta[key]:
            built[key] = f"{len(meta[key])}: {', '.join(map(str, meta[key][:5]))}{' ...' if len(meta[key]) > 5 else ''}"
    if built:
        out.print(_kv_table("how it was built (decoding settings used by every later command)", built))


def render_scores(s: dict) -> None:
    out.print(f"[bold]scores[/] {escape(str(s['path']))}  ({s['rows']:,} rows)")
    out.print(_kv_table("provenance", s["metadata"]))
    out.print(_records_table("balance and raw criteria", [{"column": "balance", **s["balance"]}] +
                             [{"column": c, **v} for c, v in s["criteria"].items()]))
    out.print(render_histogram("balance histogram (higher = more balanced)", s["histogram"]))
    if s["per_modality"]:
        out.print(_records_table("per modality (dominates = samples where its head is most confident in the truth)",
                                 [{"modality": m, **v} for m, v in s["per_modality"].items()]))
    out.print(_records_table("most balanced", s["most_balanced"]))
    out.print(_records_table("least balanced", s["least_balanced"]))


SPARK = "▁▂▃▄▅▆▇█"
MAX_EPOCH_ROWS = 30


def head_and_tail(rows: list) -> list:
    """At most MAX_EPOCH_ROWS rows: the first and last halves, with None where rows were left out."""
    if len(rows) <= MAX_EPOCH_ROWS:
        return rows
    return rows[:MAX_EPOCH_ROWS // 2] + [None] + rows[-MAX_EPOCH_ROWS // 2:]


def spark(values: list[float], lo: float, hi: float) -> str:
    span = hi - lo if hi > lo else 1.0
    return "".join(" " if v is None else SPARK[min(7, max(0, int((v - lo) / span * 7.999)))] for v in values)


def render_schedule(s: dict) -> None:
    out.print(f"[bold]schedule[/] {escape(str(s['path']))}  ({len(s['epochs'])} epochs, {s['rows']:,} rows)")
    out.print(_kv_table("provenance", s["metadata"]))
    epochs = s["epochs"]
    tenths = [v for e in epochs for v in e["tenths"] if v is not None]
    lo, hi = (min(tenths), max(tenths)) if tenths else (0.0, 1.0)
    t = Table(title="per epoch: mean balance overall and by tenth of the epoch in training order; overlap "
                    "(Jaccard) and position rank correlation with the previous epoch",
              title_justify="left")
    for col in ("epoch", "size", "mean", "1st 10%", "last 10%", "tenths", "overlap", "pos corr"):
        t.add_column(col, justify="right", no_wrap=True, min_width=10 if col == "tenths" else None)
    shown = head_and_tail(epochs)
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for e in shown:
        if e is None:
            t.add_row("...", *[""] * 7)
            continue
        t.add_row(str(e["epoch"]), f"{e['size']:,}", fmt(e["mean_balance"]), fmt(e["tenths"][0]),
                  fmt(e["tenths"][-1]), spark(e["tenths"], lo, hi), fmt(e["overlap"]), fmt(e["position_corr"]))
    out.print(t)
    if epochs and "per_class" in epochs[0]:
        names = list(epochs[0]["per_class"])
        c = Table(title="samples per class per epoch", title_justify="left")
        c.add_column("epoch", justify="right")
        for name in names:
            c.add_column(Text(str(name)), justify="right")
        for e in shown:
            if e is None:
                c.add_row("...", *[""] * len(names))
                continue
            c.add_row(str(e["epoch"]), *[f"{e['per_class'][n]:,}" for n in names])
        out.print(c)
    for w in s.get("warnings", [])[:10]:
        err.print(f"warning: {w}", markup=False)
    if len(s.get("warnings", [])) > 10:
        err.print(f"warning: ... and {len(s['warnings']) - 10} more epochs leave out a class", markup=False)


def render_run(s: dict) -> None:
    st = s["settings"]
    out.print(f"[bold]run[/] {escape(str(s['path']))}  (scheduler {st.get('scheduler')}, {len(s['epochs'])}/{st.get('epochs')} epochs)")
    best = (s["summary"] or {}).get("best_epoch")
    if s["epochs"]:
        cols = {"epoch": "epoch", "train_loss": "loss", "val_acc": "val acc", "val_macro_f1": "F1", "val_map": "mAP",
                "val_imbalance": "imbal.", "subset_size": "size", "mean_balance": "balance", "samples_per_s": "samp/s"}
        out.print(_compact_table("per epoch (validation; * = the epoch selected on val accuracy)",
                                 [{cols[k]: r.get(k) for k in cols if k in r} for r in s["epochs"]], best))
        heads = [k for k in s["epochs"][0] if k.startswith("val_acc_")]
        if heads:  # one column per modality head: its own table, so both fit 80 columns
            out.print(_compact_table("validation accuracy of each modality's head",
                                     [{"epoch": r["epoch"], **{h[len("val_acc_"):]: r.get(h) for h in heads}}
                                      for r in s["epochs"]], best))
    if s["balance"]:
        out.print(_records_table("balance scores over epochs (train split)",
                                 [{k: b[k] for k in ("epoch", "mean", "std", "min", "q25", "median", "q75", "max")}
                                  for b in s["balance"]]))
    if s["summary"]:
        sm = s["summary"]
        out.print(_kv_table(f"best epoch {sm['best_epoch']} by val accuracy; test once with that checkpoint",
                            {k: f"{v:.4f}" for k, v in sm["test"].items()}))
    st = s.get("stability") or {}
    if st.get("unstable"):
        out.print(f"[bold red]unstable training[/]: {st['why']}. A scheduler compared with this run may only be "
                  "rescuing its optimisation; lower --lr, add --lr-warmup, or tune with bss study --tune-lr.")
    elif st.get("best_epoch") is not None:
        out.print(f"training looks stable: best epoch {st['best_epoch']}, val accuracy at most "
                  f"{st['peak_drop']:.3f} below its peak afterwards")
    d = s.get("diagnosis")
    if d:
        trend = [e["imbalance"] for e in d["imbalance_over_epochs"] if e["imbalance"] is not None]
        lo, hi = (min(trend), max(trend)) if trend else (0.0, 1.0)
        out.print(f"[bold]modality balance[/] ({escape(str(d['from']))}): "
                  + ", ".join(f"{escape(str(h))} {a:.3f}" for h, a in d["heads"].items())
                  + (f"; val imbalance over epochs {spark(trend, lo, hi)} ({trend[0]:.3f} -> {trend[-1]:.3f})"
                     if trend else ""))
        out.print(f"Will BSS help here? {d['verdict']}", markup=False)


def _compact_table(title: str, rows: list[dict], best: int | None) -> Table:
    from rich import box

    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    if not rows:
        return t
    for col in rows[0]:
        t.add_column(Text(str(col)), justify="right", no_wrap=True)
    for r in head_and_tail(rows):
        if r is None:
            t.add_row("...", *[""] * (len(rows[0]) - 1))
            continue
        cells = []
        for k, v in r.items():
            if k == "epoch":
                cells.append(f"{v}*" if v == best else str(v))
            elif isinstance(v, float):
                cells.append(f"{v:,.0f}" if k == "samp/s" else f"{v:.3f}")
            else:
                cells.append("-" if v is None else f"{v:,}" if isinstance(v, int) else str(v))
        t.add_row(*map(Text, cells))
    return t


def render_metrics(s: dict) -> None:
    out.print(f"[bold]metrics[/] {escape(str(s['path']))}  ({len(s['epochs'])} epochs)")
    out.print(_records_table("per epoch", s["epochs"]))


def render_checkpoint(s: dict) -> None:
    cfg = s["model_config"]
    out.print(f"[bold]checkpoint[/] {escape(str(s['path']))}  (format {s['format']}, after epoch {s['epoch']})")
    out.print(f"model: {s['model_factory'] or 'built-in late fusion'}, {s['parameters']:,} parameters, "
              f"{cfg.get('n_classes')} classes, modalities {cfg.get('modalities')}", markup=False)
    if s["best"]:
        out.print(f"best so far: epoch {s['best'].get('epoch')}, val accuracy {s['best'].get('val_acc')}")
    t = Table(title="tensors", title_justify="left")
    t.add_column("name")
    t.add_column("shape")
    for name, shape in s["tensors"].items():
        t.add_row(Text(str(name)), "x".join(map(str, shape)) or "scalar")
    out.print(t)


def render_summary(s: dict) -> None:
    out.print(f"[bold]summary[/] {escape(str(s['path']))}: {s.get('scheduler')}, best epoch {s['best_epoch']} of "
              f"{s.get('epochs')} by val accuracy ({s['best_val_acc']:.4f})")
    out.print(_kv_table("test, once, with the best checkpoint", {k: f"{v:.4f}" for k, v in s["test"].items()}))


def render_settings(s: dict) -> None:
    out.print(f"[bold]settings[/] {escape(str(s['path']))}  (bss train --config accepts this file)")
    out.print(_kv_table("settings", s["settings"]))


def _interval(d: dict | None) -> str:
    if not d or d.get("n", 0) < 2:
        return "-"
    return f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"


def _sig(d: dict | None) -> str:
    return ("yes" if d["significant"] else "no") if d and d["n"] > 1 else "-"


def render_study_summary(summary: dict, path: str) -> None:
    from rich import box

    if not summary:
        out.print(f"[bold]study[/] {escape(str(path))}: no finished runs yet")
        return
    weak = summary.get("weak_head")
    variants = summary["variants"]
    tuned = summary.get("tuned")
    # titles as lines of their own: a table's title would wrap to the table's width
    out.print(f"[bold]study {escape(str(path))}[/]: test accuracy over paired seeds (checkpoint selected on validation); "
              f"differences to {summary['baseline']!r} and to each variant's random-order control (95 % t-intervals; "
              "sig. = the interval excludes 0)")
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    cols = ["variant"] + (["lr"] if tuned else []) + [
        "n", "mean", "sd", "vs baseline [95 % CI]", "sig.", "W/L/T", "control", "ordering effect [95 % CI]", "sig. (Holm)",
        f"{escape(str(weak))} head change [95 % CI]" if weak else "weak head", "imbal.", "unstable"]
    for col in cols:
        t.add_column(col, justify="left" if col in ("variant", "control") else "right", no_wrap=True)
    for name in summary.get("order") or list(variants):
        v = variants[name]
        d, c = v.get("vs_baseline"), v.get("vs_control")
        unstable = v.get("unstable_seeds") or []
        cells = [escape(str(name))] + ([f"{v['lr']:g}" if v.get("lr") is not None else "-"] if tuned else []) + [
            str(v["runs"]), f"{v['mean']:.4f}", f"{v['sd']:.4f}" if v["runs"] > 1 else "-", _interval(d), _sig(d),
            f"{d['wins']}/{d['losses']}/{d['ties']}" if d else "-", v.get("control") or "-", _interval(c),
            _sig({**c, "significant": c.get("significant_holm", c["significant"])} if c else None),
            _interval(v.get("weak_head_change")), f"{v['imbalance']:.3f}",
            f"[red]{len(unstable)}/{v['runs']}[/]" if unstable else f"0/{v['runs']}"]
        t.add_row(*cells)
    out.print(t)
    if tuned:
        out.print(f"[bold]learning-rate tuning[/] ({tuned['mode']}): mean validation accuracy per rate; * = selected")
        g = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        g.add_column("variant")
        for lr in tuned["grid"]:
            g.add_column(f"{lr:g}", justify="right")
        for name in summary.get("order") or list(variants):
            tu = variants[name].get("tuning") or {}
            by = tu.get("val_acc_by_lr", {})
            g.add_row(name, *[(f"{by[f'{lr:g}']:.4f}" + ("*" if lr == tu.get("selected_lr") else ""))
                              if f"{lr:g}" in by else "-" for lr in tuned["grid"]])
        out.print(g)
        edge = [n for n in variants if (variants[n].get("tuning") or {}).get("at_grid_edge")]
        if edge:
            out.print(f"[yellow]note:[/] {', '.join(edge)} selected a rate at the edge of the grid; widen it")
    if any(v.get("paper_protocol") for v in variants.values()):
        out.print("[bold]the paper's protocol[/]: best TEST epoch per run (selected on test, so optimistic; shown only "
                  "to see how much it inflates each variant)")
        p = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        for col in ("variant", "best-test-epoch mean", "inflation over ours [95 % CI]", "vs baseline [95 % CI]"):
            p.add_column(col, justify="left" if col == "variant" else "right", no_wrap=True)
        for name in summary.get("order") or list(variants):
            pp = variants[name].get("paper_protocol")
            if pp:
                p.add_row(name, f"{pp['mean']:.4f}", _interval(pp["inflation"]), _interval(pp.get("vs_baseline")))
        out.print(p)
    for line in summary.get("conclusion") or []:
        out.print(("[bold red]" if line.startswith("WARNING") else "") + line.replace("[", "\\[")
                  + ("[/]" if line.startswith("WARNING") else ""))


def render_study(s: dict) -> None:
    d = s["design"]
    out.print(f"[bold]study[/] {escape(str(s['path']))}: {len(d['variants'])} variants x {len(d['seeds'])} seeds on "
              f"{escape(str(d['manifest']))} ({len(s['runs'])} runs finished)")
    render_study_summary(s["summary"], s["path"])


RENDERERS = {"manifest": render_manifest, "scores": render_scores, "schedule": render_schedule, "run": render_run,
             "metrics": render_metrics, "checkpoint": render_checkpoint, "summary": render_summary,
             "settings": render_settings, "study": render_study}


@handle_errors
def inspect(
    path: Annotated[Path, typer.Argument(
        help="A manifest, scores, schedule or metrics file, a checkpoint (.pt), or a run folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout (default: off).")] = False,
    plot: Annotated[Optional[Path], typer.Option(help="Run folders: draw training curves to this PNG (needs matplotlib) (default: none).")] = None,
) -> None:
    """Show what an artifact holds: kind, provenance, counts, distributions, extremes."""
    from bss_cli.errors import ConfigError
    from bss_cli.report.summary import summarise

    summary = summarise(path)
    if plot is not None:
        if summary["kind"] not in ("run", "study"):
            raise ConfigError(f"--plot draws run folders; {path} is a {summary['kind']} file")
        from bss_cli.artifacts import check_output
        from bss_cli.report.plotting import plot_run, plot_study

        check_output(plot, force=True)
        out.print(f"wrote {(plot_run if summary['kind'] == 'run' else plot_study)(summary, plot)}", markup=False)
        if not as_json:
            return  # the plot is what was asked for: one line, not the tables too
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    RENDERERS[summary["kind"]](summary)


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect)
