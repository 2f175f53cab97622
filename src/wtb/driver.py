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

Running it again after a crash finishes the remainder. Two drivers of the same run at once
never record a cell twice: the store's unique key on (run, cell) refuses the second write of
a cell, whatever the timing. (They may both run a cell; only one result is kept.)

User code is imported from the driver's `PYTHONPATH` and the installed packages; actors on
the same node get the same path.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import click

from wtb.cli.options import ACTORS, CONCURRENCY, RAY_ADDRESS
from wtb.errors import ClusterError, ManifestError, ManifestErrors, StorageError, WtbError

log = logging.getLogger("wtb.driver")

EXIT_INCOMPLETE = 1
EXIT_USAGE = 2
"""A mistake that running again will not mend: the workflow, the data set, the setup."""
EXIT_UNAVAILABLE = 3
"""The database or the Ray cluster failed: running again may well succeed."""
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(BaseException):
    """SIGTERM arrived (a stopped Ray job, a deleted pod): unwinds the run like Ctrl-C, so
    buffered results are written and the run is marked stopped before the process ends."""

    def __str__(self) -> str:
        return "SIGTERM"


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def _handle_sigterm() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)


_LOG_EVERY_S = 10.0


def drive(
    run_key: str,
    *,
    database_url: str,
    ray_address: str | None,
    actors: int | None = None,
    concurrency: int | None = None,
) -> bool:
    """Run the recorded run `run_key` to completion; True when every cell is recorded."""
    from wtb.batch import execute_run, is_planned, plan_recorded_run
    from wtb.job import BatchJob
    from wtb.plan import build_plan
    from wtb.runners.ray_runner import RayRunner
    from wtb.runners.ray_session import ray_connection
    from wtb.settings import get_settings
    from wtb.storage import ResultStore
    from wtb.storage.engine import redact

    settings = get_settings()
    python_path = tuple(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)
    with ResultStore.open(database_url, retry_seconds=settings.store_retry_seconds) as store:
        recorded = store.get_run(run_key)
        if recorded is None:
            raise WtbError(
                f"no run {run_key!r} in the result store {redact(database_url)}\n"
                "  fix: record the run first (the operator does), or check WTB_DATABASE_URL"
            )
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
        job = BatchJob.from_record(recorded.spec, python_path=python_path)
        plan = build_plan(job.batch, list(job.cases), where=f"run {run_key}: spec")
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
            )
        final = store.progress(run.id)
        log.info(
            "run %s: %d cells run in %.1f s; %d/%d recorded, %d failed",
            run_key,
            outcome.recorded_now,
            outcome.seconds,
            final.done,
            final.total,
            final.failed,
        )
        return final.done >= final.total


@click.command(name="driver")
@click.option("--run", "run_key", required=True, help="Key of the recorded run to execute.")
@RAY_ADDRESS
@ACTORS
@CONCURRENCY
def driver(
    run_key: str, ray_address: str | None, actors: int | None, concurrency: int | None
) -> None:
    """Run a batch recorded in the result store on Ray (the operator's Ray job).

    The database comes from WTB_DATABASE_URL; credentials never go on the command line.
    """
    from wtb.settings import get_settings

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    log.setLevel(logging.INFO)
    try:
        url = get_settings().database_url
        if not url:
            raise WtbError(
                "WTB_DATABASE_URL is not set\n"
                "  fix: set it to the result store's URL (credentials may go in PGPASSWORD)"
            )
        complete = drive(
            run_key,
            database_url=url,
            ray_address=ray_address,
            actors=actors,
            concurrency=concurrency,
        )
    except (StorageError, ClusterError) as exc:
        _report(exc)
        sys.exit(EXIT_UNAVAILABLE)
    except WtbError as exc:
        _report(exc)
        sys.exit(EXIT_USAGE)
    except Terminated:
        log.info("run %s: terminated; recorded results are kept, run it again to finish", run_key)
        sys.exit(EXIT_TERMINATED)
    sys.exit(0 if complete else EXIT_INCOMPLETE)


def _report(exc: WtbError) -> None:
    click.secho("error: ", fg="red", bold=True, err=True, nl=False)
    click.echo(str(exc), err=True)


def main() -> None:
    driver(prog_name="python -m wtb.driver")


if __name__ == "__main__":
    main()
