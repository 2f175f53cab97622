"""The Ray job of a recorded run on a ready cluster: submit it, follow it, finish, or
submit it again (KubeRay's backoff-limit guard)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from wtb.api.batchtest import BatchTest, BatchTestStatus
from wtb.errors import ExitCode
from wtb.kube import conditions as cond
from wtb.kube.names import LABEL_BATCHTEST, LABEL_GENERATION, submission_id
from wtb.kube.observed import JobApiDown, JobSeen
from wtb.kube.status import RunStatus
from wtb.kube.verdicts import Event, Fail, Note, SetCondition


@dataclass(frozen=True)
class Submission:
    """One attempt's Ray submission id. `recorded` False: it is the first, not yet in status,
    and is written there before anything is submitted."""

    attempt: int
    submission_id: str
    recorded: bool = True


def submission_of(status: BatchTestStatus, *, uid: str, generation: int) -> Submission:
    """The attempt whose job this step looks at."""
    if status.submission_id is None:
        return Submission(1, submission_id(uid, generation, 1), recorded=False)
    return Submission(status.job_attempts or 1, status.submission_id)


@dataclass(frozen=True)
class Submit:
    submission: Submission

    @property
    def message(self) -> str:
        return f"Ray job {self.submission.submission_id} submitted"

    @property
    def event(self) -> Event:
        sub = self.submission
        return Event(
            "SubmittedJob", f"submitted Ray job {sub.submission_id} (attempt {sub.attempt})"
        )


def found_submitted(submission: Submission) -> Event:
    """The event of a job an earlier step submitted but stopped before saying so (its status
    write refused, the submit call timed out after Ray took the job): told when found."""
    return Event(
        "SubmittedJob",
        f"Ray job {submission.submission_id} (attempt {submission.attempt}) was submitted",
    )


@dataclass(frozen=True)
class MarkRunning:
    """The job runs: phase Running, progress at a bounded rate. `mark_submitted`: it was
    submitted by an earlier step that stopped before saying so."""

    submission_id: str
    job_status: str
    mark_submitted: bool = False

    @property
    def message(self) -> str:
        return f"Ray job {self.submission_id} {self.job_status.lower()}"


@dataclass(frozen=True)
class Finish:
    """The job succeeded: read the final progress (`decide_finish`)."""

    mark_submitted: bool = False


@dataclass(frozen=True)
class JobFailed:
    """The job failed, stopped or was lost: read the final progress, then
    `decide_failed_job`. `exit_code` is the driver's, when Ray knows it."""

    message: str
    exit_code: int | None = None
    mark_submitted: bool = False


JobVerdict = Note | Submit | MarkRunning | Finish | JobFailed


def _first_line(message: str) -> str:
    """Ray's message without the driver's log tail it appends (user output has no place in
    status: `ray job logs` shows it)."""
    return message.split("\n", 1)[0].split(", last available logs", 1)[0][:300]


def decide_job(submission: Submission, status: BatchTestStatus, job: JobSeen) -> JobVerdict:
    """What the job API's answer about `submission` means. Whether it was submitted is the
    JobSubmitted condition: a job unknown before that is submitted; unknown after it, lost
    (a head that restarted forgets its jobs)."""
    sid = submission.submission_id
    submitted = cond.is_true(status.conditions, cond.JOB_SUBMITTED)
    if isinstance(job, JobApiDown):
        return Note(f"Ray job API: {job.error}")
    if job is None:
        if not submitted:
            return Submit(submission)
        return JobFailed(f"the Ray cluster no longer knows job {sid}")
    mark = not submitted
    if job.status == "SUCCEEDED":
        return Finish(mark_submitted=mark)
    if job.finished:
        return JobFailed(
            f"Ray job {sid} {job.status}: {_first_line(job.message)}",
            job.driver_exit_code,
            mark_submitted=mark,
        )
    return MarkRunning(sid, job.status, mark_submitted=mark)


@dataclass(frozen=True)
class Succeed:
    message: str
    event: Event


def decide_finish(progress: RunStatus) -> Succeed | JobFailed:
    """A job that succeeded without every cell recorded has failed (it is submitted again,
    and recorded cells are not run again)."""
    if not progress.all_recorded:
        return JobFailed("the Ray job succeeded but cells are missing")
    failed = progress.failed + progress.interrupted
    return Succeed(
        message=f"{progress.completed} cells recorded"
        + (f", {failed} of them failed or interrupted" if failed else ""),
        event=Event(
            "Succeeded",
            f"{progress.progress} cells; best: {progress.best} ({progress.score})"
            + (f"; {failed} failed or interrupted" if failed else ""),
        ),
    )


def decide_outcome(progress: RunStatus) -> tuple[SetCondition, ...]:
    """What the recorded cells say, as conditions a CI can wait on: CellsFailed (cells
    failed or were interrupted; the counts in the message) and BaselineFailed (the
    baseline ran cells and none succeeded). A run not yet planned, or with nothing
    recorded, says nothing; BaselineFailed waits for the baseline's first cell. Neither
    changes the phase: a complete run has Succeeded, whatever its cells did."""
    if progress.total is None or not progress.completed:
        return ()
    changes = []
    not_succeeded = progress.failed + progress.interrupted
    if not_succeeded:
        message = f"{progress.failed} of {progress.total} cells failed"
        if progress.interrupted:
            message += f", {progress.interrupted} interrupted (waiting for a human)"
        changes.append(SetCondition(cond.CELLS_FAILED, "True", "CellsFailed", message))
    else:
        changes.append(
            SetCondition(
                cond.CELLS_FAILED,
                "False",
                "NoCellFailed",
                f"{progress.completed} of {progress.total} cells recorded, none failed",
            )
        )
    matrix = progress.matrix
    base = next((row for row in matrix.rows if row.baseline), None) if matrix else None
    if base is not None and base.runs:
        if base.succeeded:
            changes.append(
                SetCondition(
                    cond.BASELINE_FAILED,
                    "False",
                    "HasSuccessfulCells",
                    f"baseline {base.label}: {base.succeeded} of {base.runs} cells succeeded",
                )
            )
        else:
            warning = matrix.warnings[0] if matrix and matrix.warnings else ""
            changes.append(
                SetCondition(
                    cond.BASELINE_FAILED,
                    "True",
                    "NoSuccessfulCell",
                    warning or f"baseline {base.label}: none of {base.runs} cells succeeded",
                )
            )
    return tuple(changes)


@dataclass(frozen=True)
class Resubmit:
    """Submit again as the next attempt; its submission id is written to status first."""

    submission: Submission
    message: str

    @property
    def event(self) -> Event:
        return Event(
            "JobFailed",
            f"{self.message}; submitting again (attempt {self.submission.attempt})",
            warning=True,
        )


def decide_failed_job(
    failed: JobFailed,
    *,
    attempts: int | None,
    backoff_limit: int,
    run_error: str | None,
    uid: str,
    generation: int,
) -> Fail | Resubmit:
    """A driver that exits with ExitCode.USAGE named a mistake in the workflow or data set
    (the run's recorded error says which): no retry mends it. Anything else is submitted
    again until `backoff_limit` more attempts have failed."""
    if failed.exit_code == ExitCode.USAGE:
        detail = (run_error or failed.message).replace("\n  fix:", " (fix:")
        return Fail("InvalidWorkflow", detail + (")" if "(fix:" in detail else ""))
    attempts = attempts or 1
    if attempts > backoff_limit:
        return Fail(
            "BackoffLimitExceeded",
            f"{failed.message}; {attempts} attempt(s), backoffLimit {backoff_limit}",
        )
    return Resubmit(
        Submission(attempts + 1, submission_id(uid, generation, attempts + 1)), failed.message
    )


def driver_entrypoint(run_key: str, batch: BatchTest) -> str:
    """The batch driver's command line, run by Ray in the workflow's image."""
    argv = ["python", "-m", "wtb.driver", "--run", run_key]
    if batch.spec.ray.actors:
        argv += ["--actors", str(batch.spec.ray.actors)]
    return shlex.join(argv)


def job_metadata(batch: BatchTest, generation: int) -> dict[str, str]:
    """What the Ray job says of where it comes from (`ray job list` shows it)."""
    meta = batch.metadata
    return {LABEL_BATCHTEST: f"{meta.namespace}/{meta.name}", LABEL_GENERATION: str(generation)}
