"""The batch driver: runs a batch recorded in the result store to completion, on Ray.

The operator submits it as a Ray job (`python -m wtb.driver --run <run key>`), and anyone
can run it by hand (`wtb driver`). It reads the database URL from `WTB_DATABASE_URL`
(PostgreSQL's own `PGPASSWORD`, `PGUSER`... work too), never from its command line, which
Ray job metadata and process lists show. It loads the spec and data set recorded with the
run, skips the cells already recorded, runs the rest on Ray actors, writes their results in
batches, and marks the run finished.

A run the operator recorded has no data set yet (the operator runs no user code): the
driver loads it, relative to its working directory (the image's), checks the workflow's code
and records the cases and the cell count first. A mistake found there marks the run failed
with the message, and the driver exits 2.

A driver never resumes a run planned with other code: the fingerprint of the code in its
image (`wtb.runs.fingerprints`) must be the one recorded when the run was planned, or it
refuses with a non-retryable error (exit 2) and marks the run failed. Cells whose
fingerprint matches a result of an earlier run of the same BatchTest are reused, not run
(`wtb.pipeline.reuse`).

Running it again after a crash finishes the remainder. Two drivers of the same run at once
never record a cell twice: the store's unique key on (run, cell) refuses the second write of
a cell, whatever the timing. (They may both run a cell; only one result is kept.)

User code is imported from the Workflow's `pythonPath` (relative to the working directory,
the image's), the driver's `PYTHONPATH` and the installed packages; actors get the same
path.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wtb.errors import ManifestError, ManifestErrors, StorageError, Terminated, WtbError
from wtb.importing import extend_sys_path

if TYPE_CHECKING:
    from wtb.runs.fingerprints import Fingerprinter
    from wtb.runs.spec import RunSpec
    from wtb.storage.records import RunRecord
    from wtb.storage.store import ResultStore

log = logging.getLogger("wtb.driver")


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def _handle_sigterm() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)


_LOG_EVERY_S = 10.0


def _python_path(record: dict[str, Any]) -> tuple[str, ...]:
    """The Workflow's `pythonPath`, relative to the working directory (the image's), then
    the driver's `PYTHONPATH`; actors get the same (`RunSpec.python_path`)."""
    from wtb.api.workflow import WorkflowSpec

    workflow = WorkflowSpec.model_validate(record["workflow"])
    env = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return tuple(dict.fromkeys([*workflow.python_path_under(Path.cwd()), *env]))


class CodeChangedError(WtbError):
    """The driver's code is not the code the run was planned with: not retryable."""


def _same_code(store: ResultStore, run: RunRecord, job: RunSpec) -> Fingerprinter:
    """The fingerprinter of the run's code as this driver's image has it; refuses (and marks
    the run failed) when it differs from the code the run was planned with."""
    from wtb.runs.fingerprints import Fingerprinter, import_roots

    import_roots(job.workflow, job.batch)
    fingerprinter = Fingerprinter(job.workflow, job.batch, job.cases, job.python_path)
    checks = [
        ("code", run.code_fingerprint or "", fingerprinter.code),
        ("evaluator code", job.evaluator_code, fingerprinter.evaluators),
    ]
    for what, recorded, here in checks:
        if not recorded or recorded == here:
            continue
        error = CodeChangedError(
            f"run {run.run_key!r} was planned with other {what} than this driver's image "
            f"has (fingerprint recorded {recorded[:12]}, here {here[:12]}): its recorded "
            "cells and those this driver would run would not be comparable",
            fix="run the driver with the image the run was planned in, or start a new run "
            "(a new generation of the BatchTest) for the new code",
        )
        store.finish_run(run.id, "failed", error=str(error)[:2000])
        raise error
    return fingerprinter


def drive(
    run_key: str,
    *,
    database_url: str,
    ray_address: str | None,
    actors: int | None = None,
    concurrency: int | None = None,
) -> bool:
    """Run the recorded run `run_key` to completion; True when every cell is recorded."""
    from wtb.pipeline.execute import execute_run
    from wtb.pipeline.prepare import plan_recorded_run
    from wtb.pipeline.reuse import Reuse
    from wtb.plan import build_plan
    from wtb.runners.ray_runner import RayRunner
    from wtb.runners.ray_session import ray_connection
    from wtb.runs.record import is_planned
    from wtb.runs.spec import RunSpec
    from wtb.settings import get_settings
    from wtb.storage import ResultStore
    from wtb.storage.engine import redact

    settings = get_settings()
    with ResultStore.open(database_url, retry_seconds=settings.store_retry_seconds) as store:
        recorded = store.get_run(run_key)
        if recorded is None:
            raise WtbError(
                f"no run {run_key!r} in the result store {redact(database_url)}",
                fix="record the run first (the operator does), or check WTB_DATABASE_URL",
            )
        python_path = _python_path(recorded.spec)
        extend_sys_path(python_path)
        if not is_planned(recorded):
            try:
                recorded = plan_recorded_run(
                    store, recorded, base_dir=Path.cwd(), python_path=python_path
                )
            except (ManifestError, ManifestErrors) as exc:
                store.finish_run(recorded.id, "failed", error=str(exc)[:2000])
                raise
            log.info("run %s: planned, %d cells", run_key, recorded.total_cells)
        progress = store.progress(recorded.id)
        if recorded.status == "succeeded" and progress.done >= recorded.total_cells:
            log.info("run %s: already complete (%d cells)", run_key, recorded.total_cells)
            return True
        job = RunSpec.from_record(
            recorded.spec, python_path=python_path, run_key=run_key, batch_name=recorded.name
        )
        plan = build_plan(job.batch, list(job.cases), where=f"run {run_key}: spec")
        fingerprinter = _same_code(store, recorded, job)
        last_log = time.monotonic()

        def on_progress(done: int, total: int) -> None:
            nonlocal last_log
            now = time.monotonic()
            if now - last_log >= _LOG_EVERY_S or done == total:
                last_log = now
                log.info("run %s: %d/%d cells", run_key, done, total)

        # The run is marked running only once Ray is there to run it; from then on, a
        # driver that stops early marks it failed (running it again resumes it).
        with ray_connection(ray_address):
            _handle_sigterm()  # after Ray's start-up, which installs a handler of its own
            run = store.start_run(run_key)
            if run is None:
                raise StorageError(f"run {run_key!r} was deleted from the result store")
            log.info("run %s: %d of %d cells recorded", run_key, progress.done, plan.total)
            outcome = execute_run(
                store,
                run,
                job,
                plan,
                RayRunner(concurrency, actors=actors, backoff_scale=settings.retry_backoff_scale),
                on_progress=on_progress,
                flush_every=settings.flush_every,
                flush_seconds=settings.flush_seconds,
                reuse=Reuse(job, fingerprinter),
            )
        final = store.progress(run.id)
        log.info(
            "run %s: %d cells run in %.1f s; %d/%d recorded, %d failed, %d interrupted",
            run_key,
            outcome.recorded_now,
            outcome.seconds,
            final.done,
            final.total,
            final.failed,
            final.interrupted,
        )
        return final.done >= final.total
