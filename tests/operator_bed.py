"""What the operator tests share: the operator process, the database Secret, and reading
BatchTests and events back from the API server."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from services.kube import REPO_ROOT, ControlPlane, namespace
from services.kuberay_standin import KubeRayStandIn
from services.postgres import PostgresServices
from services.support import wait_until
from wtb.api._base import GROUP, VERSION

SECRET_PASSWORD = "not-for-logs-7c1e"
"""Put into the database URL of the Secret: PgBouncer (trust) ignores it, and the tests
check that it appears in no status, event, Ray job metadata or operator log."""

RUN_SECONDS = 240.0


def url_with_password(url: str) -> str:
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{SECRET_PASSWORD}@{host}"


def create_database_secret(api: client.ApiClient, namespace: str, url: str) -> None:
    client.CoreV1Api(api).create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="wtb-database"),
            string_data={"url": url_with_password(url)},
        ),
    )


def kubectl(
    plane: ControlPlane, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", f"--kubeconfig={plane.kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=check,
        cwd=REPO_ROOT,
        timeout=60,
    )


def get_object(
    api: client.ApiClient,
    namespace: str,
    plural: str,
    name: str,
    *,
    group: str = GROUP,
    version: str = VERSION,
) -> dict[str, Any] | None:
    """A custom object; None when there is none of that name."""
    try:
        obj: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(  # type: ignore[assignment]
            group, version, namespace, plural, name
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return obj


def get_batchtest(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    return get_object(api, namespace, "batchtests", name)


def get_workflow(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    return get_object(api, namespace, "workflows", name)


def get_raycluster(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    return get_object(api, namespace, "rayclusters", name, group="ray.io", version="v1")


def list_rayclusters(api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    found: dict[str, Any] = client.CustomObjectsApi(api).list_namespaced_custom_object(  # type: ignore[assignment]
        "ray.io", "v1", namespace, "rayclusters"
    )
    return list(found["items"])


def status_of(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    obj = get_batchtest(api, namespace, name)
    return dict((obj or {}).get("status") or {})


def wait_for_status(
    api: client.ApiClient,
    namespace: str,
    name: str,
    check: Callable[[dict[str, Any]], bool],
    what: str,
    seconds: float = RUN_SECONDS,
    logs: Callable[[], str] | None = None,
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def ready() -> bool:
        nonlocal seen
        seen = status_of(api, namespace, name)
        return check(seen)

    try:
        wait_until(ready, what, seconds)
    except Exception as exc:
        tail = "\n".join((logs() if logs else "").splitlines()[-40:])
        raise AssertionError(f"{what}: last status {seen}\noperator log:\n{tail}") from exc
    return seen


def events_for(api: client.ApiClient, namespace: str, name: str) -> list[client.CoreV1Event]:
    found = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    )
    return list(found.items)


def event_reasons(api: client.ApiClient, namespace: str, name: str) -> list[str]:
    return [e.reason or "" for e in events_for(api, namespace, name)]


def example_manifests() -> Path:
    return REPO_ROOT / "examples" / "rag"


TOY_IMAGE = "wtb-test-toy:1"
"""The toy workflow's image in the operator tests: the stand-in runs it from tests/fixtures/toy."""
TOY_DIR = REPO_ROOT / "tests" / "fixtures" / "toy"


def toy_workflow(
    lookup: str = "slow_lookup", *, image: str | None = TOY_IMAGE, name: str = "toy"
) -> dict[str, Any]:
    """The toy Workflow `name` with variant `v` of node lookup = the toy module's `lookup`."""
    spec: dict[str, Any] = {
        "graph": {"factory": "toyflow.graph:build"},
        "variants": {"lookup": [{"name": "v", "path": f"toyflow.graph:{lookup}"}]},
    }
    if image:
        spec["image"] = image
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": spec,
    }


def create(api: client.ApiClient, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
    plural = {"Workflow": "workflows", "BatchTest": "batchtests"}[obj["kind"]]
    made: dict[str, Any] = client.CustomObjectsApi(api).create_namespaced_custom_object(  # type: ignore[assignment]
        GROUP, VERSION, namespace, plural, obj
    )
    return made


def patch_spec(api: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "batchtests",
        name,
        {"spec": spec},
        _content_type="application/merge-patch+json",
    )


def delete_batchtest(api: client.ApiClient, namespace: str, name: str) -> None:
    client.CustomObjectsApi(api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "batchtests", name
    )


def dashboard_url(raycluster: dict[str, Any]) -> str:
    status = raycluster["status"]
    return f"http://{status['head']['serviceIP']}:{status['endpoints']['dashboard']}"


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 (a test's own server)
        return json.load(reply)


def ray_jobs(raycluster: dict[str, Any]) -> list[dict[str, Any]]:
    """Every job the cluster knows (the job API's list)."""
    found: list[dict[str, Any]] = get_json(f"{dashboard_url(raycluster)}/api/jobs/")
    return found


def ray_job(raycluster: dict[str, Any], submission_id: str) -> dict[str, Any]:
    found: dict[str, Any] = get_json(f"{dashboard_url(raycluster)}/api/jobs/{submission_id}")
    return found


def running(status: dict[str, Any], at_least: int = 1) -> bool:
    return status.get("phase") == "Running" and (status.get("completed") or 0) >= at_least


def finished(status: dict[str, Any]) -> bool:
    return status.get("phase") in ("Succeeded", "Failed")


def driver_pids(run_key: str) -> list[int]:
    """Processes running the batch driver of `run_key` on this machine."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"wtb.driver" in argv and run_key.encode() in argv:
            found.append(int(entry.name))
    return found


def create_raycluster(api: client.ApiClient, namespace: str, name: str, image: str) -> None:
    """A RayCluster not made by WTB (a shared one), whose pods get the database URL from the
    same Secret."""
    container = {
        "name": "ray-head",
        "image": image,
        "env": [
            {
                "name": "WTB_DATABASE_URL",
                "valueFrom": {"secretKeyRef": {"name": "wtb-database", "key": "url"}},
            }
        ],
    }
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        "ray.io",
        "v1",
        namespace,
        "rayclusters",
        {
            "apiVersion": "ray.io/v1",
            "kind": "RayCluster",
            "metadata": {"name": name},
            "spec": {
                "headGroupSpec": {
                    "rayStartParams": {},
                    "template": {"spec": {"containers": [container]}},
                }
            },
        },
    )


def raycluster_ready(api: client.ApiClient, namespace: str, name: str) -> bool:
    """Whether the RayCluster's status says `ready` (as KubeRay publishes it)."""
    rc = get_raycluster(api, namespace, name) or {}
    return bool((rc.get("status") or {}).get("state") == "ready")


@dataclass(frozen=True)
class SharedCluster:
    """A RayCluster WTB did not make (the toy image), in a namespace of its own that holds
    the toy Workflow and the database Secret. Its head read the database URL when it
    started, so every BatchTest run on it records in that one database."""

    namespace: str
    name: str
    database_url: str


def list_batchtests(api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    found: dict[str, Any] = client.CustomObjectsApi(api).list_namespaced_custom_object(  # type: ignore[assignment]
        GROUP, VERSION, namespace, "batchtests"
    )
    return list(found["items"])


def delete_unfinished_batchtests(api: client.ApiClient, namespace: str, seconds: float) -> None:
    """Delete the BatchTests of `namespace` that have not finished and wait until they are
    gone (a running operator stops their Ray jobs on a shared cluster and lets them go)."""
    names = [
        bt["metadata"]["name"]
        for bt in list_batchtests(api, namespace)
        if not finished(bt.get("status") or {})
    ]
    for name in names:
        with contextlib.suppress(ApiException):
            delete_batchtest(api, namespace, name)
    wait_until(
        lambda: all(get_batchtest(api, namespace, name) is None for name in names),
        "unfinished BatchTests deleted",
        seconds,
    )


def release_finalizers(api: client.ApiClient, namespace: str) -> None:
    """Take the operator's finalizer off every BatchTest of `namespace`, so that the
    namespace can be deleted while no operator runs."""
    for bt in list_batchtests(api, namespace):
        if bt["metadata"].get("finalizers"):
            client.CustomObjectsApi(api).patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                "batchtests",
                bt["metadata"]["name"],
                {"metadata": {"finalizers": None}},
                _content_type="application/merge-patch+json",
            )


def webhook_configured(api: client.ApiClient, port: int) -> bool:
    """Whether the operator's validating webhook configuration points at `port`."""
    configs = client.AdmissionregistrationV1Api(api).list_validating_webhook_configuration()
    return any(
        f":{port}/" in (hook.client_config.url or "")
        for config in configs.items
        for hook in config.webhooks or []
    )


def token_of(kubeconfig: Path) -> str:
    """The bearer token a kubeconfig holds (its only user's)."""
    config = yaml.safe_load(kubeconfig.read_text())
    token: str = config["users"][0]["user"]["token"]
    return token


def has_event(api: client.ApiClient, namespace: str, name: str, reason: str) -> bool:
    """Whether an event of `reason` about the object has been posted, waiting a little:
    the operator posts events from a queue, after the status write."""
    try:
        wait_until(lambda: reason in event_reasons(api, namespace, name), f"event {reason}", 15)
    except Exception:
        return False
    return True


@contextlib.contextmanager
def shared_cluster(
    kube: ControlPlane,
    kuberay: KubeRayStandIn,
    postgres_services: PostgresServices,
    label: str,
) -> Iterator[SharedCluster]:
    """A RayCluster WTB did not make (the toy image) in a namespace of its own, with the toy
    Workflow, the database Secret and a database of its own (dropped afterwards): for tests
    whose subject is not a cluster's lifecycle, so that they skip starting a Ray head."""
    kuberay.register_image(TOY_IMAGE, TOY_DIR)
    database = f"wtb_test_{os.getpid()}_{label}"
    postgres_services.create_database(database)
    url = postgres_services.url(database, through_pgbouncer=True)
    try:
        with kube.api_client() as api, namespace(api, label) as ns:
            try:
                create_database_secret(api, ns, url)
                create(api, ns, toy_workflow())
                create_raycluster(api, ns, label, TOY_IMAGE)
                wait_until(lambda: raycluster_ready(api, ns, label), f"the {label} RayCluster", 90)
                yield SharedCluster(ns, label, url)
            finally:
                release_finalizers(api, ns)
    finally:
        postgres_services.drop_database(database)
