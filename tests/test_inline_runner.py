"""The inline runner's own behaviour on real LangGraph: overlap, bounded threads, stuck sync
code written off, closing and failing sources. What every runner promises (results,
failures, retries, timeouts, events) is in test_runner_conformance."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from services.support import wait_until
from toybatch import MODES, TOY, toy_job
from wtb import events
from wtb.domain import Cell, CellResult
from wtb.events import EventBus
from wtb.plan import build_plan
from wtb.runners import InlineRunner
from wtb.runs.spec import RunSpec


@pytest.fixture(autouse=True)
def _toy_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TOY))


@pytest.fixture(params=list(MODES))
def mode(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def _job(
    matrix: dict[str, list[str]],
    n_cases: int = 8,
    stuck: frozenset[int] = frozenset(),
    mode: str = "loop",
    **spec: Any,
) -> RunSpec:
    """Cases listed in `stuck` say "stuck": the stuck_* variants block on them."""
    questions = ["stuck" if i in stuck else str(i) for i in range(n_cases)]
    return toy_job(matrix, questions, mode=mode, **spec)


def _run(
    job: RunSpec, bus: EventBus | None = None, concurrency: int | None = None
) -> list[CellResult]:
    plan = build_plan(job.batch, job.cases)
    runner = InlineRunner(concurrency, backoff_scale=0)
    return list(runner.run(job, plan.iter_cells(), bus or EventBus()))


def test_slow_nodes_overlap_up_to_concurrency(mode: str) -> None:
    """Async nodes overlap on the loop; sync graphs on as many worker threads."""
    from toyflow import graph as toy

    toy.concurrency.peak = 0
    results = _run(_job({"lookup": ["slow"]}, n_cases=24, mode=mode, concurrency=8))
    assert all(r.status == "succeeded" for r in results)
    assert toy.concurrency.peak == 8


def test_sync_nodes_of_async_graphs_run_in_a_bounded_pool() -> None:
    from toyflow import graph as toy

    toy.concurrency.peak = 0
    results = _run(_job({"normalize": ["blocking"]}, n_cases=12, concurrency=3))
    assert all(r.status == "succeeded" for r in results)
    assert toy.concurrency.peak == 3


def _runner_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "wtb-inline-runner"]


@pytest.mark.parametrize("node", ["normalize", "lookup"])
def test_stuck_cells_time_out_are_retried_and_do_not_starve_the_others(
    mode: str, node: str
) -> None:
    from toyflow import graph as toy

    toy.release.clear()
    try:
        job = _job(
            {node: ["stuck"]},
            n_cases=8,
            stuck=frozenset({0, 1}),
            mode=mode,
            concurrency=2,
            timeoutSeconds=1.0,
            retry={"maxAttempts": 2},
        )
        results = {r.cell.case_id: r for r in _run(job)}
        # The run is over while the stuck threads still block: nobody waited for them.
        assert not toy.release.is_set()
        for stuck in ("q0", "q1"):
            assert results[stuck].status == "failed"
            assert results[stuck].error_type == "Timeout"
            assert [a.status for a in results[stuck].attempts] == ["timeout", "timeout"]
            assert all(a.duration_ms < 5000 for a in results[stuck].attempts)
        assert all(results[f"q{i}"].status == "succeeded" for i in range(2, 8))
    finally:
        toy.release.set()


def _start_with_two_stuck(
    mode: str, timeout: float, attempts: int
) -> tuple[Iterator[CellResult], list[events.Event]]:
    """A run whose cases 4 and 5 block; returned after its first four results."""
    job = _job(
        {"lookup": ["stuck"]},
        n_cases=12,
        stuck=frozenset({4, 5}),
        mode=mode,
        concurrency=2,
        timeoutSeconds=timeout,
        retry={"maxAttempts": attempts},
    )
    plan = build_plan(job.batch, job.cases)
    seen: list[events.Event] = []
    bus = EventBus()
    bus.subscribe(seen.append, frozenset({events.CELL_ATTEMPT_STARTED}))
    it = InlineRunner(backoff_scale=0).run(job, plan.iter_cells(), bus)
    first = [next(it) for _ in range(4)]
    assert [r.status for r in first] == ["succeeded"] * 4
    # Both stuck cells have started (a slot frees before its next cell starts).
    wait_until(lambda: len(seen) >= 6, "cases 4 and 5 to start", seconds=30)
    return it, seen


def test_closing_mid_cell_stops_the_run(mode: str) -> None:
    from toyflow import graph as toy

    toy.release.clear()
    try:
        it, seen = _start_with_two_stuck(mode, timeout=60, attempts=3)
        # Cases 4 and 5 now hold both slots for 60 s; closing must not wait for them,
        # and no further cell may start.
        it.close()  # type: ignore[attr-defined]
        assert _runner_threads() == []
        started = len(seen)
        toy.release.set()
        assert started == 6
    finally:
        toy.release.set()


@pytest.mark.timeout(60)
def test_a_failing_cell_source_ends_the_run_with_its_error(mode: str) -> None:
    """E.g. the store failing while looking up which cells are recorded."""
    job = _job({"lookup": ["original"]}, n_cases=8, mode=mode, concurrency=2)
    cells = build_plan(job.batch, job.cases).iter_cells()

    def failing() -> Iterator[Cell]:
        for i, cell in enumerate(cells):
            if i == 3:
                raise RuntimeError("database is gone")
            yield cell

    runner = InlineRunner(backoff_scale=0)
    with pytest.raises(RuntimeError, match="database is gone"):
        list(runner.run(job, failing(), EventBus()))


def test_no_attempt_starts_after_close(mode: str) -> None:
    from toyflow import graph as toy

    toy.release.clear()
    try:
        it, seen = _start_with_two_stuck(mode, timeout=0.2, attempts=3)
        it.close()  # type: ignore[attr-defined]
        at_close = len(seen)
        # The stuck attempts time out after close: nothing may retry them or start more.
        stopped = threading.Event()
        stopped.wait(1.0)  # several timeouts long; waiting for something not to happen
        assert len(seen) == at_close
    finally:
        toy.release.set()


def test_an_attempt_continues_the_history_of_a_lost_worker() -> None:
    """One attempt at a time (as Ray actors run cells): numbering and the retry budget
    carry on from attempts made elsewhere, and lost workers cost no budget."""
    import asyncio
    from datetime import UTC, datetime

    from wtb.cells.attempts import Retry
    from wtb.cells.executor import CellExecutor
    from wtb.cells.threads import ElasticThreadPool
    from wtb.domain import WORKER_LOST, Attempt

    job = _job({"normalize": ["flaky"]}, n_cases=1, retry={"maxAttempts": 3})
    (cell,) = build_plan(job.batch, job.cases).iter_cells()
    executor = CellExecutor(job, emit=lambda _: None, backoff_scale=0)
    lost = Attempt(1, "transient", datetime.now(UTC), 5.0, WORKER_LOST, "worker lost")

    async def attempts() -> list[Retry | CellResult]:
        pool = ElasticThreadPool(1)
        asyncio.get_running_loop().set_default_executor(pool)
        steps: list[Retry | CellResult] = []
        history: tuple[Attempt, ...] = (lost,)
        while True:
            step = await executor.attempt(cell, pool, history)
            steps.append(step)
            if isinstance(step, CellResult):
                return steps
            history = step.attempts

    steps = asyncio.run(attempts())
    result = steps[-1]
    assert isinstance(result, CellResult)
    assert result.status == "succeeded"
    # The flaky node fails twice, then works: three attempts of its own after the lost one.
    assert [(a.number, a.status, a.error_type) for a in result.attempts] == [
        (1, "transient", WORKER_LOST),
        (2, "transient", "ConnectionError"),
        (3, "transient", "ConnectionError"),
        (4, "succeeded", None),
    ]
    assert len(steps) == 3
