"""BatchTest handlers: one reconcile step per tick, from what status, the cluster, Ray and the
result store say now (level-triggered, so an operator restart resumes where things are).

Each stage of a step observes (the Workflow, the RayCluster, the Ray job, the stored run),
asks `wtb.kube.decide` what that means, and performs the verdict: status computed on a copy
(`wtb.kube.transitions`), written when it differs, then the event. Every name a step
creates (run key, RayCluster, Ray submission id) is written to status before the side
effect, so a retried step finds what it made instead of making a second one.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import kopf
import urllib3
from kubernetes.client.exceptions import ApiException

from wtb.api._base import GROUP, VERSION
from wtb.api.batchtest import BatchTest, BatchTestStatus
from wtb.api.workflow import Workflow
from wtb.errors import StorageError
from wtb.kube import conditions as cond
from wtb.kube.checks import check_batchtest
from wtb.kube.decide import (
    ClusterReady,
    CreateCluster,
    DeleteForTtl,
    Finish,
    JobFailed,
    MarkRunning,
    NewGeneration,
    ReplaceCluster,
    Resubmit,
    Stage,
    StopJob,
    Submission,
    Submit,
    Succeed,
    Validated,
    cluster_name_for,
    cluster_refused,
    decide_cluster,
    decide_deadline,
    decide_failed_job,
    decide_finish,
    decide_job,
    decide_ttl,
    decide_validation,
    driver_entrypoint,
    found_submitted,
    job_metadata,
    job_to_stop,
    needs_reconcile,
    new_generation,
    run_to_record,
    stage_of,
    submission_of,
)
from wtb.kube.observed import ClusterView, JobApiDown, JobSeen, recorded_workflow
from wtb.kube.raycluster import DatabaseSecret
from wtb.kube.rayjobs import RayJobClient, RayJobError
from wtb.kube.semantics import parse_batchtest
from wtb.kube.status import RunStatus, run_status
from wtb.kube.status_copy import read_status
from wtb.kube.transitions import BatchTestStatusCopy
from wtb.kube.verdicts import Event, Fail, Note, Wait
from wtb.runs.record import record_unplanned_run
from wtb.settings import get_settings
from wtb.storage.records import RunRecord
from wtb_operator.context import OperatorContext
from wtb_operator.kubeapi import Conflict, Forbidden, Invalid, api_trouble

log = logging.getLogger("wtb.operator.batchtest")


def _needs_reconcile(body: kopf.Body, spec: kopf.Spec, **_: Any) -> bool:
    return needs_reconcile(
        read_status(body, BatchTestStatus), body["metadata"].get("generation"), spec
    )


@kopf.timer(
    GROUP,
    VERSION,
    "batchtests",
    interval=get_settings().reconcile_seconds,
    when=_needs_reconcile,
)
def reconcile(body: kopf.Body, memo: Any, retry: int = 0, **_: Any) -> None:
    ctx: OperatorContext = memo.ctx
    step = Reconcile(ctx, body)
    try:
        try:
            step.run()
        except Conflict:
            log.debug("BatchTest %s: changed while being looked at; next time", step.ident)
        except Forbidden as exc:
            log.error("BatchTest %s: %s", step.ident, exc)
            with contextlib.suppress(Conflict):
                step.fail_soft(Wait(cond.CLUSTER_READY, "PermissionDenied", str(exc)))
        except StorageError as exc:
            log.warning("BatchTest %s: result store unavailable: %s", step.ident, exc)
            with contextlib.suppress(Conflict):
                step.note(
                    Note("the result store is unavailable (the operator's log has the error)")
                )
    except (ApiException, urllib3.exceptions.HTTPError) as exc:
        _retry_soon(exc, step.ident, ctx.settings.reconcile_seconds, retry)
        raise


def _retry_soon(exc: BaseException, ident: str, interval: float, retry: int) -> None:
    """An overloaded (429) or unreachable (5xx, refused) API server: the step is tried again
    after a short backoff, not after Kopf's default minute for an unexpected error. Returns
    for any other error (which the caller re-raises)."""
    trouble = api_trouble(exc, interval=interval, retry=retry)
    if trouble is None:
        return
    log.warning("BatchTest %s: %s; trying again in %.1f s", ident, trouble.message, trouble.delay)
    raise kopf.TemporaryError(trouble.message, delay=trouble.delay) from exc


@kopf.on.delete(
    GROUP,
    VERSION,
    "batchtests",
    timeout=120,  # a shared cluster whose job API stays down must not block the deletion
    when=lambda spec, **_: bool((spec.get("ray") or {}).get("clusterName")),
)
def stop_on_shared_cluster(body: kopf.Body, memo: Any, retry: int = 0, **_: Any) -> None:
    """A job on a shared cluster outlives its BatchTest unless stopped; a RayCluster WTB
    created goes with the BatchTest (garbage collection), and its job with it."""
    ctx: OperatorContext = memo.ctx
    meta = body["metadata"]
    ctx.forget(meta["uid"])
    stop = job_to_stop(read_status(body, BatchTestStatus))
    try:
        url = _dashboard(ctx, meta["namespace"], stop.cluster) if stop else None
    except (ApiException, urllib3.exceptions.HTTPError) as exc:
        _retry_soon(
            exc, f"{meta['namespace']}/{meta['name']}", ctx.settings.reconcile_seconds, retry
        )
        raise
    if stop is None or url is None:
        return
    try:
        stopped = RayJobClient(url).stop(stop.submission_id)
    except RayJobError as exc:
        raise kopf.TemporaryError(
            f"cannot stop Ray job {stop.submission_id}: {exc}", delay=5
        ) from exc
    if stopped:
        kopf.info(body, reason="StoppedJob", message=f"stopped Ray job {stop.submission_id}")


def _dashboard(ctx: OperatorContext, namespace: str, cluster: str) -> str | None:
    """The job API of a RayCluster, when it has one (and the cluster is there)."""
    rc = ctx.kube.get_raycluster(namespace, cluster)
    return ClusterView.of(rc).dashboard_url if rc else None


def _now() -> datetime:
    return datetime.now(UTC)


class Reconcile:
    """One reconcile step of one BatchTest: observe, decide (`wtb.kube.decide`), act."""

    def __init__(self, ctx: OperatorContext, body: kopf.Body) -> None:
        self.ctx = ctx
        self.kopf_body = body
        self.body: dict[str, Any] = dict(body)
        meta = body["metadata"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.generation: int = int(meta.get("generation") or 1)
        self.resource_version: str | None = meta.get("resourceVersion")
        self.ident = f"{self.namespace}/{self.name}"
        self.copy = BatchTestStatusCopy(
            read_status(body, BatchTestStatus), generation=self.generation
        )

    @property
    def status(self) -> BatchTestStatus:
        return self.copy.status

    # -- acting -------------------------------------------------------------------------

    def write(self) -> None:
        """Patch status with what changed since the last write (nothing when equal), only
        if the object is still as this step read it: a step that started from an outdated
        copy (Kopf's view lags a write by a moment) stops instead of undoing newer work."""
        patch = self.copy.patch()
        if patch:
            self.resource_version = self.ctx.kube.patch_status(
                "batchtests",
                self.namespace,
                self.name,
                patch,
                resource_version=self.resource_version,
            )
            self.copy.mark_written()

    def post(self, event: Event) -> None:
        (kopf.warn if event.warning else kopf.info)(
            self.kopf_body, reason=event.reason, message=event.message
        )
        (log.warning if event.warning else log.info)(
            "BatchTest %s: %s: %s", self.ident, event.reason, event.message
        )

    def note(self, verdict: Note) -> None:
        self.status.message = verdict.message
        self.write()

    def fail(self, verdict: Fail) -> None:
        self.copy.fail(verdict, _now())
        self.write()
        self.post(verdict.event)

    def wait(self, verdict: Wait) -> None:
        changed = self.copy.wait(verdict, _now())
        self.write()
        if changed and verdict.warn:
            self.post(verdict.event)

    def fail_soft(self, verdict: Wait) -> None:
        """A problem that may go away (a permission granted later): said, not terminal."""
        changed = self.copy.wait(verdict, _now())
        try:
            self.write()
        except Forbidden:
            log.error("BatchTest %s: cannot write status either: %s", self.ident, verdict.message)
        if changed:
            self.post(verdict.event)

    # -- the stages ---------------------------------------------------------------------

    def run(self) -> None:
        match stage_of(self.status, self.generation):
            case Stage.NEW_GENERATION:
                self.new_generation(new_generation(self.copy.before, self.generation))
                return
            case Stage.FINISHED:
                self.after_finish()
                return
            case Stage.UNRECORDED:
                valid = self.validate()
                if valid is None:
                    return
                self.record_run(valid)
                batch, workflow = valid.batch, valid.workflow
            case Stage.RECORDED:
                if self.past_deadline():
                    return
                batch, workflow = self.recorded()
        dashboard = self.cluster(batch, workflow)
        if dashboard is None:
            return
        self.job(batch, dashboard)

    def new_generation(self, verdict: NewGeneration) -> None:
        if verdict.stop is not None:
            self.stop_job(verdict.stop)
        self.copy.restart(verdict)
        self.write()
        self.ctx.forget(self.uid)
        self.post(verdict.event)

    def past_deadline(self) -> bool:
        """spec.activeDeadlineSeconds: a run past it has its job stopped and fails."""
        deadline = (self.body.get("spec") or {}).get("activeDeadlineSeconds")
        if decide_deadline(deadline, self.status, now=_now()) is None:
            return False
        self.progress(self.stored_run())  # the counts the failure reports
        verdict = decide_deadline(deadline, self.status, now=_now())
        if verdict is None:  # finished meanwhile
            return False
        if verdict.stop is not None and not self.stop_job(
            verdict.stop, why="past spec.activeDeadlineSeconds"
        ):
            self.post(
                Event(
                    "StopJobFailed",
                    f"could not stop Ray job {verdict.stop.submission_id} past the deadline "
                    "(the operator's log says why); it may run on",
                    warning=True,
                )
            )
        self.fail(verdict.fail)
        return True

    def stop_job(self, stop: StopJob, *, why: str = "of an earlier generation") -> bool:
        """Stop the job; False when the job API refused or did not answer."""
        url = _dashboard(self.ctx, self.namespace, stop.cluster)
        if url is None:
            return True
        job = stop.submission_id
        try:
            if RayJobClient(url).stop(job):
                self.post(Event("StoppedJob", f"stopped Ray job {job} {why}"))
        except RayJobError as exc:
            log.warning("BatchTest %s: cannot stop Ray job %s: %s", self.ident, job, exc)
            return False
        return True

    def validate(self) -> Validated | None:
        checked = check_batchtest(self.body, self.ctx.kube.get_workflow)
        verdict = decide_validation(checked)
        match verdict:
            case Fail():
                self.fail(verdict)
                return None
            case Wait():
                self.wait(verdict)
                return None
            case Validated():
                if self.copy.validated(verdict, _now()):
                    self.write()
                    self.post(verdict.event)
                return verdict

    def record_run(self, valid: Validated) -> None:
        verdict = run_to_record(valid, uid=self.uid, generation=self.generation)
        record_unplanned_run(
            self.ctx.store, verdict.batch, verdict.workflow, run_key=verdict.run_key
        )
        self.copy.recorded(verdict)
        self.write()

    def recorded(self) -> tuple[BatchTest, Workflow]:
        """The BatchTest, and the Workflow as the run recorded it."""
        run = self.stored_run()
        batch = parse_batchtest(self.body)
        return batch, recorded_workflow(batch, run)

    def stored_run(self) -> RunRecord:
        run = self.ctx.store.get_run(self.status.run_id or "")
        if run is None:
            raise StorageError(f"run {self.status.run_id!r} is not in the result store")
        return run

    def cluster(self, batch: BatchTest, workflow: Workflow) -> str | None:
        """The dashboard URL of a ready RayCluster; None while waiting."""
        name = cluster_name_for(batch)
        if self.copy.cluster_named(name):
            self.write()
        rc = self.ctx.kube.get_raycluster(self.namespace, name)
        settings = self.ctx.settings
        verdict = decide_cluster(
            batch,
            uid=self.uid,
            image=workflow.spec.image,
            secret=DatabaseSecret(
                settings.cluster_database_secret, settings.cluster_database_secret_key
            ),
            cluster=ClusterView.of(rc) if rc is not None else None,
            status=self.status,
            default_timeout_seconds=settings.cluster_ready_timeout_seconds,
            now=_now(),
        )
        match verdict:
            case Fail():
                self.fail(verdict)
            case Wait():
                self.wait(verdict)
            case CreateCluster():
                self.create_cluster(verdict)
            case ReplaceCluster(name):
                self.ctx.kube.delete_raycluster(self.namespace, name)
                self.post(verdict.event)
            case ClusterReady():
                if self.copy.cluster_ready(verdict, _now()):
                    self.write()
                    self.post(verdict.event)
                return verdict.dashboard_url
        return None

    def create_cluster(self, verdict: CreateCluster) -> None:
        self.copy.creating(verdict, _now())
        self.write()
        try:
            created = self.ctx.kube.create_raycluster(self.namespace, verdict.body)
        except Invalid as exc:
            self.fail(cluster_refused(str(exc)))
            return
        if created:
            self.post(verdict.event)

    def job(self, batch: BatchTest, dashboard: str) -> None:
        jobs = RayJobClient(dashboard)
        submission = submission_of(self.status, uid=self.uid, generation=self.generation)
        if not submission.recorded:
            self.copy.attempt(submission, _now())
            self.write()  # recorded before the side effect
        verdict = decide_job(submission, self.status, self.job_info(jobs, submission))
        if isinstance(verdict, MarkRunning | Finish | JobFailed) and verdict.mark_submitted:
            # Submitted by an earlier step that stopped before saying so: said now.
            self.copy.submitted(submission.submission_id, _now())
            self.write()
            self.post(found_submitted(submission))
        match verdict:
            case Note():
                self.note(verdict)
            case Submit():
                self.submit(batch, jobs, verdict)
            case MarkRunning():
                self.copy.running(verdict)
                if self.ctx.progress_due(self.uid, time.monotonic()):
                    self.progress(self.stored_run())
                self.write()
            case Finish():
                run = self.stored_run()
                finished = decide_finish(self.progress(run))
                if isinstance(finished, Succeed):
                    self.succeed(finished)
                else:
                    self.job_failed(batch, finished, run)
            case JobFailed():
                run = self.stored_run()
                self.progress(run)
                self.job_failed(batch, verdict, run)

    def job_info(self, jobs: RayJobClient, submission: Submission) -> JobSeen:
        try:
            return jobs.info(submission.submission_id)
        except RayJobError as exc:
            return JobApiDown(str(exc))

    def submit(self, batch: BatchTest, jobs: RayJobClient, verdict: Submit) -> None:
        sid = verdict.submission.submission_id
        try:
            jobs.submit(
                sid,
                driver_entrypoint(self.status.run_id or "", batch),
                metadata=job_metadata(batch, self.generation),
                env=self.ctx.settings.limits_env() or None,
            )
        except RayJobError as exc:
            if self.copy.submit_failed(str(exc), _now()):
                self.post(Event("FailedToSubmitJob", str(exc), warning=True))
            self.note(Note(f"submitting Ray job {sid}: {exc}"))
            return
        self.copy.submitted(sid, _now())
        self.status.message = verdict.message
        self.write()
        self.post(verdict.event)

    def progress(self, run: RunRecord) -> RunStatus:
        """Counts and matrix of `run` from the result store, into status."""
        now = run_status(self.ctx.store, run, max_rows=self.ctx.settings.status_top_rows)
        self.copy.progress(now, _now())
        return now

    def succeed(self, verdict: Succeed) -> None:
        self.copy.succeed(verdict, _now())
        self.write()
        self.post(verdict.event)

    def job_failed(self, batch: BatchTest, failed: JobFailed, run: RunRecord) -> None:
        verdict = decide_failed_job(
            failed,
            attempts=self.status.job_attempts,
            backoff_limit=batch.spec.backoff_limit,
            run_error=run.error,
            uid=self.uid,
            generation=self.generation,
        )
        if isinstance(verdict, Fail):
            self.fail(verdict)
            return
        self.resubmit(verdict)

    def resubmit(self, verdict: Resubmit) -> None:
        self.post(verdict.event)
        self.copy.resubmit(verdict, _now())
        self.write()  # the next attempt's submission id, before it is submitted

    def after_finish(self) -> None:
        """ttlSecondsAfterFinished: delete the RayCluster WTB created, once."""
        verdict = decide_ttl(self.body.get("spec") or {}, self.status, name=self.name, now=_now())
        if verdict is not None:
            self.delete_for_ttl(verdict)

    def delete_for_ttl(self, verdict: DeleteForTtl) -> None:
        rc = self.ctx.kube.get_raycluster(self.namespace, verdict.cluster)
        if verdict.deletes(ClusterView.of(rc) if rc is not None else None, self.uid):
            self.ctx.kube.delete_raycluster(self.namespace, verdict.cluster)
            self.post(verdict.event)
        self.copy.cluster_deleted(verdict, _now())
        self.write()
