"""A run's overall deadline (`spec.activeDeadlineSeconds`): a run that has not finished in
time fails with reason DeadlineExceeded and its Ray job is stopped. As a Kubernetes Job's,
the clock starts when the run starts running (its first Ray job submitted, `startedAt`);
the wait for a RayCluster before that has its own bound (`ray.readyTimeoutSeconds`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from wtb.api.batchtest import BatchTestStatus
from wtb.kube import conditions as cond
from wtb.kube.decide._stages import TERMINAL, StopJob, job_to_stop
from wtb.kube.verdicts import Fail


@dataclass(frozen=True)
class DeadlineExceeded:
    """Stop the run's Ray job (when one may still run), then fail the BatchTest."""

    fail: Fail
    stop: StopJob | None


def decide_deadline(
    deadline_seconds: int | None, status: BatchTestStatus, *, now: datetime
) -> DeadlineExceeded | None:
    """Whether the run is past `spec.activeDeadlineSeconds`; None while it has time left,
    has no deadline, has not started, or has finished."""
    if deadline_seconds is None or status.started_at is None or status.phase in TERMINAL:
        return None
    started = cond.parse_rfc3339(status.started_at)
    ran = (now - started).total_seconds()
    if ran < deadline_seconds:
        return None
    recorded = ""
    if status.total is not None:
        recorded = f"; {status.completed or 0} of {status.total} cells recorded (kept)"
    message = (
        f"the run did not finish within activeDeadlineSeconds ({deadline_seconds} s, "
        f"started {status.started_at}){recorded}; its Ray job is stopped. Fix: raise "
        "spec.activeDeadlineSeconds (a new generation starts a new run; recorded cells "
        "are reused)"
    )
    return DeadlineExceeded(Fail("DeadlineExceeded", message), job_to_stop(status))
