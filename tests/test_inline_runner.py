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
from wtb.runners.gil_gate import HOLD_WINDOWS, WINDOW_S, GilGate
from wtb.runners.handoff import Handoff
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
            retry={"maxAttempts": 2, "retryTimeouts": True},
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
        retry={"maxAttempts": attempts, "retryTimeouts": True},
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


# --- the GIL gate: fewer threads while the cells are CPU-bound ----------------------------


class _Clocks:
    """Fake clocks for the gate: each `window(cores)` passes one window at that CPU use."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def window(self, gate: GilGate, cores: float) -> int:
        self.wall += WINDOW_S
        self.cpu += cores * WINDOW_S
        gate.tick()
        return gate.allowed


def _gate(concurrency: int) -> tuple[GilGate, _Clocks]:
    clocks = _Clocks()
    return GilGate(concurrency, cpu=lambda: clocks.cpu, now=lambda: clocks.wall), clocks


def test_the_gate_lowers_to_one_thread_while_the_gil_is_the_bottleneck() -> None:
    gate, clocks = _gate(4)
    assert [clocks.window(gate, 1.0) for _ in range(4)] == [2, 1, 1, 1]


def test_the_gate_opens_again_and_holds_when_the_threads_were_overlapping_io() -> None:
    gate, clocks = _gate(2)
    assert clocks.window(gate, 1.0) == 1
    assert clocks.window(gate, 0.55) == 2  # one thread fewer: CPU use fell, so undo
    assert [clocks.window(gate, 1.0) for _ in range(HOLD_WINDOWS)] == [2] * HOLD_WINDOWS
    assert clocks.window(gate, 1.0) == 1  # tried again once the hold is over


def test_the_gate_stays_open_for_io_bound_and_for_truly_parallel_cells() -> None:
    gate, clocks = _gate(4)
    assert {clocks.window(gate, 0.2) for _ in range(10)} == {4}  # waiting on I/O
    assert {clocks.window(gate, 1.9) for _ in range(10)} == {4}  # GIL released: parallel


def test_the_gate_reopens_a_thread_at_a_time_when_the_cells_turn_to_io() -> None:
    gate, clocks = _gate(4)
    clocks.window(gate, 1.0)
    clocks.window(gate, 1.0)
    assert gate.allowed == 1
    # The first window undoes the lowering (CPU use fell), then one thread per window.
    assert [clocks.window(gate, 0.2) for _ in range(4)] == [2, 3, 4, 4]


def test_a_slot_above_the_gate_waits_until_it_opens_or_the_run_stops() -> None:
    gate, clocks = _gate(2)
    clocks.window(gate, 1.0)
    assert gate.allowed == 1
    assert gate.admit(0, lambda: True)  # slot 0 always runs
    admitted: list[bool] = []
    waiter = threading.Thread(target=lambda: admitted.append(gate.admit(1, lambda: True)))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive()  # held at the gate
    clocks.window(gate, 0.5)  # undo: CPU use fell after lowering
    waiter.join(5)
    assert admitted == [True]
    clocks.window(gate, 1.0)
    going = threading.Event()
    going.set()
    stopped: list[bool] = []
    waiter = threading.Thread(target=lambda: stopped.append(gate.admit(1, going.is_set)))
    for _ in range(HOLD_WINDOWS + 1):
        clocks.window(gate, 1.0)
    assert gate.allowed == 1
    waiter.start()
    going.clear()
    gate.wake()
    waiter.join(5)
    assert stopped == [False]


def test_a_cpu_bound_sync_graph_at_high_concurrency_gets_every_cell_right() -> None:
    """The gate changes how many threads run, never which cells run or how they end."""
    results = _run(_job({"lookup": ["original"]}, n_cases=300, mode="threads", concurrency=4))
    assert sorted(r.cell.case_id for r in results) == sorted(f"q{i}" for i in range(300))
    assert all(r.status == "succeeded" and r.metrics["correct"] == 1.0 for r in results)


# --- the hand-off: results reach the consumer in batches ----------------------------------


def test_the_handoff_wakes_the_consumer_for_a_batch_not_for_each_result() -> None:
    handoff: Handoff[int] = Handoff(64, batch=4, linger=30)
    stop = threading.Event()
    for i in range(4):
        handoff.put(i, stop)
    assert handoff.take() == [0, 1, 2, 3]  # a full batch: no lingering
    handoff.put(4, stop)
    handoff.put(5, stop, urgent=True)  # the end of a run is handed over at once
    assert handoff.take() == [4, 5]


def test_a_lone_result_waits_no_longer_than_the_linger() -> None:
    handoff: Handoff[int] = Handoff(64, batch=32, linger=0.05)
    handoff.put(7, threading.Event())
    assert handoff.take() == [7]


def test_a_full_handoff_holds_the_producer_until_taken_or_stopped() -> None:
    handoff: Handoff[int] = Handoff(2, batch=2, linger=0)
    stop = threading.Event()
    handoff.put(0, stop)
    handoff.put(1, stop)
    assert not handoff.try_put(2)
    producer = threading.Thread(target=handoff.put, args=(2, stop))
    producer.start()
    producer.join(0.2)
    assert producer.is_alive()
    assert handoff.take() == [0, 1]
    producer.join(5)
    assert handoff.take() == [2]
    handoff.put(3, stop)
    handoff.put(4, stop)
    stop.set()
    handoff.put(5, stop)  # returns: nobody takes any more
    assert handoff.take() == [3, 4]
