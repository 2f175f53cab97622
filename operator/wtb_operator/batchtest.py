"""BatchTest handlers: one reconcile step per tick, from what status, the cluster, Ray and the
result store say now (level-triggered, so an operator restart resumes where things are).

Steps: validate → record the run → RayCluster ready → submit the batch driver as a Ray job
→ progress from the database → Succeeded or Failed. Every name a step creates (run key,
RayCluster, Ray submission id) is derived from the object and written to status before the
side effect, so a retried step finds what it made instead of making a second one.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import time
from datetime import UTC, datetime
from typing import Any

import kopf

from wtb.api._base import GROUP, VERSION
from wtb.api.batchtest import BatchTest, BatchTestStatus
from wtb.api.workflow import Workflow
from wtb.errors import ExitCode, ManifestErrors, StorageError
from wtb.kube import conditions as cond
from wtb.kube.names import raycluster_name, submission_id
from wtb.kube.raycluster import (
    DatabaseSecret,
    build_raycluster,
    cluster_state,
    owned_by,
    spec_hash,
)
from wtb.kube.rayjobs import RayJobClient, RayJobError
from wtb.kube.semantics import check_references, parse_batchtest, parse_workflow, summary
from wtb.kube.status import run_status
from wtb.runs.keys import generation_run_key
from wtb.runs.record import record_unplanned_run
from wtb.settings import get_settings
from wtb_operator.context import OperatorContext
from wtb_operator.kubeapi import Conflict, Forbidden, Invalid, status_patch

log = logging.getLogger("wtb.operator.batchtest")

TERMINAL = ("Succeeded", "Failed")


def _status_of(body: kopf.Body | dict[str, Any]) -> BatchTestStatus:
    raw = dict(body.get("status") or {})
    raw.pop("kopf", None)
    return BatchTestStatus.model_validate(raw)


def _dump(status: BatchTestStatus) -> dict[str, Any]:
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def _needs_reconcile(body: kopf.Body, spec: kopf.Spec, **_: Any) -> bool:
    """Finished objects of the current generation need nothing more, unless a TTL will
    delete their RayCluster."""
    status = _status_of(body)
    if status.observed_generation != body["metadata"].get("generation"):
        return True
    if status.phase not in TERMINAL:
        return True
    ray = spec.get("ray") or {}
    return (
        spec.get("ttlSecondsAfterFinished") is not None
        and not ray.get("clusterName")
        and not _cluster_deleted(status)
    )


def _first_line(message: str) -> str:
    """Ray's message without the driver's log tail it appends (user output has no place in
    status: `ray job logs` shows it)."""
    return message.split("\n", 1)[0].split(", last available logs", 1)[0][:300]


def _deleting(raycluster: dict[str, Any]) -> bool:
    return bool((raycluster.get("metadata") or {}).get("deletionTimestamp"))


def _owned_by_batchtest_named(raycluster: dict[str, Any], name: str) -> bool:
    refs = (raycluster.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("kind") == "BatchTest" and r.get("name") == name for r in refs)


def _cluster_deleted(status: BatchTestStatus) -> bool:
    found = cond.find(status.conditions, cond.CLUSTER_READY)
    return found is not None and found.reason == "ClusterDeleted"


@kopf.timer(
    GROUP,
    VERSION,
    "batchtests",
    interval=get_settings().reconcile_seconds,
    when=_needs_reconcile,
)
def reconcile(body: kopf.Body, memo: Any, **_: Any) -> None:
    ctx: OperatorContext = memo.ctx
    step = Reconcile(ctx, body)
    try:
        step.run()
    except Conflict:
        log.debug("BatchTest %s: changed while being looked at; next time", step.ident)
    except Forbidden as exc:
        log.error("BatchTest %s: %s", step.ident, exc)
        with contextlib.suppress(Conflict):
            step.fail_soft(cond.CLUSTER_READY, "PermissionDenied", str(exc))
    except StorageError as exc:
        log.warning("BatchTest %s: result store unavailable: %s", step.ident, exc)
        with contextlib.suppress(Conflict):
            step.note("the result store is unavailable (the operator's log has the error)")


@kopf.on.delete(
    GROUP,
    VERSION,
    "batchtests",
    timeout=120,  # a shared cluster whose job API stays down must not block the deletion
    when=lambda spec, **_: bool((spec.get("ray") or {}).get("clusterName")),
)
def stop_on_shared_cluster(body: kopf.Body, memo: Any, **_: Any) -> None:
    """A job on a shared cluster outlives its BatchTest unless stopped; a RayCluster WTB
    created goes with the BatchTest (garbage collection), and its job with it."""
    ctx: OperatorContext = memo.ctx
    status = _status_of(body)
    meta = body["metadata"]
    ctx.forget(meta["uid"])
    if not status.submission_id or not status.ray_cluster or status.phase in TERMINAL:
        return
    rc = ctx.kube.get_raycluster(meta["namespace"], status.ray_cluster)
    state = cluster_state(rc) if rc else None
    if state is None or state.dashboard_url is None:
        return
    try:
        stopped = RayJobClient(state.dashboard_url).stop(status.submission_id)
    except RayJobError as exc:
        raise kopf.TemporaryError(
            f"cannot stop Ray job {status.submission_id}: {exc}", delay=5
        ) from exc
    if stopped:
        kopf.info(body, reason="StoppedJob", message=f"stopped Ray job {status.submission_id}")


class Reconcile:
    """One reconcile step of one BatchTest: computes status on a copy, writes it when it
    differs, and posts an event for every transition."""

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
        self.before = _status_of(body)
        self.status = self.before.model_copy(deep=True)
        self._written = _dump(self.before)

    # -- writing ------------------------------------------------------------------------

    def write(self) -> None:
        """Patch status with what changed since the last write (nothing when equal), only
        if the object is still as this step read it: a step that started from an outdated
        copy (Kopf's view lags a write by a moment) stops instead of undoing newer work."""
        after = _dump(self.status)
        patch = status_patch(self._written, after)
        if patch:
            self.resource_version = self.ctx.kube.patch_status(
                "batchtests",
                self.namespace,
                self.name,
                patch,
                resource_version=self.resource_version,
            )
            self._written = after

    def event(self, reason: str, message: str, *, warning: bool = False) -> None:
        (kopf.warn if warning else kopf.info)(self.kopf_body, reason=reason, message=message)
        (log.warning if warning else log.info)("BatchTest %s: %s: %s", self.ident, reason, message)

    def condition(
        self, type_: str, status: cond.Status, reason: cond.Reason, message: str = ""
    ) -> bool:
        """Set a condition; True when its status or reason changed (worth an event)."""
        old = cond.find(self.status.conditions, type_)
        self.status.conditions = cond.set_condition(
            self.status.conditions, type_, status, reason, message, generation=self.generation
        )
        return old is None or old.status != status or old.reason != reason

    def note(self, message: str) -> None:
        self.status.message = message
        self.write()

    def fail(self, reason: cond.Reason, message: str) -> None:
        self.status.phase = "Failed"
        self.status.message = message
        self.status.finished_at = cond.now_rfc3339()
        self.condition(cond.COMPLETE, "False", reason, message)
        self.condition(cond.FAILED, "True", reason, message)
        self.write()
        self.event(reason, message, warning=True)

    def fail_soft(self, type_: str, reason: cond.Reason, message: str) -> None:
        """A problem that may go away (a permission granted later): said, not terminal."""
        changed = self.condition(type_, "False", reason, message)
        self.status.message = message
        try:
            self.write()
        except Forbidden:
            log.error("BatchTest %s: cannot write status either: %s", self.ident, message)
        if changed:
            self.event(reason, message, warning=True)

    # -- the steps ----------------------------------------------------------------------

    def run(self) -> None:
        if self.status.observed_generation != self.generation:
            self.new_generation()
            return
        if self.status.phase in TERMINAL:
            self.after_finish()
            return
        if self.status.run_id is None:
            valid = self.validate()
            if valid is None:
                return
            batch, workflow = valid
            self.record_run(batch, workflow)
        else:
            # From here on the run is what was recorded: a Workflow edited or deleted
            # meanwhile changes nothing about it.
            batch, workflow = self.recorded()
        dashboard = self.cluster(batch, workflow)
        if dashboard is None:
            return
        self.job(batch, dashboard)

    def new_generation(self) -> None:
        old = self.before
        if old.submission_id and old.phase not in TERMINAL and old.ray_cluster:
            self.stop_job(old.ray_cluster, old.submission_id)
        first = old.observed_generation is None
        self.status = BatchTestStatus(phase="Pending", observed_generation=self.generation)
        self.write()
        self.ctx.forget(self.uid)
        if first:
            self.event("Accepted", f"generation {self.generation}: accepted")
        else:
            self.event("NewGeneration", f"spec changed (generation {self.generation}): a new run")

    def stop_job(self, cluster: str, job: str) -> None:
        rc = self.ctx.kube.get_raycluster(self.namespace, cluster)
        url = cluster_state(rc).dashboard_url if rc else None
        if url is None:
            return
        try:
            if RayJobClient(url).stop(job):
                self.event("StoppedJob", f"stopped Ray job {job} of an earlier generation")
        except RayJobError as exc:
            log.warning("BatchTest %s: cannot stop Ray job %s: %s", self.ident, job, exc)

    def validate(self) -> tuple[BatchTest, Workflow] | None:
        try:
            batch = parse_batchtest(self.body)
        except ManifestErrors as exc:
            self.condition(cond.VALIDATED, "False", "InvalidSpec", summary(exc.errors))
            self.fail("InvalidSpec", summary(exc.errors))
            return None
        ref = batch.spec.workflow_ref.name
        workflow_body = self.ctx.kube.get_workflow(self.namespace, ref)
        if workflow_body is None:
            message = (
                f"spec.workflowRef.name: no Workflow {ref!r} in namespace {self.namespace!r} (yet)"
            )
            self.wait(cond.VALIDATED, "WorkflowNotFound", message)
            return None
        try:
            workflow = parse_workflow(workflow_body)
        except ManifestErrors as exc:
            message = f"spec.workflowRef.name: Workflow {ref!r} is invalid: {summary(exc.errors)}"
            self.wait(cond.VALIDATED, "WorkflowMismatch", message)
            return None
        problems = check_references(batch, workflow)
        if problems:
            self.wait(cond.VALIDATED, "WorkflowMismatch", summary(problems))
            return None
        if self.condition(cond.VALIDATED, "True", "Valid", "spec and references are valid"):
            self.write()
            self.event("Validated", f"valid; runs Workflow {ref!r}")
        return batch, workflow

    def recorded(self) -> tuple[BatchTest, Workflow]:
        """The BatchTest and the Workflow as the run recorded them."""
        run = self.ctx.store.get_run(self.status.run_id or "")
        if run is None:
            raise StorageError(f"run {self.status.run_id!r} is not in the result store")
        batch = parse_batchtest(self.body)
        workflow = Workflow.model_validate(
            {
                "metadata": {"name": batch.spec.workflow_ref.name, "namespace": self.namespace},
                "spec": run.spec["workflow"],
            }
        )
        return batch, workflow

    def wait(self, type_: str, reason: cond.Reason, message: str) -> None:
        """Not ready to go on, and it may come right by itself (an object applied later)."""
        changed = self.condition(type_, "False", reason, message)
        self.status.message = message
        self.write()
        if changed:
            self.event(reason, message, warning=True)

    def record_run(self, batch: BatchTest, workflow: Workflow) -> None:
        key = generation_run_key(self.namespace, self.name, self.uid, self.generation)
        batch = batch.model_copy(
            update={
                "metadata": batch.metadata.model_copy(
                    update={"uid": self.uid, "generation": self.generation}
                )
            }
        )
        record_unplanned_run(self.ctx.store, batch, workflow, run_key=key)
        self.status.run_id = key
        self.status.phase = "Provisioning"
        self.write()

    def cluster(self, batch: BatchTest, workflow: Workflow) -> str | None:
        """The dashboard URL of a ready RayCluster; None while waiting."""
        ray = batch.spec.ray
        name = ray.cluster_name or raycluster_name(self.name)
        if self.status.ray_cluster != name:
            self.status.ray_cluster = name
            self.write()
        rc = self.ctx.kube.get_raycluster(self.namespace, name)
        if ray.cluster_name is None:
            image = workflow.spec.image
            if image is None:
                self.fail(
                    "InvalidSpec",
                    f"Workflow {batch.spec.workflow_ref.name!r}: spec.image is not set; a "
                    "RayCluster runs the workflow's image (fix: set spec.image, or name an "
                    "existing cluster in the BatchTest's spec.ray.clusterName)",
                )
                return None
            secret = DatabaseSecret(
                self.ctx.settings.cluster_database_secret,
                self.ctx.settings.cluster_database_secret_key,
            )
            wanted = build_raycluster(batch, uid=self.uid, image=image, secret=secret)
            if rc is None:
                self.create_cluster(batch, name, wanted)
                return None
            if _deleting(rc):
                self.not_ready(batch, "Provisioning", f"RayCluster {name} is being deleted")
                return None
            if not owned_by(rc, self.uid):
                if _owned_by_batchtest_named(rc, self.name):
                    # A BatchTest of this name was deleted and made again: the garbage
                    # collector has its cluster to delete first.
                    self.not_ready(batch, "Provisioning", f"an earlier {name} is being deleted")
                    return None
                self.fail(
                    "ClusterNotFound",
                    f"RayCluster {name} exists and is not this BatchTest's (fix: delete it, or "
                    "name it in spec.ray.clusterName to use it as a shared cluster)",
                )
                return None
            if spec_hash(rc) != spec_hash(wanted) and self.status.submission_id is None:
                self.ctx.kube.delete_raycluster(self.namespace, name)
                self.event("DeletedRayCluster", f"RayCluster {name} changed: replacing it")
                return None
        elif rc is None:
            self.not_ready(
                batch, "ClusterNotFound", f"no RayCluster {name!r} in {self.namespace!r}"
            )
            return None
        state = cluster_state(rc)
        if _deleting(rc) or not state.ready or state.dashboard_url is None:
            detail = "being deleted" if _deleting(rc) else state.message
            self.not_ready(batch, "Provisioning", f"RayCluster {name}: {detail}")
            return None
        if self.condition(
            cond.CLUSTER_READY, "True", "ClusterReady", f"RayCluster {name} is ready"
        ):
            self.write()
            self.event("ClusterReady", f"RayCluster {name} is ready")
        return state.dashboard_url

    def create_cluster(self, batch: BatchTest, name: str, wanted: dict[str, Any]) -> None:
        self.condition(cond.CLUSTER_READY, "False", "Provisioning", f"creating {name}")
        self.status.message = f"creating RayCluster {name}"
        self.write()
        try:
            created = self.ctx.kube.create_raycluster(self.namespace, wanted)
        except Invalid as exc:
            self.condition(cond.CLUSTER_READY, "False", "InvalidSpec", str(exc))
            self.fail("InvalidSpec", f"spec.ray: the RayCluster was refused: {exc}")
            return
        if created:
            self.event("CreatedRayCluster", f"created RayCluster {name}")

    def not_ready(self, batch: BatchTest, reason: cond.Reason, message: str) -> None:
        """Waiting for the cluster. Before the job is submitted this has a deadline; after,
        the job's own status decides (a head that restarted comes back without the job,
        which is then submitted again)."""
        changed = self.condition(cond.CLUSTER_READY, "False", reason, message)
        self.status.message = message
        current = cond.find(self.status.conditions, cond.CLUSTER_READY)
        since = cond.parse_rfc3339(current.last_transition_time if current else cond.now_rfc3339())
        timeout = (
            batch.spec.ray.ready_timeout_seconds or self.ctx.settings.cluster_ready_timeout_seconds
        )
        submitted = cond.is_true(self.status.conditions, cond.JOB_SUBMITTED)
        if not submitted and (datetime.now(UTC) - since).total_seconds() > timeout:
            self.condition(cond.CLUSTER_READY, "False", "ClusterTimeout", message)
            self.fail("ClusterTimeout", f"not ready after {timeout:.0f} s: {message}")
            return
        self.write()
        if changed and reason != "Provisioning":
            self.event(reason, message, warning=True)

    def entrypoint(self, batch: BatchTest) -> str:
        argv = ["python", "-m", "wtb.driver", "--run", self.status.run_id or ""]
        if batch.spec.ray.actors:
            argv += ["--actors", str(batch.spec.ray.actors)]
        return shlex.join(argv)

    def job(self, batch: BatchTest, dashboard: str) -> None:
        jobs = RayJobClient(dashboard)
        if self.status.submission_id is None:
            self.status.job_attempts = 1
            self.status.submission_id = submission_id(self.uid, self.generation, 1)
            self.condition(cond.JOB_SUBMITTED, "False", "Submitting", self.status.submission_id)
            self.write()  # recorded before the side effect
        sid = self.status.submission_id
        try:
            info = jobs.info(sid)
        except RayJobError as exc:
            self.note(f"Ray job API: {exc}")
            return
        submitted = cond.is_true(self.status.conditions, cond.JOB_SUBMITTED)
        if info is None and not submitted:
            self.submit(batch, jobs, sid)
            return
        if info is None:
            self.job_failed(batch, f"the Ray cluster no longer knows job {sid}", None)
            return
        if not submitted:  # submitted by an earlier step that stopped before saying so
            self.mark_submitted(sid)
        if info.status == "SUCCEEDED":
            self.finish(batch)
        elif info.finished:
            self.job_failed(
                batch,
                f"Ray job {sid} {info.status}: {_first_line(info.message)}",
                info.driver_exit_code,
            )
        else:
            self.status.phase = "Running"
            self.status.message = f"Ray job {sid} {info.status.lower()}"
            self.progress(batch, force=False)
            self.write()

    def mark_submitted(self, sid: str) -> None:
        self.condition(cond.JOB_SUBMITTED, "True", "Submitted", sid)
        self.condition(cond.COMPLETE, "False", "Running", "")
        self.status.phase = "Running"
        self.status.started_at = self.status.started_at or cond.now_rfc3339()

    def submit(self, batch: BatchTest, jobs: RayJobClient, sid: str) -> None:
        try:
            jobs.submit(
                sid,
                self.entrypoint(batch),
                metadata={
                    "wtb.dev/batchtest": self.ident,
                    "wtb.dev/generation": str(self.generation),
                },
            )
        except RayJobError as exc:
            if self.condition(cond.JOB_SUBMITTED, "False", "SubmitFailed", str(exc)):
                self.event("FailedToSubmitJob", str(exc), warning=True)
            self.note(f"submitting Ray job {sid}: {exc}")
            return
        self.mark_submitted(sid)
        self.status.message = f"Ray job {sid} submitted"
        self.write()
        self.event("SubmittedJob", f"submitted Ray job {sid} (attempt {self.status.job_attempts})")

    def progress(self, batch: BatchTest, *, force: bool) -> bool:
        """Counts and matrix from the result store (at a bounded rate unless `force`);
        True when every cell is recorded."""
        if not force and not self.ctx.progress_due(self.uid, time.monotonic()):
            return False
        run = self.ctx.store.get_run(self.status.run_id or "")
        if run is None:
            raise StorageError(f"run {self.status.run_id!r} is not in the result store")
        now = run_status(self.ctx.store, run, max_rows=self.ctx.settings.status_top_rows)
        self.status.total = now.total
        self.status.completed = now.completed
        self.status.failed = now.failed
        self.status.progress = now.progress
        self.status.best = now.best
        self.status.score = now.score
        self.status.matrix = now.matrix
        return now.total is not None and now.completed >= now.total

    def finish(self, batch: BatchTest) -> None:
        if not self.progress(batch, force=True):
            self.job_failed(batch, "the Ray job succeeded but cells are missing", None)
            return
        self.status.phase = "Succeeded"
        self.status.finished_at = cond.now_rfc3339()
        self.status.message = f"{self.status.completed} cells recorded"
        self.condition(cond.COMPLETE, "True", "Succeeded", self.status.message)
        self.condition(cond.FAILED, "False", "Succeeded", "")
        self.write()
        self.event(
            "Succeeded",
            f"{self.status.progress} cells; best: {self.status.best} ({self.status.score})",
        )

    def job_failed(self, batch: BatchTest, message: str, exit_code: int | None) -> None:
        self.progress(batch, force=True)
        if exit_code == ExitCode.USAGE:  # a mistake the driver named: no retry mends it
            run = self.ctx.store.get_run(self.status.run_id or "")
            detail = (run.error if run and run.error else message).replace("\n  fix:", " (fix:")
            self.fail("InvalidWorkflow", detail + (")" if "(fix:" in detail else ""))
            return
        attempts = self.status.job_attempts or 1
        if attempts > batch.spec.backoff_limit:
            self.fail(
                "BackoffLimitExceeded",
                f"{message}; {attempts} attempt(s), backoffLimit {batch.spec.backoff_limit}",
            )
            return
        self.event(
            "JobFailed", f"{message}; submitting again (attempt {attempts + 1})", warning=True
        )
        self.status.job_attempts = attempts + 1
        self.status.submission_id = submission_id(self.uid, self.generation, attempts + 1)
        self.condition(cond.JOB_SUBMITTED, "False", "Submitting", self.status.submission_id)
        self.status.message = message
        self.write()

    def after_finish(self) -> None:
        """ttlSecondsAfterFinished: delete the RayCluster WTB created, once."""
        spec = self.body.get("spec") or {}
        ttl = spec.get("ttlSecondsAfterFinished")
        if (
            ttl is None
            or (spec.get("ray") or {}).get("clusterName")
            or _cluster_deleted(self.status)
        ):
            return
        finished = self.status.finished_at
        if (
            finished is None
            or (datetime.now(UTC) - cond.parse_rfc3339(finished)).total_seconds() < ttl
        ):
            return
        name = self.status.ray_cluster or raycluster_name(self.name)
        rc = self.ctx.kube.get_raycluster(self.namespace, name)
        if rc is not None and owned_by(rc, self.uid):
            self.ctx.kube.delete_raycluster(self.namespace, name)
            self.event(
                "DeletedRayCluster", f"deleted RayCluster {name} (ttlSecondsAfterFinished {ttl})"
            )
        self.condition(cond.CLUSTER_READY, "False", "ClusterDeleted", f"RayCluster {name} deleted")
        self.write()
