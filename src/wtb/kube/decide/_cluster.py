"""The RayCluster of a recorded run: create it, replace it, wait for it, fail, or go on with
its job API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from wtb.api.batchtest import BatchTest, BatchTestStatus
from wtb.kube import conditions as cond
from wtb.kube.names import raycluster_name
from wtb.kube.observed import ClusterView
from wtb.kube.raycluster import DatabaseSecret, build_raycluster, spec_hash
from wtb.kube.verdicts import Event, Fail, SetCondition, Wait


def cluster_name_for(batch: BatchTest) -> str:
    """The shared cluster the spec names, or the one WTB creates for it."""
    return batch.spec.ray.cluster_name or raycluster_name(batch.metadata.name)


@dataclass(frozen=True)
class CreateCluster:
    name: str
    body: dict[str, Any]

    @property
    def message(self) -> str:
        return f"creating RayCluster {self.name}"

    @property
    def event(self) -> Event:
        return Event("CreatedRayCluster", f"created RayCluster {self.name}")


@dataclass(frozen=True)
class ReplaceCluster:
    """Delete the cluster, built from an older spec: the next step creates the new one."""

    name: str

    @property
    def event(self) -> Event:
        return Event("DeletedRayCluster", f"RayCluster {self.name} changed: replacing it")


@dataclass(frozen=True)
class ClusterReady:
    name: str
    dashboard_url: str

    @property
    def message(self) -> str:
        return f"RayCluster {self.name} is ready"

    @property
    def event(self) -> Event:
        return Event("ClusterReady", self.message)


ClusterVerdict = Fail | Wait | CreateCluster | ReplaceCluster | ClusterReady


def decide_cluster(
    batch: BatchTest,
    *,
    uid: str,
    image: str | None,
    secret: DatabaseSecret,
    cluster: ClusterView | None,
    status: BatchTestStatus,
    default_timeout_seconds: float,
    now: datetime,
) -> ClusterVerdict:
    """What to do about the RayCluster of a recorded run. One WTB creates runs the
    Workflow's `image` and is this object's (`uid`); a shared one is only waited for."""
    ray = batch.spec.ray
    name = cluster_name_for(batch)
    timeout = ray.ready_timeout_seconds or default_timeout_seconds

    def not_ready(reason: cond.Reason, message: str) -> Fail | Wait:
        return _not_ready(reason, message, status=status, timeout=timeout, now=now)

    if ray.cluster_name is None:
        if image is None:
            return Fail(
                "InvalidSpec",
                f"Workflow {batch.spec.workflow_ref.name!r}: spec.image is not set; a "
                "RayCluster runs the workflow's image (fix: set spec.image, or name an "
                "existing cluster in the BatchTest's spec.ray.clusterName)",
            )
        wanted = build_raycluster(batch, uid=uid, image=image, secret=secret)
        if cluster is None:
            return CreateCluster(name, wanted)
        if cluster.deleting:
            return not_ready("Provisioning", f"RayCluster {name} is being deleted")
        if not cluster.owned_by(uid):
            if cluster.owned_by_batchtest_named(batch.metadata.name):
                # A BatchTest of this name was deleted and made again: the garbage
                # collector has its cluster to delete first.
                return not_ready("Provisioning", f"an earlier {name} is being deleted")
            return Fail(
                "ClusterNotFound",
                f"RayCluster {name} exists and is not this BatchTest's (fix: delete it, or "
                "name it in spec.ray.clusterName to use it as a shared cluster)",
            )
        # Once a job is submitted, its cluster is kept: replacing it would kill the job.
        if cluster.spec_hash != spec_hash(wanted) and status.submission_id is None:
            return ReplaceCluster(name)
    elif cluster is None:
        return not_ready(
            "ClusterNotFound", f"no RayCluster {name!r} in {batch.metadata.namespace!r}"
        )
    if cluster.deleting or not cluster.ready or cluster.dashboard_url is None:
        detail = "being deleted" if cluster.deleting else cluster.message
        return not_ready("Provisioning", f"RayCluster {name}: {detail}")
    return ClusterReady(name, cluster.dashboard_url)


def _not_ready(
    reason: cond.Reason,
    message: str,
    *,
    status: BatchTestStatus,
    timeout: float,
    now: datetime,
) -> Fail | Wait:
    """Waiting for the cluster. Before the job is submitted this has a deadline, counted from
    when ClusterReady turned False; after, the job's own status decides (a head that
    restarted comes back without the job, which is then submitted again). Provisioning is
    what a cluster does at first: not worth a Warning."""
    current = cond.find(status.conditions, cond.CLUSTER_READY)
    since = (
        cond.parse_rfc3339(current.last_transition_time)
        if current is not None and current.status == "False"
        else now
    )
    submitted = cond.is_true(status.conditions, cond.JOB_SUBMITTED)
    if not submitted and (now - since).total_seconds() > timeout:
        return Fail(
            "ClusterTimeout",
            f"not ready after {timeout:.0f} s: {message}",
            SetCondition(cond.CLUSTER_READY, "False", "ClusterTimeout", message),
        )
    return Wait(cond.CLUSTER_READY, reason, message, warn=reason != "Provisioning")


def cluster_refused(error: str) -> Fail:
    """The API server refused the RayCluster WTB built: what in the spec made it so."""
    return Fail(
        "InvalidSpec",
        f"spec.ray: the RayCluster was refused: {error}",
        SetCondition(cond.CLUSTER_READY, "False", "InvalidSpec", error),
    )
