"""The validating admission webhook: a BatchTest whose spec is wrong is refused at apply
time, with the message naming the field. The operator makes the same checks and reports
them as a condition, so nothing depends on the webhook being there. This module is loaded
only when the webhook is on (WTB_WEBHOOK_PORT): Kopf refuses admission handlers without a
server."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import kopf

from wtb.api._base import GROUP, VERSION
from wtb.kube.checks import admission_answer, check_batchtest
from wtb_operator.context import OperatorContext

UNPROCESSABLE = 422

CHECK_THREADS: Final = 4
"""Admission checks run at once; more wait their turn, within the same deadline."""
_checks = ThreadPoolExecutor(max_workers=CHECK_THREADS, thread_name_prefix="wtb-admission")
_log = logging.getLogger(__name__)


def _too_slow(seconds: float) -> str:
    return (
        f"the admission check did not finish within {seconds:g} s "
        "(WTB_WEBHOOK_CHECK_SECONDS): admitted unchecked; the operator checks the spec "
        "again and reports a problem in the Validated condition"
    )


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

    Async, with the check (and its one API call) on a thread of a small pool of its own:
    the pool of sync handlers may be busy with reconcile steps, and the API server waits
    for this answer. A check that takes longer than WTB_WEBHOOK_CHECK_SECONDS (waiting for
    a thread included) admits the object with a warning, as the webhook's failure policy
    (Ignore) would: the reconcile step makes the same check and reports it.
    Kopf serves admission requests only once the start-up handlers ran, so the operator's
    context is there."""
    old = kwargs.get("old")  # Kopf passes the old object on UPDATE
    if old is not None and old.get("spec") == body.get("spec"):
        return
    ctx: OperatorContext = memo.ctx
    seconds = ctx.settings.webhook_check_seconds
    loop = asyncio.get_running_loop()
    check = loop.run_in_executor(_checks, check_batchtest, dict(body), ctx.kube.get_workflow)
    try:
        checked = await asyncio.wait_for(check, seconds)
    except TimeoutError:
        # The thread cannot be stopped; its work is bounded (WTB_MAX_COMBINATIONS, the
        # API client's timeouts) and its answer is dropped.
        _log.warning("%s: %s", _where(body), _too_slow(seconds))
        warnings.append(_too_slow(seconds))
        return
    answer = admission_answer(checked)
    if answer.refusal is not None:
        raise kopf.AdmissionError(answer.refusal, code=UNPROCESSABLE)
    if answer.warning is not None:
        warnings.append(answer.warning)


def _where(body: kopf.Body) -> str:
    meta = body.get("metadata") or {}
    return f"BatchTest {meta.get('namespace', '')}/{meta.get('name', '')}"
