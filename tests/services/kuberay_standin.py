"""A test-only stand-in for the KubeRay operator: RayCluster objects get a real local Ray head.

There are no nodes, kubelet or container runtime in the test bed, and KubeRay is a Go
program, so this controller does the part of KubeRay that WTB depends on. For each
RayCluster (any namespace) it resolves the head group's pod template as a kubelet would:

- the container `image` names a directory (`images`), standing for the image's contents:
  the head runs with it as working directory and first on PYTHONPATH (the image's WORKDIR);
  an unknown image leaves the cluster not ready, with `ImagePullBackOff` in its conditions;
- `env` (`value` with `$(VAR)` references, `valueFrom.secretKeyRef`/`configMapKeyRef`)
  and `envFrom` (`secretRef`/`configMapRef`, with `prefix`) are read from the cluster's
  namespace; a missing Secret, ConfigMap or key that is not `optional` leaves the cluster
  not ready (`CreateContainerConfigError`) until it appears;
- `--num-cpus` is the container's cpu limit (else request) rounded up, as KubeRay sets it,
  or `rayStartParams["num-cpus"]`; a few other `rayStartParams` are passed on
  (HONOURED_PARAMS); ports and addresses are always the stand-in's own.

It then starts a real Ray head (services.ray_head) and publishes the status KubeRay
publishes: `state: ready`, `head.serviceIP`/`podIP` 127.0.0.1, `endpoints` (the head's real
ports, as strings), `HeadPodReady` and `RayClusterProvisioned` conditions, worker replica
counts and `observedGeneration`. No worker pods are started: `desiredWorkerReplicas` is
what the spec asks for and `readyWorkerReplicas` stays 0, so every task runs on the head.
The head is started once per RayCluster (by uid): later spec edits are not applied. When the
RayCluster disappears (deleted directly, by the garbage collector or with its namespace),
its head is stopped.
"""

from __future__ import annotations

import base64
import itertools
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

import urllib3
from kubernetes import client

from services.ray_head import RayHead, start_ray_head
from services.support import ServiceError

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayclusters"
POLL_SECONDS = 0.2
DEFAULT_NUM_CPUS = 2
PUBLISH_ATTEMPTS = 5
HONOURED_PARAMS = ("num-gpus", "memory", "object-store-memory")
IMAGE_PULL_BACK_OFF = "ImagePullBackOff"
CONFIG_ERROR = "CreateContainerConfigError"
HEAD_START_FAILED = "HeadStartFailed"
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")

KubeObject = dict[str, Any]
Phase = Literal["waiting", "starting", "running", "failed", "gone"]
log = logging.getLogger(__name__)


class PodNotReady(Exception):
    """The head pod could not start; `reason` is the kubelet's, `message` says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class HeadLaunch:
    """What the head pod template resolves to on this machine."""

    image_dir: Path
    env: dict[str, str]
    num_cpus: int
    extra_args: tuple[str, ...]


@dataclass
class _Cluster:
    namespace: str
    name: str
    uid: str
    phase: Phase = "waiting"
    head: RayHead | None = None
    launch: HeadLaunch | None = None
    problem: PodNotReady | None = None
    stopped: threading.Event = field(default_factory=threading.Event)


class KubeRayStandIn:
    """Watches RayClusters (a list every POLL_SECONDS) from a background thread; each head
    starts and stops in a thread of its own, so several clusters come up at once."""

    def __init__(
        self, api_client: client.ApiClient, work_dir: Path, images: dict[str, Path]
    ) -> None:
        self._objects = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._work_dir = work_dir
        self._images = dict(images)
        self._lock = threading.Lock()
        self._clusters: dict[str, _Cluster] = {}
        self._workers: list[threading.Thread] = []
        self._head_numbers = itertools.count()
        self._stopping = threading.Event()
        self._loop = threading.Thread(target=self._run, name="kuberay-standin", daemon=True)

    def register_image(self, image: str, directory: Path) -> None:
        """Make `image` pullable: a head using it runs from `directory`."""
        with self._lock:
            self._images[image] = directory

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        """Stop watching, then stop every head started (waiting for those still starting)."""
        self._stopping.set()
        if self._loop.is_alive():
            self._loop.join()
        with self._lock:
            uids = list(self._clusters)
        for uid in uids:
            self._retire(uid)
        for worker in list(self._workers):
            worker.join()

    def head_for(self, namespace: str, name: str) -> RayHead | None:
        """The running head of that RayCluster, if any."""
        with self._lock:
            for cluster in self._clusters.values():
                if (cluster.namespace, cluster.name) == (namespace, name) and cluster.head:
                    return cluster.head
        return None

    def restart_head(self, namespace: str, name: str) -> RayHead:
        """The head pod restarts (a node lost, an OOM kill): its Ray processes and every job
        they ran are gone, and a new head with an empty job table starts behind the same
        address (Service). Returns once the new head's job API answers."""
        with self._lock:
            (cluster,) = [
                c
                for c in self._clusters.values()
                if (c.namespace, c.name) == (namespace, name) and c.phase == "running"
            ]
            old, launch = cluster.head, cluster.launch
        assert old is not None
        assert launch is not None
        old.stop()
        head = start_ray_head(
            self._work_dir / f"h{next(self._head_numbers)}",
            num_cpus=launch.num_cpus,
            env=launch.env,
            cwd=launch.image_dir,
            extra_args=launch.extra_args,
            ports=(old.gcs_port, old.dashboard_port, old.client_port),
        )
        with self._lock:
            cluster.head = head
        return head

    def wait_stopped(self, namespace: str, name: str, seconds: float = 60.0) -> None:
        """Wait until every head started for a RayCluster of that name has stopped."""
        with self._lock:
            events = [
                c.stopped
                for c in self._clusters.values()
                if (c.namespace, c.name) == (namespace, name)
            ]
        for event in events:
            if not event.wait(seconds):
                raise ServiceError(
                    f"the Ray head of {namespace}/{name} still runs after {seconds} s"
                )

    # --- the watch loop -------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.wait(POLL_SECONDS):
            try:
                self._reconcile_all()
            except (client.ApiException, urllib3.exceptions.HTTPError) as exc:
                log.warning("KubeRay stand-in: %s", exc)

    def _reconcile_all(self) -> None:
        reply = cast(KubeObject, self._objects.list_cluster_custom_object(GROUP, VERSION, PLURAL))
        listed: list[KubeObject] = reply["items"]
        alive = {
            obj["metadata"]["uid"]: obj
            for obj in listed
            if not obj["metadata"].get("deletionTimestamp")
        }
        with self._lock:
            known = [uid for uid, c in self._clusters.items() if c.phase != "gone"]
        for uid in known:
            if uid not in alive:
                self._retire(uid)
        for uid, obj in alive.items():
            self._reconcile(uid, obj)

    def _reconcile(self, uid: str, obj: KubeObject) -> None:
        with self._lock:
            cluster = self._clusters.get(uid)
            if cluster is None:
                meta = obj["metadata"]
                cluster = self._clusters[uid] = _Cluster(meta["namespace"], meta["name"], uid)
            if cluster.phase != "waiting":
                return
        try:
            launch = self._resolve(obj)
        except PodNotReady as problem:
            self._report(cluster, problem)
            return
        with self._lock:
            cluster.phase = "starting"
        # Short names: Ray's Unix socket paths under the temp dir must stay under 108 bytes.
        self._spawn(
            self._start_head, cluster, launch, self._work_dir / f"h{next(self._head_numbers)}"
        )

    def _report(self, cluster: _Cluster, problem: PodNotReady) -> None:
        """Publish why the head cannot start, once per distinct reason and message."""
        previous = cluster.problem
        if previous is None or (previous.reason, previous.message) != (
            problem.reason,
            problem.message,
        ):
            cluster.problem = problem
            self._publish(cluster, lambda current: not_ready_status(current, problem))

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        worker = threading.Thread(target=target, args=args, daemon=True)
        self._workers.append(worker)
        worker.start()

    def _resolve(self, obj: KubeObject) -> HeadLaunch:
        head_group = obj["spec"]["headGroupSpec"]
        container = head_group["template"]["spec"]["containers"][0]
        image = str(container.get("image", ""))
        with self._lock:
            image_dir = self._images.get(image)
            known = sorted(self._images)
        if image_dir is None:
            raise PodNotReady(
                IMAGE_PULL_BACK_OFF,
                f'Back-off pulling image "{image}": the KubeRay stand-in has only {known}',
            )
        env = resolve_env(self._core, obj["metadata"]["namespace"], container)
        inherited = env.get("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(image_dir), inherited) if p)
        params = {str(k): str(v) for k, v in (head_group.get("rayStartParams") or {}).items()}
        return HeadLaunch(
            image_dir=image_dir,
            env=env,
            num_cpus=num_cpus(container, params),
            extra_args=tuple(f"--{k}={params[k]}" for k in HONOURED_PARAMS if k in params),
        )

    # --- heads ----------------------------------------------------------------------------

    def _start_head(self, cluster: _Cluster, launch: HeadLaunch, temp_dir: Path) -> None:
        try:
            head = start_ray_head(
                temp_dir,
                num_cpus=launch.num_cpus,
                env=launch.env,
                cwd=launch.image_dir,
                extra_args=launch.extra_args,
            )
        except ServiceError as exc:
            with self._lock:
                gone = cluster.phase == "gone"
                cluster.phase = "failed"
            cluster.stopped.set()
            if not gone:
                problem = PodNotReady(HEAD_START_FAILED, str(exc)[-4000:])
                self._publish(cluster, lambda current: not_ready_status(current, problem))
            return
        with self._lock:
            gone = cluster.phase == "gone"
            if not gone:
                cluster.phase, cluster.head, cluster.launch = "running", head, launch
        if gone:
            head.stop()
            cluster.stopped.set()
            return
        self._publish(cluster, lambda current: ready_status(current, head))

    def _retire(self, uid: str) -> None:
        """The RayCluster is gone: stop its head (a starting head is stopped by its starter)."""
        with self._lock:
            cluster = self._clusters[uid]
            if cluster.phase == "gone":
                return
            previous, cluster.phase = cluster.phase, "gone"
            head, cluster.head = cluster.head, None
        if head is not None:
            self._spawn(_stop_head, head, cluster.stopped)
        elif previous != "starting":
            cluster.stopped.set()

    # --- status ---------------------------------------------------------------------------

    def _publish(self, cluster: _Cluster, status_of: Callable[[KubeObject], KubeObject]) -> None:
        """Merge-patch the status subresource of *this* RayCluster (same uid), computed from
        the object as it is now; a concurrent write (409) makes it read and try again."""
        try:
            self._try_publish(cluster, status_of)
        except (client.ApiException, urllib3.exceptions.HTTPError) as exc:
            log.warning(
                "KubeRay stand-in: publishing %s/%s: %s", cluster.namespace, cluster.name, exc
            )

    def _try_publish(
        self, cluster: _Cluster, status_of: Callable[[KubeObject], KubeObject]
    ) -> None:
        for _ in range(PUBLISH_ATTEMPTS):
            try:
                current = cast(
                    KubeObject,
                    self._objects.get_namespaced_custom_object(
                        GROUP, VERSION, cluster.namespace, PLURAL, cluster.name
                    ),
                )
                if current["metadata"]["uid"] != cluster.uid:
                    return
                patch = {
                    "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
                    "status": status_of(current),
                }
                self._objects.patch_namespaced_custom_object_status(
                    GROUP, VERSION, cluster.namespace, PLURAL, cluster.name, patch
                )
                return
            except client.ApiException as exc:
                if exc.status == 404:
                    return
                if exc.status != 409:
                    raise
        log.warning("KubeRay stand-in: gave up publishing %s/%s", cluster.namespace, cluster.name)


def _stop_head(head: RayHead, stopped: threading.Event) -> None:
    head.stop()
    stopped.set()


# --- pod template resolution (as a kubelet does it) ---------------------------------------


def resolve_env(core: client.CoreV1Api, namespace: str, container: KubeObject) -> dict[str, str]:
    """The container's environment: `envFrom` first, then `env` entries (which win)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
            if key in source:
                ref = source[key]
                data = _read_data(core, namespace, kind, ref["name"], bool(ref.get("optional")))
                env.update({prefix + k: v for k, v in (data or {}).items()})
    for entry in container.get("env") or []:
        value = _env_value(core, namespace, entry, env)
        if value is not None:
            env[entry["name"]] = value
    return env


def _env_value(
    core: client.CoreV1Api, namespace: str, entry: KubeObject, defined: Mapping[str, str]
) -> str | None:
    if "valueFrom" not in entry:
        return expand(str(entry.get("value", "")), defined)
    source = entry["valueFrom"]
    for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
        if key in source:
            ref = source[key]
            optional = bool(ref.get("optional"))
            data = _read_data(core, namespace, kind, ref["name"], optional)
            if data is None:
                return None
            if ref["key"] not in data:
                if optional:
                    return None
                raise PodNotReady(
                    CONFIG_ERROR,
                    f"couldn't find key {ref['key']} in {kind} {namespace}/{ref['name']}",
                )
            return data[ref["key"]]
    raise PodNotReady(
        CONFIG_ERROR,
        f"env {entry['name']}: the KubeRay stand-in resolves only secretKeyRef "
        f"and configMapKeyRef, not {sorted(source)}",
    )


def _read_data(
    core: client.CoreV1Api, namespace: str, kind: str, name: str, optional: bool
) -> dict[str, str] | None:
    """A Secret's (base64-decoded) or ConfigMap's data; None when it is absent and optional."""
    try:
        if kind == "Secret":
            # The client keeps a Secret's values as sent: base64 text.
            encoded = core.read_namespaced_secret(name, namespace).data or {}
            return {k: base64.b64decode(v).decode() for k, v in encoded.items()}
        return dict(core.read_namespaced_config_map(name, namespace).data or {})
    except client.ApiException as exc:
        if exc.status != 404:
            raise
        if optional:
            return None
        raise PodNotReady(CONFIG_ERROR, f'{kind.lower()} "{name}" not found') from exc


def expand(value: str, defined: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: defined names are replaced, others kept, `$$` is `$`."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return defined.get(match.group(1), match.group(0))

    return _REFERENCE.sub(replace, value)


def num_cpus(container: KubeObject, params: Mapping[str, str]) -> int:
    """Ray's CPU count for the head: rayStartParams' num-cpus, else the container's cpu limit
    (else request) rounded up as a Kubernetes quantity's Value() does, else the default."""
    if "num-cpus" in params:
        return int(params["num-cpus"])
    resources = container.get("resources") or {}
    for section in ("limits", "requests"):
        quantity = (resources.get(section) or {}).get("cpu")
        if quantity is not None:
            return cpu_quantity(str(quantity))
    return DEFAULT_NUM_CPUS


def cpu_quantity(quantity: str) -> int:
    """'500m' -> 1, '2' -> 2, '1.5' -> 2."""
    if quantity.endswith("m"):
        return math.ceil(int(quantity[:-1]) / 1000)
    return math.ceil(float(quantity))


# --- status (the fields KubeRay publishes) ------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(type_: str, status: bool, reason: str, message: str) -> KubeObject:
    return {"type": type_, "status": str(status), "reason": reason, "message": message}


def merge_conditions(
    old: list[KubeObject], new: list[KubeObject], generation: int
) -> list[KubeObject]:
    """Conditions merged by type; `lastTransitionTime` moves only when the status flips."""
    now = _now()
    by_type = {c["type"]: c for c in old}
    for condition in new:
        before = by_type.get(condition["type"])
        by_type[condition["type"]] = {
            **condition,
            "observedGeneration": generation,
            "lastTransitionTime": (
                before["lastTransitionTime"]
                if before is not None and before.get("status") == condition["status"]
                else now
            ),
        }
    return list(by_type.values())


def _desired_workers(spec: KubeObject) -> int:
    return sum(
        int(group.get("replicas", group.get("minReplicas", 0))) * int(group.get("numOfHosts", 1))
        for group in spec.get("workerGroupSpecs") or []
        if not group.get("suspend")
    )


def ready_status(current: KubeObject, head: RayHead) -> KubeObject:
    name, generation = current["metadata"]["name"], current["metadata"]["generation"]
    old = current.get("status") or {}
    now = _now()
    return {
        "state": "ready",
        "reason": None,  # merge patch: drop the reason of an earlier failure
        "head": {
            "podIP": "127.0.0.1",
            "serviceIP": "127.0.0.1",
            "podName": f"{name}-head",
            "serviceName": f"{name}-head-svc",
        },
        "endpoints": {
            "client": str(head.client_port),
            "dashboard": str(head.dashboard_port),
            "gcs-server": str(head.gcs_port),
        },
        "desiredWorkerReplicas": _desired_workers(current["spec"]),
        "readyWorkerReplicas": 0,
        "availableWorkerReplicas": 0,
        "observedGeneration": generation,
        "lastUpdateTime": now,
        "stateTransitionTimes": {"ready": now},
        "conditions": merge_conditions(
            old.get("conditions") or [],
            [
                _condition(
                    "HeadPodReady", True, "HeadPodRunningAndReady", "Head pod is running and ready"
                ),
                _condition(
                    "RayClusterProvisioned",
                    True,
                    "AllPodRunningAndReadyFirstTime",
                    "All Ray Pods are ready for the first time",
                ),
            ],
            generation,
        ),
    }


def not_ready_status(current: KubeObject, problem: PodNotReady) -> KubeObject:
    generation = current["metadata"]["generation"]
    old = current.get("status") or {}
    return {
        "reason": problem.message,
        "desiredWorkerReplicas": _desired_workers(current["spec"]),
        "readyWorkerReplicas": 0,
        "observedGeneration": generation,
        "lastUpdateTime": _now(),
        "conditions": merge_conditions(
            old.get("conditions") or [],
            [
                _condition("HeadPodReady", False, problem.reason, problem.message),
                _condition(
                    "RayClusterProvisioned",
                    False,
                    "RayClusterPodsProvisioning",
                    "RayCluster Pods are being provisioned for first time",
                ),
            ],
            generation,
        ),
    }
