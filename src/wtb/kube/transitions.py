"""How each verdict of `wtb.kube.decide` changes a BatchTest's status, on a copy: phase,
message, times and conditions, in one place. The operator performs the verdict around these
(the write before a side effect where a name must be recorded first) and writes what they
computed; the unit tests read the same status the operator would write.
"""

from __future__ import annotations

from datetime import datetime

from wtb.api.batchtest import BatchTestStatus
from wtb.kube import conditions as cond
from wtb.kube.decide import (
    ClusterReady,
    CreateCluster,
    DeleteForTtl,
    MarkRunning,
    NewGeneration,
    RecordRun,
    Resubmit,
    Submission,
    Succeed,
    Validated,
    decide_outcome,
)
from wtb.kube.status import RunStatus
from wtb.kube.status_copy import StatusCopy
from wtb.kube.verdicts import Fail, SetCondition, Wait


class BatchTestStatusCopy(StatusCopy[BatchTestStatus]):
    """A BatchTest's status being computed by one reconcile step. Methods that set a
    condition an event may follow return whether it changed."""

    def apply(self, change: SetCondition, now: datetime) -> bool:
        return self.set_condition(
            change.type, change.status, change.reason, change.message, now=now
        )

    def fail(self, verdict: Fail, now: datetime) -> None:
        if verdict.condition is not None:
            self.apply(verdict.condition, now)
        self.status.phase = "Failed"
        self.status.message = verdict.message
        self.status.finished_at = cond.rfc3339(now)
        self.set_condition(cond.COMPLETE, "False", verdict.reason, verdict.message, now=now)
        self.set_condition(cond.FAILED, "True", verdict.reason, verdict.message, now=now)

    def wait(self, verdict: Wait, now: datetime) -> bool:
        changed = self.set_condition(
            verdict.condition, "False", verdict.reason, verdict.message, now=now
        )
        self.status.message = verdict.message
        return changed

    def restart(self, verdict: NewGeneration) -> None:
        """An empty status of the new generation: nothing of the old run carries over."""
        self.status = BatchTestStatus(phase="Pending", observed_generation=verdict.generation)

    def validated(self, verdict: Validated, now: datetime) -> bool:
        return self.set_condition(cond.VALIDATED, "True", "Valid", verdict.message, now=now)

    def recorded(self, verdict: RecordRun) -> None:
        self.status.run_id = verdict.run_key
        self.status.phase = "Provisioning"

    def cluster_named(self, name: str) -> bool:
        """Name the RayCluster the run uses; True when that is new (to write before anything
        is created under that name)."""
        if self.status.ray_cluster == name:
            return False
        self.status.ray_cluster = name
        return True

    def creating(self, verdict: CreateCluster, now: datetime) -> None:
        self.set_condition(
            cond.CLUSTER_READY, "False", "Provisioning", f"creating {verdict.name}", now=now
        )
        self.status.message = verdict.message

    def cluster_ready(self, verdict: ClusterReady, now: datetime) -> bool:
        return self.set_condition(
            cond.CLUSTER_READY, "True", "ClusterReady", verdict.message, now=now
        )

    def attempt(self, submission: Submission, now: datetime) -> None:
        """The attempt about to be submitted, named before it is."""
        self.status.job_attempts = submission.attempt
        self.status.submission_id = submission.submission_id
        self.set_condition(
            cond.JOB_SUBMITTED, "False", "Submitting", submission.submission_id, now=now
        )

    def submitted(self, submission_id: str, now: datetime) -> None:
        self.set_condition(cond.JOB_SUBMITTED, "True", "Submitted", submission_id, now=now)
        self.set_condition(cond.COMPLETE, "False", "Running", "", now=now)
        self.status.phase = "Running"
        self.status.started_at = self.status.started_at or cond.rfc3339(now)

    def submit_failed(self, error: str, now: datetime) -> bool:
        return self.set_condition(cond.JOB_SUBMITTED, "False", "SubmitFailed", error, now=now)

    def running(self, verdict: MarkRunning) -> None:
        self.status.phase = "Running"
        self.status.message = verdict.message

    def progress(self, run: RunStatus, now: datetime | None = None) -> None:
        """Counts, the matrix and the failure groups as the result store has them now;
        with `now`, also the conditions they decide (CellsFailed, BaselineFailed:
        `decide_outcome`)."""
        if now is not None:
            for change in decide_outcome(run):
                self.apply(change, now)
        self.status.total = run.total
        self.status.completed = run.completed
        self.status.failed = run.failed
        self.status.interrupted = run.interrupted
        self.status.progress = run.progress
        self.status.best = run.best
        self.status.score = run.score
        self.status.matrix = run.matrix
        self.status.failures = run.failures
        self.status.failure_groups_left_out = run.failure_groups_left_out

    def succeed(self, verdict: Succeed, now: datetime) -> None:
        self.status.phase = "Succeeded"
        self.status.finished_at = cond.rfc3339(now)
        self.status.message = verdict.message
        self.set_condition(cond.COMPLETE, "True", "Succeeded", verdict.message, now=now)
        self.set_condition(cond.FAILED, "False", "Succeeded", "", now=now)

    def resubmit(self, verdict: Resubmit, now: datetime) -> None:
        self.attempt(verdict.submission, now)
        self.status.message = verdict.message

    def cluster_deleted(self, verdict: DeleteForTtl, now: datetime) -> None:
        self.set_condition(cond.CLUSTER_READY, "False", "ClusterDeleted", verdict.message, now=now)
