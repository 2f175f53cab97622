"""The validating admission webhook: a BatchTest whose spec is wrong is refused at apply
time, with the message naming the field. The operator makes the same checks and reports
them as a condition, so nothing depends on the webhook being there. This module is loaded
only when the webhook is on (WTB_WEBHOOK_PORT): Kopf refuses admission handlers without a
server."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from wtb.api._base import GROUP, VERSION
from wtb.errors import ManifestErrors
from wtb.kube.semantics import check_references, parse_batchtest, parse_workflow, summary

UNPROCESSABLE = 422


@kopf.on.validate(
    GROUP,
    VERSION,
    "batchtests",
    id="batchtest",
    operations=["CREATE", "UPDATE"],
    ignore_failures=True,
)
async def validate_batchtest(
    body: kopf.Body, warnings: list[str], memo: Any, **kwargs: Any
) -> None:
    """Refuse a wrong spec. A change of metadata or status only is always let through, so
    an object that became invalid (its Workflow changed) can still be labelled or deleted.

    Async, with its one API call on a thread of its own: the pool of sync handlers may be
    busy with reconcile steps, and the API server waits for this answer."""
    old = kwargs.get("old")  # Kopf passes the old object on UPDATE
    if old is not None and old.get("spec") == body.get("spec"):
        return
    try:
        batch = parse_batchtest(dict(body))
    except ManifestErrors as exc:
        raise kopf.AdmissionError(summary(exc.errors), code=UNPROCESSABLE) from exc
    ctx = getattr(memo, "ctx", None)
    if ctx is None:
        return
    ref = batch.spec.workflow_ref.name
    workflow_body = await asyncio.to_thread(ctx.kube.get_workflow, batch.metadata.namespace, ref)
    if workflow_body is None:
        warnings.append(f"spec.workflowRef.name: Workflow {ref!r} does not exist (yet)")
        return
    try:
        workflow = parse_workflow(workflow_body)
    except ManifestErrors:
        warnings.append(f"spec.workflowRef.name: Workflow {ref!r} is invalid")
        return
    problems = check_references(batch, workflow)
    if problems:
        raise kopf.AdmissionError(summary(problems), code=UNPROCESSABLE)
