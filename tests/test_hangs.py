"""Nothing hangs silently: every wait has a deadline and a message saying what it waited for.

Drills: a "database" that accepts TCP and never answers, a table lock held by another
real connection (on PostgreSQL, direct and through PgBouncer).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from pydantic import ValidationError

from toybatch import TOY, prepare_documents, stored_batchtest_body, toy_batchtest, toy_prepared
from wtb.api.batchtest import BatchTest
from wtb.domain import Attempt, Cell, CellResult
from wtb.errors import ExitCode, RunDeadlineExceeded, StorageError
from wtb.kube.rayjobs import JobInfo, RayJobClient, RayJobError
from wtb.pipeline.execute import run_batch
from wtb.runners import InlineRunner
from wtb.storage import ResultStore
from wtb.storage.engine import Deadlines, make_engine
from wtb.storage.records import RunInfo

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def _info(total: int = 4) -> RunInfo:
    return RunInfo(
        run_key="default/hangs:abc",
        namespace="default",
        name="hangs",
        spec_digest="abc" * 10,
        spec={},
        total_cells=total,
    )


def _result(case: int) -> CellResult:
    return CellResult(
        cell=Cell(
            key=f"cell-{case}",
            combo_key="combo",
            combination=(("generate", "v1"),),
            case_id=f"case-{case}",
            repeat=0,
        ),
        status="succeeded",
        latency_ms=1.0,
        finished_at=T0,
        output={"answer": case},
        metrics={"exact": 1.0},
        attempts=(Attempt(number=1, status="succeeded", started_at=T0, duration_ms=1.0),),
    )


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    server.close()


def test_a_database_that_never_answers_is_a_storage_error_naming_the_deadline(
    silent_server: int,
) -> None:
    url = f"postgresql://wtb:secret@127.0.0.1:{silent_server}/wtb"
    deadlines = Deadlines(connect=2)
    result: list[BaseException] = []

    def open_store() -> None:
        try:
            ResultStore.open(url, deadlines=deadlines)
        except BaseException as exc:
            result.append(exc)

    opener = threading.Thread(target=open_store, daemon=True)
    opener.start()
    opener.join(30)
    assert not opener.is_alive(), "opening a store on a silent server hung"
    assert len(result) == 1
    assert isinstance(result[0], StorageError)
    message = str(result[0])
    assert "no answer while connecting within 2 s" in message
    assert "WTB_DB_CONNECT_TIMEOUT_SECONDS" in message
    assert "secret" not in message


def test_writes_to_a_database_that_never_answers_stop_with_a_storage_error(
    silent_server: int,
) -> None:
    deadlines = Deadlines(connect=2)
    url = f"postgresql://wtb:secret@127.0.0.1:{silent_server}/wtb"
    store = ResultStore(make_engine(url, deadlines=deadlines), retry_seconds=1, deadlines=deadlines)
    result: list[BaseException] = []

    def write() -> None:
        try:
            store.record(1, [_result(0)])
        except BaseException as exc:
            result.append(exc)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    writer.join(30)
    store.close()
    assert not writer.is_alive(), "a write to a silent server hung"
    assert len(result) == 1
    assert isinstance(result[0], StorageError)
    assert "WTB_DB_CONNECT_TIMEOUT_SECONDS" in str(result[0])


@pytest.mark.postgres
@pytest.mark.parametrize("through", ["postgres_url", "pgbouncer_url"])
def test_a_held_table_lock_is_an_error_naming_the_lock_wait(
    through: str, postgres_url: str, request: pytest.FixtureRequest
) -> None:
    """Another connection holds an exclusive lock on the cells table: a write waits
    lock_timeout per try, retries for retry_seconds, then says it waited for a lock. Once
    the lock is gone the same write records every cell once."""
    url = postgres_url if through == "postgres_url" else _through_pgbouncer(request, postgres_url)
    deadlines = Deadlines(lock=0.3)
    with ResultStore.open(url, retry_seconds=1.0, deadlines=deadlines) as store:
        run = store.begin_run(_info())
        results = [_result(case) for case in range(4)]
        store.record(run.id, results[:1])
        with psycopg.connect(_libpq(postgres_url), autocommit=False) as holder:
            holder.execute("LOCK TABLE cells IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(StorageError) as caught:
                store.record(run.id, results)
            holder.rollback()
        message = str(caught.value)
        assert "waited longer than 0.3 s for a lock" in message
        assert "WTB_DB_LOCK_TIMEOUT_SECONDS" in message
        assert "WTB_STORE_RETRY_SECONDS" in message
        assert store.record(run.id, results) == 3
        assert store.record(run.id, results) == 0
        assert store.progress(run.id).done == 4


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _through_pgbouncer(request: pytest.FixtureRequest, postgres_url: str) -> str:
    services = request.getfixturevalue("postgres_services")
    name = postgres_url.rsplit("/", 1)[1]
    url: str = services.url(name, through_pgbouncer=True)
    return url


# -- the Ray job API ---------------------------------------------------------------------


class _Dashboard(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, reply: Callable[[socket.socket, threading.Event], None]) -> None:
        self.reply = reply
        self.stopping = threading.Event()
        super().__init__(("127.0.0.1", 0), _DashboardHandler)


class _DashboardHandler(socketserver.BaseRequestHandler):
    server: _Dashboard

    def handle(self) -> None:
        self.request.recv(65536)
        with contextlib.suppress(OSError):
            self.server.reply(self.request, self.server.stopping)


@contextlib.contextmanager
def _dashboard(reply: Callable[[socket.socket, threading.Event], None]) -> Iterator[str]:
    server = _Dashboard(reply)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def _drip(sock: socket.socket, stopping: threading.Event) -> None:
    """One byte every 100 ms, forever: each read returns, so no socket timeout fires."""
    head = b'HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n{"status": "'
    for byte in itertools.chain(head, itertools.repeat(ord("x"))):
        if stopping.wait(0.1):
            return
        sock.sendall(bytes([byte]))


def _huge(sock: socket.socket, _stopping: threading.Event) -> None:
    body = b'{"status": "' + b"x" * (2 << 20) + b'"}'
    sock.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body)


def _status(sock: socket.socket, _stopping: threading.Event) -> None:
    body = json.dumps({"status": "RUNNING", "message": "", "driver_exit_code": None}).encode()
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def _in_thread(call: Callable[[], object], seconds: float) -> object:
    """What `call` returned or raised, failing the test if it took longer than `seconds`."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the call did not return within {seconds} s"
    return outcome[0]


def test_a_dripping_ray_dashboard_is_cut_off_at_the_call_deadline() -> None:
    with _dashboard(_drip) as url:
        outcome = _in_thread(lambda: RayJobClient(url, deadline=1.0).info("job-1"), 30)
    assert isinstance(outcome, RayJobError)
    assert "did not finish answering within 1 s" in str(outcome)
    assert url in str(outcome)


def test_a_ray_dashboard_reply_over_the_size_cap_is_refused() -> None:
    with _dashboard(_huge) as url:
        outcome = _in_thread(lambda: RayJobClient(url, max_bytes=4096).info("job-1"), 30)
    assert isinstance(outcome, RayJobError)
    assert "more than 4096 bytes" in str(outcome)


def test_a_ray_dashboard_that_answers_in_time_is_read() -> None:
    with _dashboard(_status) as url:
        outcome = _in_thread(lambda: RayJobClient(url, deadline=5.0).info("job-1"), 30)
    assert isinstance(outcome, JobInfo)
    assert outcome.status == "RUNNING"


# -- spec.activeDeadlineSeconds in this process ------------------------------------------


def test_a_local_run_past_its_deadline_stops_and_resumes_without_losing_a_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """60 cells of 50 ms one at a time cannot finish in 1 s: the run stops with
    RunDeadlineExceeded (exit code 5), what it recorded stays recorded, and the same run
    with a larger deadline (the deadline is no part of the run's identity) runs the rest."""
    monkeypatch.syspath_prepend(str(TOY))
    short = toy_prepared(
        tmp_path, "deadline", "slow_lookup", 60, concurrency=1, activeDeadlineSeconds=1
    )
    with ResultStore.open(f"sqlite:///{tmp_path / 'wtb.db'}") as store:
        with pytest.raises(RunDeadlineExceeded) as caught:
            run_batch(short, store, InlineRunner(), flush_every=5, flush_seconds=0.05)
        assert caught.value.exit_code == ExitCode.DEADLINE
        assert int(ExitCode.DEADLINE) == 5
        assert "spec.activeDeadlineSeconds (1 s)" in str(caught.value)
        run = store.get_run(short.run_info.run_key)
        assert run is not None
        assert run.status == "failed"
        assert "RunDeadlineExceeded" in (run.error or "")
        stopped_at = store.progress(run.id).done
        assert 0 < stopped_at < 60
        assert f"stopped with {stopped_at} of 60 cells recorded" in str(caught.value)

        longer = toy_prepared(
            tmp_path, "deadline", "slow_lookup", 60, concurrency=8, activeDeadlineSeconds=3600
        )
        assert longer.run_info.run_key == short.run_info.run_key
        outcome = run_batch(longer, store, InlineRunner(), reuse=False)
        assert outcome.recorded_before == stopped_at
        assert outcome.recorded_now == 60 - stopped_at
        keys = [c.cell_key for c in store.iter_cells(run.id)]
        assert len(keys) == len(set(keys)) == 60


# -- bounded waits in the spec -----------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "path", "says"),
    [
        ({"retry": {"backoffSeconds": 1e9}}, "retry.backoffSeconds", "less than or equal to 600"),
        ({"retry": {"maxBackoffSeconds": 601.0}}, "retry.maxBackoffSeconds", "600"),
        ({"retry": {"backoffSeconds": float("inf")}}, "retry.backoffSeconds", "finite"),
        ({"retry": {"backoffSeconds": float("nan")}}, "retry.backoffSeconds", "finite"),
        ({"timeoutSeconds": 1e9}, "timeoutSeconds", "604800"),
        ({"activeDeadlineSeconds": 0}, "activeDeadlineSeconds", "greater than or equal to 1"),
        ({"activeDeadlineSeconds": 10**9}, "activeDeadlineSeconds", "604800"),
    ],
)
def test_waits_in_a_batchtest_are_bounded(spec: dict[str, Any], path: str, says: str) -> None:
    body = stored_batchtest_body(**spec)
    with pytest.raises(ValidationError) as caught:
        BatchTest.model_validate(body, by_alias=True)
    errors = caught.value.errors()
    assert len(errors) == 1
    assert ".".join(str(p) for p in errors[0]["loc"]) == f"spec.{path}"
    assert says in errors[0]["msg"]


# -- evaluators that never return --------------------------------------------------------


@pytest.mark.parametrize("lookup", ["slow_lookup", "slow_lookup_sync"])
def test_an_evaluator_that_never_returns_is_an_evaluator_error_and_the_run_goes_on(
    lookup: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the loop (an async node) and on worker threads (all sync): the stuck evaluator's
    metric is None with an error naming the deadline; every cell is recorded once with its
    other metrics."""
    monkeypatch.syspath_prepend(str(TOY))
    from toyflow import hangs

    hangs.release.clear()
    evaluators = [
        {"name": "correct", "type": "exactMatch", "output": "answer", "expected": "answer"},
        {"name": "judge", "type": "python", "path": "toyflow.hangs:never_returns"},
    ]
    prepared = toy_prepared(
        tmp_path, "evaluator", lookup, 6, evaluators=evaluators, evaluatorTimeoutSeconds=0.5
    )
    try:
        with ResultStore.open(f"sqlite:///{tmp_path / 'wtb.db'}") as store:
            outcome = _in_thread(lambda: run_batch(prepared, store, InlineRunner()), 120)
            assert not isinstance(outcome, BaseException), outcome
            cells = {c.case_id: c for c in store.iter_cells(outcome.run_id)}  # type: ignore[attr-defined]
    finally:
        hangs.release.set()
    assert len(cells) == 6
    for case_id, cell in cells.items():
        assert cell.status == "succeeded"
        assert cell.metrics["correct"] == 1.0
        if int(case_id[-1]) % 2 == 0:
            assert cell.metrics["judge"] is None
            assert cell.evaluator_errors["judge"] == (
                "EvaluatorTimeout: evaluator 'judge' did not return within 0.5 s "
                "(spec.evaluatorTimeoutSeconds); its call was abandoned"
            )
        else:
            assert cell.metrics["judge"] == 1.0
            assert "judge" not in cell.evaluator_errors


# -- a blocked event loop on the inline runner -------------------------------------------


def test_a_cell_blocking_the_inline_loop_times_out_naming_the_node_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An async node blocks the loop on one case for good: that cell is recorded as timed
    out with a message naming the blocked loop and the node; the other cells (those in
    flight with it included) are recorded once each, succeeded."""
    monkeypatch.syspath_prepend(str(TOY))
    from toyflow import hangs

    hangs.release.clear()
    workflow = yaml.safe_load((TOY / "workflow.yaml").read_text())
    workflow["spec"]["variants"]["lookup"] = [
        {"name": "v", "path": "toyflow.hangs:blocks_the_loop"}
    ]
    batch = toy_batchtest(
        "blocked",
        8,
        matrix={"lookup": ["v"]},
        baseline={"lookup": "v"},
        concurrency=4,
        timeoutSeconds=1,
    )
    prepared = prepare_documents(tmp_path / "blocked.yaml", workflow, batch)
    try:
        with ResultStore.open(f"sqlite:///{tmp_path / 'wtb.db'}") as store:
            outcome = _in_thread(lambda: run_batch(prepared, store, InlineRunner()), 120)
            assert not isinstance(outcome, BaseException), outcome
            run_id = outcome.run_id  # type: ignore[attr-defined]
            cells = {c.case_id: c for c in store.iter_cells(run_id)}
            keys = [c.cell_key for c in store.iter_cells(run_id)]
            blocked = store.attempts(run_id, cells["c3"].cell_key)
    finally:
        hangs.release.set()
    assert len(keys) == len(set(keys)) == 8
    assert {k for k, c in cells.items() if c.status == "succeeded"} == {
        f"c{i}" for i in range(8) if i != 3
    }
    assert cells["c3"].status == "failed"
    assert cells["c3"].error_type == "Timeout"
    message = cells["c3"].error_message or ""
    assert "blocked the event loop" in message
    assert "in node 'lookup'" in message
    assert [a.status for a in blocked] == ["timeout"]
