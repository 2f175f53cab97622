"""`wtb report` pages opened in headless Chromium (the Debian package `chromium`), offline:
the Plotly charts draw, the flips, flaky cases, evaluator errors and failure groups are
listed, and a recorded output cannot inject a script. Screenshots are kept in
artifacts/browser/ (ignored by git); the test prints where."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from casemix import TOY, record_casemix
from wtb.cli.main import cli
from wtb.report.html import render_run
from wtb.report.page import load_run_page
from wtb.storage import ResultStore

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ROOT = Path(__file__).parent.parent
ARTIFACTS = ROOT / "artifacts" / "browser"
RAG = ROOT / "examples" / "rag"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("the browser tests need Chromium: apt-get install chromium (scripts/test does)")


def _browse(page: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Chromium, headless and offline (every host resolves to nothing, no proxy reachable):
    the page must carry everything it needs."""
    return subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--proxy-server=http://127.0.0.1:9",
            "--virtual-time-budget=15000",
            "--window-size=1400,5000",
            *extra,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _render(page: Path, shot_name: str) -> str:
    """The page's DOM after its scripts ran; a screenshot kept in ARTIFACTS."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / shot_name
    shot.unlink(missing_ok=True)
    taken = _browse(page, f"--screenshot={shot}")
    assert shot.exists(), taken.stderr[-2000:]
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
    dumped = _browse(page, "--dump-dom")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    return dumped.stdout


def _charts_drawn(dom: str) -> int:
    """Every chart the page declares was drawn by Plotly into SVG."""
    declared = re.findall(r'<div class="chart[^"]*" id="(chart-\d+)"', dom)
    assert declared
    for chart in declared:
        start = dom.index(f'id="{chart}"')
        end = dom.index("</script>", start)
        assert "main-svg" in dom[start:end], f"{chart} has no SVG"
    assert dom.count("js-plotly-plot") >= len(declared)
    return len(declared)


def test_rag_example_report(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'rag.db'}"
    runner = CliRunner()
    ran = runner.invoke(cli, ["run", "-f", str(RAG), "--database", url, "-q", "-o", "json"])
    assert ran.exit_code == 0, ran.output
    page = tmp_path / "rag.html"
    made = runner.invoke(cli, ["report", "rag-variants", "--database", url, "-o", str(page)])
    assert made.exit_code == 0, made.output
    html = page.read_text()
    assert "<script src=" not in html  # plotly.js inlined: nothing to fetch
    dom = _render(page, "rag-report.png")
    # Forest plot, success rates, three trade-offs (cost, tokens, latency), per-node time
    # (no node tokens: the example reports usage per cell, not from its nodes' models).
    assert _charts_drawn(dom) == 6
    assert "Median time per cell (ms), per node" in dom
    assert "Pareto front" in dom
    assert "generate=lead, retrieve=original" in dom
    assert re.search(r'class="verdict-worse">worse<', dom)
    assert re.search(r'class="verdict-better">better<', dom)
    # The known flips of bm25: q09 newly failing, q56 (worded unlike the passages, where
    # stemming helps) newly passing.
    bm25 = "generate=original, retrieve=bm25"
    failing = re.findall(r'<tr class="newly-failing" data-case="q09">(.*?)</tr>', dom, re.S)
    assert any(bm25 in row for row in failing)
    passing = re.findall(r'<tr class="newly-passing" data-case="q56">(.*?)</tr>', dom, re.S)
    assert any(bm25 in row for row in passing)
    assert "newly failing" in dom  # lead fails cases the baseline passes
    assert "No cell failed." in dom


def test_failing_run_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TOY))
    recorded = record_casemix(tmp_path, "browser")
    with ResultStore.open(recorded.url) as store:
        page = load_run_page(store, recorded.run)
    assert len(page.failures.groups) == 1
    path = tmp_path / "casemix.html"
    path.write_text(render_run(page))
    dom = _render(path, "failing-run-report.png")
    _charts_drawn(dom)
    table = re.search(r'<table id="failure-groups">(.*?)</table>', dom, re.S)
    assert table is not None
    assert "answer=boom" in table.group(1)
    assert "ValueError" in table.group(1)
    assert "case <b>c2</b>" in table.group(1)
    # The error message carries a script tag: shown as text, never run.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert "<script>alert(1)" not in dom
    assert re.search(r'<table id="flaky-table">.*answer=flaky', dom, re.S)
    assert re.search(r'<table id="evaluator-error-table">.*picky evaluator refuses c3', dom, re.S)
    assert '<span class="fail"><b>2</b> failed</span>' in dom
