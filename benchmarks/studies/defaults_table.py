"""The evidence behind bss train's optimisation defaults: validation figures of the joint baseline
(scheduler none) under each candidate of defaults.toml, on every sample set.

    python benchmarks/studies/defaults_table.py STUDY_DIR...   (studies run with defaults.toml)

Per candidate and set: mean (sd) of the best validation accuracy over the seeds, runs with the
instability signature, mean best epoch. Only validation is read: the default is chosen on it.
Writes benchmarks/studies/results/defaults.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from bss_cli.study.runner import StudyDesign, collect


def table(studies: list[Path]) -> dict:
    out = {}
    for study in studies:
        design = StudyDesign(**json.loads((study / "study.json").read_text()))
        rows = collect(study, design)
        for v in design.variants:
            r = [x for x in rows if x["variant"] == v]
            val = np.array([x["val_acc"] for x in r])
            out.setdefault(v, {})[study.name] = {
                "runs": len(r), "val_mean": float(val.mean()), "val_sd": float(val.std(ddof=1)),
                "unstable": sum(bool(x["unstable"]) for x in r),
                "mean_best_epoch": float(np.mean([x["best_epoch"] for x in r])),
                "max_peak_drop": float(max(x["peak_drop"] for x in r))}
    return out


def main(argv: list[str]) -> None:
    studies = [Path(a) for a in argv]
    res = table(studies)
    names = [s.name for s in studies]
    print("| candidate | " + " | ".join(f"{n}: val acc (sd), unstable, best epoch" for n in names)
          + " | mean val acc | unstable runs |")
    print("|---|" + "---|" * (len(names) + 2))
    for v, by in res.items():
        cells = [f"{by[n]['val_mean']:.4f} ({by[n]['val_sd']:.4f}), {by[n]['unstable']}/{by[n]['runs']}, "
                 f"{by[n]['mean_best_epoch']:.1f}" for n in names]
        mean = np.mean([by[n]["val_mean"] for n in names])
        print(f"| {v} | " + " | ".join(cells) + f" | {mean:.4f} | {sum(by[n]['unstable'] for n in names)} |")
    out = Path(__file__).parent / "results" / "defaults.json"
    out.write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
