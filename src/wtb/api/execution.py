"""The Execution resource: one debuggable run of a workflow with a chosen variant set.

The models are defined now so the CRD is stable; the engine that walks an Execution
(checkpoints, breakpoints, suspend/resume, rollback and fork) builds on them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from wtb.api._base import Condition, ObjectMeta, SpecModel, StatusModel
from wtb.api.batchtest import WorkflowRef


class ForkSpec(SpecModel):
    checkpoint_id: str = Field(description="Checkpoint to fork from (see status.checkpoints).")
    state_update: dict[str, Any] | None = Field(
        default=None, description="Values written into the state before continuing."
    )


class ExecutionSpec(SpecModel):
    workflow_ref: WorkflowRef
    variants: dict[str, str] = Field(
        default_factory=dict, description="Per node, the variant to use (default `original`)."
    )
    inputs: dict[str, Any] = Field(description="The graph's input state.")
    breakpoints: list[str] = Field(default_factory=list, description="Node names to pause before.")
    suspend: bool = Field(default=False, description="Pause at the next node boundary.")
    state_update: dict[str, Any] | None = Field(
        default=None, description="Applied to the state when resuming."
    )
    rollback_to: str | None = Field(
        default=None, description="Checkpoint id to move the head back to (history is kept)."
    )
    fork: ForkSpec | None = None
    timeout_seconds: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _rollback_or_fork(self) -> ExecutionSpec:
        if self.rollback_to is not None and self.fork is not None:
            raise ValueError("give `rollbackTo` or `fork`, not both")
        return self


class CheckpointRef(StatusModel):
    id: str
    node: str | None = None
    step: int
    created_at: str


class ExecutionStatus(StatusModel):
    phase: (
        Literal["Pending", "Running", "Paused", "Suspended", "Succeeded", "Failed", "Cancelled"]
        | None
    ) = None
    observed_generation: int | None = None
    current_node: str | None = None
    head_checkpoint: str | None = None
    checkpoints: list[CheckpointRef] = Field(
        default_factory=list,
        description="The most recent checkpoints (full history in the database).",
    )
    output: dict[str, Any] | None = None
    error: str | None = None
    conditions: list[Condition] = Field(default_factory=list)


class Execution(SpecModel):
    """One debuggable run of a workflow with a chosen variant set, checkpointed at every node."""

    api_version: Literal["wtb.dev/v1alpha1"] = "wtb.dev/v1alpha1"
    kind: Literal["Execution"] = "Execution"
    metadata: ObjectMeta
    spec: ExecutionSpec
    status: ExecutionStatus | None = None
