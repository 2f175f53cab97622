"""The Kubernetes test bed is the real thing: our CRDs are served and validated, RBAC is
enforced, the garbage collector cascades, and the KubeRay stand-in gives a RayCluster a Ray
head whose job API runs jobs with the pod template's environment."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from kubernetes import client

from services.kube import ControlPlane
from services.kuberay_standin import CONFIG_ERROR, IMAGE_PULL_BACK_OFF, KubeRayStandIn
from services.support import wait_until

pytestmark = pytest.mark.kube

GROUP, VERSION = "wtb.dev", "v1alpha1"
READY_SECONDS = 120.0
JOB_SECONDS = 60.0
HTTP_SECONDS = 30.0  # the dashboard answers slowly on a loaded 2-core machine
KubeObject = dict[str, Any]


@pytest.fixture
def api(kube: ControlPlane) -> Iterator[client.ApiClient]:
    with kube.api_client() as api_client:
        yield api_client


def _workflow(name: str, graph: object) -> KubeObject:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"graph": graph},
    }


def _meta(name: str, **fields: Any) -> client.V1ObjectMeta:
    return client.V1ObjectMeta(name=name, **fields)


def _status_code(call: Callable[[], object]) -> int:
    with pytest.raises(client.ApiException) as refused:
        call()
    return int(refused.value.status)


def test_our_crds_are_served(api: client.ApiClient, kube_namespace: str) -> None:
    objects = client.CustomObjectsApi(api)
    body = _workflow("minimal", {"factory": "rag_example.graph:build_graph"})
    objects.create_namespaced_custom_object(GROUP, VERSION, kube_namespace, "workflows", body)

    stored = cast(
        KubeObject,
        objects.get_namespaced_custom_object(
            GROUP, VERSION, kube_namespace, "workflows", "minimal"
        ),
    )
    assert stored["spec"]["graph"]["factory"] == "rag_example.graph:build_graph"
    assert stored["metadata"]["uid"]


def test_schema_refuses_a_wrong_type(api: client.ApiClient, kube_namespace: str) -> None:
    objects = client.CustomObjectsApi(api)
    body = _workflow("wrong", "rag_example.graph:build_graph")  # graph must be an object
    status = _status_code(
        lambda: objects.create_namespaced_custom_object(
            GROUP, VERSION, kube_namespace, "workflows", body
        )
    )
    assert status == 422
    listed = objects.list_namespaced_custom_object(GROUP, VERSION, kube_namespace, "workflows")
    assert cast(KubeObject, listed)["items"] == []


def test_rbac_needs_a_role(kube: ControlPlane, api: client.ApiClient, kube_namespace: str) -> None:
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(
        kube_namespace, client.V1ServiceAccount(metadata=_meta("reader"))
    )
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
    issued = core.create_namespaced_service_account_token("reader", kube_namespace, request)
    assert issued.status is not None
    assert issued.status.token
    with kube.api_client_for_token(issued.status.token) as as_reader:
        objects = client.CustomObjectsApi(as_reader)

        def list_batchtests() -> object:
            return objects.list_namespaced_custom_object(
                GROUP, VERSION, kube_namespace, "batchtests"
            )

        # Authenticated (not 401) but not authorised.
        assert _status_code(list_batchtests) == 403

        rbac.create_namespaced_role(
            kube_namespace,
            client.V1Role(
                metadata=_meta("batchtest-reader"),
                rules=[
                    client.V1PolicyRule(
                        api_groups=[GROUP], resources=["batchtests"], verbs=["list"]
                    )
                ],
            ),
        )
        rbac.create_namespaced_role_binding(
            kube_namespace,
            client.V1RoleBinding(
                metadata=_meta("reader"),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="Role", name="batchtest-reader"
                ),
                subjects=[
                    client.RbacV1Subject(
                        kind="ServiceAccount", name="reader", namespace=kube_namespace
                    )
                ],
            ),
        )

        def allowed() -> bool:
            try:
                list_batchtests()
            except client.ApiException as exc:
                if exc.status != 403:
                    raise
                return False
            return True

        wait_until(allowed, "the RoleBinding to take effect", 30)
        # The role grants list on batchtests only.
        assert (
            _status_code(
                lambda: objects.list_namespaced_custom_object(
                    GROUP, VERSION, kube_namespace, "workflows"
                )
            )
            == 403
        )


def _gone(read: Callable[[], object]) -> Callable[[], bool]:
    def check() -> bool:
        try:
            read()
        except client.ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    return check


def _owned_by(api_version: str, kind: str, name: str, uid: str) -> list[client.V1OwnerReference]:
    return [client.V1OwnerReference(api_version=api_version, kind=kind, name=name, uid=uid)]


def test_garbage_collector_deletes_dependents(api: client.ApiClient, kube_namespace: str) -> None:
    core, objects = client.CoreV1Api(api), client.CustomObjectsApi(api)
    owner = core.create_namespaced_config_map(
        kube_namespace, client.V1ConfigMap(metadata=_meta("owner"))
    )
    workflow = cast(
        KubeObject,
        objects.create_namespaced_custom_object(
            GROUP, VERSION, kube_namespace, "workflows", _workflow("owner", {"factory": "m:f"})
        ),
    )
    assert owner.metadata is not None
    assert owner.metadata.uid is not None
    dependents = {
        "by-configmap": _owned_by("v1", "ConfigMap", "owner", owner.metadata.uid),
        "by-workflow": _owned_by(
            f"{GROUP}/{VERSION}", "Workflow", "owner", workflow["metadata"]["uid"]
        ),
    }
    for name, refs in dependents.items():
        core.create_namespaced_config_map(
            kube_namespace, client.V1ConfigMap(metadata=_meta(name, owner_references=refs))
        )

    core.delete_namespaced_config_map("owner", kube_namespace)
    wait_until(
        _gone(lambda: core.read_namespaced_config_map("by-configmap", kube_namespace)),
        "the garbage collector to delete a ConfigMap's dependent",
        30,
    )
    # Only the dependents of the deleted owner go.
    assert core.read_namespaced_config_map("by-workflow", kube_namespace)
    objects.delete_namespaced_custom_object(GROUP, VERSION, kube_namespace, "workflows", "owner")
    wait_until(
        _gone(lambda: core.read_namespaced_config_map("by-workflow", kube_namespace)),
        "the garbage collector to delete a Workflow's dependent",
        30,
    )


# --- the KubeRay stand-in ---------------------------------------------------------------


def _raycluster(name: str, image: str, env: list[KubeObject]) -> KubeObject:
    """A minimal RayCluster, as valid for KubeRay's CRD."""
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": name},
        "spec": {
            "headGroupSpec": {
                "rayStartParams": {},
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "ray-head",
                                "image": image,
                                "env": env,
                                "resources": {"limits": {"cpu": "1"}},
                            }
                        ]
                    }
                },
            },
            "workerGroupSpecs": [
                {
                    "groupName": "workers",
                    "replicas": 2,
                    "minReplicas": 0,
                    "maxReplicas": 4,
                    "template": {"spec": {"containers": [{"name": "ray-worker", "image": image}]}},
                }
            ],
        },
    }


def _condition(obj: KubeObject, type_: str) -> KubeObject | None:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), None)


def _wait_for(
    read: Callable[[], KubeObject], test: Callable[[KubeObject], bool], what: str
) -> KubeObject:
    seen: list[KubeObject] = []

    def check() -> bool:
        seen[:] = [read()]
        return test(seen[0])

    wait_until(check, what, READY_SECONDS)
    return seen[0]


def _http_json(url: str, body: KubeObject | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 (http, local)
    with urllib.request.urlopen(request, timeout=HTTP_SECONDS) as reply:  # noqa: S310 (a local test server)
        return json.load(reply)


def _answers(url: str) -> bool:
    try:
        _http_json(url)
    except (urllib.error.URLError, OSError):
        return False
    return True


def test_standin_runs_a_head_for_a_raycluster(
    api: client.ApiClient, kube_namespace: str, kuberay: KubeRayStandIn
) -> None:
    core, objects = client.CoreV1Api(api), client.CustomObjectsApi(api)
    env: list[KubeObject] = [
        {"name": "PROBE_SECRET", "valueFrom": {"secretKeyRef": {"name": "probe", "key": "word"}}},
        {"name": "PROBE_PLAIN", "value": "plain-$(PROBE_SECRET)"},
    ]
    objects.create_namespaced_custom_object(
        "ray.io",
        "v1",
        kube_namespace,
        "rayclusters",
        _raycluster("probe", "wtb-example-rag:0.1.0", env),
    )

    def read() -> KubeObject:
        obj = objects.get_namespaced_custom_object(
            "ray.io", "v1", kube_namespace, "rayclusters", "probe"
        )
        return cast(KubeObject, obj)

    # The Secret does not exist yet: the head cannot start, as a kubelet would refuse it.
    waiting = _wait_for(
        read,
        lambda o: (_condition(o, "HeadPodReady") or {}).get("reason") == CONFIG_ERROR,
        "the missing Secret to be reported",
    )
    assert 'secret "probe" not found' in waiting["status"]["reason"]
    assert "state" not in waiting["status"]
    assert kuberay.head_for(kube_namespace, "probe") is None

    core.create_namespaced_secret(
        kube_namespace, client.V1Secret(metadata=_meta("probe"), string_data={"word": "swordfish"})
    )
    ready = _wait_for(read, lambda o: o.get("status", {}).get("state") == "ready", "ready")
    status = ready["status"]
    assert status["head"]["serviceIP"] == "127.0.0.1"
    assert status["desiredWorkerReplicas"] == 2
    assert status["readyWorkerReplicas"] == 0
    assert status["observedGeneration"] == ready["metadata"]["generation"]
    assert "reason" not in status
    head_ready = _condition(ready, "HeadPodReady")
    assert head_ready is not None
    assert (head_ready["status"], head_ready["reason"]) == ("True", "HeadPodRunningAndReady")
    assert (_condition(ready, "RayClusterProvisioned") or {}).get("status") == "True"
    head = kuberay.head_for(kube_namespace, "probe")
    assert head is not None
    assert status["endpoints"]["dashboard"] == str(head.dashboard_port)
    assert status["endpoints"]["gcs-server"] == str(head.gcs_port)

    # The job API the operator would use, found through the published status only.
    dashboard = f"http://{status['head']['serviceIP']}:{status['endpoints']['dashboard']}"
    assert _http_json(f"{dashboard}/api/version")["ray_version"]
    entrypoint = (
        "python -c \"import os, rag_example; print('probe', os.environ['PROBE_SECRET'], "
        "os.environ['PROBE_PLAIN'], os.path.dirname(rag_example.__file__))\""
    )
    job = _http_json(f"{dashboard}/api/jobs/", {"entrypoint": entrypoint})["submission_id"]
    wait_until(
        lambda: _http_json(f"{dashboard}/api/jobs/{job}")["status"] in {"SUCCEEDED", "FAILED"},
        "the probe job to finish",
        JOB_SECONDS,
    )
    logs = _http_json(f"{dashboard}/api/jobs/{job}/logs")["logs"]
    assert _http_json(f"{dashboard}/api/jobs/{job}")["status"] == "SUCCEEDED", logs
    # The Secret's value, its $(VAR) expansion, and the "image" on PYTHONPATH.
    assert "probe swordfish plain-swordfish" in logs
    assert "examples/rag/rag_example" in logs

    objects.delete_namespaced_custom_object("ray.io", "v1", kube_namespace, "rayclusters", "probe")
    kuberay.wait_stopped(kube_namespace, "probe")
    assert kuberay.head_for(kube_namespace, "probe") is None
    assert head.process.poll() is not None
    assert not _answers(f"{dashboard}/api/version")


def test_standin_refuses_an_unknown_image(
    api: client.ApiClient, kube_namespace: str, kuberay: KubeRayStandIn
) -> None:
    objects = client.CustomObjectsApi(api)
    objects.create_namespaced_custom_object(
        "ray.io", "v1", kube_namespace, "rayclusters", _raycluster("nowhere", "no-such:1", [])
    )
    stuck = _wait_for(
        lambda: cast(
            KubeObject,
            objects.get_namespaced_custom_object(
                "ray.io", "v1", kube_namespace, "rayclusters", "nowhere"
            ),
        ),
        lambda o: _condition(o, "HeadPodReady") is not None,
        "the image pull failure to be reported",
    )
    head_ready = _condition(stuck, "HeadPodReady")
    assert head_ready is not None
    assert (head_ready["status"], head_ready["reason"]) == ("False", IMAGE_PULL_BACK_OFF)
    assert '"no-such:1"' in head_ready["message"]
    assert "state" not in stuck["status"]
    assert kuberay.head_for(kube_namespace, "nowhere") is None


def test_the_api_server_refuses_an_oversize_batchtest_at_apply_time(
    api: client.ApiClient, kube_namespace: str
) -> None:
    """The CRD's size limits (maxProperties, maxItems, maxLength) hold at apply time: an
    object past them never reaches etcd, the operator or its webhook."""
    objects = client.CustomObjectsApi(api)
    spec: KubeObject = {
        "workflowRef": {"name": "wf"},
        "matrix": {f"n{i}": ["original"] for i in range(65)},
        "include": [{"n0": "original"}] * 257,
        "dataset": {"cases": [{"inputs": {"q": 1}}]},
        "evaluators": [{"name": "e" * 254, "type": "tokens"}],
        "primaryMetric": "tokens",
    }
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "BatchTest",
        "metadata": {"name": "oversize"},
        "spec": spec,
    }
    with pytest.raises(client.ApiException) as refused:
        objects.create_namespaced_custom_object(GROUP, VERSION, kube_namespace, "batchtests", body)
    assert refused.value.status == 422
    details = json.loads(str(refused.value.body))["details"]
    causes = {c["field"]: c["message"] for c in details["causes"]}
    assert "at most 64 properties" in causes["spec.matrix"]
    assert "at most 256 items" in causes["spec.include"]
    assert "at most 253 chars" in causes["spec.evaluators.name"]
    listed = objects.list_namespaced_custom_object(GROUP, VERSION, kube_namespace, "batchtests")
    assert cast(KubeObject, listed)["items"] == []
