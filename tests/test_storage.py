"""Result store conformance: the same suite on SQLite, PostgreSQL, and PostgreSQL via PgBouncer."""

from __future__ import annotations

import dataclasses
import random
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from statistics import mean
from typing import TypeVar

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, Table, func, inspect, select, text

from services.postgres import PostgresServices
from services.support import wait_until
from wtb.domain import MAX_NODES, Attempt, Cell, CellResult, NodeFigures
from wtb.errors import StorageError
from wtb.events import BATCH_STARTED, CELL_ATTEMPT_FAILED, Event
from wtb.storage import (
    ResultStore,
    RunInfo,
    RunProgress,
    default_sqlite_url,
    downgrade,
    make_engine,
    sqlite_schema,
    upgrade,
)
from wtb.storage.migrate import (
    HEAD_REVISION,
    MIGRATION_LOCK_ID,
    alembic_config,
    current_revision,
    include_object_for,
    is_current,
    sqlite_statements,
)
from wtb.storage.schema import (
    POSTGRESQL_ONLY_INDEXES,
    attempts,
    batch_runs,
    cells,
    with_postgresql_indexes,
)

T = TypeVar("T")
T0 = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
TABLES = {"workflows", "batch_runs", "cells", "attempts", "audit_log"}


def _info(
    key: str = "default/demo:abc",
    total: int = 12,
    *,
    uid: str | None = None,
    generation: int | None = None,
    workflow_id: int | None = None,
) -> RunInfo:
    return RunInfo(
        run_key=key,
        namespace="default",
        name="demo",
        spec_digest="abc" * 10,
        spec={"batchTest": {"repeats": 2}, "nested": [1, 2.5, None]},
        total_cells=total,
        uid=uid,
        generation=generation,
        workflow_id=workflow_id,
    )


def _result(
    combo: int,
    case: int,
    repeat: int,
    *,
    latency: float = 10.0,
    status: str = "succeeded",
    metrics: dict[str, float | None] | None = None,
    attempts: int = 1,
    tokens: int | None = 3,
    cost: float | None = 0.5,
) -> CellResult:
    combination = (("generate", f"v{combo}"), ("retrieve", "original"))
    failed = status == "failed"
    return CellResult(
        cell=Cell(
            key=f"cell-{combo}-{case}-{repeat}",
            combo_key=f"combo-{combo}",
            combination=combination,
            case_id=f"case-{case}",
            repeat=repeat,
        ),
        status="failed" if failed else "succeeded",
        latency_ms=latency,
        finished_at=T0 + timedelta(seconds=combo * 100 + case * 10 + repeat),
        output=None if failed else {"answer": f"a{case}", "n": [1, 2]},
        metrics=metrics if metrics is not None else {"exact": 1.0},
        tokens=tokens,
        cost=cost,
        error_type="ValueError" if failed else None,
        error_message="boom" if failed else None,
        attempts=tuple(
            Attempt(
                number=n,
                status="succeeded" if n == attempts and not failed else "transient",
                started_at=T0 + timedelta(milliseconds=n),
                duration_ms=1.5 * n,
                error_type=None if n == attempts else "TimeoutError",
                error_message=None if n == attempts else "slow",
            )
            for n in range(1, attempts + 1)
        ),
    )


def _grid(combos: int, cases: int, repeats: int, seed: int = 7) -> list[CellResult]:
    rng = random.Random(seed)
    return [
        _result(
            combo,
            case,
            repeat,
            latency=round(rng.uniform(1, 500), 3),
            status="failed" if rng.random() < 0.2 else "succeeded",
            metrics={"exact": float(rng.random() < 0.5), "score": rng.random(), "judge": None},
            attempts=rng.randint(1, 3),
            tokens=rng.randint(0, 100),
            cost=rng.random(),
        )
        for combo in range(combos)
        for case in range(cases)
        for repeat in range(repeats)
    ]


def _count(engine: Engine, table: Table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def _in_threads(count: int, work: Callable[[int], T]) -> list[T]:
    """Run work(i) in `count` threads released together by a barrier."""
    barrier = threading.Barrier(count)

    def start(i: int) -> T:
        barrier.wait(timeout=60)
        return work(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(start, range(count)))


@pytest.fixture
def store(store_url: str) -> Iterator[ResultStore]:
    with ResultStore.open(store_url) as opened:
        yield opened


# -- schema and migrations --------------------------------------------------------------


def _revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _head(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return ScriptDirectory.from_config(alembic_config(conn)).get_current_head()


def test_migrating_twice_is_a_no_op(store: ResultStore) -> None:
    run = store.begin_run(_info())
    store.record(run.id, [_result(0, 0, 0)])
    upgrade(store.engine)
    with ResultStore.open(store.engine.url.render_as_string(hide_password=False)) as again:
        assert again.progress(run.id).done == 1
    assert _revision(store.engine) == _head(store.engine) == HEAD_REVISION
    assert set(inspect(store.engine).get_table_names()) >= TABLES


def test_head_revision_is_alembics_head(store: ResultStore) -> None:
    """Opening a store compares the version table with HEAD_REVISION, without Alembic."""
    assert _head(store.engine) == HEAD_REVISION
    assert current_revision(store.engine) == _revision(store.engine)
    assert is_current(store.engine)


def _sqlite_schema(engine: Engine) -> tuple[list[tuple[str, ...]], list[str]]:
    with engine.connect() as conn:
        master = conn.exec_driver_sql(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY rowid"
        )
        versions = conn.exec_driver_sql("SELECT version_num FROM alembic_version")
        return [tuple(row) for row in master], list(versions.scalars())


def test_a_new_sqlite_store_has_the_schema_alembic_makes(tmp_path: Path) -> None:
    """A new SQLite store is created from wtb.storage.sqlite_schema, not by Alembic: it must
    be exactly what Alembic's migrations make (if not: python -m wtb.storage.sqlite_schema)."""
    migrated = make_engine(f"sqlite:///{tmp_path / 'migrated.db'}")
    try:
        upgrade(migrated)
        with ResultStore.open(f"sqlite:///{tmp_path / 'created.db'}") as created:
            assert _sqlite_schema(created.engine) == _sqlite_schema(migrated)
            assert sqlite_statements(created.engine) == list(sqlite_schema.STATEMENTS)
    finally:
        migrated.dispose()
    assert sqlite_schema.REVISION == HEAD_REVISION


def test_new_sqlite_stores_opened_by_threads_at_once(tmp_path: Path) -> None:
    """While one thread writes a new database's schema, the others' switch to the WAL
    journal fails at once (SQLite does not wait for that lock): they must wait all the same.
    A race, so tried on many new databases."""

    def open_at_once(url: str) -> list[ResultStore]:
        return _in_threads(4, lambda _: ResultStore.open(url))

    for attempt in range(20):
        for opened in open_at_once(f"sqlite:///{tmp_path / str(attempt) / 'wtb.db'}"):
            assert opened.get_run("none") is None
            opened.close()


def test_a_sqlite_database_holding_other_tables_is_migrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE notes (body TEXT)")
        with ResultStore.open(url) as store:
            assert store.get_run("none") is None
        assert set(inspect(engine).get_table_names()) >= {*TABLES, "notes"}
        assert _revision(engine) == HEAD_REVISION
    finally:
        engine.dispose()


def test_concurrent_migrations_of_a_fresh_database(store_url: str) -> None:
    stores = _in_threads(4, lambda _: ResultStore.open(store_url))
    try:
        assert _revision(stores[0].engine) == HEAD_REVISION
        with stores[0].engine.connect() as conn:
            versions = conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one()
        assert versions == 1
    finally:
        for opened in stores:
            opened.close()


_MIGRATE = "import sys; from wtb.storage import ResultStore; ResultStore.open(sys.argv[1]).close()"


def _migrators(url: str, count: int) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [sys.executable, "-c", _MIGRATE, url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]


def _finish(processes: list[subprocess.Popen[str]]) -> None:
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr


def test_concurrent_migrating_processes(store_url: str) -> None:
    """Several processes migrate one fresh database at once; on PostgreSQL they are held at
    the migration lock until the test lets them go, so they really do contend."""
    engine = make_engine(store_url)
    try:
        if engine.dialect.name != "postgresql":
            _finish(_migrators(store_url, 3))
        else:
            with engine.connect() as gate, gate.begin():
                gate.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
                processes = _migrators(store_url, 3)
                waiting = text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                )
                wait_until(
                    lambda: gate.execute(waiting).scalar_one() == 3,
                    "three migrations waiting for the lock",
                    seconds=60,
                )
            _finish(processes)
        assert _revision(engine) == HEAD_REVISION
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one()
        assert versions == 1
    finally:
        engine.dispose()


def test_a_schema_from_a_newer_wtb_is_refused(store: ResultStore) -> None:
    url = store.engine.url.render_as_string(hide_password=False)
    with ResultStore.open(url, migrate=False) as unmigrated:
        assert unmigrated.get_run("none") is None
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(StorageError, match="not one this WTB knows"):
        ResultStore.open(url)


def test_models_and_migration_agree(store: ResultStore) -> None:
    with store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "include_object": include_object_for(conn.dialect.name),
                "compare_type": True,
            },
        )
        assert compare_metadata(context, with_postgresql_indexes()) == []


def test_downgrade_removes_the_tables_and_upgrade_restores_them(store: ResultStore) -> None:
    downgrade(store.engine, "base")
    assert not TABLES & set(inspect(store.engine).get_table_names())
    upgrade(store.engine)
    assert set(inspect(store.engine).get_table_names()) >= TABLES


def test_postgresql_only_indexes_exist_only_there(store: ResultStore) -> None:
    inspector = inspect(store.engine)
    names = {ix["name"] for table in TABLES for ix in inspector.get_indexes(table)}
    if store.engine.dialect.name != "postgresql":
        assert not names & POSTGRESQL_ONLY_INDEXES
        assert {"ix_cells_run_id_status", "ix_cells_run_id_combo_key_case_id"} <= names
        return
    with store.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT i.relname, a.amname FROM pg_index x"
                " JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_am a ON a.oid = i.relam"
                " JOIN pg_class t ON t.oid = x.indrelid WHERE t.relname = ANY(:tables)"
            ),
            {"tables": sorted(TABLES)},
        )
        methods = {index: method for index, method in rows}
        definitions = conn.execute(
            text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE indexname LIKE '%\\_gin'"
                " OR indexname LIKE '%\\_brin'"
            )
        ).all()
    assert {name: methods[name] for name in POSTGRESQL_ONLY_INDEXES} == {
        "ix_cells_metrics_gin": "gin",
        "ix_cells_finished_at_brin": "brin",
        "ix_attempts_started_at_brin": "brin",
        "ix_audit_log_at_brin": "brin",
    }
    assert methods["ix_cells_run_id_status"] == "btree"
    assert any("USING gin (metrics)" in definition for _, definition in definitions)


# -- runs -------------------------------------------------------------------------------


def test_begin_run_creates_once_then_gets(store: ResultStore) -> None:
    first = store.begin_run(_info(uid="u-1", generation=3))
    second = store.begin_run(_info(uid="u-1", generation=3))
    assert first.created
    assert not second.created
    assert second.id == first.id
    assert second.status == "running"
    assert second.started_at == first.started_at
    assert (second.uid, second.generation, second.total_cells) == ("u-1", 3, 12)
    assert second.spec == {"batchTest": {"repeats": 2}, "nested": [1, 2.5, None]}
    assert store.get_run("default/demo:abc") == second
    assert store.get_run_by_id(first.id) == second
    assert store.get_run("nope") is None
    assert store.get_run_by_id(first.id + 1000) is None


def test_begin_run_race_makes_one_row(store_url: str) -> None:
    with ResultStore.open(store_url) as one, ResultStore.open(store_url) as two:
        runs = _in_threads(8, lambda i: (one if i % 2 else two).begin_run(_info("race")))
        assert [r.created for r in runs].count(True) == 1
        assert {r.id for r in runs} == {runs[0].id}
        assert _count(one.engine, batch_runs) == 1


def test_finish_and_resume_runs(store: ResultStore) -> None:
    run = store.begin_run(_info())
    store.finish_run(run.id, "failed", "worker lost")
    failed = store.get_run_by_id(run.id)
    assert failed is not None
    assert (failed.status, failed.error) == ("failed", "worker lost")
    assert failed.finished_at is not None
    resumed = store.begin_run(_info())
    assert (resumed.status, resumed.error, resumed.finished_at) == ("running", None, None)
    assert resumed.started_at == run.started_at
    store.finish_run(run.id, "succeeded")
    again = store.begin_run(_info())
    assert again.status == "succeeded"
    # A driver failing after another completed the run does not undo that.
    store.finish_run(run.id, "failed", "stopped: interrupted")
    still = store.get_run_by_id(run.id)
    assert still is not None
    assert (still.status, still.error) == ("succeeded", None)
    with pytest.raises(ValueError, match="succeeded"):
        store.finish_run(run.id, "running")  # type: ignore[arg-type]
    with pytest.raises(StorageError, match="no run"):
        store.finish_run(run.id + 1000, "failed")


def test_a_run_recorded_for_a_driver_starts_when_the_driver_starts_it(
    store: ResultStore,
) -> None:
    recorded = store.begin_run(_info(), start=False)
    assert (recorded.status, recorded.started_at) == ("pending", None)
    assert store.begin_run(_info(), start=False).status == "pending"
    started = store.start_run(recorded.run_key)
    assert started is not None
    assert started.id == recorded.id
    assert started.status == "running"
    assert started.started_at is not None
    assert store.start_run("default/unknown:1") is None
    store.finish_run(recorded.id, "succeeded")
    done = store.start_run(recorded.run_key)
    assert done is not None
    assert done.status == "succeeded"


def test_find_runs_newest_first_and_filtered(store: ResultStore) -> None:
    a = store.begin_run(_info("default/demo:1"))
    b = store.begin_run(_info("default/demo:2"))
    other = store.begin_run(RunInfo("team/other:1", "team", "other", "d", {}, 1))
    assert [r.id for r in store.find_runs()] == [other.id, b.id, a.id]
    assert [r.id for r in store.find_runs(name="demo")] == [b.id, a.id]
    assert [r.id for r in store.find_runs(namespace="team")] == [other.id]
    assert store.find_runs(namespace="team", name="demo") == []


def test_upsert_workflow_is_idempotent(store: ResultStore) -> None:
    first = store.upsert_workflow("default", "rag", "d1", {"graph": {"factory": "m:f"}})
    assert store.upsert_workflow("default", "rag", "d1", {"graph": {"factory": "m:f"}}) == first
    second = store.upsert_workflow("default", "rag", "d2", {"graph": {"factory": "m:g"}})
    assert second != first
    run = store.begin_run(_info(workflow_id=second))
    assert run.workflow_id == second


# -- recording --------------------------------------------------------------------------


def test_record_writes_cells_attempts_and_audit(store: ResultStore) -> None:
    run = store.begin_run(_info())
    results = [
        _result(0, 0, 0, attempts=3, metrics={"exact": 1.0, "nan": float("nan")}),
        _result(1, 0, 0, status="failed", tokens=None, cost=None),
    ]
    events = [
        Event(BATCH_STARTED, None, {"total": 2}, at=T0),
        Event(CELL_ATTEMPT_FAILED, "cell-1-0-0", {"error": ("ValueError", "boom")}, at=T0),
    ]
    assert store.record(run.id, results, events) == 2
    cells = {c.cell_key: c for c in store.iter_cells(run.id)}
    ok, bad = cells["cell-0-0-0"], cells["cell-1-0-0"]
    assert ok.combination == (("generate", "v0"), ("retrieve", "original"))
    assert (ok.combo_key, ok.case_id, ok.repeat, ok.status) == ("combo-0", "case-0", 0, "succeeded")
    assert ok.output == {"answer": "a0", "n": [1, 2]}
    assert ok.metrics == {"exact": 1.0, "nan": None}
    assert (ok.tokens, ok.cost, ok.attempts, ok.latency_ms) == (3, 0.5, 3, 10.0)
    assert (bad.status, bad.output, bad.error_type, bad.error_message) == (
        "failed",
        None,
        "ValueError",
        "boom",
    )
    assert (bad.tokens, bad.cost) == (None, None)
    with store.engine.connect() as conn:  # no output is SQL NULL, not a JSON null
        outputs = text("SELECT cell_key FROM cells WHERE output IS NULL")
        assert conn.execute(outputs).scalars().all() == ["cell-1-0-0"]
    history = store.attempts(run.id, "cell-0-0-0")
    assert [(a.number, a.status, a.error_type) for a in history] == [
        (1, "transient", "TimeoutError"),
        (2, "transient", "TimeoutError"),
        (3, "succeeded", None),
    ]
    assert history[1].duration_ms == 3.0
    audit = store.audit(run.id)
    assert [(e.kind, e.subject) for e in audit] == [
        (BATCH_STARTED, None),
        (CELL_ATTEMPT_FAILED, "cell-1-0-0"),
    ]
    assert audit[1].data == {"error": ["ValueError", "boom"]}
    # Events alone (no result) are recorded too, against their run only.
    store.record(run.id, [], [Event(BATCH_STARTED, None, {"run": None}, at=T0)])
    assert len(store.audit(run.id)) == 3


def test_node_figures_and_root_run_ids_are_stored(store: ResultStore) -> None:
    """A cell keeps its per-node figures (the slowest MAX_NODES) and every attempt its
    graph invocation's root run id."""
    run = store.begin_run(_info())
    many = {f"n{i:03}": NodeFigures(ms=float(i), calls=1, tokens=None) for i in range(100)}
    many["llm"] = NodeFigures(ms=float("inf"), calls=2, tokens=42)
    base = _result(0, 0, 0, attempts=2)
    traced = tuple(
        replace(a, root_run_id=f"00000000-0000-4000-8000-00000000000{a.number}")
        for a in base.attempts
    )
    results = [replace(base, attempts=traced, nodes=many), _result(1, 0, 0)]
    store.record(run.id, results)
    cells = {c.cell_key: c for c in store.iter_cells(run.id)}
    nodes = cells["cell-0-0-0"].nodes
    assert nodes is not None
    assert len(nodes) == MAX_NODES
    assert nodes["llm"] == {"ms": None, "calls": 2, "tokens": 42}  # no infinity in JSON
    assert nodes["n099"] == {"ms": 99.0, "calls": 1, "tokens": None}
    assert "n000" not in nodes  # the fastest go
    assert cells["cell-1-0-0"].nodes is None
    assert [a.root_run_id for a in store.attempts(run.id, "cell-0-0-0")] == [
        "00000000-0000-4000-8000-000000000001",
        "00000000-0000-4000-8000-000000000002",
    ]
    assert [a.root_run_id for a in store.attempts(run.id, "cell-1-0-0")] == [None]


def test_upgrading_from_0001_keeps_cells(store_url: str) -> None:
    """A store made before node timings migrates on; its cells have no nodes."""
    engine = make_engine(store_url)
    try:
        upgrade(engine, "0001")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO batch_runs (run_key, namespace, name, spec_digest, spec, "
                    "status, total_cells, created_at) VALUES ('old', 'ns', 'b', 'd', '{}', "
                    "'running', 1, :at)"
                ),
                {"at": T0},
            )
        with ResultStore.open(store_url) as store:
            assert _revision(store.engine) == HEAD_REVISION
            found = store.get_run("old")
            assert found is not None
            store.record(found.id, [_result(0, 0, 0)])
            assert [c.nodes for c in store.iter_cells(found.id)] == [None]
    finally:
        engine.dispose()


def test_recording_again_inserts_nothing(store: ResultStore) -> None:
    run = store.begin_run(_info())
    batch = _grid(2, 3, 2)
    assert store.record(run.id, batch[:6]) == 6
    attempts_before = _count(store.engine, attempts)
    assert store.record(run.id, batch[:6]) == 0
    assert _count(store.engine, attempts) == attempts_before
    # A batch that overlaps the recorded cells, and repeats a cell within itself.
    assert store.record(run.id, [*batch[4:], batch[8]]) == len(batch) - 6
    assert _count(store.engine, cells) == len(batch)
    assert _count(store.engine, attempts) == sum(len(r.attempts) for r in batch)
    other = store.begin_run(_info("default/demo:other"))
    assert store.record(other.id, batch[:1]) == 1


def test_missing_keys_over_many_chunks(store: ResultStore) -> None:
    run = store.begin_run(_info(total=1200))
    recorded = _grid(10, 40, 3)
    store.record(run.id, recorded[::2])
    keys = [r.cell.key for r in recorded] + [f"unknown-{i}" for i in range(300)]
    random.Random(3).shuffle(keys)
    expected = {r.cell.key for r in recorded[1::2]} | {f"unknown-{i}" for i in range(300)}
    assert store.missing_keys(run.id, keys) == [k for k in keys if k in expected]
    assert store.missing_keys(run.id, []) == []
    other = store.begin_run(_info("default/demo:other"))
    assert store.missing_keys(other.id, keys[:3]) == keys[:3]


def test_progress(store: ResultStore) -> None:
    run = store.begin_run(_info(total=10))
    assert store.progress(run.id) == RunProgress(total=10, done=0, succeeded=0, failed=0)
    store.record(
        run.id, [_result(0, i, 0, status="failed" if i < 2 else "succeeded") for i in range(7)]
    )
    progress = store.progress(run.id)
    assert (progress.total, progress.done, progress.succeeded, progress.failed) == (10, 7, 5, 2)
    with pytest.raises(StorageError):
        store.progress(run.id + 1000)


def test_datetimes_round_trip_timezone_aware(store: ResultStore) -> None:
    run = store.begin_run(_info())
    plus_two = timezone(timedelta(hours=2))
    local = datetime(2025, 6, 1, 12, 30, 15, 123456, tzinfo=plus_two)
    result = _result(0, 0, 0)
    moved = CellResult(
        cell=result.cell,
        status="succeeded",
        latency_ms=1.0,
        finished_at=local,
        attempts=(Attempt(1, "succeeded", local, 2.0),),
    )
    store.record(run.id, [moved], [Event(BATCH_STARTED, at=local)])
    stored = next(store.iter_cells(run.id))
    for value in (
        stored.finished_at,
        store.attempts(run.id, result.cell.key)[0].started_at,
        store.audit(run.id)[0].at,
    ):
        assert value == local
        assert value.utcoffset() == timedelta(0)
    assert run.created_at.tzinfo is not None
    naive = CellResult(
        cell=_result(0, 1, 0).cell,
        status="succeeded",
        latency_ms=1.0,
        finished_at=datetime(2025, 1, 1),  # noqa: DTZ001 -- refused on purpose
    )
    # Refused, and only that cell: it is recorded failed, with the reason.
    assert store.record(run.id, [naive]) == 1
    refused = {c.cell_key: c for c in store.iter_cells(run.id)}[naive.cell.key]
    assert refused.status == "failed"
    assert "naive datetime" in (refused.error_message or "")
    assert refused.finished_at is not None
    assert refused.finished_at.tzinfo is not None


# -- aggregation ------------------------------------------------------------------------


def _by(results: list[CellResult], key: Callable[[CellResult], T]) -> dict[T, list[CellResult]]:
    groups: dict[T, list[CellResult]] = defaultdict(list)
    for r in results:
        groups[key(r)].append(r)
    return groups


@pytest.mark.parametrize("repeats", [1, 3])
def test_combo_aggregates_match_an_independent_computation(
    store: ResultStore, repeats: int
) -> None:
    run = store.begin_run(_info())
    results = _grid(4, 7, repeats)
    # A combination with one cell and one with all tokens/cost unknown.
    results += [_result(9, 0, 0, latency=42.0, tokens=None, cost=None)]
    store.record(run.id, results)
    aggregates = store.combo_aggregates(run.id)
    groups = _by(results, lambda r: r.cell.combo_key)
    assert [a.combo_key for a in aggregates] == sorted(groups)
    for agg in aggregates:
        cells = groups[agg.combo_key]
        latencies = [r.latency_ms for r in cells]
        assert agg.combination == cells[0].cell.combination
        assert agg.runs == len(cells)
        assert agg.succeeded == sum(r.status == "succeeded" for r in cells)
        tokens = [r.tokens for r in cells if r.tokens is not None]
        costs = [r.cost for r in cells if r.cost is not None]
        assert agg.tokens == (sum(tokens) if tokens else None)
        assert agg.cost == (pytest.approx(sum(costs)) if costs else None)
        assert agg.latency_p50 == pytest.approx(float(np.percentile(latencies, 50)))
        assert agg.latency_p95 == pytest.approx(float(np.percentile(latencies, 95)))
    single = aggregates[-1]
    assert (single.latency_p50, single.latency_p95, single.tokens) == (42.0, 42.0, None)


def test_interrupted_cells_and_evaluator_errors_are_counted_apart(store: ResultStore) -> None:
    run = store.begin_run(_info(total=4))
    results = [
        _result(0, 0, 0),
        dataclasses.replace(
            _result(0, 1, 0, metrics={"exact": 0.0, "judge": None}),
            status="interrupted",
            error_type="Interrupted",
            error_message="approve?",
            evaluator_errors={"judge": "RuntimeError: down"},
        ),
        _result(0, 2, 0, status="failed"),
        dataclasses.replace(
            _result(1, 0, 0, metrics={"exact": None}),
            evaluator_errors={"exact": "PathNotFoundError: 'answer'"},
        ),
    ]
    store.record(run.id, results)
    progress = store.progress(run.id)
    assert (progress.done, progress.succeeded, progress.failed, progress.interrupted) == (
        4,
        2,
        1,
        1,
    )
    first, second = store.combo_aggregates(run.id, ["exact", "judge"])
    assert (first.runs, first.succeeded, first.interrupted) == (3, 1, 1)
    assert first.evaluator_errors == {"exact": 0, "judge": 1}
    assert (second.interrupted, second.evaluator_errors) == (0, {"exact": 1, "judge": 0})
    stored = {c.cell_key: c for c in store.iter_cells(run.id)}
    assert stored["cell-0-1-0"].status == "interrupted"


def test_migration_0002_keeps_the_cells_recorded_before_it(store: ResultStore) -> None:
    run = store.begin_run(_info())
    store.record(run.id, [_result(0, 0, 0), _result(0, 1, 0, status="failed")])
    downgrade(store.engine, "0001")
    assert _revision(store.engine) == "0001"
    upgrade(store.engine)
    assert _revision(store.engine) == HEAD_REVISION
    assert store.progress(run.id).done == 2
    interrupted = dataclasses.replace(_result(0, 2, 0), status="interrupted")
    store.record(run.id, [interrupted])
    assert store.progress(run.id).interrupted == 1


def test_case_aggregates_average_repeats_and_flag_disagreement(store: ResultStore) -> None:
    run = store.begin_run(_info())
    results = _grid(3, 5, 3, seed=11)
    results += [  # combo 7: agreeing repeats, a repeat without a primary score, a flip
        _result(7, 0, 0, metrics={"exact": 1.0, "score": 0.5}),
        _result(7, 0, 1, metrics={"exact": 1.0, "score": 0.7}),
        _result(7, 1, 0, metrics={"exact": 1.0, "score": 0.5}),
        _result(7, 1, 1, metrics={"exact": None, "score": 0.5}),
        _result(7, 2, 0, metrics={"exact": 0.0}),
        _result(7, 2, 1, status="failed", metrics={"exact": 0.0}),
    ]
    store.record(run.id, results)
    metrics = ["exact", "score", "judge", "absent"]
    aggregates = list(store.case_aggregates(run.id, metrics, "exact"))
    groups = _by(results, lambda r: (r.cell.combo_key, r.cell.case_id))
    assert [(a.combo_key, a.case_id) for a in aggregates] == sorted(groups)
    for agg in aggregates:
        cells = groups[agg.combo_key, agg.case_id]
        assert agg.runs == len(cells)
        assert agg.succeeded == sum(r.status == "succeeded" for r in cells)
        for name in metrics:
            values = [v for r in cells if (v := r.metrics.get(name)) is not None]
            expected = pytest.approx(mean(values)) if values else None
            assert agg.metric_means[name] == expected, name
        primary = [r.metrics.get("exact") for r in cells]
        statuses = {r.status for r in cells}
        assert agg.outcome_varies == (len(statuses) > 1 or len(set(primary)) > 1)
    flags = {a.case_id: a.outcome_varies for a in aggregates if a.combo_key == "combo-7"}
    assert flags == {"case-0": False, "case-1": True, "case-2": True}


# -- failures and concurrency -----------------------------------------------------------


def test_unreachable_sqlite_path_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError, match="cannot create the directory"):
        ResultStore.open(f"sqlite:///{blocker / 'sub' / 'wtb.db'}")


@pytest.mark.postgres
@pytest.mark.parametrize("through_pgbouncer", [False, True], ids=["postgresql", "pgbouncer"])
def test_unreachable_postgres_is_a_redacted_storage_error(
    postgres_services: PostgresServices, through_pgbouncer: bool
) -> None:
    server = postgres_services.pgbouncer if through_pgbouncer else postgres_services.postgres
    port = server.port
    url = f"postgresql://postgres:s3cret-pw@127.0.0.1:{port}/no_such_database"
    with pytest.raises(StorageError) as caught:
        ResultStore.open(url)
    message = str(caught.value)
    assert "s3cret-pw" not in message
    assert f"postgresql+psycopg://postgres:***@127.0.0.1:{port}/no_such_database" in message
    assert "no_such_database" in message
    assert "fix:" in message


@pytest.mark.postgres
@pytest.mark.parametrize("url_fixture", ["postgres_url", "pgbouncer_url"])
def test_store_works_again_after_postgres_restarts(
    postgres_services: PostgresServices, url_fixture: str, request: pytest.FixtureRequest
) -> None:
    url: str = request.getfixturevalue(url_fixture)
    with ResultStore.open(url) as store:
        run = store.begin_run(_info())
        store.record(run.id, _grid(1, 2, 1))
        postgres_services.restart_postgres()
        # Pooled connections died with the server; the store checks them out anew.
        assert store.record(run.id, _grid(1, 4, 1)) == 2
        assert store.progress(run.id).done == 4


def test_unknown_urls_are_refused() -> None:
    with pytest.raises(StorageError, match="unsupported database"):
        ResultStore.open("mysql://user:pw@host/db")
    with pytest.raises(StorageError, match="in-memory"):
        ResultStore.open("sqlite://")


def test_many_threads_recording_stay_exactly_once(store_url: str) -> None:
    """20 threads in 4 stores record overlapping batches: every cell once, with its attempts."""
    results = _grid(4, 25, 2, seed=5)  # 200 cells
    shares = [results[i::20] for i in range(20)]
    stores = [ResultStore.open(store_url) for _ in range(4)]
    try:
        run = stores[0].begin_run(_info(total=len(results)))

        def work(i: int) -> int:
            store = stores[i % 4]
            # Each thread records its share, then re-delivers its neighbour's share.
            mine = sum(store.record(run.id, shares[i][j : j + 3]) for j in range(0, 10, 3))
            theirs = store.record(run.id, shares[(i + 1) % 20])
            return mine + theirs

        inserted = _in_threads(20, work)
        assert sum(inserted) == len(results)
        engine = stores[0].engine
        assert _count(engine, cells) == len(results)
        assert _count(engine, attempts) == sum(len(r.attempts) for r in results)
        assert stores[1].missing_keys(run.id, [r.cell.key for r in results]) == []
    finally:
        for store in stores:
            store.close()


def test_default_sqlite_url_is_per_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    url = default_sqlite_url()
    assert url == f"sqlite:///{tmp_path / '.wtb' / 'wtb.db'}"
    with ResultStore.open(url) as store:
        store.begin_run(_info())
    assert (tmp_path / ".wtb" / "wtb.db").is_file()
