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
from wtb.kube.checks import admission_answer, check_batchtest
from wtb_operator.context import OperatorContext

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
    """Refuse a wrong spec; warn of a Workflow that is missing or itself wrong (the same
    check as the reconcile step's, `wtb.kube.checks`). A change of metadata or status only
    is always let through, so an object that became invalid (its Workflow changed) can still
    be labelled or deleted.

    Async, with the check (and its one API call) on a thread of its own: the pool of sync
    handlers may be busy with reconcile steps, and the API server waits for this answer.
    Kopf serves admission requests only once the start-up handlers ran, so the operator's
    context is there."""
    old = kwargs.get("old")  # Kopf passes the old object on UPDATE
    if old is not None and old.get("spec") == body.get("spec"):
        return
    ctx: OperatorContext = memo.ctx
    checked = await asyncio.to_thread(check_batchtest, dict(body), ctx.kube.get_workflow)
    answer = admission_answer(checked)
    if answer.refusal is not None:
        raise kopf.AdmissionError(answer.refusal, code=UNPROCESSABLE)
    if answer.warning is not None:
        warnings.append(answer.warning)
