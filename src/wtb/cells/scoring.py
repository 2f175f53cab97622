"""Scoring: a cell's attempts and final state in, its result out (usage, evaluators).

Evaluators score failed cells too (a failure scores 0 or None by the metric's direction),
so whoever gives up on a cell, a runner or the Ray driver, scores it here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from wtb._jsonable import jsonable
from wtb.domain import Attempt, Case, Cell, CellResult, NodeFigures
from wtb.evaluators import EvalContext, Evaluator
from wtb.evaluators.build import build_evaluators, evaluate
from wtb.runs.spec import RunSpec
from wtb.usage import UsageMeter, combine, usage_from_state


class Scorer:
    """Builds the results of one run's cells (its cases and evaluators, built once)."""

    def __init__(self, job: RunSpec) -> None:
        self._cases = job.case_index()
        self._evaluators: list[Evaluator] = build_evaluators(job.batch.evaluators)

    def case(self, cell: Cell) -> Case:
        return self._cases[cell.case_id]

    def success(
        self,
        cell: Cell,
        state: Any,
        attempts: Sequence[Attempt],
        meter: UsageMeter,
        nodes: dict[str, NodeFigures] | None = None,
    ) -> CellResult:
        """The result of a cell whose last attempt succeeded with final `state`; `nodes`
        are that attempt's per-node figures."""
        tokens, cost = combine(meter, usage_from_state(state))
        return self._finish(cell, state, attempts, tokens, cost, nodes)

    def failure(
        self,
        cell: Cell,
        attempts: Sequence[Attempt],
        nodes: dict[str, NodeFigures] | None = None,
    ) -> CellResult:
        """The result of a cell whose last attempt failed (`nodes`: how far it got)."""
        return self._finish(cell, None, attempts, None, None, nodes)

    def _finish(
        self,
        cell: Cell,
        state: Any,
        attempts: Sequence[Attempt],
        tokens: int | None,
        cost: float | None,
        nodes: dict[str, NodeFigures] | None = None,
    ) -> CellResult:
        case = self._cases[cell.case_id]
        last = attempts[-1]
        ok = last.status == "succeeded"
        latency_ms = last.duration_ms
        output = jsonable(state) if ok else None
        ctx = EvalContext(
            case=case,
            inputs=case.inputs,
            expected=case.expected,
            output=(state if isinstance(state, dict) else output) if ok else None,
            status="succeeded" if ok else "failed",
            error_type=None if ok else last.error_type,
            latency_ms=latency_ms,
            tokens=tokens,
            cost=cost,
        )
        metrics, evaluator_errors = evaluate(self._evaluators, ctx)
        return CellResult(
            cell=cell,
            status="succeeded" if ok else "failed",
            latency_ms=latency_ms,
            finished_at=datetime.now(UTC),
            output=output,
            metrics=metrics,
            tokens=tokens,
            cost=cost,
            error_type=None if ok else last.error_type,
            error_message=None if ok else last.error_message,
            evaluator_errors=evaluator_errors,
            attempts=tuple(attempts),
            nodes=nodes or None,
        )
