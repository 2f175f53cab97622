"""Plain data that flows through the pipeline: cases, cells, attempts, results, aggregates.

These are slotted dataclasses, not pydantic models: millions of them pass through a batch,
and they must pickle cheaply to Ray workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal, TypedDict

Combination = tuple[tuple[str, str], ...]
"""A variant combination: (axis, choice) pairs sorted by axis name, an axis being a node
(its variant) or a Workflow setting (its choice)."""

CellStatus = Literal["succeeded", "failed", "interrupted"]
"""`interrupted`: the graph stopped at `interrupt()` waiting for a human, with no scripted
answer left (a data set row's `resume`). Never a success: counted apart from failures, and
like them in success rates."""
AttemptStatus = Literal["succeeded", "failed", "timeout", "transient"]

WORKER_LOST = "WorkerLost"
"""`error_type` of a transient attempt whose worker died under it (actor, process or node
lost). Such attempts are retried elsewhere and do not use up the cell's retry budget."""
WORKER_STOPPED = "WorkerStopped"
"""`error_type` of a transient attempt whose worker was stopped because another cell
blocked it. Retried at once; it uses up no budget at all."""
NOT_THE_CELLS_FAULT = frozenset({WORKER_LOST, WORKER_STOPPED})


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    inputs: dict[str, Any]
    expected: dict[str, Any] | None = None
    invoke: dict[str, Any] | None = None
    """The row's `invoke` block as JSON (camelCase, validated by `wtb.dataset`)."""
    resume: tuple[Any, ...] | None = None
    """The human's scripted answers, in order: each interrupt() of the graph is resumed with
    the next one (`Command(resume=value)`, same checkpointer thread)."""


@dataclass(frozen=True, slots=True)
class Cell:
    """One unit of work: a combination run on a case, for one repeat."""

    key: str
    combo_key: str
    combination: Combination
    case_id: str
    repeat: int


MAX_NODES: Final = 64
"""Nodes whose figures a cell keeps: the slowest ones (a generated graph can have many)."""


class NodeFigures(TypedDict):
    """What one node of a cell's graph took in the cell's (last) attempt."""

    ms: float
    """Wall time of the node's runs, added up (a node in a loop runs several times)."""
    calls: int
    tokens: int | None
    """Tokens of the chat models and LLMs called inside the node; None when none reported."""


@dataclass(frozen=True, slots=True)
class Attempt:
    number: int
    status: AttemptStatus
    started_at: datetime
    duration_ms: float
    """From when the graph started (not when the attempt was queued) to its end."""
    error_type: str | None = None
    error_message: str | None = None
    root_run_id: str | None = None
    """The LangChain run id of the attempt's graph invocation (its root run in a trace);
    None when the attempt never reached the graph (its worker was lost)."""
    node: str | None = None
    """The node the attempt failed in, as `CellResult.nodes` names nodes ("parent/child" in
    a subgraph): the innermost node run whose error it was, or for a timeout the node it
    hung in. None when it succeeded, or failed outside every node."""
    traceback: str | None = None
    """The error's traceback, bounded (its end kept: the frames nearest the error) and
    printable; None when there was no exception (a success, a timeout, a lost worker)."""


@dataclass(frozen=True, slots=True)
class CellResult:
    cell: Cell
    status: CellStatus
    latency_ms: float
    finished_at: datetime
    output: dict[str, Any] | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    tokens: int | None = None
    cost: float | None = None
    error_type: str | None = None
    error_message: str | None = None
    evaluator_errors: dict[str, str] = field(default_factory=dict)
    """Per metric whose evaluator raised: 'ErrorClass: message' (that metric is None)."""
    attempts: tuple[Attempt, ...] = ()
    nodes: dict[str, NodeFigures] | None = None
    """Per node of the graph (subgraph nodes as "parent/child"), in the last attempt."""
    error_node: str | None = None
    """The node the last attempt failed in (`Attempt.node`), when the cell failed."""


@dataclass(frozen=True, slots=True)
class ComboAggregate:
    """Per combination, computed by the database."""

    combo_key: str
    combination: Combination
    runs: int
    succeeded: int
    tokens: int | None
    cost: float | None
    latency_p50: float | None
    latency_p95: float | None
    interrupted: int = 0
    """Cells stopped at an interrupt (neither succeeded nor counted among failures)."""
    evaluator_errors: dict[str, int] = field(default_factory=dict)
    """Per metric: cells whose value is missing because its evaluator raised."""


@dataclass(frozen=True, slots=True)
class CaseAggregate:
    """Per (combination, case), computed by the database; repeats are averaged here."""

    combo_key: str
    case_id: str
    runs: int
    succeeded: int
    metric_means: dict[str, float | None]
    outcome_varies: bool
    """True when repeats of this case disagree (status or primary metric)."""


@dataclass(frozen=True, slots=True)
class NodeAggregate:
    """One node of one combination, over its succeeded cells where the node ran."""

    cells: int
    ms_p50: float | None
    """Median of the node's time per cell (its runs in the cell added up)."""
    calls: float
    """Mean runs of the node per cell."""
    tokens: float | None
    """Mean tokens per cell, over the cells where the node reported tokens."""
