"""`wtb view`: the runs of a result store as local web pages, read-only.

`GET /` lists the runs, `GET /runs/<id>` is a run's page (the same as `wtb report`, with
plotly.js loaded once from `GET /assets/plotly.min.js`). Nothing else is answered and
nothing is written. A ThreadingHTTPServer: one thread per request, over the store's
connection pool.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, ClassVar

from wtb.report.assets import plotly_js
from wtb.report.html import IndexEntry, render_index, render_run
from wtb.report.page import load_run_page

if TYPE_CHECKING:
    from wtb.storage.store import ResultStore

PLOTLY_PATH = "/assets/plotly.min.js"
_RUN_PATH = re.compile(r"^/runs/(\d{1,18})$")


class _Handler(BaseHTTPRequestHandler):
    server: ViewServer
    server_version = "wtb-view"
    protocol_version = "HTTP/1.1"
    _HEADERS: ClassVar[dict[str, str]] = {
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }

    def do_GET(self) -> None:
        try:
            self._get(self.path.split("?", 1)[0])
        except Exception as exc:
            message = f"cannot read the result store: {type(exc).__name__}: {exc}\n"
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8", message)

    def _get(self, path: str) -> None:
        if path == "/":
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", self.server.index())
        elif path == PLOTLY_PATH:
            self._send(
                HTTPStatus.OK,
                "text/javascript; charset=utf-8",
                plotly_js(),
                cache="public, max-age=86400",
            )
        elif (found := _RUN_PATH.match(path)) is not None:
            page = self.server.run_page(int(found.group(1)))
            if page is None:
                self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", "no such run\n")
            else:
                self._send(HTTPStatus.OK, "text/html; charset=utf-8", page)
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", "not found\n")

    def do_HEAD(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", "")

    def _send(self, status: HTTPStatus, kind: str, body: str, *, cache: str = "no-store") -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", cache)
        for name, value in self._HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        if self.server.log_requests:
            super().log_message(format, *args)


class ViewServer(ThreadingHTTPServer):
    """Serves the pages of the runs in `store`; `database` is shown on the index (give it
    without a password)."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        store: ResultStore,
        *,
        database: str,
        log_requests: bool = False,
    ) -> None:
        super().__init__(address, _Handler)
        self.store = store
        self.database = database
        self.log_requests = log_requests

    def index(self) -> str:
        entries = [
            IndexEntry(run=run, progress=self.store.progress(run.id), href=f"/runs/{run.id}")
            for run in self.store.find_runs()
        ]
        return render_index(entries, database=self.database)

    def run_page(self, run_id: int) -> str | None:
        run = self.store.get_run_by_id(run_id)
        if run is None:
            return None
        return render_run(load_run_page(self.store, run), plotly_src=PLOTLY_PATH, index_href="/")
