"""The operator on a real API server: `kubectl apply -f examples/rag/` runs the batch on a
RayCluster (the KubeRay stand-in starts a real Ray head), the driver records every cell in
PostgreSQL through PgBouncer, and the matrix lands in the BatchTest's status."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from chart_rbac import (
    apply_operator_identity,
    client_for_token,
    is_allowed,
    operator_identity,
    remove_operator_identity,
)
from operator_bed import (
    SECRET_PASSWORD,
    TOY_DIR,
    TOY_IMAGE,
    SharedCluster,
    create,
    create_database_secret,
    create_raycluster,
    delete_batchtest,
    delete_unfinished_batchtests,
    driver_pids,
    events_for,
    example_manifests,
    finished,
    get_batchtest,
    get_raycluster,
    get_workflow,
    has_event,
    kubectl,
    list_rayclusters,
    patch_spec,
    ray_job,
    ray_jobs,
    raycluster_ready,
    release_finalizers,
    running,
    status_of,
    token_of,
    toy_workflow,
    url_with_password,
    wait_for_status,
    webhook_configured,
)
from services.kube import REPO_ROOT, ControlPlane, namespace
from services.kuberay_standin import KubeRayStandIn
from services.operator import OperatorProcess, start_operator
from services.postgres import PostgresServices
from services.support import ServiceError, holds, wait_until
from toybatch import toy_batchtest
from wtb import events
from wtb.api.comparison import ComparisonMatrix
from wtb.storage import ResultStore
from wtb_operator.kubeapi import Conflict, KubeApi

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.ray, pytest.mark.slow]

# Fields of a matrix row that depend on timing, not on the batch's results.
_TIMING = {"latencyMs"}
_TIMING_METRICS = {"latency"}


@pytest.fixture
def api(kube: ControlPlane) -> Iterator[client.ApiClient]:
    with kube.api_client() as api_client:
        yield api_client


@pytest.fixture
def operator_kubeconfig(
    kube: ControlPlane, api: client.ApiClient, kube_namespace: str, tmp_path: Path
) -> Iterator[Path]:
    """A kubeconfig holding only the token of the chart's ServiceAccount: the operator runs
    with exactly the permissions the chart grants."""
    token = apply_operator_identity(api, kube_namespace)
    try:
        yield kube.kubeconfig_for_token(token, tmp_path / "operator.kubeconfig")
    finally:
        remove_operator_identity(api, kube_namespace)


@pytest.fixture
def operator(
    operator_kubeconfig: Path,
    kuberay: KubeRayStandIn,
    kube_namespace: str,
    pgbouncer_url: str,
    api: client.ApiClient,
    tmp_path: Path,
) -> Iterator[OperatorProcess]:
    create_database_secret(api, kube_namespace, pgbouncer_url)
    # The operator's own URL holds a password too: it must not reach its log either.
    process = start_operator(
        operator_kubeconfig, url_with_password(pgbouncer_url), tmp_path / "operator.log"
    )
    try:
        yield process
    finally:
        process.stop()


def _rounded(value: Any) -> Any:
    """Floats to 10 significant digits: sums in PostgreSQL and SQLite differ in the last bits."""
    if isinstance(value, float):
        return float(f"{value:.10g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _comparable(matrix: dict[str, Any]) -> dict[str, Any]:
    """The matrix in one canonical form, without what depends on timing (latency, node times)."""
    matrix = _rounded(
        ComparisonMatrix.model_validate(matrix).model_dump(mode="json", by_alias=True)
    )
    rows = []
    for row in matrix["rows"]:
        kept = {k: v for k, v in row.items() if k not in _TIMING}
        kept["metrics"] = {
            k: v for k, v in row.get("metrics", {}).items() if k not in _TIMING_METRICS
        }
        # Per-node figures without their times (whose order follows the times, too).
        kept["nodes"] = {
            node: {k: v for k, v in figures.items() if k != "msP50"}
            for node, figures in sorted((row.get("nodes") or {}).items())
        }
        rows.append(kept)
    return {**matrix, "rows": sorted(rows, key=lambda r: r["label"])}


def _local_matrix(tmp_path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "wtb"),
            "run",
            "-f",
            "examples/rag/",
            "-o",
            "json",
            "-q",
            "--database",
            f"sqlite:///{tmp_path / 'local.db'}",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
        timeout=300,
    )
    (document,) = json.loads(out.stdout)
    matrix: dict[str, Any] = document["matrix"]
    return matrix


def test_apply_example_runs_to_a_matrix_in_status(
    kube: ControlPlane,
    operator: OperatorProcess,
    kube_namespace: str,
    api: client.ApiClient,
    pgbouncer_url: str,
    tmp_path: Path,
) -> None:
    kubectl(kube, "apply", "-n", kube_namespace, "-f", str(example_manifests()))
    status = wait_for_status(
        api,
        kube_namespace,
        "rag-variants",
        lambda s: s.get("phase") in ("Succeeded", "Failed"),
        "the example BatchTest finishing",
        logs=operator.logs,
    )
    assert status["phase"] == "Succeeded", status
    assert status["progress"] == "960/960"
    conditions = {c["type"]: c for c in status["conditions"]}
    for type_, value in [
        ("Validated", "True"),
        ("ClusterReady", "True"),
        ("JobSubmitted", "True"),
        ("Complete", "True"),
        ("Failed", "False"),
        ("CellsFailed", "False"),
        ("BaselineFailed", "False"),
    ]:
        assert conditions[type_]["status"] == value, conditions[type_]
    assert conditions["CellsFailed"]["message"] == "960 of 960 cells recorded, none failed"
    assert status["observedGeneration"] == 1
    assert status["jobAttempts"] == 1

    # The Workflow is Ready and lists its nodes with their variants.
    workflow = get_workflow(api, kube_namespace, "rag") or {}
    assert workflow["status"]["phase"] == "Ready"
    nodes = {n["node"]: n["variants"] for n in workflow["status"]["nodes"]}
    assert nodes == {
        "retrieve": ["original", "bm25", "bm25-top1"],
        "generate": ["original", "brief", "lead"],
    }

    # kubectl get bt shows the columns.
    table = kubectl(kube, "get", "bt", "-n", kube_namespace).stdout.splitlines()
    assert table[0].split() == [
        "NAME",
        "PHASE",
        "PROGRESS",
        "FAILED",
        "BASELINEFAILED",
        "BEST",
        "SCORE",
        "AGE",
    ]
    assert "Succeeded" in table[1]
    assert "960/960" in table[1]
    assert status["best"] in table[1]

    # The same engine: the matrix equals a local run's (timing aside).
    in_status, local = _comparable(status["matrix"]), _comparable(_local_matrix(tmp_path))
    differences = [
        (a["label"], key, a.get(key), b.get(key))
        for a, b in zip(in_status["rows"], local["rows"], strict=True)
        for key in sorted(set(a) | set(b))
        if a.get(key) != b.get(key)
    ]
    assert not differences
    assert in_status == local

    # Events for the transitions, Normal.
    for reason in [
        "Accepted",
        "Validated",
        "CreatedRayCluster",
        "ClusterReady",
        "SubmittedJob",
        "Succeeded",
    ]:
        assert has_event(api, kube_namespace, "rag-variants", reason), reason

    # Every cell in the database once; the RayCluster is owned by the BatchTest.
    with ResultStore.open(pgbouncer_url) as store:
        run = store.get_run(status["runId"])
        assert run is not None
        assert run.status == "succeeded"
    assert _work_done(pgbouncer_url, status["runId"]) == (960, 1, 1)
    (rc,) = list_rayclusters(api, kube_namespace)
    owner = rc["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == (
        "BatchTest",
        "rag-variants",
        True,
    )

    # Credentials come through the Secret only: not in status, events, job, or logs.
    assert SECRET_PASSWORD not in json.dumps(status)
    assert all(
        SECRET_PASSWORD not in (e.message or "")
        for e in events_for(api, kube_namespace, "rag-variants")
    )
    info = ray_job(rc, status["submissionId"])
    assert SECRET_PASSWORD not in json.dumps(info)
    assert SECRET_PASSWORD not in operator.logs()


@pytest.fixture
def toy(kuberay: KubeRayStandIn, api: client.ApiClient, kube_namespace: str) -> str:
    """The toy Workflow in the test's namespace, its image known to the stand-in."""
    kuberay.register_image(TOY_IMAGE, TOY_DIR)
    create(api, kube_namespace, toy_workflow())
    return "toy"


def _one_cluster(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    (rc,) = list_rayclusters(api, namespace)
    return rc


def _work_done(url: str, run_key: str) -> tuple[int, int, int]:
    """From the database: (cells recorded, drivers that ran the batch, the most successful
    attempts any one cell had). Each driver's start and each attempt is in the audit log."""
    with ResultStore.open(url) as store:
        run = store.get_run(run_key)
        assert run is not None
        cells = sum(1 for _ in store.iter_cells(run.id))
        audit = store.audit(run.id)
    drivers = sum(1 for e in audit if e.kind == events.BATCH_STARTED)
    successes = Counter(e.subject for e in audit if e.kind == events.CELL_ATTEMPT_SUCCEEDED)
    return cells, drivers, max(successes.values(), default=0)


def test_unchanged_reapply_never_reruns_and_a_spec_edit_does(
    kube: ControlPlane,
    operator_kubeconfig: Path,
    operator: OperatorProcess,
    toy: str,
    kube_namespace: str,
    api: client.ApiClient,
    pgbouncer_url: str,
    tmp_path: Path,
) -> None:
    manifest = tmp_path / "bt.yaml"
    manifest.write_text(yaml.safe_dump(toy_batchtest("gitops", 20)))
    kubectl(kube, "apply", "-n", kube_namespace, "-f", str(manifest))
    done = wait_for_status(
        api, kube_namespace, "gitops", finished, "the first run", logs=operator.logs
    )
    assert done["phase"] == "Succeeded", done
    generation = (get_batchtest(api, kube_namespace, "gitops") or {})["metadata"]["generation"]
    rc = _one_cluster(api, kube_namespace)

    # An Argo CD re-sync: the same manifest again, across an operator restart.
    operator.stop()
    kubectl(kube, "apply", "-n", kube_namespace, "-f", str(manifest))
    again = start_operator(operator_kubeconfig, pgbouncer_url, tmp_path / "operator-2.log")
    try:
        # A barrier: once the restarted operator has handled a new object, it has seen the
        # old one too.
        create(api, kube_namespace, toy_batchtest("barrier", 1, workflowRef={"name": "none"}))
        wait_for_status(
            api,
            kube_namespace,
            "barrier",
            lambda s: any(c.get("reason") == "WorkflowNotFound" for c in s.get("conditions", [])),
            "the restarted operator at work",
            logs=again.logs,
        )

        def stays_the_same() -> bool:
            now = get_batchtest(api, kube_namespace, "gitops") or {}
            return now["metadata"]["generation"] == generation and now.get("status") == done

        assert holds(stays_the_same, seconds=4.0), "status changed after an unchanged re-apply"
        assert len(ray_jobs(rc)) == 1

        # A spec edit is a new generation: a new run, on purpose.
        patch_spec(api, kube_namespace, "gitops", {"repeats": 2})
        second = wait_for_status(
            api,
            kube_namespace,
            "gitops",
            lambda s: s.get("observedGeneration") == 2 and finished(s),
            "the second generation's run",
            logs=again.logs,
        )
    finally:
        again.stop()
    assert second["phase"] == "Succeeded", second
    assert second["progress"] == "80/80"
    assert second["runId"] != done["runId"]
    assert "-g2-" in second["submissionId"]
    assert has_event(api, kube_namespace, "gitops", "NewGeneration")
    assert len(list_rayclusters(api, kube_namespace)) == 1


def test_deleting_a_running_batchtest_deletes_its_cluster_and_stops_the_job(
    operator: OperatorProcess,
    kuberay: KubeRayStandIn,
    toy: str,
    kube_namespace: str,
    api: client.ApiClient,
) -> None:
    create(api, kube_namespace, toy_batchtest("doomed", 400))
    status = wait_for_status(
        api, kube_namespace, "doomed", running, "cells being recorded", logs=operator.logs
    )
    head = kuberay.head_for(kube_namespace, status["rayCluster"])
    assert head is not None
    driver = driver_pids(status["runId"])
    assert driver, "no driver process found"

    delete_batchtest(api, kube_namespace, "doomed")
    wait_until(lambda: not list_rayclusters(api, kube_namespace), "the garbage collector", 30)
    wait_until(lambda: head.process.poll() is not None, "the Ray head stopping", 60)
    # A driver outside the head's process group may notice only when Ray's reconnect
    # timeout for the lost GCS runs out (60 s by default).
    wait_until(lambda: not driver_pids(status["runId"]), "the driver stopping", 90)


def test_ttl_deletes_the_cluster_after_the_run(
    operator: OperatorProcess,
    kuberay: KubeRayStandIn,
    toy: str,
    kube_namespace: str,
    api: client.ApiClient,
) -> None:
    create(api, kube_namespace, toy_batchtest("brief", 5, ttlSecondsAfterFinished=0))
    status = wait_for_status(api, kube_namespace, "brief", finished, "the run", logs=operator.logs)
    assert status["phase"] == "Succeeded", status
    wait_until(
        lambda: not list_rayclusters(api, kube_namespace), "the TTL deleting the cluster", 30
    )
    # The condition is written just after the deletion.
    after = wait_for_status(
        api,
        kube_namespace,
        "brief",
        lambda s: any(c.get("reason") == "ClusterDeleted" for c in s.get("conditions", [])),
        "the ClusterDeleted condition",
        seconds=30,
        logs=operator.logs,
    )
    assert after["phase"] == "Succeeded"


def test_a_cluster_that_never_gets_ready_times_out_with_a_condition(
    operator: OperatorProcess,
    kuberay: KubeRayStandIn,
    kube_namespace: str,
    api: client.ApiClient,
) -> None:
    workflow = toy_workflow(image="registry.example/not-pullable:1")
    create(api, kube_namespace, workflow)
    create(api, kube_namespace, toy_batchtest("stuck", 5, ray={"readyTimeoutSeconds": 3}))
    status = wait_for_status(
        api, kube_namespace, "stuck", finished, "the timeout", logs=operator.logs
    )
    assert status["phase"] == "Failed"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["ClusterReady"]["reason"] == "ClusterTimeout"
    assert conditions["Failed"]["reason"] == "ClusterTimeout"
    assert has_event(api, kube_namespace, "stuck", "ClusterTimeout")
    assert "submissionId" not in status


def _run_until_reason(
    kubeconfig: Path,
    kuberay: KubeRayStandIn,
    api: client.ApiClient,
    namespace: str,
    database_url: str,
    tmp_path: Path,
    batchtest: dict[str, Any],
    reason: str,
    *,
    webhook: bool = True,
) -> tuple[dict[str, Any], str]:
    """Run an operator of its own until the toy BatchTest has a condition with `reason`:
    (the status then, the operator's log)."""
    kuberay.register_image(TOY_IMAGE, TOY_DIR)
    create_database_secret(api, namespace, database_url)
    process = start_operator(kubeconfig, database_url, tmp_path / "op.log", webhook=webhook)
    try:
        create(api, namespace, toy_workflow())
        create(api, namespace, batchtest)
        status = wait_for_status(
            api,
            namespace,
            batchtest["metadata"]["name"],
            lambda s: any(c.get("reason") == reason for c in s.get("conditions", [])),
            f"a condition with reason {reason}",
            logs=process.logs,
        )
        # Kopf posts the event from a queue after the status write; stopping the operator at
        # once can drop it (seen under load), so wait for it (15 s at most) first.
        has_event(api, namespace, batchtest["metadata"]["name"], reason)
    finally:
        process.stop()
    return status, process.logs()


BAD_BATCHTESTS = [
    pytest.param(
        {"matrix": {"lookup": ["original", "nope"]}},
        "spec.matrix.lookup[1]",
        id="unknown-variant",
    ),
    pytest.param(
        {"baseline": {"lookup": "v"}, "matrix": {"lookup": ["original"]}},
        "spec.baseline",
        id="baseline-not-in-matrix",
    ),
    pytest.param({"primaryMetric": "speed"}, "primaryMetric", id="unknown-metric"),
    pytest.param(
        {"ray": {"clusterName": "shared", "workers": {"replicas": 2}}},
        "ray.workers",
        id="named-and-built-cluster",
    ),
    pytest.param(
        # 16,777,216 combinations in a ~1 KB object: counted, never expanded.
        {"matrix": {f"n{i}": ["original", *(f"v{j}" for j in range(7))] for i in range(8)}},
        "spec.matrix: the matrix has 16,777,216 combinations",
        id="matrix-of-millions",
    ),
]


@pytest.mark.parametrize(("change", "field"), BAD_BATCHTESTS)
def test_the_webhook_refuses_a_bad_batchtest_at_apply_time(
    kube: ControlPlane,
    operator: OperatorProcess,
    toy: str,
    kube_namespace: str,
    api: client.ApiClient,
    tmp_path: Path,
    change: dict[str, Any],
    field: str,
) -> None:
    wait_until(lambda: webhook_configured(api, operator.webhook_port), "the webhook", 60)
    bad = toy_batchtest("bad", 3)
    bad["spec"].update(change)
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(yaml.safe_dump(bad))
    out = kubectl(kube, "apply", "-n", kube_namespace, "-f", str(manifest), check=False)
    assert out.returncode != 0
    assert "denied the request" in out.stderr
    assert field in out.stderr
    assert get_batchtest(api, kube_namespace, "bad") is None


def test_a_webhook_check_past_its_deadline_admits_with_a_warning(
    kube: ControlPlane,
    operator_kubeconfig: Path,
    kuberay: KubeRayStandIn,
    kube_namespace: str,
    api: client.ApiClient,
    pgbouncer_url: str,
    tmp_path: Path,
) -> None:
    """WTB_WEBHOOK_CHECK_SECONDS: a check that cannot answer in time admits the object with
    a warning (the webhook's failure policy); the reconcile step makes the same check."""
    create_database_secret(api, kube_namespace, pgbouncer_url)
    process = start_operator(
        operator_kubeconfig,
        pgbouncer_url,
        tmp_path / "op.log",
        env={"WTB_WEBHOOK_CHECK_SECONDS": "0.000001"},
    )
    try:
        wait_until(lambda: webhook_configured(api, process.webhook_port), "the webhook", 60)
        create(api, kube_namespace, toy_workflow())
        bad = toy_batchtest("bad", 3)
        bad["spec"]["matrix"] = {"lookup": ["original", "nope"]}
        manifest = tmp_path / "bad.yaml"
        manifest.write_text(yaml.safe_dump(bad))
        out = kubectl(kube, "apply", "-n", kube_namespace, "-f", str(manifest), check=False)
        assert out.returncode == 0, out.stderr
        assert "Warning: the admission check did not finish" in out.stderr
        assert "WTB_WEBHOOK_CHECK_SECONDS" in out.stderr
        status = wait_for_status(
            api,
            kube_namespace,
            "bad",
            lambda s: any(c.get("reason") == "WorkflowMismatch" for c in s.get("conditions", [])),
            "the reconcile step's WorkflowMismatch",
            logs=process.logs,
        )
        validated = {c["type"]: c for c in status["conditions"]}["Validated"]
        assert "spec.matrix.lookup[1]" in validated["message"]
    finally:
        process.stop()


def test_without_the_webhook_the_same_error_is_a_condition(
    operator_kubeconfig: Path,
    kuberay: KubeRayStandIn,
    kube_namespace: str,
    api: client.ApiClient,
    pgbouncer_url: str,
    tmp_path: Path,
) -> None:
    bad = toy_batchtest("bad", 3)
    bad["spec"]["matrix"] = {"lookup": ["original", "nope"]}
    status, _ = _run_until_reason(
        operator_kubeconfig,
        kuberay,
        api,
        kube_namespace,
        pgbouncer_url,
        tmp_path,
        bad,
        "WorkflowMismatch",
        webhook=False,
    )
    validated = {c["type"]: c for c in status["conditions"]}["Validated"]
    assert validated["status"] == "False"
    assert "spec.matrix.lookup[1]" in validated["message"]
    assert "nope" in validated["message"]
    assert has_event(api, kube_namespace, "bad", "WorkflowMismatch")
    assert not list_rayclusters(api, kube_namespace)


def test_a_missing_permission_is_a_clear_condition_and_log(
    operator_kubeconfig: Path,
    kuberay: KubeRayStandIn,
    kube_namespace: str,
    api: client.ApiClient,
    pgbouncer_url: str,
    tmp_path: Path,
) -> None:
    """The chart's ClusterRole without `create` on rayclusters: the operator says so."""
    rbac = client.RbacAuthorizationV1Api(api)
    (role,) = [r for r in operator_identity(kube_namespace) if r["kind"] == "ClusterRole"]
    for rule in role["rules"]:
        if "rayclusters" in rule["resources"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != "create"]
    body: Any = role  # the client sends a dict as it is
    rbac.replace_cluster_role(role["metadata"]["name"], body)
    with client_for_token(api, token_of(operator_kubeconfig)) as as_operator:
        wait_until(
            lambda: (
                not is_allowed(
                    as_operator, "create", "rayclusters", group="ray.io", namespace=kube_namespace
                )
            ),
            "the narrower role to take effect",
            30,
        )
    status, logs = _run_until_reason(
        operator_kubeconfig,
        kuberay,
        api,
        kube_namespace,
        pgbouncer_url,
        tmp_path,
        toy_batchtest("unprivileged", 3),
        "PermissionDenied",
    )
    ready = {c["type"]: c for c in status["conditions"]}["ClusterReady"]
    assert ready["status"] == "False"
    assert "may not create rayclusters.ray.io" in ready["message"]
    assert "forbidden: the operator may not create rayclusters.ray.io" in logs
    assert not list_rayclusters(api, kube_namespace)


def test_an_inconsistent_workflow_is_marked_invalid_with_the_field_named(
    operator: OperatorProcess, kube_namespace: str, api: client.ApiClient
) -> None:
    workflow = toy_workflow()
    workflow["spec"]["variants"]["lookup"].append(
        {"name": "v", "path": "toyflow.graph:lookup_sync"}
    )
    create(api, kube_namespace, workflow)

    def invalid() -> bool:
        status = (get_workflow(api, kube_namespace, "toy") or {}).get("status") or {}
        return status.get("phase") == "Invalid"

    wait_until(invalid, "the Workflow marked Invalid", 60)
    status = (get_workflow(api, kube_namespace, "toy") or {})["status"]
    (ready,) = status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "InvalidSpec")
    assert "variants.lookup" in ready["message"]
    assert "repeated: v" in ready["message"]
    assert has_event(api, kube_namespace, "toy", "InvalidSpec")


def test_a_batchtest_deleted_and_made_again_runs_again(
    operator: OperatorProcess, toy: str, kube_namespace: str, api: client.ApiClient
) -> None:
    """Delete and apply again at once (an Argo CD replace): the old RayCluster is still
    being collected when the new object wants one of the same name."""
    create(api, kube_namespace, toy_batchtest("again", 10))
    first = wait_for_status(
        api, kube_namespace, "again", finished, "the first run", logs=operator.logs
    )
    assert first["phase"] == "Succeeded", first
    delete_batchtest(api, kube_namespace, "again")
    wait_until(lambda: get_batchtest(api, kube_namespace, "again") is None, "the deletion", 30)
    create(api, kube_namespace, toy_batchtest("again", 10))
    second = wait_for_status(
        api,
        kube_namespace,
        "again",
        lambda s: finished(s) and s.get("runId") != first["runId"],
        "the second object's run",
        logs=operator.logs,
    )
    assert second["phase"] == "Succeeded", second
    (rc,) = list_rayclusters(api, kube_namespace)
    new_uid = (get_batchtest(api, kube_namespace, "again") or {})["metadata"]["uid"]
    assert rc["metadata"]["ownerReferences"][0]["uid"] == new_uid


def test_operator_killed_while_provisioning_makes_no_second_cluster_or_job(
    operator_kubeconfig: Path,
    operator: OperatorProcess,
    kuberay: KubeRayStandIn,
    kube_namespace: str,
    api: client.ApiClient,
    pgbouncer_url: str,
    tmp_path: Path,
) -> None:
    """The operator dies after creating the RayCluster, before it is ready; the cluster gets
    ready while no operator runs; the restarted one goes on with that cluster."""
    image = f"wtb-test-late-{kube_namespace[-8:]}:1"  # not pullable until registered below
    create(api, kube_namespace, toy_workflow(image=image))
    create(api, kube_namespace, toy_batchtest("late", 20))

    def provisioning(status: dict[str, Any]) -> bool:
        ready = {c["type"]: c for c in status.get("conditions", [])}.get("ClusterReady")
        return (
            ready is not None
            and ready["status"] == "False"
            and bool(list_rayclusters(api, kube_namespace))
        )

    wait_for_status(
        api, kube_namespace, "late", provisioning, "the cluster being made", logs=operator.logs
    )
    operator.kill()
    kuberay.register_image(image, TOY_DIR)
    wait_until(
        lambda: _one_cluster(api, kube_namespace).get("status", {}).get("state") == "ready",
        "the cluster getting ready",
        90,
    )

    again = start_operator(operator_kubeconfig, pgbouncer_url, tmp_path / "operator-2.log")
    try:
        status = wait_for_status(api, kube_namespace, "late", finished, "the run", logs=again.logs)
    finally:
        again.stop()
    assert status["phase"] == "Succeeded", status
    assert status["jobAttempts"] == 1
    rc = _one_cluster(api, kube_namespace)
    assert [j["submission_id"] for j in ray_jobs(rc)] == [status["submissionId"]]
    assert _work_done(pgbouncer_url, status["runId"]) == (40, 1, 1)


def test_a_status_write_from_an_outdated_read_is_refused(
    kube: ControlPlane, toy: str, kube_namespace: str, api: client.ApiClient
) -> None:
    """What keeps a reconcile step that started from an outdated copy of the object from
    undoing newer work: its status writes name the version it read."""
    made = create(api, kube_namespace, toy_batchtest("versioned", 1))
    read = made["metadata"]["resourceVersion"]
    kube_api = KubeApi(api)
    newer = kube_api.patch_status(
        "batchtests", kube_namespace, "versioned", {"phase": "Pending"}, resource_version=read
    )
    assert newer is not None
    assert newer != read
    with pytest.raises(Conflict):
        kube_api.patch_status(
            "batchtests", kube_namespace, "versioned", {"phase": "Failed"}, resource_version=read
        )
    assert status_of(api, kube_namespace, "versioned")["phase"] == "Pending"


# --- On one shared RayCluster: tests whose subject is not a cluster's lifecycle. They come
# last, so that its head runs only while they do.


@pytest.fixture(scope="module")
def shared(
    kube: ControlPlane, kuberay: KubeRayStandIn, postgres_services: PostgresServices
) -> Iterator[SharedCluster]:
    """One RayCluster for the tests whose subject is not a cluster's lifecycle, started once
    for this module: those tests skip starting a Ray head (about 8 s) and its first worker
    processes. Its namespace holds the toy Workflow; its database is theirs."""
    kuberay.register_image(TOY_IMAGE, TOY_DIR)
    database = f"wtb_test_{os.getpid()}_shared"
    postgres_services.create_database(database)
    url = postgres_services.url(database, through_pgbouncer=True)
    try:
        with kube.api_client() as api, namespace(api, "shared") as ns:
            try:
                create_database_secret(api, ns, url)
                create(api, ns, toy_workflow())
                create_raycluster(api, ns, "shared", TOY_IMAGE)
                wait_until(lambda: raycluster_ready(api, ns, "shared"), "the shared RayCluster", 90)
                yield SharedCluster(ns, "shared", url)
            finally:
                release_finalizers(api, ns)
    finally:
        postgres_services.drop_database(database)


@pytest.fixture
def shared_operator(
    operator_kubeconfig: Path, shared: SharedCluster, api: client.ApiClient, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The operator, recording in the shared cluster's database. Afterwards it deletes what
    a failed test left unfinished there (stopping its job), so that the next test has the
    cluster to itself."""
    process = start_operator(
        operator_kubeconfig, url_with_password(shared.database_url), tmp_path / "operator.log"
    )
    try:
        yield process
    finally:
        try:
            if process.running():
                # Only a failed test leaves something; its own error says more than this.
                with contextlib.suppress(ServiceError):
                    delete_unfinished_batchtests(api, shared.namespace, 60)
        finally:
            process.stop()


def test_operator_killed_mid_run_resumes_without_doing_anything_twice(
    operator_kubeconfig: Path,
    shared_operator: OperatorProcess,
    shared: SharedCluster,
    api: client.ApiClient,
    tmp_path: Path,
) -> None:
    ns, url = shared.namespace, shared.database_url
    create(api, ns, toy_batchtest("resume", 150, ray={"clusterName": shared.name}))
    wait_for_status(api, ns, "resume", running, "cells being recorded", logs=shared_operator.logs)
    shared_operator.kill()
    before = status_of(api, ns, "resume")
    assert before["phase"] == "Running"

    again = start_operator(operator_kubeconfig, url, tmp_path / "operator-2.log")
    try:
        status = wait_for_status(
            api, ns, "resume", finished, "the batch finishing", logs=again.logs
        )
    finally:
        again.stop()
    assert status["phase"] == "Succeeded", status
    assert status["progress"] == "300/300"
    assert status["submissionId"] == before["submissionId"]
    assert status["jobAttempts"] == 1
    rc = get_raycluster(api, ns, shared.name) or {}
    jobs = [j for j in ray_jobs(rc) if j["metadata"].get("wtb.dev/batchtest") == f"{ns}/resume"]
    assert [j["submission_id"] for j in jobs] == [status["submissionId"]]
    assert _work_done(url, status["runId"]) == (300, 1, 1)


def test_deleting_a_batchtest_stops_its_job_on_a_shared_cluster(
    shared_operator: OperatorProcess, shared: SharedCluster, api: client.ApiClient
) -> None:
    ns = shared.namespace
    create(api, ns, toy_batchtest("guest", 400, ray={"clusterName": shared.name}))
    status = wait_for_status(
        api, ns, "guest", running, "cells being recorded", logs=shared_operator.logs
    )
    assert status["rayCluster"] == shared.name

    delete_batchtest(api, ns, "guest")
    wait_until(lambda: get_batchtest(api, ns, "guest") is None, "the BatchTest going", 60)
    rc = get_raycluster(api, ns, shared.name)
    assert rc is not None, "a shared cluster is not WTB's to delete"
    assert raycluster_ready(api, ns, shared.name)
    job = ray_job(rc, status["submissionId"])
    wait_until(
        lambda: ray_job(rc, status["submissionId"])["status"] == "STOPPED", "the job stopping", 30
    )
    assert job["metadata"]["wtb.dev/batchtest"] == f"{ns}/guest"


def test_a_failed_job_is_submitted_again_and_recorded_cells_are_kept(
    shared_operator: OperatorProcess, shared: SharedCluster, api: client.ApiClient
) -> None:
    ns, url = shared.namespace, shared.database_url
    create(
        api,
        ns,
        toy_batchtest("retried", 150, backoffLimit=1, ray={"clusterName": shared.name}),
    )
    status = wait_for_status(
        api, ns, "retried", lambda s: running(s, 50), "cells recorded", logs=shared_operator.logs
    )
    first = status["submissionId"]
    for pid in driver_pids(status["runId"]):
        os.kill(pid, signal.SIGKILL)  # the driver's pod dies: the Ray job fails
    with ResultStore.open(url) as store:
        run = store.get_run(status["runId"])
        assert run is not None
        kept = {c.cell_key: c.finished_at for c in store.iter_cells(run.id)}
    assert kept
    assert len(kept) < 300, "the first attempt finished before it was killed"

    done = wait_for_status(
        api, ns, "retried", finished, "the second attempt", logs=shared_operator.logs
    )
    assert done["phase"] == "Succeeded", done
    assert done["jobAttempts"] == 2
    assert done["submissionId"] != first
    assert has_event(api, ns, "retried", "JobFailed")
    with ResultStore.open(url) as store:
        run = store.get_run(done["runId"])
        assert run is not None
        after = {c.cell_key: c.finished_at for c in store.iter_cells(run.id)}
    assert len(after) == 300
    assert all(after[key] == when for key, when in kept.items()), "a recorded cell ran again"
    assert _work_done(url, done["runId"]) == (300, 2, 1)


def test_a_workflow_that_does_not_import_fails_once_with_the_field_named(
    shared_operator: OperatorProcess, shared: SharedCluster, api: client.ApiClient
) -> None:
    ns = shared.namespace
    create(api, ns, toy_workflow("no_such_node", name="toy-broken"))
    create(
        api,
        ns,
        toy_batchtest(
            "broken", 5, workflowRef={"name": "toy-broken"}, ray={"clusterName": shared.name}
        ),
    )
    status = wait_for_status(
        api, ns, "broken", finished, "the run failing", logs=shared_operator.logs
    )
    assert status["phase"] == "Failed"
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert failed["reason"] == "InvalidWorkflow"
    assert "spec.variants.lookup[0].path" in failed["message"]
    assert status["jobAttempts"] == 1
    # A failing driver's output stays out of status and events, credentials with it.
    assert SECRET_PASSWORD not in json.dumps(status)
    assert all(SECRET_PASSWORD not in (e.message or "") for e in events_for(api, ns, "broken"))
    assert SECRET_PASSWORD not in shared_operator.logs()


def test_a_spec_edit_mid_run_stops_the_old_job_and_starts_a_new_run(
    shared_operator: OperatorProcess, shared: SharedCluster, api: client.ApiClient
) -> None:
    ns = shared.namespace
    create(api, ns, toy_batchtest("edited", 400, ray={"clusterName": shared.name}))
    old = wait_for_status(
        api, ns, "edited", running, "cells being recorded", logs=shared_operator.logs
    )
    patch_spec(
        api, ns, "edited", {"repeats": 2, "dataset": toy_batchtest("x", 5)["spec"]["dataset"]}
    )
    new = wait_for_status(
        api,
        ns,
        "edited",
        lambda s: s.get("observedGeneration") == 2 and finished(s),
        "the new generation's run",
        logs=shared_operator.logs,
    )
    assert new["phase"] == "Succeeded", new
    assert new["progress"] == "20/20"
    assert new["runId"] != old["runId"]
    rc = get_raycluster(api, ns, shared.name) or {}
    assert ray_job(rc, old["submissionId"])["status"] == "STOPPED"
    assert has_event(api, ns, "edited", "StoppedJob")
