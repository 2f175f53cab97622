"""The BatchTest reconcile step's decisions, without an API server, a database or Ray: each
transition the end-to-end tests (test_operator.py) drive, as a row of what a step observed
and what it decides, and the status the operator would write for it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from toybatch import STORED_UID as UID
from toybatch import stored_batchtest, stored_batchtest_body
from wtb.api._base import Condition
from wtb.api.batchtest import BatchTest, BatchTestStatus
from wtb.api.comparison import ComparisonMatrix, Interval, LatencySummary, MatrixRow
from wtb.kube import conditions as cond
from wtb.kube.checks import (
    AdmissionAnswer,
    SpecInvalid,
    Valid,
    WorkflowInvalid,
    WorkflowMismatch,
    WorkflowNotFound,
    admission_answer,
    check_batchtest,
)
from wtb.kube.decide import (
    ClusterReady,
    CreateCluster,
    DeleteForTtl,
    Finish,
    JobFailed,
    MarkRunning,
    ReplaceCluster,
    Resubmit,
    Stage,
    StopJob,
    Submission,
    Submit,
    Succeed,
    Validated,
    cluster_refused,
    decide_cluster,
    decide_failed_job,
    decide_finish,
    decide_job,
    decide_outcome,
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
from wtb.kube.names import raycluster_name, submission_id
from wtb.kube.observed import ClusterView, JobApiDown, JobSeen
from wtb.kube.raycluster import DatabaseSecret, build_raycluster
from wtb.kube.rayjobs import JobInfo
from wtb.kube.status import RunStatus
from wtb.kube.status_copy import read_status
from wtb.kube.transitions import BatchTestStatusCopy
from wtb.kube.verdicts import Event, Fail, Note, SetCondition, Wait
from wtb.runs.keys import generation_run_key

Json = dict[str, Any]

OTHER_UID = "0badc0de-aaaa-bbbb-cccc-0123456789ab"
IMAGE = "registry.example/wtb-toy:1.0"
SECRET = DatabaseSecret("wtb-database", "url")
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
TIMEOUT = 600.0
SID1, SID2 = submission_id(UID, 1, 1), submission_id(UID, 1, 2)


def ago(seconds: float) -> str:
    return cond.rfc3339(NOW - timedelta(seconds=seconds))


# --- what a step reads --------------------------------------------------------------------


def workflow_body(**spec: Any) -> Json:
    return {
        "apiVersion": "wtb.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "toy", "namespace": "team"},
        "spec": {
            "image": IMAGE,
            "graph": {
                "state": "toyflow.graph:State",
                "nodes": [{"name": "answer", "path": "toyflow.graph:answer"}],
                "edges": [
                    {"from": "__start__", "to": ["answer"]},
                    {"from": "answer", "to": ["__end__"]},
                ],
            },
            "variants": {"answer": [{"name": "reversed", "path": "toyflow.graph:reversed"}]},
            **spec,
        },
    }


def condition(type_: str, status: cond.Status, reason: cond.Reason, since: str) -> Condition:
    return Condition(type=type_, status=status, reason=reason, last_transition_time=since)


def status(*conditions: Condition, **fields: Any) -> BatchTestStatus:
    """A status of generation 1, in phase Provisioning with a recorded run unless `fields`
    say otherwise."""
    values: Json = {
        "phase": "Provisioning",
        "observed_generation": 1,
        "run_id": "team/demo:g1-6f1c2d3e",
        **fields,
    }
    return BatchTestStatus(**values, conditions=list(conditions))


SUBMITTED = condition(cond.JOB_SUBMITTED, "True", "Submitted", ago(30))
SUBMITTING = condition(cond.JOB_SUBMITTED, "False", "Submitting", ago(30))


def copy_of(before: BatchTestStatus) -> BatchTestStatusCopy:
    return BatchTestStatusCopy(before, generation=1)


def conditions_of(after: BatchTestStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in after.conditions}


def raycluster(
    batch: BatchTest | None = None,
    *,
    uid: str = UID,
    image: str = IMAGE,
    ready: bool = True,
    deleting: bool = False,
    change: Callable[[Json], None] = lambda _: None,
) -> ClusterView:
    """The RayCluster WTB builds for `batch`, as KubeRay reports it."""
    rc = build_raycluster(batch or stored_batchtest(), uid=uid, image=image, secret=SECRET)
    rc["status"] = (
        {"state": "ready", "head": {"serviceIP": "10.0.0.7"}, "endpoints": {"dashboard": "8265"}}
        if ready
        else {"state": "pending", "reason": "pulling the image"}
    )
    if deleting:
        rc["metadata"]["deletionTimestamp"] = ago(1)
    change(rc)
    return ClusterView.of(rc)


def shared_cluster(*, ready: bool = True, deleting: bool = False) -> ClusterView:
    rc: Json = {"metadata": {"name": "shared"}, "status": {"state": "pending"}}
    if ready:
        rc["status"] = {
            "state": "ready",
            "head": {"serviceIP": "10.0.0.9"},
            "endpoints": {"dashboard": "8265"},
        }
    if deleting:
        rc["metadata"]["deletionTimestamp"] = ago(1)
    return ClusterView.of(rc)


# --- stages and reconcile filter ----------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "stage"),
    [
        (BatchTestStatus(), Stage.NEW_GENERATION),
        (status(observed_generation=0), Stage.NEW_GENERATION),
        (status(phase="Succeeded"), Stage.FINISHED),
        (status(phase="Failed", run_id=None), Stage.FINISHED),
        (status(phase="Pending", run_id=None), Stage.UNRECORDED),
        (status(phase="Running"), Stage.RECORDED),
    ],
)
def test_the_stage_a_step_is_in(before: BatchTestStatus, stage: Stage) -> None:
    assert stage_of(before, 1) is stage


TTL_SPEC: Json = {"ttlSecondsAfterFinished": 60}
DELETED = condition(cond.CLUSTER_READY, "False", "ClusterDeleted", ago(1))


@pytest.mark.parametrize(
    ("before", "generation", "spec", "needed"),
    [
        pytest.param(BatchTestStatus(), 1, {}, True, id="new object"),
        pytest.param(status(phase="Succeeded"), 2, {}, True, id="edited after the run"),
        pytest.param(status(phase="Running"), 1, {}, True, id="running"),
        pytest.param(status(phase="Pending", run_id=None), 1, {}, True, id="pending"),
        pytest.param(status(phase="Succeeded"), 1, {}, False, id="finished"),
        pytest.param(status(phase="Failed"), 1, {}, False, id="failed"),
        pytest.param(status(phase="Succeeded"), 1, TTL_SPEC, True, id="finished, TTL to come"),
        pytest.param(status(phase="Failed"), 1, TTL_SPEC, True, id="failed, TTL to come"),
        pytest.param(status(DELETED, phase="Succeeded"), 1, TTL_SPEC, False, id="TTL done already"),
        pytest.param(
            status(phase="Succeeded"),
            1,
            {**TTL_SPEC, "ray": {"clusterName": "shared"}},
            False,
            id="TTL of a shared cluster",
        ),
    ],
)
def test_needs_reconcile(
    before: BatchTestStatus, generation: int, spec: Json, needed: bool
) -> None:
    assert needs_reconcile(before, generation, spec) is needed


def test_status_is_read_without_kopfs_key() -> None:
    body = {"status": {"phase": "Running", "runId": "k", "kopf": {"progress": {"x": {}}}}}
    assert read_status(body, BatchTestStatus) == BatchTestStatus(phase="Running", run_id="k")
    assert read_status({}, BatchTestStatus) == BatchTestStatus()


# --- a new generation ---------------------------------------------------------------------


def test_a_new_object_is_accepted_with_a_fresh_status() -> None:
    verdict = new_generation(BatchTestStatus(), 1)
    assert (verdict.first, verdict.stop) == (True, None)
    assert verdict.event == Event("Accepted", "generation 1: accepted")
    copy = BatchTestStatusCopy(BatchTestStatus(), generation=1)
    copy.restart(verdict)
    assert copy.patch() == {"phase": "Pending", "observedGeneration": 1}


RUNNING = status(
    SUBMITTED,
    phase="Running",
    ray_cluster="demo-ray",
    submission_id=SID1,
    job_attempts=1,
    progress="3/8",
)


@pytest.mark.parametrize(
    ("before", "stop"),
    [
        pytest.param(RUNNING, StopJob("demo-ray", SID1), id="running job stopped"),
        pytest.param(
            RUNNING.model_copy(update={"phase": "Succeeded"}), None, id="finished run: no job"
        ),
        pytest.param(
            RUNNING.model_copy(update={"ray_cluster": None}), None, id="no cluster recorded"
        ),
        pytest.param(status(phase="Provisioning"), None, id="nothing submitted"),
    ],
)
def test_an_edit_starts_a_new_run_and_stops_the_old_job(
    before: BatchTestStatus, stop: StopJob | None
) -> None:
    verdict = new_generation(before, 2)
    assert (verdict.first, verdict.stop) == (False, stop)
    assert verdict.event == Event("NewGeneration", "spec changed (generation 2): a new run")
    assert not verdict.event.warning
    copy = BatchTestStatusCopy(before, generation=2)
    copy.restart(verdict)
    assert copy.status == BatchTestStatus(phase="Pending", observed_generation=2)
    patch = copy.patch()
    assert patch["observedGeneration"] == 2
    assert patch["runId"] is None, "nothing of the old run carries over"


def test_deleting_a_batchtest_stops_the_job_it_names() -> None:
    assert job_to_stop(RUNNING) == StopJob("demo-ray", SID1)
    assert job_to_stop(RUNNING.model_copy(update={"submission_id": None})) is None


# --- validation: one check for admission and reconcile ------------------------------------


def _never_read(namespace: str, name: str) -> Json | None:
    raise AssertionError(f"read Workflow {namespace}/{name} of a spec that does not parse")


def _reader(found: Json | None) -> Callable[[str, str], Json | None]:
    def read(namespace: str, name: str) -> Json | None:
        assert (namespace, name) == ("team", "toy")
        return found

    return read


BAD_SPEC = stored_batchtest_body(primaryMetric="speed")
BAD_WORKFLOW = workflow_body(variants={"answer": [{"name": "x", "path": "not a path"}]})
MISMATCH = stored_batchtest_body(matrix={"answer": ["original", "shiny"]})


@pytest.mark.parametrize(
    ("body", "read", "outcome", "verdict", "answer"),
    [
        pytest.param(
            BAD_SPEC,
            _never_read,
            SpecInvalid,
            Fail,
            ("refusal", "primaryMetric"),
            id="invalid spec",
        ),
        pytest.param(
            stored_batchtest_body(),
            _reader(None),
            WorkflowNotFound,
            Wait(
                cond.VALIDATED,
                "WorkflowNotFound",
                "spec.workflowRef.name: no Workflow 'toy' in namespace 'team' (yet)",
            ),
            ("warning", "Workflow 'toy' does not exist (yet)"),
            id="workflow not found",
        ),
        pytest.param(
            stored_batchtest_body(),
            _reader(BAD_WORKFLOW),
            WorkflowInvalid,
            Wait,
            ("warning", "spec.workflowRef.name: Workflow 'toy' is invalid"),
            id="workflow invalid",
        ),
        pytest.param(
            MISMATCH,
            _reader(workflow_body()),
            WorkflowMismatch,
            Wait,
            ("refusal", "spec.matrix.answer[1]"),
            id="mismatch",
        ),
        pytest.param(
            stored_batchtest_body(), _reader(workflow_body()), Valid, Validated, None, id="valid"
        ),
    ],
)
def test_admission_and_reconcile_share_one_check(
    body: Json,
    read: Callable[[str, str], Json | None],
    outcome: type,
    verdict: type | Wait,
    answer: tuple[str, str] | None,
) -> None:
    checked = check_batchtest(body, read)
    assert isinstance(checked, outcome)
    decided = decide_validation(checked)
    if isinstance(verdict, Wait):
        assert decided == verdict
    else:
        assert isinstance(decided, verdict)
    said = admission_answer(checked)
    if answer is None:
        assert said == AdmissionAnswer()
        return
    kind, text = answer
    assert getattr(said, kind) is not None
    assert text in (getattr(said, kind) or "")
    other = "warning" if kind == "refusal" else "refusal"
    assert getattr(said, other) is None


def test_an_invalid_spec_fails_the_run_with_validated_false() -> None:
    checked = check_batchtest(BAD_SPEC, _never_read)
    verdict = decide_validation(checked)
    assert isinstance(verdict, Fail)
    assert verdict.reason == "InvalidSpec"
    assert "primaryMetric" in verdict.message
    assert verdict.event.warning
    copy = copy_of(status(phase="Pending", run_id=None))
    copy.fail(verdict, NOW)
    assert copy.status.phase == "Failed"
    assert copy.status.finished_at == cond.rfc3339(NOW)
    assert copy.status.message == verdict.message
    assert conditions_of(copy.status) == {
        "Validated": ("False", "InvalidSpec"),
        "Complete": ("False", "InvalidSpec"),
        "Failed": ("True", "InvalidSpec"),
    }


@pytest.mark.parametrize(
    ("body", "workflow", "reason", "detail"),
    [
        (stored_batchtest_body(), None, "WorkflowNotFound", "no Workflow 'toy'"),
        (
            stored_batchtest_body(),
            BAD_WORKFLOW,
            "WorkflowMismatch",
            "is invalid: Workflow team/toy",
        ),
        (MISMATCH, workflow_body(), "WorkflowMismatch", "no variant 'shiny'"),
    ],
)
def test_a_workflow_problem_is_waited_for_and_said_once(
    body: Json, workflow: Json | None, reason: str, detail: str
) -> None:
    verdict = decide_validation(check_batchtest(body, _reader(workflow)))
    assert isinstance(verdict, Wait)
    assert (verdict.condition, verdict.reason, verdict.warn) == (cond.VALIDATED, reason, True)
    assert detail in verdict.message
    copy = copy_of(status(phase="Pending", run_id=None))
    assert copy.wait(verdict, NOW), "a new reason is worth an event"
    assert copy.status.phase == "Pending", "not terminal"
    assert copy.status.message == verdict.message
    assert conditions_of(copy.status) == {"Validated": ("False", reason)}
    copy.mark_written()
    assert not copy.wait(verdict, NOW + timedelta(seconds=2)), "the same wait again: no event"
    assert copy.patch() == {}, "nor a write"


def test_a_valid_batchtest_is_recorded_as_a_run_of_its_generation() -> None:
    verdict = decide_validation(check_batchtest(stored_batchtest_body(), _reader(workflow_body())))
    assert isinstance(verdict, Validated)
    assert verdict.event == Event("Validated", "valid; runs Workflow 'toy'")
    copy = copy_of(status(phase="Pending", run_id=None))
    assert copy.validated(verdict, NOW)
    assert not copy.validated(verdict, NOW), "validated again: no second event"

    record = run_to_record(verdict, uid=UID, generation=3)
    assert record.run_key == generation_run_key("team", "demo", UID, 3)
    assert (record.batch.metadata.uid, record.batch.metadata.generation) == (UID, 3)
    assert record.workflow.metadata.name == "toy"
    copy.recorded(record)
    assert (copy.status.run_id, copy.status.phase) == (record.run_key, "Provisioning")


# --- the RayCluster -----------------------------------------------------------------------

SHARED = {"clusterName": "shared"}
NOT_READY_SINCE = condition(cond.CLUSTER_READY, "False", "Provisioning", ago(100))


def _cluster(
    cluster: ClusterView | None,
    before: BatchTestStatus | None = None,
    *,
    image: str | None = IMAGE,
    **spec: Any,
) -> object:
    return decide_cluster(
        stored_batchtest(**spec),
        uid=UID,
        image=image,
        secret=SECRET,
        cluster=cluster,
        status=before or status(),
        default_timeout_seconds=TIMEOUT,
        now=NOW,
    )


def _edited(rc: Json) -> None:
    rc["spec"]["workerGroupSpecs"][0]["replicas"] = 5
    rc["metadata"]["annotations"]["wtb.dev/spec-hash"] = "0123456789abcdef"


def _owned_by_a_configmap(rc: Json) -> None:
    rc["metadata"]["ownerReferences"] = [
        {"kind": "ConfigMap", "name": "demo", "uid": OTHER_UID, "apiVersion": "v1"}
    ]


def _unowned(rc: Json) -> None:
    del rc["metadata"]["ownerReferences"]


DASHBOARD = "http://10.0.0.7:8265"
SUBMITTED_STATUS = status(SUBMITTED, phase="Running", submission_id=SID1, job_attempts=1)

CLUSTER_CASES = [
    pytest.param(
        raycluster(), status(), {}, ClusterReady("demo-ray", DASHBOARD), id="ready: go on"
    ),
    pytest.param(
        raycluster(ready=False),
        status(),
        {},
        Wait(
            cond.CLUSTER_READY,
            "Provisioning",
            "RayCluster demo-ray: state pending (pulling the image)",
            warn=False,
        ),
        id="not ready: wait quietly",
    ),
    pytest.param(
        raycluster(deleting=True),
        status(),
        {},
        Wait(cond.CLUSTER_READY, "Provisioning", "RayCluster demo-ray is being deleted", False),
        id="being deleted: wait",
    ),
    pytest.param(
        raycluster(uid=OTHER_UID),
        status(),
        {},
        Wait(cond.CLUSTER_READY, "Provisioning", "an earlier demo-ray is being deleted", False),
        id="of a re-created BatchTest of this name: wait",
    ),
    pytest.param(
        raycluster(change=_owned_by_a_configmap),
        status(),
        {},
        "ClusterNotFound",
        id="owned by another object: fail",
    ),
    pytest.param(
        raycluster(change=_unowned), status(), {}, "ClusterNotFound", id="owned by nobody: fail"
    ),
    pytest.param(
        raycluster(change=_edited),
        status(),
        {},
        ReplaceCluster("demo-ray"),
        id="spec changed before submission: replace",
    ),
    pytest.param(
        raycluster(image="registry.example/wtb-toy:0.9"),
        status(SUBMITTING, submission_id=SID1, job_attempts=1),
        {},
        ClusterReady("demo-ray", DASHBOARD),
        id="spec changed after the submission id was recorded: keep",
    ),
    pytest.param(
        raycluster(change=_edited),
        SUBMITTED_STATUS,
        {},
        ClusterReady("demo-ray", DASHBOARD),
        id="spec changed after submission: keep",
    ),
    pytest.param(
        None,
        status(),
        {"ray": SHARED},
        Wait(cond.CLUSTER_READY, "ClusterNotFound", "no RayCluster 'shared' in 'team'"),
        id="shared cluster missing: wait, warned",
    ),
    pytest.param(
        shared_cluster(ready=False),
        status(),
        {"ray": SHARED},
        Wait(cond.CLUSTER_READY, "Provisioning", "RayCluster shared: state pending", False),
        id="shared cluster not ready: wait",
    ),
    pytest.param(
        shared_cluster(deleting=True),
        status(),
        {"ray": SHARED},
        Wait(cond.CLUSTER_READY, "Provisioning", "RayCluster shared: being deleted", False),
        id="shared cluster being deleted: wait",
    ),
    pytest.param(
        shared_cluster(),
        status(),
        {"ray": SHARED},
        ClusterReady("shared", "http://10.0.0.9:8265"),
        id="shared cluster ready: go on",
    ),
]


@pytest.mark.parametrize(("cluster", "before", "spec", "expected"), CLUSTER_CASES)
def test_what_to_do_about_the_cluster(
    cluster: ClusterView | None, before: BatchTestStatus, spec: Json, expected: object
) -> None:
    verdict = _cluster(cluster, before, **spec)
    if isinstance(expected, str):
        assert isinstance(verdict, Fail)
        assert verdict.reason == expected
        assert "demo-ray exists and is not this BatchTest's" in verdict.message
    else:
        assert verdict == expected


def test_a_missing_cluster_is_created_as_built_for_the_workflows_image() -> None:
    verdict = _cluster(None)
    wanted = build_raycluster(stored_batchtest(), uid=UID, image=IMAGE, secret=SECRET)
    assert verdict == CreateCluster("demo-ray", wanted)
    assert isinstance(verdict, CreateCluster)
    assert verdict.event == Event("CreatedRayCluster", "created RayCluster demo-ray")
    copy = copy_of(status())
    copy.creating(verdict, NOW)
    assert copy.patch()["conditions"][0]["reason"] == "Provisioning", "written before create"
    assert copy.status.message == "creating RayCluster demo-ray"


def test_a_workflow_without_an_image_fails_before_anything_is_created() -> None:
    verdict = _cluster(None, image=None)
    assert isinstance(verdict, Fail)
    assert verdict.reason == "InvalidSpec"
    assert "spec.image is not set" in verdict.message
    assert isinstance(_cluster(shared_cluster(), image=None, ray=SHARED), ClusterReady), (
        "a shared cluster needs no image"
    )


def test_a_refused_cluster_fails_with_the_api_servers_reason() -> None:
    verdict = cluster_refused("spec.headGroupSpec: invalid")
    assert verdict == Fail(
        "InvalidSpec",
        "spec.ray: the RayCluster was refused: spec.headGroupSpec: invalid",
        SetCondition(cond.CLUSTER_READY, "False", "InvalidSpec", "spec.headGroupSpec: invalid"),
    )
    copy = copy_of(status(NOT_READY_SINCE))
    copy.fail(verdict, NOW)
    assert conditions_of(copy.status)["ClusterReady"] == ("False", "InvalidSpec")


@pytest.mark.parametrize(
    ("conditions", "spec", "timed_out"),
    [
        pytest.param([NOT_READY_SINCE], {}, False, id="within the operator's timeout"),
        pytest.param(
            [condition(cond.CLUSTER_READY, "False", "Provisioning", ago(TIMEOUT + 1))],
            {},
            True,
            id="past the operator's timeout",
        ),
        pytest.param(
            [NOT_READY_SINCE],
            {"ray": {"readyTimeoutSeconds": 99}},
            True,
            id="past the spec's timeout",
        ),
        pytest.param(
            [NOT_READY_SINCE],
            {"ray": {"readyTimeoutSeconds": 101}},
            False,
            id="within the spec's timeout",
        ),
        pytest.param(
            [condition(cond.CLUSTER_READY, "True", "ClusterReady", ago(TIMEOUT * 3))],
            {},
            False,
            id="was ready: the clock starts now",
        ),
        pytest.param([], {}, False, id="never looked at: the clock starts now"),
        pytest.param(
            [condition(cond.CLUSTER_READY, "False", "Provisioning", ago(TIMEOUT * 3)), SUBMITTED],
            {},
            False,
            id="after submission: no timeout",
        ),
    ],
)
def test_a_cluster_that_stays_unready_times_out_before_submission_only(
    conditions: list[Condition], spec: Json, timed_out: bool
) -> None:
    before = status(*conditions)
    verdict = _cluster(raycluster(ready=False), before, **spec)
    message = "RayCluster demo-ray: state pending (pulling the image)"
    if not timed_out:
        assert verdict == Wait(cond.CLUSTER_READY, "Provisioning", message, warn=False)
        return
    assert isinstance(verdict, Fail)
    assert verdict.reason == "ClusterTimeout"
    assert verdict.message.startswith("not ready after ")
    assert verdict.message.endswith(f" s: {message}")
    copy = copy_of(before)
    copy.fail(verdict, NOW)
    assert conditions_of(copy.status)["ClusterReady"] == ("False", "ClusterTimeout")
    assert conditions_of(copy.status)["Failed"] == ("True", "ClusterTimeout")
    assert copy.status.submission_id is None


def test_a_ready_cluster_is_announced_once() -> None:
    verdict = _cluster(raycluster())
    assert isinstance(verdict, ClusterReady)
    assert verdict.event == Event("ClusterReady", "RayCluster demo-ray is ready")
    copy = copy_of(status(NOT_READY_SINCE))
    assert copy.cluster_named("demo-ray"), "the name is new: written before anything else"
    assert not copy.cluster_named("demo-ray")
    assert copy.cluster_ready(verdict, NOW)
    assert not copy.cluster_ready(verdict, NOW)
    assert conditions_of(copy.status)["ClusterReady"] == ("True", "ClusterReady")


# --- the Ray job --------------------------------------------------------------------------


def test_the_first_submission_id_is_recorded_before_the_job_is_submitted() -> None:
    before = status(condition(cond.CLUSTER_READY, "True", "ClusterReady", ago(5)))
    submission = submission_of(before, uid=UID, generation=1)
    assert submission == Submission(1, SID1, recorded=False)
    copy = copy_of(before)
    copy.attempt(submission, NOW)
    patch = copy.patch()
    assert (patch["submissionId"], patch["jobAttempts"]) == (SID1, 1)
    assert conditions_of(copy.status)["JobSubmitted"] == ("False", "Submitting")
    # The step goes on from that status: the cluster does not know the job yet.
    again = submission_of(copy.status, uid=UID, generation=1)
    assert again == Submission(1, SID1)
    assert decide_job(again, copy.status, None) == Submit(again)


def _job(status_: str, message: str = "", exit_code: int | None = None) -> JobInfo:
    return JobInfo(SID1, status_, message, exit_code)


SUB1 = Submission(1, SID1)
SUBMITTING_STATUS = status(SUBMITTING, submission_id=SID1, job_attempts=1)


@pytest.mark.parametrize(
    ("before", "job", "expected"),
    [
        pytest.param(
            SUBMITTING_STATUS,
            JobApiDown("connection refused"),
            Note("Ray job API: connection refused"),
            id="job API down: say so",
        ),
        pytest.param(SUBMITTING_STATUS, None, Submit(SUB1), id="unknown, not submitted: submit"),
        pytest.param(
            SUBMITTED_STATUS,
            None,
            JobFailed(f"the Ray cluster no longer knows job {SID1}"),
            id="unknown after submission: lost",
        ),
        pytest.param(
            SUBMITTING_STATUS,
            _job("RUNNING"),
            MarkRunning(SID1, "RUNNING", mark_submitted=True),
            id="found while not marked submitted: mark it",
        ),
        pytest.param(SUBMITTED_STATUS, _job("RUNNING"), MarkRunning(SID1, "RUNNING"), id="running"),
        pytest.param(SUBMITTED_STATUS, _job("PENDING"), MarkRunning(SID1, "PENDING"), id="pending"),
        pytest.param(SUBMITTED_STATUS, _job("SUCCEEDED"), Finish(), id="succeeded"),
        pytest.param(
            SUBMITTING_STATUS,
            _job("SUCCEEDED"),
            Finish(mark_submitted=True),
            id="succeeded while not marked submitted",
        ),
        pytest.param(
            SUBMITTED_STATUS,
            _job(
                "FAILED",
                "Job entrypoint command failed with exit code 2, last available logs: secret",
                2,
            ),
            JobFailed(f"Ray job {SID1} FAILED: Job entrypoint command failed with exit code 2", 2),
            id="failed: the driver's logs stay out",
        ),
        pytest.param(
            SUBMITTED_STATUS,
            _job("STOPPED", "stopped\nby someone"),
            JobFailed(f"Ray job {SID1} STOPPED: stopped"),
            id="stopped",
        ),
    ],
)
def test_what_the_job_api_says_means(
    before: BatchTestStatus, job: JobSeen, expected: object
) -> None:
    assert decide_job(SUB1, before, job) == expected


def test_a_submitted_job_marks_the_run_running() -> None:
    verdict = decide_job(SUB1, SUBMITTING_STATUS, None)
    assert isinstance(verdict, Submit)
    assert verdict.event == Event("SubmittedJob", f"submitted Ray job {SID1} (attempt 1)")
    assert verdict.message == f"Ray job {SID1} submitted"
    copy = copy_of(SUBMITTING_STATUS)
    copy.submitted(SID1, NOW)
    assert copy.status.phase == "Running"
    assert copy.status.started_at == cond.rfc3339(NOW)
    assert conditions_of(copy.status)["JobSubmitted"] == ("True", "Submitted")
    assert conditions_of(copy.status)["Complete"] == ("False", "Running")
    copy.submitted(SID1, NOW + timedelta(minutes=5))
    assert copy.status.started_at == cond.rfc3339(NOW), "the first start is kept"


def test_a_job_found_submitted_is_told_as_submitted() -> None:
    """An earlier step submitted it and stopped before saying so (its write refused, or the
    submit call timed out after Ray took the job): the SubmittedJob event is not lost."""
    assert found_submitted(SUB1) == Event(
        "SubmittedJob", f"Ray job {SID1} (attempt 1) was submitted"
    )
    assert not found_submitted(SUB1).warning


def test_a_refused_submission_is_said_once() -> None:
    copy = copy_of(SUBMITTING_STATUS)
    assert copy.submit_failed("HTTP 500", NOW)
    assert not copy.submit_failed("HTTP 500 again", NOW)
    assert conditions_of(copy.status)["JobSubmitted"] == ("False", "SubmitFailed")


def test_a_running_job_says_its_state() -> None:
    copy = copy_of(SUBMITTED_STATUS)
    copy.running(MarkRunning(SID1, "RUNNING"))
    assert (copy.status.phase, copy.status.message) == ("Running", f"Ray job {SID1} running")


def _progress(total: int | None, completed: int) -> RunStatus:
    return RunStatus(
        total=total,
        completed=completed,
        failed=0,
        progress=f"{completed}/{total if total is not None else '?'}",
        best="answer=reversed",
        score="0.9 [0.8, 1]",
        matrix=None,
    )


def test_a_job_that_succeeded_with_every_cell_succeeds() -> None:
    done = _progress(8, 8)
    verdict = decide_finish(done)
    assert verdict == Succeed(
        "8 cells recorded", Event("Succeeded", "8/8 cells; best: answer=reversed (0.9 [0.8, 1])")
    )
    assert isinstance(verdict, Succeed)
    copy = copy_of(SUBMITTED_STATUS)
    copy.progress(done)
    copy.succeed(verdict, NOW)
    after = copy.status
    assert (after.phase, after.progress, after.best, after.completed) == (
        "Succeeded",
        "8/8",
        "answer=reversed",
        8,
    )
    assert after.finished_at == cond.rfc3339(NOW)
    assert conditions_of(after)["Complete"] == ("True", "Succeeded")
    assert conditions_of(after)["Failed"] == ("False", "Succeeded")


@pytest.mark.parametrize("progress", [_progress(8, 7), _progress(None, 0)])
def test_a_job_that_succeeded_with_cells_missing_has_failed(progress: RunStatus) -> None:
    verdict = decide_finish(progress)
    assert verdict == JobFailed("the Ray job succeeded but cells are missing")
    assert isinstance(verdict, JobFailed)
    again = decide_failed_job(
        verdict, attempts=1, backoff_limit=2, run_error=None, uid=UID, generation=1
    )
    assert isinstance(again, Resubmit)


def _row(label: str, runs: int, succeeded: int, *, baseline: bool = False) -> MatrixRow:
    return MatrixRow(
        combination={"answer": label},
        label=f"answer={label}",
        baseline=baseline,
        runs=runs,
        succeeded=succeeded,
        success_rate=Interval(value=succeeded / runs if runs else None, n=runs),
        latency_ms=LatencySummary(),
        verdict="baseline" if baseline else "no significant difference",
    )


def _finished(failed: int, interrupted: int, base_succeeded: int) -> RunStatus:
    """Eight cells, four per combination; the baseline's successes as given."""
    matrix = ComparisonMatrix(
        primary_metric="correct",
        higher_is_better=True,
        baseline="answer=original",
        combinations=2,
        warnings=[] if base_succeeded else ["the baseline answer=original has no successful cell"],
        rows=[_row("reversed", 4, 4), _row("original", 4, base_succeeded, baseline=True)],
    )
    return RunStatus(
        total=8,
        completed=8,
        failed=failed,
        interrupted=interrupted,
        progress="8/8",
        best="answer=reversed",
        score="1",
        matrix=matrix,
    )


def test_outcome_conditions_of_a_clean_run() -> None:
    assert decide_outcome(_finished(0, 0, 4)) == (
        SetCondition("CellsFailed", "False", "NoCellFailed", "8 of 8 cells recorded, none failed"),
        SetCondition(
            "BaselineFailed",
            "False",
            "HasSuccessfulCells",
            "baseline answer=original: 4 of 4 cells succeeded",
        ),
    )


def test_outcome_conditions_count_failed_and_interrupted_cells() -> None:
    (cells, baseline) = decide_outcome(_finished(1, 2, 1))
    assert cells == SetCondition(
        "CellsFailed",
        "True",
        "CellsFailed",
        "1 of 8 cells failed, 2 interrupted (waiting for a human)",
    )
    assert (baseline.status, baseline.reason) == ("False", "HasSuccessfulCells")


def test_a_dead_baseline_is_a_condition_and_the_run_still_succeeds() -> None:
    """The driver exits 0 for a complete run (the operator must not submit it again): the
    failures are conditions a CI waits on, not the phase."""
    progress = _finished(4, 0, 0)
    (cells, baseline) = decide_outcome(progress)
    assert (cells.status, cells.reason) == ("True", "CellsFailed")
    assert baseline == SetCondition(
        "BaselineFailed",
        "True",
        "NoSuccessfulCell",
        "the baseline answer=original has no successful cell",
    )
    verdict = decide_finish(progress)
    assert isinstance(verdict, Succeed)
    assert verdict.message == "8 cells recorded, 4 of them failed or interrupted"
    copy = copy_of(SUBMITTED_STATUS)
    copy.progress(progress, NOW)
    copy.succeed(verdict, NOW)
    after = copy.status
    assert after.phase == "Succeeded"
    assert conditions_of(after)["CellsFailed"] == ("True", "CellsFailed")
    assert conditions_of(after)["BaselineFailed"] == ("True", "NoSuccessfulCell")
    assert conditions_of(after)["Complete"] == ("True", "Succeeded")
    # The same counts again set nothing new: status is not written again.
    again = copy_of(after)
    again.progress(progress, NOW + timedelta(minutes=1))
    assert again.status.conditions == after.conditions


def test_no_outcome_before_anything_is_recorded() -> None:
    assert decide_outcome(_progress(None, 0)) == ()
    assert decide_outcome(_progress(8, 0)) == ()
    # Cells recorded but none of the baseline's yet: CellsFailed only.
    early = _progress(8, 2)
    assert [c.type for c in decide_outcome(early)] == ["CellsFailed"]


FAILED = JobFailed(f"Ray job {SID1} FAILED: exit code 1", 1)
USAGE = JobFailed(f"Ray job {SID1} FAILED: exit code 2", 2)
LOST = JobFailed(f"the Ray cluster no longer knows job {SID1}")
NAMED = "Workflow team/toy: spec.variants.lookup[0].path: no module 'nope'\n  fix: check the path"


@pytest.mark.parametrize(
    ("failed", "attempts", "limit", "run_error", "expected"),
    [
        pytest.param(
            USAGE,
            1,
            2,
            NAMED,
            Fail(
                "InvalidWorkflow",
                "Workflow team/toy: spec.variants.lookup[0].path: no module 'nope' "
                "(fix: check the path)",
            ),
            id="driver exit code 2: the mistake it named, no retry",
        ),
        pytest.param(
            USAGE, 1, 2, None, Fail("InvalidWorkflow", USAGE.message), id="exit 2, nothing named"
        ),
        pytest.param(
            FAILED, 1, 2, None, Resubmit(Submission(2, SID2), FAILED.message), id="failed: again"
        ),
        pytest.param(
            FAILED, None, 2, None, Resubmit(Submission(2, SID2), FAILED.message), id="no count"
        ),
        pytest.param(
            LOST, 1, 2, None, Resubmit(Submission(2, SID2), LOST.message), id="lost: again"
        ),
        pytest.param(
            FAILED,
            3,
            2,
            NAMED,
            Fail("BackoffLimitExceeded", f"{FAILED.message}; 3 attempt(s), backoffLimit 2"),
            id="backoffLimit exceeded",
        ),
        pytest.param(
            LOST,
            1,
            0,
            None,
            Fail("BackoffLimitExceeded", f"{LOST.message}; 1 attempt(s), backoffLimit 0"),
            id="lost with backoffLimit 0",
        ),
    ],
)
def test_a_failed_job_is_submitted_again_or_fails_the_run(
    failed: JobFailed, attempts: int | None, limit: int, run_error: str | None, expected: object
) -> None:
    verdict = decide_failed_job(
        failed, attempts=attempts, backoff_limit=limit, run_error=run_error, uid=UID, generation=1
    )
    assert verdict == expected


def test_a_resubmission_is_recorded_before_it_is_submitted() -> None:
    verdict = decide_failed_job(
        FAILED, attempts=1, backoff_limit=2, run_error=None, uid=UID, generation=1
    )
    assert isinstance(verdict, Resubmit)
    assert verdict.event == Event(
        "JobFailed", f"{FAILED.message}; submitting again (attempt 2)", warning=True
    )
    copy = copy_of(SUBMITTED_STATUS)
    copy.resubmit(verdict, NOW)
    assert copy.patch()["submissionId"] == SID2
    assert (copy.status.job_attempts, copy.status.message) == (2, FAILED.message)
    assert conditions_of(copy.status)["JobSubmitted"] == ("False", "Submitting")
    # The next step finds the new attempt unknown to the cluster and not submitted: it submits.
    submission = submission_of(copy.status, uid=UID, generation=1)
    assert submission == Submission(2, SID2)
    assert decide_job(submission, copy.status, None) == Submit(submission)


@pytest.mark.parametrize("limit", [0, 1, 3])
def test_a_job_that_keeps_failing_runs_backoff_limit_plus_one_attempts(limit: int) -> None:
    copy = copy_of(SUBMITTED_STATUS)
    for _ in range(limit + 2):
        verdict = decide_failed_job(
            FAILED,
            attempts=copy.status.job_attempts,
            backoff_limit=limit,
            run_error=None,
            uid=UID,
            generation=1,
        )
        if isinstance(verdict, Fail):
            break
        assert isinstance(verdict, Resubmit)
        copy.resubmit(verdict, NOW)
    assert isinstance(verdict, Fail)
    assert verdict.reason == "BackoffLimitExceeded"
    assert copy.status.job_attempts == limit + 1
    copy.fail(verdict, NOW)
    assert conditions_of(copy.status)["Failed"] == ("True", "BackoffLimitExceeded")
    assert verdict.event.warning


def test_the_driver_job_names_its_run_and_origin() -> None:
    assert driver_entrypoint("team/demo:g1-6f1c2d3e", stored_batchtest()) == (
        "python -m wtb.driver --run team/demo:g1-6f1c2d3e"
    )
    assert driver_entrypoint("k", stored_batchtest(ray={"actors": 4})) == (
        "python -m wtb.driver --run k --actors 4"
    )
    assert job_metadata(stored_batchtest(), 3) == {
        "wtb.dev/batchtest": "team/demo",
        "wtb.dev/generation": "3",
    }


# --- after the run ------------------------------------------------------------------------

FINISHED = status(phase="Succeeded", ray_cluster="demo-ray", finished_at=ago(30))


@pytest.mark.parametrize(
    ("before", "spec", "expected"),
    [
        pytest.param(FINISHED, {}, None, id="no TTL"),
        pytest.param(FINISHED, TTL_SPEC, None, id="not due"),
        pytest.param(
            FINISHED, {"ttlSecondsAfterFinished": 30}, DeleteForTtl("demo-ray", 30), id="due"
        ),
        pytest.param(
            FINISHED, {"ttlSecondsAfterFinished": 0}, DeleteForTtl("demo-ray", 0), id="at once"
        ),
        pytest.param(
            FINISHED.model_copy(update={"ray_cluster": None}),
            {"ttlSecondsAfterFinished": 0},
            DeleteForTtl(raycluster_name("demo"), 0),
            id="failed before naming a cluster",
        ),
        pytest.param(
            FINISHED,
            {"ttlSecondsAfterFinished": 0, "ray": SHARED},
            None,
            id="shared cluster: not WTB's to delete",
        ),
        pytest.param(
            FINISHED.model_copy(update={"conditions": [DELETED]}),
            {"ttlSecondsAfterFinished": 0},
            None,
            id="deleted already",
        ),
        pytest.param(
            FINISHED.model_copy(update={"finished_at": None}),
            {"ttlSecondsAfterFinished": 0},
            None,
            id="no finish time",
        ),
    ],
)
def test_ttl_after_finished(
    before: BatchTestStatus, spec: Json, expected: DeleteForTtl | None
) -> None:
    assert decide_ttl(spec, before, name="demo", now=NOW) == expected


@pytest.mark.parametrize(
    ("cluster", "deletes"),
    [
        pytest.param(raycluster(), True, id="ours"),
        pytest.param(None, False, id="gone already"),
        pytest.param(raycluster(uid=OTHER_UID), False, id="an earlier object's"),
    ],
)
def test_the_ttl_deletes_only_this_objects_cluster_and_is_done(
    cluster: ClusterView | None, deletes: bool
) -> None:
    verdict = DeleteForTtl("demo-ray", 0)
    assert verdict.deletes(cluster, UID) is deletes
    assert verdict.event == Event(
        "DeletedRayCluster", "deleted RayCluster demo-ray (ttlSecondsAfterFinished 0)"
    )
    copy = copy_of(FINISHED)
    copy.cluster_deleted(verdict, NOW)
    assert conditions_of(copy.status)["ClusterReady"] == ("False", "ClusterDeleted")
    spec = {"ttlSecondsAfterFinished": 0}
    assert decide_ttl(spec, copy.status, name="demo", now=NOW) is None
    assert not needs_reconcile(copy.status, 1, spec)


# --- the views and the status copy --------------------------------------------------------


def test_a_cluster_view_reads_what_the_decisions_need() -> None:
    view = raycluster(deleting=True)
    assert view.name == "demo-ray"
    assert view.deleting
    assert view.owned_by(UID)
    assert not view.owned_by(OTHER_UID)
    assert view.owned_by_batchtest_named("demo")
    assert not view.owned_by_batchtest_named("other")
    assert view.spec_hash == raycluster().spec_hash
    assert view.spec_hash != raycluster(change=_edited).spec_hash
    assert (view.ready, view.dashboard_url) == (True, DASHBOARD)
    pending = raycluster(ready=False)
    assert (pending.ready, pending.dashboard_url, pending.deleting) == (False, None, False)
    assert "pulling the image" in pending.message
    bare = ClusterView.of({})
    assert (bare.owners, bare.spec_hash, bare.deleting) == ((), None, False)


def test_the_status_copy_writes_only_what_changed() -> None:
    before = status(NOT_READY_SINCE, phase="Provisioning")
    copy = copy_of(before)
    assert copy.patch() == {}
    assert not copy.set_condition(cond.CLUSTER_READY, "False", "Provisioning", "still", now=NOW), (
        "a new message alone is no event"
    )
    assert copy.set_condition(cond.CLUSTER_READY, "False", "ClusterNotFound", "gone", now=NOW)
    assert copy.set_condition(cond.VALIDATED, "True", "Valid", now=NOW)
    patch = copy.patch()
    assert [c["type"] for c in patch["conditions"]] == ["ClusterReady", "Validated"]
    ready = patch["conditions"][0]
    assert ready["lastTransitionTime"] == ago(100), "the status did not flip"
    assert ready["observedGeneration"] == 1
    assert patch["conditions"][1]["lastTransitionTime"] == cond.rfc3339(NOW)
    assert set(patch) == {"conditions"}
    copy.mark_written()
    assert copy.patch() == {}
    assert copy.before == before, "the status read is left as it was"
