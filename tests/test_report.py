"""bss report: one self-contained HTML page per run, study or scores file; the same inputs give the
same bytes; and (integration tier) the page as a person sees it in a real headless Chromium."""

from __future__ import annotations

import re
import shutil

import pytest
from typer.testing import CliRunner

from bss_cli.cli.app import app
from bss_cli.report import svg

runner = CliRunner()
PALETTE_RGB = [tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in svg.PALETTE[:6]]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def figures(html: str) -> dict[str, str]:
    """data-plot name -> the figure's markup."""
    return dict(re.findall(r'<figure class="plot" data-plot="([^"]+)">(.*?)</figure>', html, re.S))


def assert_self_contained(html: str) -> None:
    """Nothing the page could fetch: no script, no src/href, no CSS url(), no @import."""
    for needle in ("<script", " src=", " href=", "url(", "@import", "<link", "<iframe"):
        assert needle not in html, needle
    # the one http:// in the page is the SVG namespace, an identifier that is never fetched
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) <= {"http://www.w3.org/2000/svg"}


@pytest.fixture
def learned_run(tiny_manifest, tmp_path):
    folder = tmp_path / "run"
    r = run("train", tiny_manifest, "--out", folder, "--epochs", "4", "--scheduler", "learned", "--quiet")
    assert r.exit_code == 0, r.output
    return folder


def test_run_report_shows_heads_imbalance_schedule_scores_and_diagnosis(learned_run, tmp_path):
    out = tmp_path / "run.html"
    r = run("report", learned_run, "-o", out)
    assert r.exit_code == 0, r.output
    html = out.read_text()
    assert_self_contained(html)
    figs = figures(html)
    assert set(figs) >= {"accuracy", "loss", "imbalance", "growth", "composition", "scores", "mean-balance"}
    for name, markup in figs.items():
        assert 'class="mark"' in markup, f"{name}: a chart with no data"
    # every head has its own curve, named in the legend
    assert all(f">{h}<" in figs["accuracy"] for h in ("model", "a", "b"))
    assert "Diagnosis." in html and "not predictable from this run" in html
    # deterministic: the same folder gives the same bytes
    assert run("report", learned_run, "-o", out, "--force").exit_code == 0
    assert out.read_text() == html


def test_scores_report_per_class_and_per_part(tiny_manifest, tmp_path):
    scores = tmp_path / "s.parquet"
    assert run("score", tiny_manifest, "-o", scores).exit_code == 0
    out = tmp_path / "s.html"
    assert run("report", scores, "-o", out).exit_code == 0
    html = out.read_text()
    assert_self_contained(html)
    figs = figures(html)
    assert {"balance", "class-0", "class-1", "class-2", "part-pred_sim", "part-loss"} <= set(figs)
    assert "heads-p(true class)" in figs and "heads-loss" in figs


def test_report_refuses_what_it_cannot_show_and_keeps_existing_files(tiny_manifest, learned_run, tmp_path):
    r = run("report", tiny_manifest, "-o", tmp_path / "m.html")
    assert r.exit_code == 1 and "reads a run folder, a study folder or a scores file" in r.stderr
    assert not (tmp_path / "m.html").exists()
    out = tmp_path / "keep.html"
    out.write_text("mine")
    r = run("report", learned_run, "-o", out)
    assert r.exit_code == 1 and "pass --force" in r.stderr and out.read_text() == "mine"
    r = run("report", tmp_path / "nowhere", "-o", tmp_path / "x.html")
    assert r.exit_code == 1 and "no such file or folder" in r.stderr


def test_a_run_without_scores_says_so(tiny_manifest, tmp_path):
    folder = tmp_path / "none"
    assert run("train", tiny_manifest, "--out", folder, "--epochs", "2", "--scheduler", "none", "--quiet").exit_code == 0
    out = tmp_path / "none.html"
    assert run("report", folder, "-o", out).exit_code == 0
    html = out.read_text()
    assert "kept no scores" in html and "composition" in figures(html)


# --- integration tier: the page in a real browser ----------------------------------------------------
def _browser():
    """Playwright driving Debian's chromium, or a skip that says what is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium; .ci/run installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install '.[integrations]')")
    return chromium, sync_playwright


def look_at(html_path, png_path, chromium, sync_playwright) -> dict:
    """Open the page offline, as a reader would; return the console errors, blocked requests and, per
    figure, its size and how much of it is ink and how much is chart colour."""
    from PIL import Image

    found = {"errors": [], "requests": [], "figures": {}}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.on("console", lambda m: m.type == "error" and found["errors"].append(m.text))
        page.on("pageerror", lambda e: found["errors"].append(str(e)))

        def block(route):  # the page must need nothing but itself
            found["requests"].append(route.request.url)
            route.abort()

        page.route(re.compile(r"^(?!file:).*"), block)
        page.goto(html_path.as_uri())
        page.wait_for_load_state("load")
        page.screenshot(path=str(png_path), full_page=True)
        for fig in page.query_selector_all("figure.plot"):
            name = fig.get_attribute("data-plot")
            shot = png_path.with_name(f"{png_path.stem}-{name}.png")
            box = fig.query_selector("svg").bounding_box()
            fig.query_selector("svg").screenshot(path=str(shot))
            img = Image.open(shot).convert("RGB")
            pixels = list(img.getdata())
            ink = sum(1 for px in pixels if sum(px) < 3 * 235) / len(pixels)
            colour = sum(1 for px in pixels if any(sum(abs(a - b) for a, b in zip(px, c)) < 60 for c in PALETTE_RGB))
            found["figures"][name] = {"width": box["width"], "height": box["height"], "ink": ink,
                                      "colour": colour / len(pixels)}
        # every label inside its chart (none cut at the edge)
        found["clipped_labels"] = page.evaluate("""() => [...document.querySelectorAll('svg.chart')].flatMap(svg => {
            const box = svg.getBoundingClientRect();
            return [...svg.querySelectorAll('text')].filter(t => { const b = t.getBoundingClientRect();
                return b.width > 0 && (b.left < box.left - 1 || b.right > box.right + 1); }).map(t => t.textContent); })""")
        # a phone's width: the charts keep legible text (they scroll sideways instead of shrinking)
        page.set_viewport_size({"width": 375, "height": 800})
        found["narrow_text_px"] = page.evaluate("""() => Math.min(1000, ...[...document.querySelectorAll('svg.chart')]
            .flatMap(svg => { const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
                return [...svg.querySelectorAll('text')].map(t => parseFloat(getComputedStyle(t).fontSize) * scale); }))""")
        page.set_viewport_size({"width": 1100, "height": 900})
        page.emulate_media(media="print")
        # printed: every table fits the page's width (no column cut off by a scrolling box)
        found["print_cut_tables"] = page.evaluate("""() => [...document.querySelectorAll('table')].filter(t =>
            t.getBoundingClientRect().right > document.documentElement.clientWidth + 1).length""")
        found["pdf_bytes"] = len(page.pdf(format="A4", landscape=True))
        browser.close()
    return found


@pytest.mark.integration
def test_reports_render_in_a_real_browser_with_every_plot_drawn(tiny_manifest, learned_run, tmp_path):
    chromium, sync_playwright = _browser()
    study = tmp_path / "study"
    r = run("study", tiny_manifest, "--out", study, "--schedulers", "none,curriculum,paced-random", "--seeds", "2",
            "--set", "epochs=3", "--jobs", "2", "--device", "cpu", "--quiet")
    assert r.exit_code == 0, r.output
    scores = tmp_path / "s.parquet"
    assert run("score", tiny_manifest, "-o", scores).exit_code == 0
    expect = {"run": (learned_run, {"accuracy", "loss", "imbalance", "growth", "composition", "scores"}),
              "study": (study, {"vs-baseline", "vs-control", "seeds"}),
              "scores": (scores, {"balance", "class-0", "part-pred_sim", "heads-loss"})}
    for kind, (source, plots) in expect.items():
        html = tmp_path / f"{kind}.html"
        assert run("report", source, "-o", html).exit_code == 0
        seen = look_at(html, tmp_path / f"{kind}.png", chromium, sync_playwright)
        assert seen["errors"] == [] and seen["requests"] == [], (kind, seen)
        assert plots <= set(seen["figures"]), (kind, sorted(seen["figures"]))
        for name, fig in seen["figures"].items():
            assert fig["width"] >= 300 and fig["height"] >= 60, (kind, name, fig)
            assert fig["ink"] > 0.01, (kind, name, fig)  # axes, labels and marks, not a blank frame
            assert fig["colour"] > 0.0001, (kind, name, fig)  # the data's own colours (a blank frame has none)
        assert seen["pdf_bytes"] > 10_000  # it prints
        assert seen["clipped_labels"] == [], (kind, seen["clipped_labels"])
        assert seen["narrow_text_px"] >= 9, (kind, seen["narrow_text_px"])  # at 375 px, 10 px text stays 10 px
        assert seen["print_cut_tables"] == 0, kind
    # the check tells a drawn chart from an empty frame: axes and labels alone carry no data colour
    from bss_cli.report.html import figure, page

    empty = tmp_path / "empty.html"
    empty.write_text(page("empty", "", [figure("frame", svg.Frame("no data", (0, 1), (0, 1)).render(), "")]))
    seen = look_at(empty, tmp_path / "empty.png", chromium, sync_playwright)
    assert seen["figures"]["frame"]["ink"] > 0.01 and seen["figures"]["frame"]["colour"] == 0
