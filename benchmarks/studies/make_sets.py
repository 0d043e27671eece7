"""Extra data sets for the diagnosis table, built from the sample data (nothing downloaded):

* ``digits-av-clean``: digits-av with clean images (``--energy 1``): both modalities strong.
* ``mfeat-mor-fac``: two views of mfeat, the weakest (morphological, 6 features, ~0.74 alone) and
  the strongest (profile correlations, 216, ~0.98): a hard imbalance with real data.
* ``mfeat-zer-kar``: two mid-strength views (Zernike 47, Karhunen-Loeve 64): a mild one.

    python benchmarks/studies/make_sets.py OUT_DIR
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]


def views(src: Path, keep: list[str], out: Path) -> None:
    t = pq.read_table(src, columns=["sample_id", "label", "split", *keep])
    pq.write_table(t, out)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "clean"
    subprocess.run([sys.executable, "-m", "bss_cli", "sample-data", "digits-av", "--energy", "1", "--out-dir",
                    str(tmp), "--force"], check=True)
    (tmp / "digits-av.parquet").replace(out / "digits-av-clean.parquet")
    tmp.rmdir()
    views(ROOT / "sample_data" / "mfeat.parquet", ["mor", "fac"], out / "mfeat-mor-fac.parquet")
    views(ROOT / "sample_data" / "mfeat.parquet", ["zer", "kar"], out / "mfeat-zer-kar.parquet")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
