"""Retry decisions: which failures are retried, when, and what counts against the budget."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from wtb.cells.retry import RetryPolicy
from wtb.domain import WORKER_LOST, WORKER_STOPPED, Attempt, AttemptStatus

_AT = datetime(2026, 1, 1, tzinfo=UTC)


def _attempts(*kinds: tuple[AttemptStatus, str | None]) -> list[Attempt]:
    return [Attempt(i + 1, status, _AT, 1.0, error) for i, (status, error) in enumerate(kinds)]


POLICY = RetryPolicy(max_attempts=2, backoff_seconds=1.0, max_backoff_seconds=10.0)


def test_a_failure_is_final_and_transient_errors_use_the_budget() -> None:
    assert POLICY.next_delay(_attempts(("failed", "ValueError"))) is None
    first = POLICY.next_delay(_attempts(("transient", "ConnectionError")))
    assert first is not None
    assert 0.5 <= first <= 1.0
    assert POLICY.next_delay(_attempts(("timeout", "Timeout"), ("transient", "X"))) is None


@pytest.mark.parametrize("lost", [WORKER_LOST, WORKER_STOPPED])
def test_lost_workers_do_not_use_the_budget(lost: str) -> None:
    history = _attempts(("transient", lost), ("transient", lost), ("timeout", "Timeout"))
    delay = POLICY.next_delay(history)
    # One attempt of the cell's own so far: the second is still due, after the first delay.
    assert delay is not None
    assert 0.5 <= delay <= 1.0
    assert POLICY.next_delay([*history, *_attempts(("timeout", "Timeout"))]) is None
