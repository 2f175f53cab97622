"""Faults during a run: the database restarts, the store fails for good."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from services.postgres import PostgresServices
from services.support import wait_until
from toybatch import TOY, toy_prepared
from wtb.errors import StorageError
from wtb.pipeline.execute import run_batch
from wtb.pipeline.prepare import PreparedBatch
from wtb.runners import InlineRunner
from wtb.storage import ResultStore


def _prepared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cases: int) -> PreparedBatch:
    monkeypatch.syspath_prepend(str(TOY))
    return toy_prepared(tmp_path, "restart", "slow_lookup", cases)


@pytest.mark.postgres
def test_postgres_restart_behind_pgbouncer_mid_run(
    postgres_services: PostgresServices,
    pgbouncer_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prepared = _prepared(tmp_path, monkeypatch, cases=200)
    outcome: list[object] = []
    with ResultStore.open(pgbouncer_url, retry_seconds=60) as store:

        def work() -> None:
            try:
                outcome.append(
                    run_batch(prepared, store, InlineRunner(), flush_every=5, flush_seconds=0.05)
                )
            except BaseException as exc:
                outcome.append(exc)

        worker = threading.Thread(target=work)
        worker.start()

        def progressed() -> bool:
            found = store.get_run(prepared.run_info.run_key)
            return found is not None and store.progress(found.id).done >= 20

        wait_until(progressed, "20 cells recorded before the restart", seconds=60)
        found = store.get_run(prepared.run_info.run_key)
        assert found is not None
        run_id = found.id
        postgres_services.restart_postgres()
        worker.join(120)
        assert not worker.is_alive()
        assert len(outcome) == 1
        assert not isinstance(outcome[0], BaseException), outcome[0]
        progress = store.progress(run_id)
        assert (progress.total, progress.done, progress.failed) == (200, 200, 0)
        keys = [c.cell_key for c in store.iter_cells(run_id)]
        assert len(keys) == len(set(keys)) == 200
        found = store.get_run(prepared.run_info.run_key)
        assert found is not None
        assert found.status == "succeeded"


@pytest.mark.postgres
def test_database_gone_for_good_stops_the_run_with_a_clear_error(
    postgres_services: PostgresServices,
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database is dropped mid-run: writes retry for `retry_seconds`, then a StorageError
    names the database (without a password) and the recorded results stay recorded."""
    prepared = _prepared(tmp_path, monkeypatch, cases=400)
    # Direct: through PgBouncer, a client of a missing database waits in PgBouncer's queue
    # (query_wait_timeout) before it is refused, which only makes this test slow.
    dbname = postgres_url.rsplit("/", 1)[1]
    dropped = threading.Event()

    def drop_after_some(done: int, total: int) -> None:
        if done >= 20 and not dropped.is_set():
            dropped.set()
            postgres_services.drop_database(dbname)

    with (
        ResultStore.open(postgres_url, retry_seconds=1.0) as store,
        pytest.raises(StorageError, match="cannot use the database") as err,
    ):
        run_batch(
            prepared,
            store,
            InlineRunner(),
            on_progress=drop_after_some,
            flush_every=5,
            flush_seconds=0.05,
        )
    assert dropped.is_set()
    assert "127.0.0.1" in str(err.value)
