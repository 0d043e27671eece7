"""Every code snippet in README.md and docs/ runs as pasted, or says why it cannot run here.

A fenced ``python`` or ``bash`` block is run by these tests unless the line above it is a marker:

* ``<!-- doc-test: setup -->``: the Python lines the page says every later snippet starts with;
  each later snippet runs as one script after them, in a fresh process.
* ``<!-- doc-test: skip: REASON -->``: cannot run in a test (a real download, a GPU cluster, a
  server that waits for a browser); the reason is shown on the page's source.

A page's snippets run in page order from one scratch folder that holds the repository's
``sample_data`` and ``examples`` (links) and ``data.parquet`` (the snippets' "your manifest": the
sample data set htad), with the venv's ``bss`` and ``python`` first on PATH, as they would from the
repository root after ``make setup``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
MARKER = re.compile(r"<!--\s*doc-test:\s*(setup|skip:[^>]*?)\s*-->\s*$")
RUNNABLE = ("python", "bash")


@dataclass
class Snippet:
    page: Path
    line: int
    lang: str
    code: str
    marker: str  # "", "setup" or "skip: REASON"

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def snippets(page: Path) -> list[Snippet]:
    text = page.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.search(before)
        out.append(Snippet(page, text[:m.start()].count("\n") + 1, m.group(1), m.group(2),
                           marker.group(1).strip() if marker else ""))
    return out


ALL = [s for page in PAGES for s in snippets(page)]
RUN = [s for s in ALL if s.lang in RUNNABLE and s.marker == ""]
# the pages whose snippets need the integration packages (Lightning, transformers, accelerate, torchdata)
INTEGRATION_PAGES = {"docs/integrations.md", "docs/scale.md"}  # scale.md: Ray (the bss[ray] extra)


def _env(tmp: Path) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = ""
    env["HOME"] = str(tmp / "home")  # trackers and caches write below the scratch folder
    env.setdefault("MPLBACKEND", "Agg")
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["HF_HUB_OFFLINE"] = "1"
    env["WANDB_MODE"] = "offline"
    return env


def _run_bash(s: Snippet, cwd: Path) -> None:
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", s.code], cwd=cwd, env=_env(cwd), capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, f"{s.id} failed:\n{s.code}\n--- stderr ---\n{r.stderr[-3000:]}"


def _run_python(s: Snippet, cwd: Path, setup: list[str]) -> None:
    script = cwd / f"snippet_{s.line}.py"
    script.write_text("\n".join([*setup, s.code]), encoding="utf-8")
    r = subprocess.run([sys.executable, script.name], cwd=cwd, env=_env(cwd), capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, f"{s.id} failed:\n{script.read_text()}\n--- stderr ---\n{r.stderr[-3000:]}"


def _marks(page: Path):
    return [pytest.mark.integration] if str(page.relative_to(ROOT)) in INTEGRATION_PAGES else [pytest.mark.slow]


RUN_PAGES = sorted({s.page for s in RUN})


@pytest.mark.parametrize("page", [pytest.param(p, id=str(p.relative_to(ROOT)), marks=_marks(p)) for p in RUN_PAGES])
def test_page_snippets_run_as_pasted(page: Path, tmp_path):
    """The page's snippets, in page order, in one scratch folder (a later snippet may read what an
    earlier one wrote, as a reader following the page does); each Python snippet is a fresh process
    that starts with the page's setup lines."""
    (tmp_path / "home").mkdir()
    for name in ("sample_data", "examples"):
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    (tmp_path / "data.parquet").symlink_to(ROOT / "sample_data" / "htad.parquet")  # "your manifest"
    setup: list[str] = []
    for s in snippets(page):
        if s.lang not in RUNNABLE or s.marker.startswith("skip:"):
            continue
        if s.marker == "setup":
            setup.append(s.code)
        elif s.lang == "bash":
            _run_bash(s, tmp_path)
        else:
            _run_python(s, tmp_path, setup)


def test_every_snippet_is_run_or_says_why_not():
    """A python/bash block with no marker is run above; a skip names its reason; a setup is Python
    and comes before the snippets that use it; no marker stands above a block it cannot apply to."""
    problems = []
    for s in ALL:
        if s.lang not in RUNNABLE:
            if s.marker:
                problems.append(f"{s.id}: a doc-test marker above a ```{s.lang} block (only python and bash run)")
            continue
        if s.marker.startswith("skip:") and len(s.marker[5:].strip()) < 10:
            problems.append(f"{s.id}: a skip must say why the snippet cannot run in a test")
        if s.marker == "setup" and s.lang != "python":
            problems.append(f"{s.id}: a setup block is Python")
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        n_markers = len(re.findall(r"<!--\s*doc-test:", text))
        n_used = sum(1 for s in snippets(page) if s.marker)
        if n_markers != n_used:
            problems.append(f"{page.relative_to(ROOT)}: {n_markers - n_used} doc-test marker(s) not directly above a block")
    assert not problems, "\n".join(problems)


def test_the_checker_finds_snippets():
    """The parser sees the pages' blocks (a regex that matched nothing would pass every check)."""
    by_page = {str(s.page.relative_to(ROOT)) for s in RUN}
    assert "docs/integrations.md" in by_page
    assert len([s for s in RUN if s.page.name == "integrations.md" and s.lang == "python"]) >= 9
    assert shutil.which("bash")
