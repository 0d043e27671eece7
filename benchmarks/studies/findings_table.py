"""The effect and diagnosis tables of benchmarks/studies/README.md, from finished studies.

    python benchmarks/studies/findings_table.py STUDY_DIR...

For each study: re-summarises it with this version of bss (summary.json, study.parquet), copies
both into results/ as <study>.summary.json and <study>.study.parquet, and prints

* the effect table: per variant, the selected learning rate, test accuracy mean (sd), the paired
  difference to none and the ordering effect against its control (95 % t-intervals), W/L/T, the
  weak head's change, unstable runs, and the paper's best-test-epoch figure;
* the diagnosis table: per data set, the signals a single `none` run shows (the heads' spread on
  validation at its best epoch, whether it is unstable), the verdict the old rule gave from the
  spread, and the measured effects.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from bss_cli.report.summary import IMBALANCED, LEVEL
from bss_cli.study.runner import SUMMARY, TABLE, StudyDesign, summarise

RESULTS = Path(__file__).parent / "results"
ORDER = ["none", "curriculum", "anti-curriculum", "paced-random", "learned", "learned-shuffled", "learned-paced",
         "learned-paced-shuffled"]


def ci(d: dict | None) -> str:
    if not d or d.get("n", 0) < 2:
        return "-"
    text = f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
    return f"**{text}**" if d["significant"] else f"{text} n.s."


def old_verdict(spread: float) -> str:
    return "likely" if spread >= IMBALANCED else "unlikely" if spread < LEVEL else "uncertain"


def baseline_spread(study: Path, summary: dict, design: StudyDesign) -> float:
    """Mean over the baseline's seeds (at its selected rate) of the heads' validation-accuracy spread
    at the selected epoch: what `bss inspect RUN` of one run sees before any study."""
    base = summary["baseline"]
    lr = summary["variants"][base].get("lr")
    spreads = []
    for seed in design.seeds:
        folder = study / "runs" / base / ("" if lr is None else f"lr={lr:g}") / f"seed={seed}"
        rows = pq.read_table(folder / "metrics.parquet").to_pylist()
        best = json.loads((folder / "summary.json").read_text())["best_epoch"]
        heads = [v for k, v in rows[best].items() if k.startswith("val_acc_")]
        spreads.append(max(heads) - min(heads))
    return float(np.mean(spreads))


def main(studies: list[Path]) -> None:
    RESULTS.mkdir(exist_ok=True)
    diagnosis = []
    for study in studies:
        design = StudyDesign(**json.loads((study / "study.json").read_text()))
        summary = summarise(study, design)
        for name, dest in ((SUMMARY, f"{study.name}.summary.json"), (TABLE, f"{study.name}.study.parquet")):
            shutil.copyfile(study / name, RESULTS / dest)
        v = summary["variants"]
        weak = summary.get("weak_head")
        print(f"\n### {study.name}\n")
        print("| variant | lr | test accuracy (mean ± sd) | vs none [95 % CI] | W/L/T | control | ordering effect "
              f"[95 % CI] | {weak} head change | unstable | paper protocol (best test epoch) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name in sorted(summary["order"], key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)):
            e = v[name]
            d = e.get("vs_baseline")
            paper = e.get("paper_protocol")
            paper_text = f"{paper['mean']:.4f}" if paper else "-"
            print(f"| {name} | {e.get('lr', '-')} | {e['mean']:.4f} ± {e['sd']:.4f} | {ci(d)} | "
                  f"{'/'.join(str(d[k]) for k in ('wins', 'losses', 'ties')) if d else '-'} | "
                  f"{e.get('control', '-')} | {ci(e.get('vs_control'))} | {ci(e.get('weak_head_change'))} | "
                  f"{len(e['unstable_seeds'])}/{e['runs']} | "
                  f"{paper_text} |")
        for line in summary["conclusion"]:
            print(f"\n> {line}")
        if not {"curriculum", "learned"} & set(v):
            continue  # the diagnosis table compares the schedulers' effects
        spread = baseline_spread(study, summary, design)
        row = {"data": study.name.removesuffix("-main"), "spread": spread, "old_verdict": old_verdict(spread),
               "baseline_unstable": f"{len(v[summary['baseline']]['unstable_seeds'])}/{v[summary['baseline']]['runs']}"}
        for name in ("curriculum", "learned"):
            if name in v:
                row[f"{name}_vs_none"] = ci(v[name].get("vs_baseline"))
                row[f"{name}_order"] = ci(v[name].get("vs_control"))
        diagnosis.append(row)
    print("\n### Diagnosis: signals of a `none` run against the measured effects\n")
    print("| data | heads' spread (val, none) | old verdict from the spread | none unstable | curriculum vs none | "
          "curriculum vs paced-random | learned vs none | learned vs learned-shuffled |")
    print("|---|---|---|---|---|---|---|---|")
    for r in diagnosis:
        print(f"| {r['data']} | {r['spread']:.3f} | {r['old_verdict']} | {r['baseline_unstable']} | "
              f"{r.get('curriculum_vs_none', '-')} | {r.get('curriculum_order', '-')} | {r.get('learned_vs_none', '-')} | "
              f"{r.get('learned_order', '-')} |")
    (RESULTS / "diagnosis.json").write_text(json.dumps(diagnosis, indent=2) + "\n")


if __name__ == "__main__":
    main([Path(a) for a in sys.argv[1:]])
