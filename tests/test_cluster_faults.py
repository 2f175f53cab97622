"""Cluster faults, made for real while the operator runs a BatchTest: the API server
throttles the operator (429, API Priority and Fairness), etcd dies (5xx), the API server
restarts (every watch dropped), the Ray head restarts and forgets the job, the webhook's
certificate is rotated. Each drill checks that the BatchTest still reaches its end with
every cell recorded once, and every wait has a deadline."""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import ssl
import threading
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from chart_rbac import apply_operator_identity, operator_identity, remove_operator_identity
from operator_bed import (
    SharedCluster,
    create,
    delete_unfinished_batchtests,
    finished,
    get_batchtest,
    get_raycluster,
    has_event,
    ray_jobs,
    running,
    shared_cluster,
    wait_for_status,
)
from services.kube import KUBECONFIG_ENV, ControlPlane
from services.kuberay_standin import KubeRayStandIn
from services.operator import OperatorProcess, start_operator
from services.postgres import PostgresServices
from services.support import ServiceError, wait_until
from toybatch import toy_batchtest
from wtb import events
from wtb.storage import ResultStore
from wtb_operator.webhook_server import self_signed_certificate

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.ray, pytest.mark.slow]

CELLS = 300  # toy_batchtest(..., 150): 150 cases x 2 variants
APF_GROUP, APF_VERSION = "flowcontrol.apiserver.k8s.io", "v1beta1"  # what Kubernetes 1.20 serves


def _work_done(url: str, run_key: str) -> tuple[int, int, int]:
    """From the database: (cells recorded, drivers that ran the batch, the most successful
    attempts any one cell had)."""
    with ResultStore.open(url) as store:
        run = store.get_run(run_key)
        assert run is not None
        cells = [c.cell_key for c in store.iter_cells(run.id)]
        audit = store.audit(run.id)
    assert len(cells) == len(set(cells))
    drivers = sum(1 for e in audit if e.kind == events.BATCH_STARTED)
    successes = Counter(e.subject for e in audit if e.kind == events.CELL_ATTEMPT_SUCCEEDED)
    return len(cells), drivers, max(successes.values(), default=0)


def _own_control_plane(kube: ControlPlane) -> None:
    if not kube.owns_processes:
        pytest.skip(f"{KUBECONFIG_ENV} names a cluster whose etcd and API server are not ours")


@pytest.fixture
def api(kube: ControlPlane) -> Iterator[client.ApiClient]:
    with kube.api_client() as api_client:
        yield api_client


@pytest.fixture
def operator_token(api: client.ApiClient, kube_namespace: str) -> Iterator[str]:
    """A token of the chart's ServiceAccount (in the test's namespace)."""
    try:
        yield apply_operator_identity(api, kube_namespace)
    finally:
        remove_operator_identity(api, kube_namespace)


@pytest.fixture(scope="module")
def faults_cluster(
    kube: ControlPlane, kuberay: KubeRayStandIn, postgres_services: PostgresServices
) -> Iterator[SharedCluster]:
    with shared_cluster(kube, kuberay, postgres_services, "faults") as cluster:
        yield cluster


def _start(
    kube: ControlPlane,
    token: str,
    cluster: SharedCluster,
    tmp_path: Path,
    env: dict[str, str] | None = None,
) -> OperatorProcess:
    kubeconfig = kube.kubeconfig_for_token(token, tmp_path / "operator.kubeconfig")
    return start_operator(kubeconfig, cluster.database_url, tmp_path / "operator.log", env=env)


@pytest.fixture
def fault_operator(
    kube: ControlPlane,
    operator_token: str,
    faults_cluster: SharedCluster,
    api: client.ApiClient,
    tmp_path: Path,
) -> Iterator[OperatorProcess]:
    """The operator (the chart's identity), recording in the cluster's database; afterwards
    it deletes what a failed drill left unfinished, so that the next has the cluster alone."""
    process = _start(kube, operator_token, faults_cluster, tmp_path)
    try:
        yield process
    finally:
        try:
            if process.running():
                with contextlib.suppress(ServiceError):
                    delete_unfinished_batchtests(api, faults_cluster.namespace, 60)
        finally:
            process.stop()


def _run(api: client.ApiClient, cluster: SharedCluster, name: str, cases: int, **spec: Any) -> None:
    create(
        api,
        cluster.namespace,
        toy_batchtest(name, cases, ray={"clusterName": cluster.name}, **spec),
    )


def _finished_once(
    api: client.ApiClient,
    cluster: SharedCluster,
    operator: OperatorProcess,
    name: str,
    cells: int,
    *,
    attempts: int = 1,
) -> dict[str, Any]:
    """Wait for the BatchTest to finish; check it succeeded with every cell recorded once,
    by `attempts` Ray jobs (drivers) in all, and that its last job is the one Ray knows."""
    ns = cluster.namespace
    status = wait_for_status(api, ns, name, finished, f"{name} finishing", logs=operator.logs)
    assert status["phase"] == "Succeeded", status
    assert status["progress"] == f"{cells}/{cells}"
    assert status["jobAttempts"] == attempts
    assert _work_done(cluster.database_url, status["runId"]) == (cells, attempts, 1)
    rc = get_raycluster(api, ns, cluster.name) or {}
    jobs = [j for j in ray_jobs(rc) if j["metadata"].get("wtb.dev/batchtest") == f"{ns}/{name}"]
    assert status["submissionId"] in [j["submission_id"] for j in jobs]
    assert operator.running()
    return status


def test_api_server_throttling_429_is_waited_out(
    kube: ControlPlane,
    fault_operator: OperatorProcess,
    faults_cluster: SharedCluster,
    operator_token: str,
    kube_namespace: str,
    api: client.ApiClient,
) -> None:
    """API Priority and Fairness puts the operator's ServiceAccount in a priority level of
    its own with the least concurrency there is and no queue (Reject): with a noisy
    neighbour of the same identity saturating it, the operator's requests get 429 Too Many
    Requests from the real API server. It backs off, and the BatchTest completes."""
    _own_control_plane(kube)
    objects = client.CustomObjectsApi(api)
    name = f"wtb-faults-{kube_namespace[-8:]}"
    account = next(
        o["metadata"]["name"]
        for o in operator_identity(kube_namespace)
        if o["kind"] == "ServiceAccount"
    )
    level = {
        "apiVersion": f"{APF_GROUP}/{APF_VERSION}",
        "kind": "PriorityLevelConfiguration",
        "metadata": {"name": name},
        "spec": {
            "type": "Limited",
            "limited": {"assuredConcurrencyShares": 1, "limitResponse": {"type": "Reject"}},
        },
    }
    schema = {
        "apiVersion": f"{APF_GROUP}/{APF_VERSION}",
        "kind": "FlowSchema",
        "metadata": {"name": name},
        "spec": {
            "priorityLevelConfiguration": {"name": name},
            "matchingPrecedence": 500,  # before the defaults (service-accounts: 9000)
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [
                {
                    "subjects": [
                        {
                            "kind": "ServiceAccount",
                            "serviceAccount": {"namespace": kube_namespace, "name": account},
                        }
                    ],
                    "resourceRules": [
                        {
                            "verbs": ["*"],
                            "apiGroups": ["*"],
                            "resources": ["*"],
                            "clusterScope": True,
                            "namespaces": ["*"],
                        }
                    ],
                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                }
            ],
        },
    }
    objects.create_cluster_custom_object(
        APF_GROUP, APF_VERSION, "prioritylevelconfigurations", level
    )
    objects.create_cluster_custom_object(APF_GROUP, APF_VERSION, "flowschemas", schema)
    stop = threading.Event()
    refused: list[int] = []
    noisy = [
        threading.Thread(target=_noisy_neighbour, args=(kube.server, operator_token, stop, refused))
        for _ in range(6)
    ]
    _run(api, faults_cluster, "throttled", 300)
    wait_for_status(
        api,
        faults_cluster.namespace,
        "throttled",
        running,
        "cells being recorded",
        logs=fault_operator.logs,
    )
    try:
        for thread in noisy:
            thread.start()
        wait_until(lambda: bool(refused), "the noisy neighbour to be throttled (429)", 60)
        # Kopf's own requests retry 429s; the reconcile step's say so and back off.
        wait_until(
            lambda: "throttling the operator" in fault_operator.logs(),
            "a reconcile step to meet a 429",
            60,
        )
    finally:
        stop.set()
        for thread in noisy:
            thread.join(30)
        with contextlib.suppress(client.ApiException):
            objects.delete_cluster_custom_object(APF_GROUP, APF_VERSION, "flowschemas", name)
        with contextlib.suppress(client.ApiException):
            objects.delete_cluster_custom_object(
                APF_GROUP, APF_VERSION, "prioritylevelconfigurations", name
            )
    _finished_once(api, faults_cluster, fault_operator, "throttled", 600)


def _noisy_neighbour(server: str, token: str, stop: threading.Event, refused: list[int]) -> None:
    """List BatchTests as the operator's identity, on one kept-alive connection, as fast as
    the API server answers, until `stop`; counts the 429s."""
    context = ssl._create_unverified_context()  # noqa: S323 (the test server's own certificate)
    address = urllib.parse.urlsplit(server)
    headers = {"Authorization": f"Bearer {token}"}
    connection: http.client.HTTPSConnection | None = None
    while not stop.is_set():
        try:
            if connection is None:
                connection = http.client.HTTPSConnection(
                    address.hostname or "", address.port, timeout=10, context=context
                )
            connection.request("GET", "/apis/wtb.dev/v1alpha1/batchtests", headers=headers)
            reply = connection.getresponse()
            reply.read()
            if reply.status == 429:
                refused.append(429)
        except (http.client.HTTPException, OSError):
            if connection is not None:
                connection.close()
            connection = None
    if connection is not None:
        connection.close()


def test_etcd_down_mid_run_the_operator_waits_and_finishes(
    kube: ControlPlane,
    fault_operator: OperatorProcess,
    faults_cluster: SharedCluster,
    api: client.ApiClient,
) -> None:
    """etcd dies while the batch runs: the API server answers the operator's requests with
    504 (after its request timeout); the operator keeps running, and once etcd is back the
    BatchTest completes, every cell recorded once by the one job."""
    _own_control_plane(kube)
    _run(api, faults_cluster, "etcd-down", 150)
    wait_for_status(
        api,
        faults_cluster.namespace,
        "etcd-down",
        running,
        "cells being recorded",
        logs=fault_operator.logs,
    )
    kube.stop_etcd()
    try:
        wait_until(
            lambda: "the API server answered 5" in fault_operator.logs(),
            "the operator to meet a 5xx",
            60,
        )
        assert fault_operator.running()
    finally:
        kube.start_etcd()
    _finished_once(api, faults_cluster, fault_operator, "etcd-down", CELLS)


def test_watches_dropped_by_an_api_server_restart_are_made_again(
    kube: ControlPlane,
    fault_operator: OperatorProcess,
    faults_cluster: SharedCluster,
    api: client.ApiClient,
) -> None:
    """The API server restarts mid-run: every watch and connection of the operator ends,
    and requests are refused until it is back. The operator watches again (a BatchTest
    created after the restart is seen) and the running one completes."""
    _own_control_plane(kube)
    _run(api, faults_cluster, "before-restart", 150)
    wait_for_status(
        api,
        faults_cluster.namespace,
        "before-restart",
        running,
        "cells being recorded",
        logs=fault_operator.logs,
    )
    kube.restart_api_server()
    _run(api, faults_cluster, "after-restart", 5)
    _finished_once(api, faults_cluster, fault_operator, "before-restart", CELLS)
    _finished_once(api, faults_cluster, fault_operator, "after-restart", 10)


def test_a_ray_head_restart_that_loses_the_job_is_resubmitted_and_resumes(
    kuberay: KubeRayStandIn,
    fault_operator: OperatorProcess,
    faults_cluster: SharedCluster,
    api: client.ApiClient,
) -> None:
    """The head pod restarts mid-run: its driver dies, and the new head (same address) knows
    no jobs. The operator submits the job again; the new driver keeps the recorded cells
    and runs only the others."""
    ns, url = faults_cluster.namespace, faults_cluster.database_url
    _run(api, faults_cluster, "head-lost", 150, backoffLimit=1)
    status = wait_for_status(
        api, ns, "head-lost", lambda s: running(s, 50), "cells recorded", logs=fault_operator.logs
    )
    kuberay.restart_head(ns, faults_cluster.name)
    rc = get_raycluster(api, ns, faults_cluster.name) or {}
    assert status["submissionId"] not in [j["submission_id"] for j in ray_jobs(rc)]
    with ResultStore.open(url) as store:
        run = store.get_run(status["runId"])
        assert run is not None
        kept = {c.cell_key: c.finished_at for c in store.iter_cells(run.id)}
    assert 50 <= len(kept) < CELLS, "the first job finished before its head was lost"

    done = _finished_once(api, faults_cluster, fault_operator, "head-lost", CELLS, attempts=2)
    assert done["submissionId"] != status["submissionId"]
    assert has_event(api, ns, "head-lost", "JobFailed")
    with ResultStore.open(url) as store:
        run = store.get_run(done["runId"])
        assert run is not None
        after = {c.cell_key: c.finished_at for c in store.iter_cells(run.id)}
    assert all(after[key] == when for key, when in kept.items()), "a recorded cell ran again"


def _install_certificate(directory: Path, version: int) -> bytes:
    """A new self-signed certificate for 127.0.0.1, installed as a Secret volume updates its
    files: written beside the live ones, then swapped in at once (the `..data` symlink), so
    a reader never sees a new certificate with an old key. Returns the certificate (PEM)."""
    certfile, keyfile = self_signed_certificate("127.0.0.1")
    version_dir = directory / f"..v{version}"
    version_dir.mkdir()
    for source, target in ((certfile, "tls.crt"), (keyfile, "tls.key")):
        (version_dir / target).write_bytes(Path(source).read_bytes())
        Path(source).unlink()
    Path(certfile).parent.rmdir()
    staged = directory / "..data_tmp"
    staged.symlink_to(version_dir.name)
    os.replace(staged, directory / "..data")
    for name in ("tls.crt", "tls.key"):
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")
    return (version_dir / "tls.crt").read_bytes()


def _ca_bundle(api: client.ApiClient, port: int) -> bytes | None:
    """The caBundle of the operator's webhook (the one at `port`)."""
    configs = client.AdmissionregistrationV1Api(api).list_validating_webhook_configuration()
    for config in configs.items:
        for hook in config.webhooks or []:
            if f":{port}/" in (hook.client_config.url or "") and hook.client_config.ca_bundle:
                return base64.b64decode(hook.client_config.ca_bundle)
    return None


def _served_certificate(port: int) -> bytes:
    """The certificate the webhook serves now (PEM)."""
    return ssl.get_server_certificate(("127.0.0.1", port), timeout=10).encode()


def _same_certificate(a: bytes, b: bytes) -> bool:
    return ssl.PEM_cert_to_DER_cert(a.decode()) == ssl.PEM_cert_to_DER_cert(b.decode())


def _admission_refuses(api: client.ApiClient, namespace: str, name: str) -> str:
    """Create a BatchTest with an unknown variant as a dry run: the webhook's refusal."""
    bad = toy_batchtest(name, 3)
    bad["spec"]["matrix"] = {"lookup": ["original", "nope"]}
    with pytest.raises(client.ApiException) as refused:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            "wtb.dev", "v1alpha1", namespace, "batchtests", bad, dry_run="All"
        )
    return str(refused.value.body)


def test_a_rotated_webhook_certificate_is_served_and_trusted(
    kube: ControlPlane,
    operator_token: str,
    faults_cluster: SharedCluster,
    api: client.ApiClient,
    tmp_path: Path,
) -> None:
    """The webhook's certificate files are replaced while the operator runs (a renewed
    Secret): the operator serves the new certificate and writes it as the caBundle, and
    admission keeps refusing a bad BatchTest (its failure policy is Ignore, so a webhook the
    API server no longer trusts would let it through)."""
    ns = faults_cluster.namespace
    certs = tmp_path / "certs"
    certs.mkdir()
    first = _install_certificate(certs, 1)
    operator = _start(
        kube,
        operator_token,
        faults_cluster,
        tmp_path,
        env={
            "WTB_WEBHOOK_CERTFILE": str(certs / "tls.crt"),
            "WTB_WEBHOOK_KEYFILE": str(certs / "tls.key"),
            "WTB_WEBHOOK_CERT_CHECK_SECONDS": "0.5",
        },
    )
    try:

        def trusted(pem: bytes) -> bool:
            bundle = _ca_bundle(api, operator.webhook_port)
            return bundle is not None and _same_certificate(bundle, pem)

        wait_until(lambda: trusted(first), "the webhook configured with the first certificate", 60)
        assert "denied the request" in _admission_refuses(api, ns, "before-rotation")

        second = _install_certificate(certs, 2)
        wait_until(lambda: trusted(second), "the caBundle of the rotated certificate", 30)
        wait_until(
            lambda: _same_certificate(_served_certificate(operator.webhook_port), second),
            "the rotated certificate served",
            30,
        )
        said = _admission_refuses(api, ns, "after-rotation")
        assert "denied the request" in said
        assert "spec.matrix.lookup[1]" in said
        # A good one is admitted (dry run: nothing is stored).
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            "wtb.dev",
            "v1alpha1",
            ns,
            "batchtests",
            toy_batchtest("good", 3, ray={"clusterName": faults_cluster.name}),
            dry_run="All",
        )
        assert get_batchtest(api, ns, "good") is None
        assert operator.running()
    finally:
        operator.stop()
