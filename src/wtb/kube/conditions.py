"""Status conditions in the shape of metav1.Condition, merged by type: the transition time
moves only when the status flips."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

from wtb.api._base import Condition

# Condition types of a BatchTest.
VALIDATED = "Validated"
CLUSTER_READY = "ClusterReady"
JOB_SUBMITTED = "JobSubmitted"
COMPLETE = "Complete"
FAILED = "Failed"
CELLS_FAILED = "CellsFailed"
"""True when a recorded cell failed or was interrupted (a graph waiting for a human)."""
BASELINE_FAILED = "BaselineFailed"
"""True when the baseline ran cells and none succeeded: no comparison with it holds."""
# And of a Workflow.
READY = "Ready"

Reason = Literal[
    # Validated
    "Valid",
    "InvalidSpec",
    "WorkflowNotFound",
    "WorkflowMismatch",
    # ClusterReady
    "Provisioning",
    "ClusterReady",
    "ClusterNotFound",
    "ClusterTimeout",
    "ClusterDeleted",
    "PermissionDenied",
    # JobSubmitted
    "Submitting",
    "Submitted",
    "SubmitFailed",
    # Complete / Failed
    "Running",
    "Succeeded",
    "JobFailed",
    "BackoffLimitExceeded",
    "InvalidWorkflow",
    "DeadlineExceeded",
    # CellsFailed
    "CellsFailed",
    "NoCellFailed",
    # BaselineFailed
    "NoSuccessfulCell",
    "HasSuccessfulCells",
]
"""The closed set of reasons, CamelCase as Kubernetes wants them."""

Status = Literal["True", "False", "Unknown"]


_RFC3339 = "%Y-%m-%dT%H:%M:%SZ"


def rfc3339(when: datetime) -> str:
    """`when` as conditions and status write times (to the second, UTC)."""
    return when.astimezone(UTC).strftime(_RFC3339)


def now_rfc3339() -> str:
    return rfc3339(datetime.now(UTC))


def parse_rfc3339(text: str) -> datetime:
    """A time as conditions and status write it (`now_rfc3339`)."""
    return datetime.strptime(text, _RFC3339).replace(tzinfo=UTC)


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: Status,
    reason: Reason,
    message: str = "",
    *,
    generation: int | None = None,
    now: str | None = None,
) -> list[Condition]:
    """A copy of `conditions` with `type_` set in place (a new type goes last); its
    lastTransitionTime changes only when its status does. Setting a condition as it is
    gives an equal list, so status is not written again."""
    old = find(conditions, type_)
    moved = old is None or old.status != status
    new = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message[:1024],
        last_transition_time=(now or now_rfc3339())
        if moved or old is None
        else old.last_transition_time,
        observed_generation=generation,
    )
    if old is None:
        return [*conditions, new]
    return [new if c.type == type_ else c for c in conditions]


def find(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: Sequence[Condition], type_: str) -> bool:
    found = find(conditions, type_)
    return found is not None and found.status == "True"
