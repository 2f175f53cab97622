"""Scoring: a cell's attempts and final state in, its result out (usage, evaluators).

Evaluators score failed cells too (a failure scores 0 or None by the metric's direction),
so whoever gives up on a cell, a runner or the Ray driver, scores it here. A graph that
stopped at an interrupt with no scripted answer left is `interrupted`: scored as a failure,
recorded with the output it had so far. A token count or cost the store cannot keep
(`wtb.storage.values`) fails the cell, with the value in its message.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from wtb._jsonable import clean_text, jsonable
from wtb.cells.graph_run import GraphOutcome
from wtb.domain import Attempt, Case, Cell, CellResult, CellStatus, NodeFigures
from wtb.evaluators import EvalContext, Evaluator
from wtb.evaluators.build import DEFAULT_EVALUATOR_TIMEOUT_SECONDS, build_evaluators, evaluate
from wtb.evaluators.comparing import STATE_ROOT
from wtb.runs.spec import RunSpec
from wtb.storage.records import StoredCell
from wtb.storage.values import VALUE_OUT_OF_RANGE, storable_nodes, usage_problem
from wtb.usage import UsageMeter, combine, usage_from_state

INTERRUPTED = "Interrupted"
"""`error_type` of an interrupted cell; its message shows what the graph asked."""
_MAX_MESSAGE = 2000


def _interrupt_message(values: Sequence[Any]) -> str:
    shown = "; ".join(repr(v) for v in values)
    message = clean_text(
        f"the graph stopped at interrupt() waiting for a human: {shown} "
        "(script the answers in the case's `resume`)"
    )
    return message if len(message) <= _MAX_MESSAGE else message[:_MAX_MESSAGE] + "..."


def reads_state(job: RunSpec) -> bool:
    """Whether an evaluator of the run reads the full final state through a `$state.` path:
    the store keeps the output only, so such a run's results cannot be scored again from
    it (a reused cell is then run again)."""
    return any((e.output or "").startswith(STATE_ROOT) for e in job.batch.evaluators)


class Scorer:
    """Builds the results of one run's cells (its cases and evaluators, built once)."""

    def __init__(self, job: RunSpec) -> None:
        self._cases = job.case_index()
        self._evaluators: list[Evaluator] = build_evaluators(job.batch.evaluators)
        self._evaluator_timeout = (
            job.batch.evaluator_timeout_seconds or DEFAULT_EVALUATOR_TIMEOUT_SECONDS
        )

    def rescore(self, cell: Cell, stored: StoredCell) -> CellResult:
        """The result of a cell whose graph ran in an earlier run (`stored`, a succeeded or
        interrupted cell with the same fingerprint), scored again with this run's
        evaluators and case from its stored output, without running the graph. The full
        final state is not stored: evaluators get `state` None (those reading `$state.`
        paths are never given such a cell, see `reads_state`)."""
        case = self._cases[cell.case_id]
        ctx = EvalContext(
            case=case,
            inputs=case.inputs,
            expected=case.expected,
            output=stored.output,
            status=stored.status,
            error_type=stored.error_type,
            latency_ms=stored.latency_ms,
            tokens=stored.tokens,
            cost=stored.cost,
            state=None,
        )
        metrics, evaluator_errors = evaluate(
            self._evaluators, ctx, timeout_seconds=self._evaluator_timeout
        )
        return CellResult(
            cell=cell,
            status=stored.status,
            latency_ms=stored.latency_ms,
            finished_at=stored.finished_at,
            output=stored.output,
            metrics=metrics,
            tokens=stored.tokens,
            cost=stored.cost,
            error_type=stored.error_type,
            error_message=stored.error_message,
            evaluator_errors=evaluator_errors,
            attempts=(),
            nodes=stored.nodes,
        )

    def case(self, cell: Cell) -> Case:
        return self._cases[cell.case_id]

    def success(
        self,
        cell: Cell,
        outcome: GraphOutcome,
        attempts: Sequence[Attempt],
        meter: UsageMeter,
        nodes: dict[str, NodeFigures] | None = None,
    ) -> CellResult:
        """The result of a cell whose last attempt returned `outcome`: succeeded, or
        interrupted when the graph stopped at an interrupt; `nodes` are that attempt's
        per-node figures."""
        # Tokens are read from the full state: an output schema may hide the messages.
        tokens, cost = combine(meter, usage_from_state(outcome.state))
        return self._finish(cell, outcome, attempts, tokens, cost, nodes)

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
        outcome: GraphOutcome | None,
        attempts: Sequence[Attempt],
        tokens: int | None,
        cost: float | None,
        nodes: dict[str, NodeFigures] | None = None,
    ) -> CellResult:
        case = self._cases[cell.case_id]
        last = attempts[-1]
        latency_ms = last.duration_ms
        status: CellStatus
        unstorable = usage_problem(tokens, cost)
        if unstorable is not None:
            # A count the store cannot keep: the cell fails rather than record another number.
            tokens = cost = None
            nodes = storable_nodes(nodes)
        if outcome is None or last.status != "succeeded":
            status, error_type, error_message = "failed", last.error_type, last.error_message
            error_node = last.node
            output = state = None
        elif unstorable is not None:
            status, error_type, error_message = "failed", VALUE_OUT_OF_RANGE, unstorable
            error_node = None
            output = state = None
        else:
            output = jsonable(outcome.output)
            state = outcome.state if isinstance(outcome.state, dict) else jsonable(outcome.state)
            error_node = None
            if outcome.interrupts:
                status, error_type = "interrupted", INTERRUPTED
                error_message = _interrupt_message(outcome.interrupts)
            else:
                status, error_type, error_message = "succeeded", None, None
        raw = None if outcome is None or status == "failed" else outcome.output
        ctx = EvalContext(
            case=case,
            inputs=case.inputs,
            expected=case.expected,
            output=(raw if isinstance(raw, dict) else output) if status != "failed" else None,
            status=status,
            error_type=error_type,
            latency_ms=latency_ms,
            tokens=tokens,
            cost=cost,
            state=state if isinstance(state, dict) else None,
        )
        metrics, evaluator_errors = evaluate(
            self._evaluators, ctx, timeout_seconds=self._evaluator_timeout
        )
        return CellResult(
            cell=cell,
            status=status,
            latency_ms=latency_ms,
            finished_at=datetime.now(UTC),
            output=output,
            metrics=metrics,
            tokens=tokens,
            cost=cost,
            error_type=error_type,
            error_message=error_message,
            evaluator_errors=evaluator_errors,
            attempts=tuple(attempts),
            nodes=nodes or None,
            error_node=error_node,
        )
