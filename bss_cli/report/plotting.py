"""Training curves of a run folder as a PNG (matplotlib, an optional extra: ``bss[plot]``)."""

from __future__ import annotations

from pathlib import Path

from bss_cli.artifacts import atomic_path
from bss_cli.errors import ConfigError


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib, an optional extra of this checkout: .venv/bin/pip install "
                          "-e '.[plot]' (or pip install matplotlib into the environment that runs bss)") from None
    return plt


def plot_run(summary: dict, out: str | Path) -> Path:
    """Three panels: val accuracy of the model and of each modality's head, train loss and val
    imbalance, and the balance-score distribution (median and quartiles) over epochs."""
    plt = _pyplot()
    rows = summary["epochs"]
    if not rows:
        raise ConfigError(f"{summary['path']}: no epochs recorded yet; nothing to plot")
    epochs = [r["epoch"] for r in rows]
    heads = [k for k in rows[0] if k.startswith("val_acc_")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    ax.plot(epochs, [r["val_acc"] for r in rows], label="model", lw=2, color="black")
    for h in heads:
        ax.plot(epochs, [r[h] for r in rows], label=h.removeprefix("val_acc_"))
    best = (summary.get("summary") or {}).get("best_epoch")
    if best is not None and best in epochs:
        for a in axes[:2]:
            a.axvline(best, color="grey", ls="--", lw=1)
        ax.plot([best], [rows[epochs.index(best)]["val_acc"]], "o", color="black",
                label=f"selected (epoch {best})")
    ax.set(title="validation accuracy", xlabel="epoch", ylabel="accuracy")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(epochs, [r["train_loss"] for r in rows], label="train loss", color="tab:red")
    ax.set(title="train loss and val imbalance", xlabel="epoch", ylabel="loss")
    ax2 = ax.twinx()
    ax2.plot(epochs, [r["val_imbalance"] for r in rows], label="imbalance (head acc spread)", color="tab:blue")
    ax2.set_ylabel("imbalance")
    ax.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="upper right", fontsize=8)
    ax = axes[2]
    bal = summary["balance"]
    if bal:
        e = [b["epoch"] for b in bal]
        ax.fill_between(e, [b["q25"] for b in bal], [b["q75"] for b in bal], alpha=0.3, label="quartiles")
        ax.plot(e, [b["median"] for b in bal], label="median")
        ax.plot(e, [b["min"] for b in bal], ls=":", label="min")
    ax.set(title="balance scores of the train split", xlabel="epoch", ylabel="balance (higher = more balanced)")
    ax.legend(fontsize=8)
    fig.suptitle(f"{summary['path']} ({summary['settings'].get('scheduler')})")
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return out


def plot_study(summary: dict, out: str | Path) -> Path:
    """Per variant, the paired difference to the baseline and the ordering effect (to its
    random-order control), each with its 95 % t-interval."""
    plt = _pyplot()
    stats = summary["summary"]
    rows = [(name, v) for name, v in stats.get("variants", {}).items() if v.get("vs_baseline") or v.get("vs_control")]
    if not rows:
        raise ConfigError(f"{summary['path']}: no paired differences yet (the baseline and another variant need "
                          "finished runs)")
    fig, ax = plt.subplots(figsize=(7.5, 0.7 * len(rows) + 1.6))
    shown = set()
    for i, (name, v) in enumerate(rows):
        for key, dy, marker, label in (("vs_baseline", -0.15, "o", f"vs {stats['baseline']}"),
                                       ("vs_control", 0.15, "s", "vs its random-order control")):
            d = v.get(key)
            if not d or d.get("n", 0) < 2:
                continue
            sig = d.get("significant_holm", d["significant"]) if key == "vs_control" else d["significant"]
            ax.errorbar(d["mean"], i + dy, xerr=[[d["mean"] - d["low"]], [d["high"] - d["mean"]]], fmt=marker,
                        capsize=4, color="tab:green" if sig and d["mean"] > 0 else "tab:red" if sig else "grey",
                        label=None if label in shown else label, mfc="white" if key == "vs_control" else None)
            shown.add(label)
    ax.axvline(0, color="black", lw=1)
    ax.set_yticks(range(len(rows)), [n for n, _ in rows])
    ax.set_xlabel("paired difference in test accuracy (95 % t-interval; colour: significant)")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(out)
