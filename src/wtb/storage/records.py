"""What the result store takes and gives back about runs and cells (plain frozen data)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from wtb.domain import CellStatus, Combination, NodeFigures

RunStatus = Literal["pending", "running", "succeeded", "failed"]
FinalStatus = Literal["succeeded", "failed"]


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What a runner knows about a run before it starts: enough to get or create it."""

    run_key: str
    """Deterministic per BatchTest generation and spec: the same batch finds the same run."""
    namespace: str
    name: str
    spec_digest: str
    spec: dict[str, Any]
    total_cells: int
    uid: str | None = None
    generation: int | None = None
    workflow_id: int | None = None
    code_fingerprint: str | None = None
    """The fingerprint of the code the run is planned with (None: not planned yet)."""

    def with_workflow(self, workflow_id: int) -> RunInfo:
        return replace(self, workflow_id=workflow_id)


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: int
    run_key: str
    namespace: str
    name: str
    uid: str | None
    generation: int | None
    spec_digest: str
    spec: dict[str, Any]
    workflow_id: int | None
    status: RunStatus
    total_cells: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    created: bool = False
    """True only for the begin_run call that inserted the row."""
    code_fingerprint: str | None = None
    """The fingerprint of the code the run was planned with (None: not planned yet)."""


@dataclass(frozen=True, slots=True)
class RunProgress:
    total: int
    done: int
    succeeded: int
    failed: int
    interrupted: int = 0
    """Cells stopped at an interrupt: done, neither succeeded nor failed."""


@dataclass(frozen=True, slots=True)
class StoredCell:
    """A recorded cell as the database keeps it."""

    run_id: int
    cell_key: str
    combo_key: str
    combination: Combination
    case_id: str
    repeat: int
    status: CellStatus
    output: dict[str, Any] | None
    metrics: dict[str, float | None]
    evaluator_errors: dict[str, str]
    latency_ms: float
    tokens: int | None
    cost: float | None
    error_type: str | None
    error_message: str | None
    attempts: int
    finished_at: datetime
    nodes: dict[str, NodeFigures] | None = None
    """Per node of the last attempt (see `wtb.domain.CellResult.nodes`)."""
    error_node: str | None = None
    """The node the last attempt failed in (see `wtb.domain.CellResult.error_node`)."""
    fingerprint: str | None = None
    """What determines the result (`wtb.runs.fingerprints`); None: never reused."""
    reused_from: int | None = None
    """The run the result was first recorded in, when this run reused it."""


@dataclass(frozen=True, slots=True)
class ReuseSource:
    """A recorded cell of an earlier run that a cell with the same fingerprint may reuse."""

    id: int
    run_id: int
    cell_key: str
    case_id: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class ReusedSpan:
    """How many of a run's cells were reused, and when the runs they were first recorded
    in were created."""

    cells: int
    first: datetime | None
    last: datetime | None
