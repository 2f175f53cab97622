"""Every operator setting in one place, from `wtb.settings` (environment variables WTB_*)."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from wtb.api._base import GROUP
from wtb_operator.context import OperatorContext
from wtb_operator.kubeapi import KOPF_ERROR_BACKOFFS, KubeApi, load_api_client

log = logging.getLogger("wtb.operator")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    from wtb.settings import get_settings
    from wtb.storage import ResultStore
    from wtb.storage.engine import redact

    wtb = get_settings()
    # Kopf's own bookkeeping lives under our API group.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.networking.error_backoffs = KOPF_ERROR_BACKOFFS
    settings.execution.max_workers = 8
    if wtb.webhook_port:
        from wtb_operator.webhook_server import webhook_server

        settings.admission.server = webhook_server(wtb)
        settings.admission.managed = f"validate.{GROUP}"
    if not wtb.database_url:
        raise kopf.PermanentError(
            "WTB_DATABASE_URL is not set: the operator reads progress from the result store"
        )
    store = ResultStore.open(wtb.database_url, retry_seconds=wtb.store_retry_seconds)
    memo.ctx = OperatorContext(settings=wtb, kube=KubeApi(load_api_client()), store=store)
    log.info(
        "WTB operator: result store %s, RayCluster database secret %r",
        redact(wtb.database_url),
        wtb.cluster_database_secret,
    )


@kopf.on.cleanup()
def close(memo: Any, **_: Any) -> None:
    ctx = getattr(memo, "ctx", None)
    if isinstance(ctx, OperatorContext):
        ctx.store.close()
