"""The stages of a BatchTest's life a step is in, and the decisions at either end: a new
generation, validation and the record of the run, and after the run (its TTL)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, ClassVar

from wtb.api.batchtest import BatchTest, BatchTestStatus
from wtb.api.workflow import Workflow
from wtb.kube import conditions as cond
from wtb.kube.checks import (
    Checked,
    SpecInvalid,
    Valid,
    WorkflowInvalid,
    WorkflowMismatch,
    WorkflowNotFound,
)
from wtb.kube.names import raycluster_name
from wtb.kube.observed import ClusterView
from wtb.kube.verdicts import Event, Fail, SetCondition, Wait
from wtb.runs.keys import generation_run_key

TERMINAL = ("Succeeded", "Failed")


class Stage(Enum):
    NEW_GENERATION = "new generation"
    """The spec changed (or the object is new): start over."""
    FINISHED = "finished"
    """Succeeded or Failed: only a TTL may still have something to do."""
    UNRECORDED = "unrecorded"
    """Validate, then record the run."""
    RECORDED = "recorded"
    """The run as recorded: its RayCluster, then its Ray job."""


def stage_of(status: BatchTestStatus, generation: int) -> Stage:
    if status.observed_generation != generation:
        return Stage.NEW_GENERATION
    if status.phase in TERMINAL:
        return Stage.FINISHED
    if status.run_id is None:
        return Stage.UNRECORDED
    return Stage.RECORDED


# --- a new generation ---------------------------------------------------------------------


@dataclass(frozen=True)
class StopJob:
    cluster: str
    submission_id: str


def job_to_stop(status: BatchTestStatus) -> StopJob | None:
    """The Ray job a status names that may still run: submitted, on a known cluster, and the
    run not finished. A new generation stops it, and so does deleting a BatchTest whose
    cluster is shared (one WTB created goes with the BatchTest, and the job with it)."""
    if not status.submission_id or not status.ray_cluster or status.phase in TERMINAL:
        return None
    return StopJob(status.ray_cluster, status.submission_id)


@dataclass(frozen=True)
class NewGeneration:
    """Start over with an empty status of this generation: a new run, on purpose."""

    generation: int
    first: bool
    stop: StopJob | None

    @property
    def event(self) -> Event:
        if self.first:
            return Event("Accepted", f"generation {self.generation}: accepted")
        return Event("NewGeneration", f"spec changed (generation {self.generation}): a new run")


def new_generation(before: BatchTestStatus, generation: int) -> NewGeneration:
    return NewGeneration(
        generation=generation,
        first=before.observed_generation is None,
        stop=job_to_stop(before),
    )


# --- validation and the record ------------------------------------------------------------


@dataclass(frozen=True)
class Validated:
    batch: BatchTest
    workflow: Workflow

    message: ClassVar[str] = "spec and references are valid"

    @property
    def event(self) -> Event:
        return Event("Validated", f"valid; runs Workflow {self.batch.spec.workflow_ref.name!r}")


def decide_validation(checked: Checked) -> Fail | Wait | Validated:
    """A wrong spec fails at once (only an edit mends it, and that is a new generation); a
    Workflow that is missing, wrong, or does not fit is waited for (it may be applied or
    edited later)."""
    match checked:
        case SpecInvalid(message):
            return Fail(
                "InvalidSpec",
                message,
                SetCondition(cond.VALIDATED, "False", "InvalidSpec", message),
            )
        case WorkflowNotFound():
            return Wait(cond.VALIDATED, "WorkflowNotFound", checked.message)
        case WorkflowInvalid() | WorkflowMismatch():
            return Wait(cond.VALIDATED, "WorkflowMismatch", checked.message)
        case Valid(batch, workflow):
            return Validated(batch, workflow)


@dataclass(frozen=True)
class RecordRun:
    """Record the run under `run_key` (idempotent), then name it in status."""

    run_key: str
    batch: BatchTest
    workflow: Workflow


def run_to_record(valid: Validated, *, uid: str, generation: int) -> RecordRun:
    """One run per generation of one object: the key says which, and so does the BatchTest
    it records (its uid and generation)."""
    meta = valid.batch.metadata
    return RecordRun(
        run_key=generation_run_key(meta.namespace, meta.name, uid, generation),
        batch=valid.batch.model_copy(
            update={"metadata": meta.model_copy(update={"uid": uid, "generation": generation})}
        ),
        workflow=valid.workflow,
    )


# --- after the run ------------------------------------------------------------------------


def _cluster_deleted(status: BatchTestStatus) -> bool:
    found = cond.find(status.conditions, cond.CLUSTER_READY)
    return found is not None and found.reason == "ClusterDeleted"


def ttl_pending(spec: Mapping[str, Any], status: BatchTestStatus) -> int | None:
    """ttlSecondsAfterFinished while it still has a RayCluster to delete; None when it has
    none: no TTL, a shared cluster (not WTB's to delete), or deleted already. Read from the
    raw spec: a run that failed for an invalid spec has a TTL too."""
    ttl = spec.get("ttlSecondsAfterFinished")
    if ttl is None or (spec.get("ray") or {}).get("clusterName") or _cluster_deleted(status):
        return None
    return int(ttl)


@dataclass(frozen=True)
class DeleteForTtl:
    """Delete the RayCluster (if it is this object's) and say it is deleted, once."""

    cluster: str
    ttl: int

    def deletes(self, cluster: ClusterView | None, uid: str) -> bool:
        """A cluster gone already, or someone else's, is not deleted; either way the
        condition says so and the TTL is done."""
        return cluster is not None and cluster.owned_by(uid)

    @property
    def message(self) -> str:
        return f"RayCluster {self.cluster} deleted"

    @property
    def event(self) -> Event:
        return Event(
            "DeletedRayCluster",
            f"deleted RayCluster {self.cluster} (ttlSecondsAfterFinished {self.ttl})",
        )


def decide_ttl(
    spec: Mapping[str, Any], status: BatchTestStatus, *, name: str, now: datetime
) -> DeleteForTtl | None:
    """Whether a finished run's TTL is due. `name` is the BatchTest's."""
    ttl = ttl_pending(spec, status)
    if ttl is None or status.finished_at is None:
        return None
    if (now - cond.parse_rfc3339(status.finished_at)).total_seconds() < ttl:
        return None
    return DeleteForTtl(status.ray_cluster or raycluster_name(name), ttl)


def needs_reconcile(
    status: BatchTestStatus, generation: int | None, spec: Mapping[str, Any]
) -> bool:
    """Finished objects of the current generation need nothing more, unless a TTL will
    delete their RayCluster: a restarted operator does not look at them again."""
    if status.observed_generation != generation:
        return True
    if status.phase not in TERMINAL:
        return True
    return ttl_pending(spec, status) is not None
