"""The batch driver as real processes on a real Ray head, writing to PostgreSQL through
PgBouncer (transaction pooling): completion, resumption, and the fault drills."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from services.postgres import PostgresServices
from services.ray_head import RayHead, cell_actor_pids, ray_environment
from services.support import wait_until
from toybatch import TOY, toy_prepared
from wtb.domain import WORKER_LOST
from wtb.storage import ResultStore
from wtb.storage.records import RunRecord

pytestmark = [pytest.mark.ray, pytest.mark.postgres, pytest.mark.slow]

DRIVER_SECONDS = 180.0


@dataclass
class Batch:
    """A run recorded in a fresh database, ready for drivers."""

    url: str
    run: RunRecord
    total: int

    def store(self) -> ResultStore:
        return ResultStore.open(self.url, migrate=False, retry_seconds=60)

    def done(self) -> int:
        with self.store() as store:
            return store.progress(self.run.id).done


def _record(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cases: int) -> Batch:
    """Two combinations x `cases` cases of the toy graph, each cell waiting 50 ms."""
    monkeypatch.syspath_prepend(str(TOY))
    prepared = toy_prepared(
        tmp_path,
        "drill",
        "stamped_lookup",
        cases,
        matrix={"lookup": ["v"], "answer": ["original", "reversed"]},
        baseline={"lookup": "v", "answer": "original"},
    )
    with ResultStore.open(url) as store:
        run = prepared.record(store, start=False)
    assert run.status == "pending"
    return Batch(url, run, prepared.plan.total)


def _driver(head: RayHead, batch: Batch, *args: str) -> subprocess.Popen[str]:
    env = ray_environment(
        {
            "WTB_DATABASE_URL": batch.url,
            "PYTHONPATH": str(TOY),
            "WTB_FLUSH_SECONDS": "0.2",
            "WTB_RETRY_BACKOFF_SCALE": "0.1",
        }
    )
    argv = [sys.executable, "-m", "wtb.driver", "--run", batch.run.run_key]
    return subprocess.Popen(
        [*argv, "--ray-address", head.address, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(driver: subprocess.Popen[str]) -> str:
    out, _ = driver.communicate(timeout=DRIVER_SECONDS)
    assert driver.returncode == 0, out
    return out


def _assert_complete_once(batch: Batch) -> None:
    """Every planned cell recorded once, each with one unbroken attempt history."""
    with batch.store() as store:
        run = store.get_run_by_id(batch.run.id)
        assert run is not None
        assert run.status == "succeeded"
        cells = list(store.iter_cells(batch.run.id))
        assert len(cells) == batch.total
        assert len({c.cell_key for c in cells}) == batch.total
        for cell in cells:
            numbers = [a.number for a in store.attempts(batch.run.id, cell.cell_key)]
            assert numbers == list(range(1, len(numbers) + 1)), cell.cell_key


@pytest.fixture
def batch_url(pgbouncer_url: str) -> str:
    return pgbouncer_url


def test_driver_runs_a_recorded_batch_then_has_nothing_left(
    ray_head: RayHead, batch_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = _record(batch_url, tmp_path, monkeypatch, cases=20)
    out = _finish(_driver(ray_head, batch))
    assert "40/40 recorded, 0 failed" in out
    _assert_complete_once(batch)
    with batch.store() as store:
        before = store.audit(batch.run.id)
    again = _finish(_driver(ray_head, batch))
    assert "already complete" in again
    with batch.store() as store:
        assert store.audit(batch.run.id) == before


def test_driver_killed_mid_batch_then_run_again(
    ray_head: RayHead, batch_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = _record(batch_url, tmp_path, monkeypatch, cases=150)
    first = _driver(ray_head, batch)
    wait_until(lambda: batch.done() >= 40, "cells recorded by the first driver", 120)
    first.send_signal(signal.SIGKILL)
    first.wait()
    with batch.store() as store:
        kept = {c.cell_key: c.finished_at for c in store.iter_cells(batch.run.id)}
    assert 40 <= len(kept) < batch.total
    out = _finish(_driver(ray_head, batch))
    assert f"{len(kept)} of {batch.total} cells recorded" in out
    _assert_complete_once(batch)
    with batch.store() as store:
        after = {c.cell_key: c.finished_at for c in store.iter_cells(batch.run.id)}
    assert all(after[key] == at for key, at in kept.items())


def test_driver_stopped_with_sigterm_writes_what_it_has_and_says_so(
    ray_head: RayHead, batch_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a stopped Ray job or a deleted pod does: SIGTERM. The driver writes the results
    it holds, marks the run stopped, and exits 143; running it again finishes the batch."""
    batch = _record(batch_url, tmp_path, monkeypatch, cases=150)
    driver = _driver(ray_head, batch)
    wait_until(lambda: batch.done() >= 30, "cells recorded", 120)
    driver.send_signal(signal.SIGTERM)
    out, _ = driver.communicate(timeout=DRIVER_SECONDS)
    assert driver.returncode == 143, out
    assert "terminated" in out
    with batch.store() as store:
        run = store.get_run_by_id(batch.run.id)
        assert run is not None
        assert (run.status, run.error) == ("failed", "stopped: terminated (SIGTERM)")
        assert store.progress(batch.run.id).done < batch.total
    _finish(_driver(ray_head, batch))
    _assert_complete_once(batch)


def test_worker_killed_mid_batch(
    ray_head: RayHead, batch_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = _record(batch_url, tmp_path, monkeypatch, cases=150)
    driver = _driver(ray_head, batch, "--actors", "2")
    wait_until(lambda: batch.done() >= 30, "cells recorded", 120)
    pids = cell_actor_pids(ray_head)
    assert len(pids) == 2
    os.kill(pids[0], signal.SIGKILL)
    _finish(driver)
    _assert_complete_once(batch)
    with batch.store() as store:
        histories = [
            store.attempts(batch.run.id, c.cell_key) for c in store.iter_cells(batch.run.id)
        ]
    retried = [h for h in histories if len(h) > 1]
    assert retried, "the killed worker had cells in flight"
    for history in retried:
        assert history[0].status == "transient"
        assert history[0].error_type == WORKER_LOST
        assert history[-1].status == "succeeded"


def test_postgres_restarted_mid_batch(
    ray_head: RayHead,
    postgres_services: PostgresServices,
    batch_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batch = _record(batch_url, tmp_path, monkeypatch, cases=300)
    driver = _driver(ray_head, batch)
    wait_until(lambda: batch.done() >= 30, "cells recorded before the restart", 120)
    assert driver.poll() is None
    assert batch.done() < batch.total, "the restart comes mid-batch"
    postgres_services.restart_postgres()
    _finish(driver)
    _assert_complete_once(batch)


def test_two_drivers_of_one_batch_record_each_cell_once(
    ray_head: RayHead, batch_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = _record(batch_url, tmp_path, monkeypatch, cases=200)
    drivers = [_driver(ray_head, batch, "--actors", "1") for _ in range(2)]
    outputs = [_finish(d) for d in drivers]
    _assert_complete_once(batch)
    # Both ran the pending cells at once; what each recorded adds up to the batch.
    recorded = [re.search(r"(\d+) cells run in", out) for out in outputs]
    assert all(recorded), outputs
    assert sum(int(m.group(1)) for m in recorded if m) == batch.total, outputs


@dataclass
class Connections:
    """Who is connected for a database: PostgreSQL server backends and PgBouncer clients."""

    services: PostgresServices

    def __post_init__(self) -> None:
        self._postgres = psycopg.connect(
            self.services.url("postgres").replace("+psycopg", ""), autocommit=True
        )
        self._admin = psycopg.connect(
            host="127.0.0.1",
            port=self.services.pgbouncer.port,
            user="postgres",
            dbname="pgbouncer",
            autocommit=True,
            cursor_factory=psycopg.ClientCursor,  # the admin console speaks simple queries only
        )

    def servers(self, dbname: str) -> int:
        row = self._postgres.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        ).fetchone()
        return int(row[0]) if row else 0

    def clients(self, dbname: str) -> int:
        rows = self._admin.execute("SHOW CLIENTS").fetchall()
        return sum(1 for row in rows if row[2] == dbname)

    def close(self) -> None:
        self._postgres.close()
        self._admin.close()


@pytest.fixture
def connections(postgres_services: PostgresServices) -> Iterator[Connections]:
    seen = Connections(postgres_services)
    try:
        yield seen
    finally:
        seen.close()


def _cell_actors_ever(head: RayHead) -> int:
    from ray.util.state import list_actors

    return len(
        list_actors(
            address=head.dashboard_url, filters=[("class_name", "=", "CellActor")], limit=10_000
        )
    )


def test_connections_stay_bounded_with_16_actors(
    ray_head: RayHead,
    postgres_services: PostgresServices,
    batch_url: str,
    connections: Connections,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """16 actors: the actors never connect (PgBouncer sees the driver's few clients only),
    and PostgreSQL serves the run within PgBouncer's pool."""
    batch = _record(batch_url, tmp_path, monkeypatch, cases=200)
    dbname = batch_url.rsplit("/", 1)[-1]
    servers: list[int] = []
    clients: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            servers.append(connections.servers(dbname))
            clients.append(connections.clients(dbname))
            stop.wait(0.02)

    actors_before = _cell_actors_ever(ray_head)
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        _finish(_driver(ray_head, batch, "--actors", "16", "--concurrency", "32"))
    finally:
        stop.set()
        sampler.join()
    _assert_complete_once(batch)
    assert _cell_actors_ever(ray_head) - actors_before == 16
    assert max(clients) >= 1, "the sampler saw the driver"
    assert max(clients) < 16, "actors do not connect to the database"
    assert 1 <= max(servers) <= postgres_services.pgbouncer.pool_size


def test_driver_as_a_ray_job(
    ray_head: RayHead, batch_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the operator does: submit the driver through the job API, with a chosen id."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    batch = _record(batch_url, tmp_path, monkeypatch, cases=10)
    client = JobSubmissionClient(ray_head.dashboard_url)
    submission_id = f"wtb-drill-{batch.run.id}-{os.getpid()}"
    client.submit_job(
        entrypoint=f"python -m wtb.driver --run {batch.run.run_key}",
        submission_id=submission_id,
        runtime_env={"env_vars": {"WTB_DATABASE_URL": batch.url, "PYTHONPATH": str(TOY)}},
    )
    terminal = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    wait_until(
        lambda: client.get_job_status(submission_id) in terminal, "the driver job", DRIVER_SECONDS
    )
    logs = client.get_job_logs(submission_id)
    assert client.get_job_status(submission_id) == JobStatus.SUCCEEDED, logs
    assert "20/20 recorded" in logs
    _assert_complete_once(batch)
