"""ResultStore: the one interface every runner, the driver, the operator and the CLI use.

Exactly-once: a cell is identified by (run_id, cell_key). `record` inserts cells with
ON CONFLICT DO NOTHING and writes attempts only for the cells that statement actually
inserted, all in one transaction, so a batch delivered twice (a retried write, a restarted
worker) adds nothing the second time.

Every statement is a plain statement in a short transaction: the store works unchanged
through PgBouncer in transaction pooling mode.

Opening a store costs little beyond SQLAlchemy Core and the database's own dialect:
Alembic loads only when the schema needs migrating, and the PostgreSQL dialect only for
a PostgreSQL store.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from types import TracebackType
from typing import Any, Self, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    Insert,
    Row,
    Table,
    delete,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, StatementError

from wtb._iterables import chunked
from wtb._jsonable import jsonable
from wtb.domain import (
    MAX_NODES,
    Attempt,
    CaseAggregate,
    CellResult,
    ComboAggregate,
    NodeAggregate,
    NodeFigures,
)
from wtb.errors import StorageError
from wtb.events import Event
from wtb.storage import aggregates, failures
from wtb.storage.engine import Deadlines, make_engine, redact
from wtb.storage.migrate import (
    HEAD_REVISION,
    create_sqlite_schema,
    current_revision,
    is_current,
    upgrade,
)
from wtb.storage.records import (
    FinalStatus,
    ReusedSpan,
    ReuseSource,
    RunInfo,
    RunProgress,
    RunRecord,
    StoredCell,
)
from wtb.storage.schema import attempts, audit_log, batch_runs, cells, workflows
from wtb.storage.values import refusal_reason, refused_result

T = TypeVar("T")
_log = logging.getLogger(__name__)

_LOCK_NOT_AVAILABLE = "55P03"
"""PostgreSQL's SQLSTATE for a lock_timeout."""
_QUERY_CANCELED = "57014"
"""PostgreSQL's SQLSTATE for a statement_timeout (or a cancelled query)."""

MAX_KEYS_PER_QUERY = 500
"""Keys per IN list in missing_keys: bounded statements, well under SQLite's variable limit."""

_FINAL_STATUSES = ("succeeded", "failed")
REUSABLE_STATUSES = ("succeeded", "interrupted")
"""Cells whose result a later run may reuse: what the code did. A failed cell reruns."""
_WORKFLOWS = workflows
_RUNS = batch_runs
_CELLS = cells
_ATTEMPTS = attempts
_AUDIT = audit_log


class ResultStore:
    """Results of batch runs in SQLite or PostgreSQL. Thread-safe; use one per process."""

    def __init__(
        self, engine: Engine, *, retry_seconds: float = 60.0, deadlines: Deadlines | None = None
    ) -> None:
        self._engine = engine
        self._retry_seconds = retry_seconds
        self._deadlines = deadlines or Deadlines()

    @classmethod
    def open(
        cls,
        url: str,
        *,
        migrate: bool = True,
        retry_seconds: float = 60.0,
        deadlines: Deadlines | None = None,
    ) -> Self:
        """Connect to `url` and (by default) bring its schema up to date; without
        `migrate`, a store whose schema is not at this WTB's revision is refused.

        `retry_seconds` bounds how long `record` keeps retrying while the database is
        unreachable (a restart, a failover) before it gives up with a StorageError.
        `deadlines` (PostgreSQL: connecting, one statement, one lock wait) default to the
        WTB_DB_*_TIMEOUT_SECONDS settings.
        Raises StorageError, with the password redacted, when the database is unreachable.
        """
        if deadlines is None and not url.startswith("sqlite"):
            deadlines = Deadlines.from_settings()
        store = cls(
            make_engine(url, deadlines=deadlines), retry_seconds=retry_seconds, deadlines=deadlines
        )
        try:
            store._prepare(migrate=migrate)
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def open_for_reading(cls, url: str) -> Self:
        """Connect to `url` to read runs: nothing is created or migrated, and a SQLite file
        on a read-only disk (or not writable by this process) is opened read-only. A store
        whose schema is not at this WTB's revision is a StorageError saying so."""
        deadlines = None if url.startswith("sqlite") else Deadlines.from_settings()
        store = cls(make_engine(url, read_only=True, deadlines=deadlines), deadlines=deadlines)
        try:
            store._prepare(migrate=False)
        except BaseException:
            store.close()
            raise
        return store

    def _prepare(self, *, migrate: bool) -> None:
        try:
            if not migrate:
                with self._connect() as conn:
                    conn.execute(select(1))
                self._check_revision()
            elif not (is_current(self._engine) or create_sqlite_schema(self._engine)):
                self._migrate()
        except DBAPIError as exc:
            raise self._unreachable(exc) from exc

    def _check_revision(self) -> None:
        """Refuse a store this WTB cannot read without migrating it (reading never writes)."""
        at = current_revision(self._engine)
        if at == HEAD_REVISION:
            return
        name = redact(self._engine.url)
        if at is None:
            raise StorageError(
                f"{name} holds no WTB result store (no schema revision)",
                fix="name the store with --database (or WTB_DATABASE_URL); `wtb run` creates one",
            )
        raise StorageError(
            f"the store {name} is at schema revision {at}; this WTB reads revision "
            f"{HEAD_REVISION} and does not migrate when it only reads",
            fix="run `wtb run` with this WTB on it once (it migrates), or upgrade WTB when "
            "the store is newer",
        )

    def _migrate(self) -> None:
        from alembic.util import CommandError

        try:
            upgrade(self._engine)
        except CommandError as exc:
            raise StorageError(
                f"the schema of {redact(self._engine.url)} is not one this WTB knows: {exc}\n"
                "  fix: upgrade WTB, or point it at another database"
            ) from exc

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _unreachable(self, exc: DBAPIError) -> StorageError:
        reason = str(exc.orig).strip() if exc.orig is not None else str(exc)
        waited = self._waited(exc)
        if waited is not None:
            return StorageError(f"cannot use the database {redact(self._engine.url)}: {waited}")
        return StorageError(
            f"cannot use the database {redact(self._engine.url)}: {reason}\n"
            "  fix: check that the server runs and the URL (host, port, database, user, "
            "password) is right; for PostgreSQL behind PgBouncer, that PgBouncer knows the database"
        )

    def _waited(self, exc: DBAPIError) -> str | None:
        """What a statement or connection waited for past its deadline, with the setting
        to change; None when `exc` is not a timeout."""
        deadlines = self._deadlines
        sqlstate = getattr(exc.orig, "sqlstate", None)
        if sqlstate == _LOCK_NOT_AVAILABLE:
            return (
                f"a statement waited longer than {deadlines.lock:g} s for a lock on a table "
                "that another connection holds (lock_timeout)\n"
                "  fix: find the session holding the lock (pg_locks, pg_stat_activity) and end "
                "it, or raise WTB_DB_LOCK_TIMEOUT_SECONDS"
            )
        if sqlstate == _QUERY_CANCELED:
            return (
                f"a statement ran longer than {deadlines.statement:g} s (statement_timeout)\n"
                "  fix: check the database's load, or raise WTB_DB_STATEMENT_TIMEOUT_SECONDS"
            )
        if "timeout expired" in str(exc.orig):
            return (
                f"no answer while connecting within {max(2, math.ceil(deadlines.connect))} s "
                "(connect_timeout)\n"
                "  fix: check that the host and port are a PostgreSQL server or PgBouncer that "
                "answers, or raise WTB_DB_CONNECT_TIMEOUT_SECONDS"
            )
        return None

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        """A connection; failing to get one is a StorageError naming the (redacted) URL."""
        try:
            conn = self._engine.connect()
        except DBAPIError as exc:
            raise self._unreachable(exc) from exc
        with conn:
            yield conn

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self._connect() as conn, conn.begin():
            yield conn

    def _insert_new(self, table: Table, conflict: list[str]) -> Insert:
        """INSERT .. ON CONFLICT (conflict) DO NOTHING, in this database's dialect (whose
        module the engine has loaded already)."""
        if self._engine.dialect.name == "postgresql":
            from sqlalchemy.dialects import postgresql

            return postgresql.insert(table).on_conflict_do_nothing(index_elements=conflict)
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table).on_conflict_do_nothing(index_elements=conflict)

    # -- runs -------------------------------------------------------------------------

    def upsert_workflow(
        self, namespace: str, name: str, spec_digest: str, spec: dict[str, Any]
    ) -> int:
        """The id of this workflow spec, inserting it the first time it is seen."""
        with self._transaction() as conn:
            conn.execute(
                self._insert_new(_WORKFLOWS, ["namespace", "name", "spec_digest"]).values(
                    namespace=namespace,
                    name=name,
                    spec_digest=spec_digest,
                    spec=spec,
                    created_at=datetime.now(UTC),
                )
            )
            workflow_id: int = conn.execute(
                select(_WORKFLOWS.c.id).where(
                    _WORKFLOWS.c.namespace == namespace,
                    _WORKFLOWS.c.name == name,
                    _WORKFLOWS.c.spec_digest == spec_digest,
                )
            ).scalar_one()
            return workflow_id

    def begin_run(self, info: RunInfo, *, start: bool = True) -> RunRecord:
        """Get or create the run of `info.run_key`; safe under races.

        With `start`, the run is marked running: a pending run starts, a failed run is
        being resumed, a succeeded run is returned unchanged. Without it, a new run is
        recorded as pending, for a batch driver to start later (`start_run`).
        """
        now = datetime.now(UTC)
        with self._transaction() as conn:
            inserted = conn.execute(
                self._insert_new(_RUNS, ["run_key"])
                .values(
                    run_key=info.run_key,
                    namespace=info.namespace,
                    name=info.name,
                    uid=info.uid,
                    generation=info.generation,
                    spec_digest=info.spec_digest,
                    spec=info.spec,
                    workflow_id=info.workflow_id,
                    code_fingerprint=info.code_fingerprint,
                    status="running" if start else "pending",
                    total_cells=info.total_cells,
                    created_at=now,
                    started_at=now if start else None,
                )
                .returning(_RUNS.c.id)
            ).scalar_one_or_none()
            if inserted is None and start:
                self._start(conn, info.run_key, now)
            row = conn.execute(select(_RUNS).where(_RUNS.c.run_key == info.run_key)).one()
            return _run_record(row, created=inserted is not None)

    def plan_run(
        self,
        run_key: str,
        spec: dict[str, Any],
        total_cells: int,
        code_fingerprint: str | None = None,
    ) -> RunRecord | None:
        """Complete a run recorded without its data set (by the operator, which runs no user
        code) with the spec holding the cases, the cell count and the fingerprint of the
        code it is planned with. The first planner wins: a run planned already is returned
        unchanged. None when no run has that key."""
        if total_cells < 1:
            raise ValueError(f"a planned run has at least one cell, got {total_cells}")
        with self._transaction() as conn:
            conn.execute(
                update(_RUNS)
                .where(_RUNS.c.run_key == run_key, _RUNS.c.total_cells == 0)
                .values(spec=spec, total_cells=total_cells, code_fingerprint=code_fingerprint)
            )
            row = conn.execute(select(_RUNS).where(_RUNS.c.run_key == run_key)).one_or_none()
            return None if row is None else _run_record(row)

    def start_run(self, run_key: str) -> RunRecord | None:
        """Mark a recorded run running (pending: started; failed: resumed; succeeded:
        unchanged) and return it; None when no run has that key."""
        with self._transaction() as conn:
            self._start(conn, run_key, datetime.now(UTC))
            row = conn.execute(select(_RUNS).where(_RUNS.c.run_key == run_key)).one_or_none()
            return None if row is None else _run_record(row)

    @staticmethod
    def _start(conn: Connection, run_key: str, now: datetime) -> None:
        conn.execute(
            update(_RUNS)
            .where(
                _RUNS.c.run_key == run_key,
                _RUNS.c.status.in_(("pending", "failed")),
            )
            .values(
                status="running",
                started_at=func.coalesce(_RUNS.c.started_at, now),
                finished_at=None,
                error=None,
            )
        )

    def finish_run(self, run_id: int, status: FinalStatus, error: str | None = None) -> None:
        """Mark a run finished. A succeeded run stays succeeded: a driver that fails after
        another one completed the run (or a late Ctrl-C) does not undo that."""
        if status not in _FINAL_STATUSES:
            raise ValueError(f"a run finishes 'succeeded' or 'failed', not {status!r}")
        with self._transaction() as conn:
            exists = conn.execute(
                select(_RUNS.c.status).where(_RUNS.c.id == run_id)
            ).scalar_one_or_none()
            if exists is None:
                raise StorageError(f"no run with id {run_id} in the result store")
            stmt = update(_RUNS).where(_RUNS.c.id == run_id)
            if status == "failed":
                stmt = stmt.where(_RUNS.c.status != "succeeded")
            conn.execute(stmt.values(status=status, finished_at=datetime.now(UTC), error=error))

    def get_run(self, run_key: str) -> RunRecord | None:
        with self._transaction() as conn:
            row = conn.execute(select(_RUNS).where(_RUNS.c.run_key == run_key)).one_or_none()
            return None if row is None else _run_record(row)

    def get_run_by_id(self, run_id: int) -> RunRecord | None:
        with self._transaction() as conn:
            row = conn.execute(select(_RUNS).where(_RUNS.c.id == run_id)).one_or_none()
            return None if row is None else _run_record(row)

    def find_runs(self, namespace: str | None = None, name: str | None = None) -> list[RunRecord]:
        """Runs matching the filters, newest first."""
        stmt = select(_RUNS).order_by(_RUNS.c.created_at.desc(), _RUNS.c.id.desc())
        if namespace is not None:
            stmt = stmt.where(_RUNS.c.namespace == namespace)
        if name is not None:
            stmt = stmt.where(_RUNS.c.name == name)
        with self._transaction() as conn:
            return [_run_record(row) for row in conn.execute(stmt)]

    def progress(self, run_id: int) -> RunProgress:
        with self._transaction() as conn:
            total = conn.execute(
                select(_RUNS.c.total_cells).where(_RUNS.c.id == run_id)
            ).scalar_one_or_none()
            if total is None:
                raise StorageError(f"no run with id {run_id} in the result store")
            rows = conn.execute(
                select(_CELLS.c.status, func.count())
                .where(_CELLS.c.run_id == run_id)
                .group_by(_CELLS.c.status)
            )
            counts = {status: count for status, count in rows}
        return RunProgress(
            total=total,
            done=sum(counts.values()),
            succeeded=counts.get("succeeded", 0),
            failed=counts.get("failed", 0),
            interrupted=counts.get("interrupted", 0),
        )

    # -- cells ------------------------------------------------------------------------

    def missing_keys(self, run_id: int, keys: Sequence[str]) -> list[str]:
        """The keys of `keys` not recorded for the run, in the given order (retried like
        `record` while the database is unreachable)."""

        def query() -> set[str]:
            recorded: set[str] = set()
            with self._transaction() as conn:
                for chunk in chunked(keys, MAX_KEYS_PER_QUERY):
                    recorded.update(
                        conn.execute(
                            select(_CELLS.c.cell_key).where(
                                _CELLS.c.run_id == run_id, _CELLS.c.cell_key.in_(chunk)
                            )
                        ).scalars()
                    )
            return recorded

        recorded = self._retrying(query)
        return [key for key in keys if key not in recorded]

    def record(
        self,
        run_id: int,
        results: Sequence[CellResult],
        events: Sequence[Event] = (),
        *,
        fingerprints: Mapping[str, str] | None = None,
    ) -> int:
        """Record results and events in one transaction; returns how many cells were new.

        A result whose cell is already recorded is skipped with its attempts; of several
        results for one cell in `results`, the first counts. Because of that, a write that
        failed on a lost connection is simply tried again, with backoff, for up to
        `retry_seconds`: nothing is lost and nothing is written twice. `fingerprints`
        (cell key -> fingerprint) lets later runs reuse the results. A cell run again
        (`forget_cells`) keeps its earlier attempts: the new ones are numbered after them.
        """
        return self._record_part(run_id, results, events, fingerprints or {})

    # -- a write the database refuses: narrowed down to its cell -------------------------

    def _record_narrowing(
        self,
        run_id: int,
        results: Sequence[CellResult],
        events: Sequence[Event],
        fingerprints: Mapping[str, str],
    ) -> int:
        """Record a batch the database refused as a whole: halves, recursively, down to the
        cell it refuses, which is recorded failed with the reason (`_record_refused`). The
        good cells are recorded; each cell once (every part is its own idempotent write).
        Events refused are recorded as a note saying so."""
        if len(results) > 1:
            middle = len(results) // 2
            return self._record_part(
                run_id, results[:middle], events, fingerprints
            ) + self._record_part(run_id, results[middle:], (), fingerprints)
        recorded = self._record_refused(run_id, results[0], fingerprints) if results else 0
        if events:
            self._record_events_narrowing(run_id, events)
        return recorded

    def _record_part(
        self,
        run_id: int,
        results: Sequence[CellResult],
        events: Sequence[Event],
        fingerprints: Mapping[str, str],
    ) -> int:
        """Record a batch; one the database refuses is narrowed down (`_record_narrowing`)."""
        try:
            return self._retrying(lambda: self._record_once(run_id, results, events, fingerprints))
        except Exception as exc:
            if not refused(exc):
                raise
        return self._record_narrowing(run_id, results, events, fingerprints)

    def _record_refused(
        self, run_id: int, result: CellResult, fingerprints: Mapping[str, str]
    ) -> int:
        """Record one result; when the database refuses it, the cell failed with the reason,
        with its attempts, or without them when they are refused too."""
        try:
            return self._retrying(lambda: self._record_once(run_id, [result], (), fingerprints))
        except Exception as exc:
            if not refused(exc):
                raise
            reason = refusal_reason(exc)
        last: Exception | None = None
        for keep_attempts in (True, False):
            failed = [refused_result(result, reason, attempts=keep_attempts)]
            try:
                return self._retrying(partial(self._record_once, run_id, failed, (), {}))
            except Exception as exc:
                if not refused(exc):
                    raise
                last = exc
        raise StorageError(
            f"the database {redact(self._engine.url)} refused the result of cell "
            f"{result.cell.key} even as a failed cell ({refusal_reason(last or Exception())})",
            fix="check the database's schema (wtb migrates it on start) and its logs",
        )

    def _record_events_narrowing(self, run_id: int, events: Sequence[Event]) -> None:
        """Record audit events; one the database refuses is kept as a note of its kind."""

        def write(part: Sequence[Event]) -> None:
            with self._transaction() as conn:
                self._insert_events(conn, run_id, part)

        try:
            self._retrying(lambda: write(events))
            return
        except Exception as exc:
            if not refused(exc):
                raise
            reason = refusal_reason(exc)
        if len(events) > 1:
            middle = len(events) // 2
            self._record_events_narrowing(run_id, events[:middle])
            self._record_events_narrowing(run_id, events[middle:])
            return
        (event,) = events
        note = Event(event.kind, event.subject, {"refused": reason}, at=event.at)
        try:
            self._retrying(lambda: write([note]))
        except Exception as exc:
            if not refused(exc):
                raise

    def _retrying(self, call: Callable[[], T]) -> T:
        """Run an idempotent call, retrying with backoff while the database is unreachable
        (a restart, a failover, PgBouncer reconnecting), for up to `retry_seconds`."""
        delay = 0.1
        deadline = time.monotonic() + self._retry_seconds
        while True:
            try:
                return call()
            except (StorageError, OperationalError, InterfaceError) as exc:
                if refused(exc):  # a value refused is refused again: no point waiting
                    raise
                waited = None if isinstance(exc, StorageError) else self._waited(exc)
                if time.monotonic() + delay > deadline:
                    if isinstance(exc, StorageError):
                        raise
                    if waited is not None:
                        raise StorageError(
                            f"cannot use the database {redact(self._engine.url)} "
                            f"(retried for {self._retry_seconds:g} s, WTB_STORE_RETRY_SECONDS): "
                            f"{waited}"
                        ) from exc
                    raise StorageError(
                        f"cannot use the database {redact(self._engine.url)}: {exc.orig}"
                    ) from exc
                if waited is not None:
                    _log.warning(
                        "the database %s timed out, trying again in %.1f s: %s",
                        redact(self._engine.url),
                        delay,
                        waited.splitlines()[0],
                    )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _record_once(
        self,
        run_id: int,
        results: Sequence[CellResult],
        events: Sequence[Event],
        fingerprints: Mapping[str, str],
    ) -> int:
        unique = list({r.cell.key: r for r in reversed(results)}.values())
        with self._transaction() as conn:
            inserted: set[str] = set()
            earlier: dict[str, int] = {}
            if unique:
                # Attempts kept from before the cell was run again (`forget_cells`).
                earlier = self._attempts_so_far(conn, run_id, [r.cell.key for r in unique])
                inserted.update(
                    conn.execute(
                        self._insert_new(_CELLS, ["run_id", "cell_key"]).returning(
                            _CELLS.c.cell_key
                        ),
                        [
                            _cell_values(
                                run_id,
                                r,
                                fingerprint=fingerprints.get(r.cell.key),
                                earlier=earlier.get(r.cell.key, 0),
                            )
                            for r in unique
                        ],
                    ).scalars()
                )
            attempts = [
                _attempt_values(run_id, r.cell.key, a, earlier.get(r.cell.key, 0))
                for r in unique
                if r.cell.key in inserted
                for a in r.attempts
            ]
            if attempts:
                conn.execute(insert(_ATTEMPTS), attempts)
            self._insert_events(conn, run_id, events)
        return len(inserted)

    @staticmethod
    def _attempts_so_far(conn: Connection, run_id: int, keys: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for chunk in chunked(keys, MAX_KEYS_PER_QUERY):
            rows = conn.execute(
                select(_ATTEMPTS.c.cell_key, func.max(_ATTEMPTS.c.number))
                .where(_ATTEMPTS.c.run_id == run_id, _ATTEMPTS.c.cell_key.in_(chunk))
                .group_by(_ATTEMPTS.c.cell_key)
            )
            found.update({key: number for key, number in rows})
        return found

    # -- reruns and reuse ---------------------------------------------------------------

    def forget_cells(self, run_id: int, statuses: Sequence[str] | None = None) -> int:
        """Delete the run's recorded cells (of `statuses`; None: all) so that they run
        again; their attempts stay, and the new attempts are numbered after them. Returns
        how many cells were deleted. The run is marked running again."""
        stmt = delete(_CELLS).where(_CELLS.c.run_id == run_id)
        if statuses is not None:
            stmt = stmt.where(_CELLS.c.status.in_(list(statuses)))
        with self._transaction() as conn:
            deleted = conn.execute(stmt).rowcount or 0
            if deleted:
                conn.execute(
                    update(_RUNS)
                    .where(_RUNS.c.id == run_id, _RUNS.c.status == "succeeded")
                    .values(status="running", finished_at=None)
                )
            return deleted

    def earlier_runs(self, run_id: int, namespace: str, name: str) -> list[int]:
        """The ids of the other runs of the BatchTest `namespace/name`, oldest first."""
        stmt = (
            select(_RUNS.c.id)
            .where(_RUNS.c.namespace == namespace, _RUNS.c.name == name, _RUNS.c.id != run_id)
            .order_by(_RUNS.c.id)
        )
        with self._transaction() as conn:
            return list(conn.execute(stmt).scalars())

    def reuse_sources(
        self, run_ids: Sequence[int], fingerprints: Sequence[str]
    ) -> list[ReuseSource]:
        """The succeeded (or interrupted) cells of the runs `run_ids` that have one of
        `fingerprints`, oldest first."""
        if not run_ids or not fingerprints:
            return []
        found: list[ReuseSource] = []
        with self._transaction() as conn:
            for chunk in chunked(fingerprints, MAX_KEYS_PER_QUERY):
                rows = conn.execute(
                    select(
                        _CELLS.c.id,
                        _CELLS.c.run_id,
                        _CELLS.c.cell_key,
                        _CELLS.c.case_id,
                        _CELLS.c.fingerprint,
                    )
                    .where(
                        _CELLS.c.fingerprint.in_(chunk),
                        _CELLS.c.run_id.in_(list(run_ids)),
                        _CELLS.c.status.in_(REUSABLE_STATUSES),
                    )
                    .order_by(_CELLS.c.id)
                )
                found += [ReuseSource(*row) for row in rows]
        return found

    def copy_cells(self, run_id: int, source_ids: Sequence[int]) -> list[str]:
        """Copy recorded cells (by id) into the run, in the database (one INSERT .. SELECT
        per chunk), exactly once: a cell the run has already is left alone. Each copy's
        `reused_from` is the run its result was first recorded in. Attempts are not
        copied: they stay with that run (`attempts` follows `reused_from`). Returns the
        keys of the cells copied."""
        copied = [c for c in _CELLS.c if c.name not in ("id", "run_id", "reused_from")]
        inserted: list[str] = []

        def copy_once() -> list[str]:
            keys: list[str] = []
            with self._transaction() as conn:
                for chunk in chunked(source_ids, MAX_KEYS_PER_QUERY):
                    source = select(
                        literal(run_id).label("run_id"),
                        *copied,
                        func.coalesce(_CELLS.c.reused_from, _CELLS.c.run_id).label("reused_from"),
                    ).where(_CELLS.c.id.in_(list(chunk)), _CELLS.c.run_id != run_id)
                    stmt = (
                        self._insert_new(_CELLS, ["run_id", "cell_key"])
                        .from_select(["run_id", *(c.name for c in copied), "reused_from"], source)
                        .returning(_CELLS.c.cell_key)
                    )
                    keys += conn.execute(stmt).scalars().all()
            return keys

        if source_ids:
            inserted = self._retrying(copy_once)
        return inserted

    def cells_by_id(self, ids: Sequence[int]) -> list[StoredCell]:
        """Recorded cells by id (for re-scoring a result with other evaluators)."""
        found: list[StoredCell] = []
        with self._transaction() as conn:
            for chunk in chunked(ids, MAX_KEYS_PER_QUERY):
                rows = conn.execute(select(_CELLS).where(_CELLS.c.id.in_(list(chunk))))
                found += [_stored_cell(row) for row in rows]
        return found

    def record_reused(
        self,
        run_id: int,
        results: Sequence[tuple[CellResult, StoredCell]],
        fingerprints: Mapping[str, str],
    ) -> list[str]:
        """Record results re-scored from cells of earlier runs (result, the cell it was
        scored from), exactly once, without attempts (they stay with the run the result
        was first recorded in). Returns the keys of the cells inserted."""

        def once() -> list[str]:
            if not results:
                return []
            with self._transaction() as conn:
                return list(
                    conn.execute(
                        self._insert_new(_CELLS, ["run_id", "cell_key"]).returning(
                            _CELLS.c.cell_key
                        ),
                        [
                            {
                                **_cell_values(
                                    run_id, result, fingerprint=fingerprints.get(result.cell.key)
                                ),
                                "attempts": source.attempts,
                                "reused_from": source.reused_from or source.run_id,
                            }
                            for result, source in results
                        ],
                    ).scalars()
                )

        return self._retrying(once)

    def reused_span(self, run_id: int) -> ReusedSpan:
        """How many of the run's cells were reused, and when the runs they were first
        recorded in were created."""
        stmt = (
            select(func.count(), func.min(_RUNS.c.created_at), func.max(_RUNS.c.created_at))
            .select_from(_CELLS.join(_RUNS, _RUNS.c.id == _CELLS.c.reused_from))
            .where(_CELLS.c.run_id == run_id)
        )
        with self._transaction() as conn:
            count, first, last = conn.execute(stmt).one()
        return ReusedSpan(int(count), first, last)

    def _insert_events(self, conn: Connection, run_id: int | None, events: Sequence[Event]) -> None:
        if events:
            conn.execute(
                insert(_AUDIT),
                [
                    {
                        "at": e.at,
                        "run_id": run_id,
                        "kind": e.kind,
                        "subject": e.subject,
                        "data": jsonable(e.data),
                    }
                    for e in events
                ],
            )

    def iter_cells(self, run_id: int) -> Iterator[StoredCell]:
        """Every recorded cell of the run in recording order, streamed."""
        stmt = select(_CELLS).where(_CELLS.c.run_id == run_id).order_by(_CELLS.c.id)
        with self._transaction() as conn:
            for row in conn.execution_options(yield_per=aggregates.STREAM_ROWS).execute(stmt):
                yield _stored_cell(row)

    def attempts(self, run_id: int, cell_key: str) -> list[Attempt]:
        """The cell's attempts, oldest first; for a reused result, those of the run it was
        first recorded in."""
        with self._transaction() as conn:
            reused = conn.execute(
                select(_CELLS.c.reused_from).where(
                    _CELLS.c.run_id == run_id, _CELLS.c.cell_key == cell_key
                )
            ).scalar_one_or_none()
            stmt = (
                select(_ATTEMPTS)
                .where(_ATTEMPTS.c.run_id == (reused or run_id), _ATTEMPTS.c.cell_key == cell_key)
                .order_by(_ATTEMPTS.c.number)
            )
            return [
                Attempt(
                    number=a.number,
                    status=a.status,
                    started_at=a.started_at,
                    duration_ms=a.duration_ms,
                    error_type=a.error_type,
                    error_message=a.error_message,
                    root_run_id=a.root_run_id,
                    node=a.node,
                    traceback=a.traceback,
                )
                for a in conn.execute(stmt)
            ]

    def root_run_ids(self, run_id: int) -> dict[str, list[str | None]]:
        """Per recorded cell, its attempts' root run ids in order (None where an attempt
        never reached its graph, or was recorded before run ids were); a reused result's
        are those of the run it was first recorded in."""
        stmt = (
            select(_ATTEMPTS.c.cell_key, _ATTEMPTS.c.root_run_id)
            .select_from(
                _CELLS.join(
                    _ATTEMPTS,
                    (_ATTEMPTS.c.cell_key == _CELLS.c.cell_key)
                    & (_ATTEMPTS.c.run_id == func.coalesce(_CELLS.c.reused_from, _CELLS.c.run_id)),
                )
            )
            .where(_CELLS.c.run_id == run_id)
            .order_by(_ATTEMPTS.c.cell_key, _ATTEMPTS.c.number)
        )
        found: dict[str, list[str | None]] = {}
        with self._transaction() as conn:
            for cell_key, root in conn.execution_options(yield_per=aggregates.STREAM_ROWS).execute(
                stmt
            ):
                found.setdefault(cell_key, []).append(root)
        return found

    def audit(self, run_id: int) -> list[Event]:
        """The run's audit trail, oldest first."""
        stmt = select(_AUDIT).where(_AUDIT.c.run_id == run_id).order_by(_AUDIT.c.id)
        with self._transaction() as conn:
            return [
                Event(kind=e.kind, subject=e.subject, data=e.data, at=e.at)
                for e in conn.execute(stmt)
            ]

    # -- aggregates -------------------------------------------------------------------

    def combo_aggregates(self, run_id: int, metrics: Sequence[str] = ()) -> list[ComboAggregate]:
        """Per combination; with `metrics`, how many cells' evaluator of each one raised."""
        with self._transaction() as conn:
            return aggregates.combo_aggregates(conn, run_id, metrics)

    def node_aggregates(self, run_id: int) -> dict[str, dict[str, NodeAggregate]]:
        """Per combo_key, per node: its figures over the combination's succeeded cells."""
        with self._transaction() as conn:
            return aggregates.node_aggregates(conn, run_id)

    def failure_groups(self, run_id: int, per_combination: int = 10) -> failures.StoredFailures:
        """The run's failed cells grouped per combination by (error type, node, first line
        of the message), largest first, at most `per_combination` groups each, with one
        example each and what was left out (`wtb.storage.failures`)."""
        with self._transaction() as conn:
            return failures.failure_groups(conn, run_id, per_combination)

    def case_aggregates(
        self, run_id: int, metrics: Sequence[str], primary: str
    ) -> Iterator[CaseAggregate]:
        """Per (combination, case), ordered by combo_key then case_id; streamed."""
        with self._transaction() as conn:
            yield from aggregates.iter_case_aggregates(conn, run_id, metrics, primary)


_REFUSED_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})
"""PostgreSQL error classes of a value refused: data exception (out of range, NUL in text,
bad JSON), integrity constraint violation, program limit exceeded (too large)."""


def refused(exc: BaseException) -> bool:
    """Whether the database (or its driver) refused the values of a write, which writing
    them again would not mend, as opposed to being unreachable (retried)."""
    if isinstance(exc, StorageError):
        return False
    if isinstance(exc, DBAPIError):
        state = getattr(exc.orig, "sqlstate", None)
        if isinstance(state, str) and state:
            return state[:2] in _REFUSED_SQLSTATE_CLASSES
        return not isinstance(exc, OperationalError | InterfaceError)
    if isinstance(exc, StatementError):  # a value the driver could not bind
        return True
    return isinstance(exc, OverflowError | ValueError | TypeError | UnicodeError)


def _finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity (PostgreSQL refuses them): store those as null."""
    return value if value is None or math.isfinite(value) else None


def _cell_values(
    run_id: int, result: CellResult, *, fingerprint: str | None = None, earlier: int = 0
) -> dict[str, Any]:
    cell = result.cell
    return {
        "run_id": run_id,
        "cell_key": cell.key,
        "combo_key": cell.combo_key,
        "combination": dict(cell.combination),
        "case_id": cell.case_id,
        "repeat": cell.repeat,
        "status": result.status,
        "output": result.output,
        "metrics": {name: _finite(v) for name, v in result.metrics.items()},
        "evaluator_errors": result.evaluator_errors,
        "latency_ms": result.latency_ms,
        "tokens": result.tokens,
        "cost": result.cost,
        "error_type": result.error_type,
        "error_message": result.error_message,
        "attempts": earlier + len(result.attempts),
        "finished_at": result.finished_at,
        "nodes": _nodes_values(result.nodes),
        "error_node": _node_name(result.error_node),
        "fingerprint": fingerprint,
        "reused_from": None,
    }


MAX_NODE_NAME = 512
"""Characters of a node path kept (the column's width)."""
MAX_TRACEBACK = 8000
"""Characters of a traceback kept, its end (the executor bounds it already; this bounds
results made elsewhere)."""


def _node_name(node: str | None) -> str | None:
    return None if node is None else node[:MAX_NODE_NAME]


def _traceback(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_TRACEBACK:
        return text
    return "..." + text[len(text) - MAX_TRACEBACK + 3 :]


def _nodes_values(nodes: Mapping[str, NodeFigures] | None) -> dict[str, Any] | None:
    """Per-node figures as JSON: at most MAX_NODES, the slowest (the executor keeps that many
    already; this bounds results made elsewhere), non-finite times as null."""
    if not nodes:
        return None
    kept = sorted(nodes.items(), key=lambda item: -(item[1]["ms"] or 0.0))[:MAX_NODES]
    return {
        node: {"ms": _finite(f["ms"]), "calls": f["calls"], "tokens": f["tokens"]}
        for node, f in sorted(kept)
    }


def _attempt_values(
    run_id: int, cell_key: str, attempt: Attempt, earlier: int = 0
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "cell_key": cell_key,
        "number": earlier + attempt.number,
        "status": attempt.status,
        "error_type": attempt.error_type,
        "error_message": attempt.error_message,
        "started_at": attempt.started_at,
        "duration_ms": attempt.duration_ms,
        "root_run_id": attempt.root_run_id,
        "node": _node_name(attempt.node),
        "traceback": _traceback(attempt.traceback),
    }


def _run_record(row: Row[Any], *, created: bool = False) -> RunRecord:
    return RunRecord(
        id=row.id,
        run_key=row.run_key,
        namespace=row.namespace,
        name=row.name,
        uid=row.uid,
        generation=row.generation,
        spec_digest=row.spec_digest,
        spec=row.spec,
        workflow_id=row.workflow_id,
        status=row.status,
        total_cells=row.total_cells,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        error=row.error,
        created=created,
        code_fingerprint=row.code_fingerprint,
    )


def _stored_cell(row: Row[Any]) -> StoredCell:
    return StoredCell(
        run_id=row.run_id,
        cell_key=row.cell_key,
        combo_key=row.combo_key,
        combination=aggregates.combination_of(row.combination),
        case_id=row.case_id,
        repeat=row.repeat,
        status=row.status,
        output=row.output,
        metrics=row.metrics,
        evaluator_errors=row.evaluator_errors,
        latency_ms=row.latency_ms,
        tokens=row.tokens,
        cost=row.cost,
        error_type=row.error_type,
        error_message=row.error_message,
        attempts=row.attempts,
        finished_at=row.finished_at,
        nodes=row.nodes,
        error_node=row.error_node,
        fingerprint=row.fingerprint,
        reused_from=row.reused_from,
    )
