"""What a reconcile step observed, as typed views the decisions read: a RayCluster
(`ClusterView.of`), the Ray job (`JobInfo` from `wtb.kube.rayjobs`, `JobApiDown` when the
job API did not answer, None when the cluster does not know the job), and the Workflow a
run recorded. Each view is read from its API object once, so no decision walks a dict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wtb.api.batchtest import BatchTest
from wtb.api.workflow import Workflow
from wtb.kube.raycluster import cluster_state, spec_hash
from wtb.kube.rayjobs import JobInfo
from wtb.runs.record import recorded_spec
from wtb.storage.records import RunRecord


@dataclass(frozen=True)
class Owner:
    """One of an object's ownerReferences."""

    kind: str
    name: str
    uid: str


@dataclass(frozen=True)
class ClusterView:
    """A RayCluster as the decisions need it: whose it is, whether it is going, which spec it
    was built from, and what KubeRay says of it."""

    name: str
    deleting: bool
    owners: tuple[Owner, ...]
    spec_hash: str | None
    ready: bool
    dashboard_url: str | None
    message: str

    @classmethod
    def of(cls, raycluster: dict[str, Any]) -> ClusterView:
        meta = raycluster.get("metadata") or {}
        state = cluster_state(raycluster)
        return cls(
            name=str(meta.get("name") or ""),
            deleting=bool(meta.get("deletionTimestamp")),
            owners=tuple(
                Owner(str(r.get("kind") or ""), str(r.get("name") or ""), str(r.get("uid") or ""))
                for r in meta.get("ownerReferences") or []
            ),
            spec_hash=spec_hash(raycluster),
            ready=state.ready,
            dashboard_url=state.dashboard_url,
            message=state.message,
        )

    def owned_by(self, uid: str) -> bool:
        return any(owner.uid == uid for owner in self.owners)

    def owned_by_batchtest_named(self, name: str) -> bool:
        """Owned by a BatchTest of this name, whichever object (uid) it was."""
        return any(owner.kind == "BatchTest" and owner.name == name for owner in self.owners)


@dataclass(frozen=True)
class JobApiDown:
    """The Ray job API refused the question or did not answer: nothing is known of the job."""

    error: str


JobSeen = JobInfo | JobApiDown | None
"""What asking the job API for a submission id gave; None: the cluster does not know it."""


def recorded_workflow(batch: BatchTest, run: RunRecord) -> Workflow:
    """The Workflow as `run` recorded it: once a run is recorded, a Workflow edited or deleted
    meanwhile changes nothing about it."""
    return Workflow.model_validate(
        {
            "metadata": {
                "name": batch.spec.workflow_ref.name,
                "namespace": batch.metadata.namespace,
            },
            "spec": recorded_spec(run).workflow,
        }
    )
