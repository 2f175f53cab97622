"""The RayCluster WTB creates for a BatchTest (a pure builder), and what its status says
(`wtb.kube.observed.ClusterView` gives the whole view of one).

The cluster runs the Workflow's image. The database URL reaches the pods from a Secret
through the pod template (`secretKeyRef`), resolved by the kubelet: it never passes through
the operator, the BatchTest's status, events, or the Ray job's metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wtb._hashing import content_hash
from wtb.api._base import API_VERSION
from wtb.api.batchtest import BatchTest, ResourceRequirements
from wtb.kube.names import ANNOTATION_SPEC_HASH, LABEL_BATCHTEST, label_value, raycluster_name

RAY_API_VERSION = "ray.io/v1"
RAY_GROUP, RAY_VERSION, RAY_PLURAL = "ray.io", "v1", "rayclusters"
DATABASE_URL_ENV = "WTB_DATABASE_URL"


@dataclass(frozen=True)
class DatabaseSecret:
    """Where Ray pods find the result store's URL: a Secret in the BatchTest's namespace."""

    name: str
    key: str = "url"


def _resources(spec: ResourceRequirements | None) -> dict[str, Any]:
    if spec is None:
        return {}
    out: dict[str, Any] = {}
    if spec.requests:
        out["requests"] = dict(spec.requests)
    if spec.limits:
        out["limits"] = dict(spec.limits)
    return {"resources": out} if out else {}


def _container(
    name: str, image: str, secret: DatabaseSecret, res: ResourceRequirements | None
) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "env": [
            {
                "name": DATABASE_URL_ENV,
                "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}},
            },
            {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"},
        ],
        **_resources(res),
    }


def build_raycluster(
    batch: BatchTest, *, uid: str, image: str, secret: DatabaseSecret
) -> dict[str, Any]:
    """The RayCluster of `batch`, owned by it: the garbage collector deletes it with the
    BatchTest. Head and workers come from `spec.ray`; both run `image`."""
    meta = batch.metadata
    ray = batch.spec.ray
    labels = {LABEL_BATCHTEST: label_value(meta.name), "app.kubernetes.io/managed-by": "wtb"}
    spec: dict[str, Any] = {
        "headGroupSpec": {
            "rayStartParams": {"dashboard-host": "0.0.0.0", **ray.head.ray_start_params},  # noqa: S104
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [_container("ray-head", image, secret, ray.head.resources)]},
            },
        },
    }
    if ray.ray_version:
        spec["rayVersion"] = ray.ray_version
    if ray.workers.replicas:
        workers = ray.workers
        spec["workerGroupSpecs"] = [
            {
                "groupName": "workers",
                "replicas": workers.replicas,
                "minReplicas": workers.replicas,
                "maxReplicas": workers.replicas,
                "rayStartParams": dict(workers.ray_start_params),
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [_container("ray-worker", image, secret, workers.resources)]
                    },
                },
            }
        ]
    return {
        "apiVersion": RAY_API_VERSION,
        "kind": "RayCluster",
        "metadata": {
            "name": raycluster_name(meta.name),
            "namespace": meta.namespace,
            "labels": labels,
            "annotations": {ANNOTATION_SPEC_HASH: content_hash(spec)[:16]},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "BatchTest",
                    "name": meta.name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


def spec_hash(raycluster: dict[str, Any]) -> str | None:
    annotations = (raycluster.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(ANNOTATION_SPEC_HASH)
    return str(value) if value is not None else None


@dataclass(frozen=True)
class ClusterState:
    ready: bool
    dashboard_url: str | None
    message: str


def cluster_state(raycluster: dict[str, Any]) -> ClusterState:
    """Whether KubeRay reports the cluster ready, and where its job API is (the dashboard
    port on the head service's IP, as KubeRay publishes them)."""
    status = raycluster.get("status") or {}
    state = status.get("state") or "pending"
    head_ip = (status.get("head") or {}).get("serviceIP")
    port = (status.get("endpoints") or {}).get("dashboard")
    url = f"http://{head_ip}:{port}" if head_ip and port else None
    if state == "ready" and url:
        return ClusterState(True, url, "ready")
    reason = status.get("reason") or ""
    if state == "ready" and url is None:
        reason = reason or "no dashboard endpoint published yet"
    failing = [
        f"{c.get('type')}: {c.get('message') or c.get('reason')}"
        for c in status.get("conditions") or []
        if c.get("status") == "False" and (c.get("message") or c.get("reason"))
    ]
    detail = "; ".join([d for d in [reason, *failing] if d])
    return ClusterState(False, None, f"state {state}" + (f" ({detail})" if detail else ""))
