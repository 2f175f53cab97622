"""The report's HTML without a browser: sections, escaping of recorded text, size bounds,
the Pareto front (`wtb.report`)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from casemix import TOY, record_casemix
from wtb.report.charts import pareto_front
from wtb.report.html import MAX_TEXT, clip, render_run
from wtb.report.page import load_run_page
from wtb.storage import ResultStore


def test_page_sections_and_escaping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TOY))
    recorded = record_casemix(tmp_path, "html")
    with ResultStore.open(recorded.url) as store:
        with_groups = render_run(load_run_page(store, recorded.run))
    # The error message of the boom variant carries a script tag: escaped everywhere.
    assert "<script>alert(1)" not in with_groups
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in with_groups
    # Figures travel as JSON with <, > and & escaped: no markup can close their script.
    for figure in re.findall(r'data-figure="chart-\d+">(.*?)</script>', with_groups, re.S):
        assert "<" not in figure
    assert len(re.findall(r'data-figure="chart-\d+"', with_groups)) == 6
    assert '<table id="failure-groups">' in with_groups
    groups = with_groups.split('<table id="failure-groups">')[1].split("</table>")[0]
    assert "answer=boom" in groups
    assert re.search(r'<td class="num">2</td>', groups)  # both failed cells, one group
    # The flips, the focus on the primary metric's output path.
    assert re.search(r'<tr class="newly-failing" data-case="c2">', with_groups)
    assert '<pre class="out focus">answer: 2q</pre>' in with_groups


def test_clip_bounds_text() -> None:
    assert clip("short") == "short"
    assert clip(None) == ""
    assert clip({"b": 1, "a": "x"}) == '{"a": "x", "b": 1}'
    long = clip("x" * 5000)
    assert long.startswith("x" * MAX_TEXT)
    assert long.endswith(f"… ({5000 - MAX_TEXT} more characters)")


def test_pareto_front() -> None:
    points = [(1.0, 0.5), (2.0, 0.9), (3.0, 0.8), (1.5, 0.5), (4.0, 0.95)]
    assert pareto_front(points, higher_is_better=True) == [0, 1, 4]
    assert pareto_front(points, higher_is_better=False) == [0]
    assert pareto_front([(1.0, 1.0), (1.0, 1.0)], higher_is_better=True) == [0, 1]


def test_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without Jinja2 or Plotly, `wtb report` says which extra to install."""
    from click.testing import CliRunner

    from wtb.cli.main import cli
    from wtb.report import assets

    monkeypatch.setitem(sys.modules, "jinja2", None)
    assets.environment.cache_clear()
    try:
        result = CliRunner().invoke(
            cli,
            ["report", "any", "--database", f"sqlite:///{tmp_path / 'r.db'}", "-o", "x.html"],
        )
    finally:
        assets.environment.cache_clear()
    assert result.exit_code == 2
    assert "reports need Jinja2" in result.output
    assert "pip install 'wtb[report]'" in result.output
