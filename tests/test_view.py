"""`wtb view` over HTTP on 127.0.0.1: the index of runs with their counts, a run's page,
plotly.js once, nothing else, read-only."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from casemix import CASES, REPEATS, TOY, record_casemix


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310  (http on 127.0.0.1)
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_view_serves_index_and_run_pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TOY))
    recorded = record_casemix(tmp_path, "view")
    view = subprocess.Popen(
        [sys.executable, "-m", "wtb", "view", "--database", recorded.url, "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert view.stderr is not None
        line = view.stderr.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert found, line
        base = f"http://127.0.0.1:{found.group(1)}"
        status, index = _get(base + "/")
        assert status == 200
        assert recorded.run.run_key in index
        link = f'href="/runs/{recorded.run.id}"'
        assert link in index
        cells = CASES * REPEATS * 5
        row = re.search(r"<tr>.*?</tr>", index.split("<tbody>")[1], re.S)
        assert row is not None
        numbers = re.findall(r'<td class="num[^"]*">([^<]*)</td>', row.group(0))
        # done/total, succeeded, failed (the boom variant on c2, every repeat), interrupted
        assert numbers == [f"{cells}/{cells}", str(cells - REPEATS), str(REPEATS), "0"]

        status, page = _get(f"{base}/runs/{recorded.run.id}")
        assert status == 200
        assert '<script src="/assets/plotly.min.js"></script>' in page
        assert 'data-case="c2"' in page
        assert "newly failing" in page
        status, script = _get(base + "/assets/plotly.min.js")
        assert status == 200
        assert len(script) > 1_000_000
        assert _get(f"{base}/runs/{recorded.run.id + 1000}")[0] == 404
        assert _get(base + "/etc/passwd")[0] == 404
        request = urllib.request.Request(base + "/", data=b"x", method="POST")  # noqa: S310
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)  # noqa: S310
        assert refused.value.code == 501
    finally:
        view.terminate()
        view.wait(timeout=30)
