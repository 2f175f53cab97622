"""The attempt protocol: numbering, events, the retry budget and the decision "done or retry
in N s", the same whoever runs an attempt and whoever sees it end."""

from __future__ import annotations

import pytest

from wtb import events
from wtb.cells.attempts import TIMEOUT, AttemptProtocol, GiveUp, Retry
from wtb.cells.retry import RetryPolicy
from wtb.domain import WORKER_LOST, WORKER_STOPPED, Attempt, Cell

CELL = Cell(key="k1", combo_key="c1", combination=(("n", "original"),), case_id="a", repeat=0)


class _Transient(ConnectionError):
    pass


def _protocol(
    max_attempts: int = 3, *, retry_timeouts: bool = False
) -> tuple[AttemptProtocol, list[events.Event]]:
    seen: list[events.Event] = []
    policy = RetryPolicy(
        max_attempts=max_attempts,
        backoff_seconds=1.0,
        max_backoff_seconds=4.0,
        retry_timeouts=retry_timeouts,
    )
    return AttemptProtocol(policy, seen.append, timeout=2.5), seen


def _kinds(seen: list[events.Event]) -> list[tuple[str, int]]:
    return [(e.kind.rsplit(".", 1)[1], e.data["attempt"]) for e in seen]


def test_a_first_success_is_one_attempt_with_two_events() -> None:
    protocol, seen = _protocol()
    attempt = protocol.begin(CELL)
    history = attempt.succeeded()
    assert [(a.number, a.status) for a in history] == [(1, "succeeded")]
    assert history[0].duration_ms >= 0
    assert _kinds(seen) == [("started", 1), ("succeeded", 1)]
    assert all(e.subject == CELL.key for e in seen)


def test_a_node_error_is_final_at_once() -> None:
    protocol, seen = _protocol()
    decision = protocol.begin(CELL).raised(ValueError("bad input"))
    assert isinstance(decision, GiveUp)
    (record,) = decision.attempts
    assert (record.status, record.error_type, record.error_message) == (
        "failed",
        "ValueError",
        "bad input",
    )
    assert _kinds(seen) == [("started", 1), ("failed", 1)]
    assert seen[-1].data["status"] == "failed"


def test_transient_errors_are_retried_with_backoff_until_the_budget_is_spent() -> None:
    protocol, seen = _protocol(max_attempts=3)
    history: tuple[Attempt, ...] = ()
    delays = []
    while True:
        decision = protocol.begin(CELL, history).raised(_Transient("reset"))
        history = decision.attempts
        if isinstance(decision, GiveUp):
            break
        delays.append(decision.delay)
    assert [a.number for a in history] == [1, 2, 3]
    assert {a.status for a in history} == {"transient"}
    # Exponential with jitter in [0.5, 1] of 1 s, then 2 s.
    assert 0.5 <= delays[0] <= 1.0
    assert 1.0 <= delays[1] <= 2.0
    assert [k for k, _ in _kinds(seen)].count("retried") == 2
    retried = [e for e in seen if e.kind == events.CELL_ATTEMPT_RETRIED]
    assert [e.data["attempt"] for e in retried] == [2, 3]


@pytest.mark.parametrize("retry_timeouts", [False, True])
def test_a_timeout_is_recorded_as_such_and_retried_only_when_asked(retry_timeouts: bool) -> None:
    protocol, seen = _protocol(retry_timeouts=retry_timeouts)
    decision = protocol.begin(CELL).timed_out()
    assert isinstance(decision, Retry if retry_timeouts else GiveUp)
    (record,) = decision.attempts
    assert (record.status, record.error_type) == ("timeout", TIMEOUT)
    assert record.error_message == "attempt exceeded 2.5 s"
    assert (events.CELL_ATTEMPT_RETRIED in {e.kind for e in seen}) is retry_timeouts


def test_a_graph_over_its_recursion_limit_is_final_at_once() -> None:
    from langgraph.errors import GraphRecursionError

    protocol, _ = _protocol()
    # Not even when the user calls a base class of it transient.
    protocol.policy = RetryPolicy(extra_transient=frozenset({"RuntimeError", "RecursionError"}))
    decision = protocol.begin(CELL).raised(GraphRecursionError("Recursion limit of 25 reached"))
    assert isinstance(decision, GiveUp)
    assert [(a.status, a.error_type) for a in decision.attempts] == [
        ("failed", "GraphRecursionError")
    ]


@pytest.mark.parametrize(("lost", "immediate"), [(WORKER_LOST, False), (WORKER_STOPPED, True)])
def test_lost_workers_cost_no_budget(lost: str, immediate: bool) -> None:
    protocol, _ = _protocol(max_attempts=1)
    decision = protocol.begin(CELL).lost(lost, "gone")
    assert isinstance(decision, Retry)
    assert (decision.delay == 0.0) is immediate
    # The cell's own one attempt is still due after the loss.
    after = protocol.begin(CELL, decision.attempts).raised(_Transient("x"))
    assert isinstance(after, GiveUp)
    assert [a.error_type for a in after.attempts] == [lost, "_Transient"]


def test_a_runner_can_give_up_on_a_cell_that_keeps_losing_workers() -> None:
    protocol, seen = _protocol()
    decision = protocol.begin(CELL).lost(WORKER_LOST, "gone", give_up=True)
    assert isinstance(decision, GiveUp)
    assert events.CELL_ATTEMPT_RETRIED not in {e.kind for e in seen}


def test_an_attempt_observed_elsewhere_continues_the_numbering_without_a_start_event() -> None:
    protocol, seen = _protocol()
    first = protocol.begin(CELL).timed_out()
    started = protocol.begin(CELL, first.attempts)
    seen.clear()
    observed = protocol.observe(CELL, first.attempts, started.started_at, started.t0)
    decision = observed.lost(WORKER_LOST, "node died")
    assert [a.number for a in decision.attempts] == [1, 2]
    assert _kinds(seen) == [("failed", 2), ("retried", 3)]


def test_an_attempt_ends_once() -> None:
    protocol, _ = _protocol()
    attempt = protocol.begin(CELL)
    attempt.timed_out()
    with pytest.raises(RuntimeError, match="ended twice"):
        attempt.succeeded()
