"""What an evaluator sees of one cell."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wtb.domain import Case, CellStatus


@dataclass(frozen=True, slots=True)
class EvalContext:
    """One cell as evaluators see it; user evaluators receive it as their only argument.

    `output` is what the graph returned (its output schema's keys), None when the graph
    failed (`status` 'failed', `error_type` then names the exception class). `state` is
    the full final state, keys an output schema hides included. A graph stopped at an
    interrupt has `status` 'interrupted' and the state it reached. `tokens` and `cost` are
    None when nothing was reported for the cell.
    """

    case: Case
    inputs: dict[str, Any]
    expected: dict[str, Any] | None
    output: dict[str, Any] | None
    status: CellStatus
    error_type: str | None
    latency_ms: float
    tokens: int | None
    cost: float | None
    state: dict[str, Any] | None = None
