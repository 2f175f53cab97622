"""Workflow handlers: validate the structure and list its nodes and variants in status."""

from __future__ import annotations

from typing import Any

import kopf

from wtb.api._base import GROUP, VERSION
from wtb.api.workflow import ORIGINAL, NodeVariantsStatus, Workflow, WorkflowStatus
from wtb.errors import ManifestErrors
from wtb.kube import conditions as cond
from wtb.kube.semantics import declared_nodes, parse_workflow, summary


def workflow_status(workflow: Workflow, old: WorkflowStatus, generation: int) -> WorkflowStatus:
    """Ready, with every node WTB knows of and its variants (`original` first). A graph
    factory's other nodes are known only in its image; the batch driver checks them."""
    nodes = declared_nodes(workflow) or []
    nodes += [n for n in workflow.spec.variants if n not in nodes]
    listed = [
        NodeVariantsStatus(
            node=n, variants=[ORIGINAL, *(v.name for v in workflow.spec.variants.get(n, []))]
        )
        for n in nodes
    ]
    conditions = cond.set_condition(
        old.conditions,
        cond.READY,
        "True",
        "Valid",
        f"{len(listed)} node(s) listed",
        generation=generation,
    )
    return WorkflowStatus(
        phase="Ready", observed_generation=generation, nodes=listed, conditions=conditions
    )


@kopf.on.resume(GROUP, VERSION, "workflows")
@kopf.on.create(GROUP, VERSION, "workflows")
@kopf.on.update(GROUP, VERSION, "workflows", field="spec")
def reconcile_workflow(
    body: kopf.Body, meta: kopf.Meta, status: kopf.Status, patch: kopf.Patch, **_: Any
) -> None:
    generation = int(meta.get("generation") or 1)
    old = WorkflowStatus.model_validate({k: v for k, v in status.items() if k != "kopf"})
    try:
        workflow = parse_workflow(dict(body))
    except ManifestErrors as exc:
        message = summary(exc.errors)
        new = WorkflowStatus(
            phase="Invalid",
            observed_generation=generation,
            conditions=cond.set_condition(
                old.conditions, cond.READY, "False", "InvalidSpec", message, generation=generation
            ),
        )
        kopf.warn(body, reason="InvalidSpec", message=message)
    else:
        new = workflow_status(workflow, old, generation)
        if old.phase != "Ready" or old.observed_generation != generation:
            kopf.info(body, reason="Ready", message=new.conditions[-1].message)
    for key, value in new.model_dump(mode="json", by_alias=True).items():
        patch.status[key] = value
