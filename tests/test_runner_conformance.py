"""The runner conformance suite: what every runner promises, run against each of them (inline
on the asyncio loop, inline on worker threads, Ray actors on the session's Ray head).

A runner takes a run's cells and yields one result per cell; where a cell runs changes
nothing about its result, its attempts or its events. Behaviour particular to one runner
(the watchdog of worker threads, actors lost or blocked) is tested beside that runner.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from toybatch import TOY, toy_job
from wtb import events
from wtb.domain import CellResult
from wtb.events import EventBus
from wtb.plan import build_plan
from wtb.runners.base import Runner
from wtb.runs.spec import RunSpec


@dataclass(frozen=True)
class RunnerUnderTest:
    mode: str
    """The toy graph's flavour it runs (`toybatch.MODES`)."""
    make: Callable[[], Runner]

    def job(self, matrix: dict[str, list[str]], questions: list[str], **spec: object) -> RunSpec:
        return toy_job(matrix, questions, mode=self.mode, **spec)  # type: ignore[arg-type]

    def run(self, job: RunSpec) -> tuple[list[CellResult], list[events.Event]]:
        """Every result of the run, and every event of its cells."""
        bus = EventBus()
        seen: list[events.Event] = []
        bus.subscribe(seen.append)
        results = list(self.make().run(job, build_plan(job.batch, job.cases).iter_cells(), bus))
        return results, seen


@pytest.fixture(
    params=[
        "inline-loop",
        "inline-threads",
        pytest.param("ray", marks=[pytest.mark.ray, pytest.mark.slow]),
    ]
)
def runner(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> RunnerUnderTest:
    monkeypatch.syspath_prepend(str(TOY))
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
        from wtb.runners.ray_runner import RayRunner

        # One actor: the toy's flaky node counts its calls per process.
        return RunnerUnderTest("loop", lambda: RayRunner(actors=1, backoff_scale=0))
    from wtb.runners import InlineRunner

    mode = request.param.removeprefix("inline-")
    return RunnerUnderTest(mode, lambda: InlineRunner(backoff_scale=0))


def _per_cell(seen: list[events.Event]) -> Counter[str]:
    return Counter(e.kind for e in seen if e.subject is not None)


def test_every_cell_has_one_result_with_its_scores_usage_and_output(
    runner: RunnerUnderTest,
) -> None:
    job = runner.job({"lookup": ["original"]}, [str(i) for i in range(6)], repeats=2)
    results, seen = runner.run(job)
    assert sorted((r.cell.case_id, r.cell.repeat) for r in results) == sorted(
        (f"q{i}", repeat) for i in range(6) for repeat in range(2)
    )
    for r in results:
        assert r.status == "succeeded"
        assert r.metrics["correct"] == 1.0
        assert r.output is not None
        assert r.output["trail"] == ["normalize", "lookup", "answer"]
        # answer() reports input tokens = words in the text + 1 output token.
        assert r.tokens == 3
        assert r.cost == pytest.approx(0.001)
        assert [(a.number, a.status) for a in r.attempts] == [(1, "succeeded")]
    assert _per_cell(seen) == {
        events.CELL_ATTEMPT_STARTED: 12,
        events.CELL_ATTEMPT_SUCCEEDED: 12,
    }


def test_a_node_that_raises_is_one_recorded_failure(runner: RunnerUnderTest) -> None:
    job = runner.job({"normalize": ["broken"]}, ["a", "b", "c"], retry={"maxAttempts": 5})
    results, seen = runner.run(job)
    assert len(results) == 3
    for r in results:
        assert r.status == "failed"
        assert r.error_type == "ValueError"
        assert "cannot normalize" in (r.error_message or "")
        assert [a.status for a in r.attempts] == ["failed"]
        # where it failed and how, brought back from wherever the cell ran
        assert r.error_node == r.attempts[0].node == "normalize"
        assert "cannot normalize" in (r.attempts[0].traceback or "")
        assert r.metrics["correct"] == 0.0  # a failure is not a success
        assert r.metrics["tokens"] is None
    assert _per_cell(seen) == {events.CELL_ATTEMPT_STARTED: 3, events.CELL_ATTEMPT_FAILED: 3}


_EXITS = {
    "exit0": ("SystemExit", "exit code 0"),
    "exit3": ("SystemExit", "exit code 3"),
    "ctrlc": ("KeyboardInterrupt", "KeyboardInterrupt"),
    "halt": ("Halt", "halted by the node"),
}


@pytest.mark.parametrize("node", ["lookup", "normalize"])
def test_code_that_ends_its_process_is_one_failed_cell_and_the_run_goes_on(
    runner: RunnerUnderTest, node: str
) -> None:
    # lookup: async on the loop and on Ray, sync on worker threads; normalize: sync in all.
    job = runner.job({node: ["exiting"]}, [*_EXITS, "fine"], retry={"maxAttempts": 3})
    results, seen = runner.run(job)
    by_question = {r.cell.case_id: r for r in results}
    assert len(results) == len(_EXITS) + 1
    for i, (error_type, said) in enumerate(_EXITS.values()):
        r = by_question[f"q{i}"]
        assert r.status == "failed"
        assert r.error_type == error_type
        assert said in (r.error_message or "")
        assert [a.status for a in r.attempts] == ["failed"]  # the code asked to stop: no retry
        assert r.metrics["correct"] == 0.0
    assert by_question[f"q{len(_EXITS)}"].status == "succeeded"
    assert _per_cell(seen)[events.CELL_ATTEMPT_FAILED] == len(_EXITS)


def test_transient_errors_are_retried_with_their_history(runner: RunnerUnderTest) -> None:
    job = runner.job({"normalize": ["flaky"]}, ["a", "b", "c", "d"], retry={"maxAttempts": 3})
    results, seen = runner.run(job)
    assert len(results) == 4
    for r in results:
        assert r.status == "succeeded", r
        assert [(a.number, a.status) for a in r.attempts] == [
            (1, "transient"),
            (2, "transient"),
            (3, "succeeded"),
        ]
        assert r.attempts[0].error_type == "ConnectionError"
    assert _per_cell(seen)[events.CELL_ATTEMPT_RETRIED] == 8


def test_the_retry_limit_gives_up_with_the_last_error(runner: RunnerUnderTest) -> None:
    job = runner.job({"normalize": ["flaky"]}, ["a", "b"], retry={"maxAttempts": 2})
    results, _ = runner.run(job)
    assert len(results) == 2
    for r in results:
        assert r.status == "failed"
        assert r.error_type == "ConnectionError"
        assert [a.status for a in r.attempts] == ["transient", "transient"]


def test_an_attempt_over_its_timeout_is_recorded_retried_and_holds_no_one_up(
    runner: RunnerUnderTest,
) -> None:
    from toyflow import graph as toy

    toy.release.clear()
    try:
        job = runner.job(
            {"lookup": ["stuck"]},
            ["stuck", "1", "2", "3"],
            concurrency=2,
            timeoutSeconds=0.5,
            retry={"maxAttempts": 2, "retryTimeouts": True},
        )
        by_case = {r.cell.case_id: r for r in runner.run(job)[0]}
    finally:
        toy.release.set()
    stuck = by_case["q0"]
    assert stuck.status == "failed"
    assert stuck.error_type == "Timeout"
    assert [a.status for a in stuck.attempts] == ["timeout", "timeout"]
    assert all(by_case[f"q{i}"].status == "succeeded" for i in (1, 2, 3))


def test_a_timeout_is_not_retried_unless_asked(runner: RunnerUnderTest) -> None:
    from toyflow import graph as toy

    toy.release.clear()
    try:
        job = runner.job(
            {"lookup": ["stuck"]},
            ["stuck", "1"],
            concurrency=2,
            timeoutSeconds=0.5,
            retry={"maxAttempts": 3},
        )
        results, seen = runner.run(job)
        by_case = {r.cell.case_id: r for r in results}
    finally:
        toy.release.set()
    stuck = by_case["q0"]
    assert (stuck.status, stuck.error_type) == ("failed", "Timeout")
    assert [a.status for a in stuck.attempts] == ["timeout"]
    assert events.CELL_ATTEMPT_RETRIED not in _per_cell(seen)
    assert by_case["q1"].status == "succeeded"
