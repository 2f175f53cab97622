"""The admission webhook's server as the API server learns of it: through a Service in a
cluster (an API server seldom resolves cluster DNS), through a URL elsewhere."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import kopf

from services.support import free_port
from wtb.settings import Settings
from wtb_operator.webhook_server import webhook_server


async def aclose(iterator: AsyncIterator[Any]) -> None:
    """Close the server's generator: it stops listening."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


def _announced(settings: Settings) -> kopf.WebhookClientConfig:
    """The client config the server yields first (what Kopf writes into the configuration)."""

    async def never(*_: Any, **__: Any) -> Any:
        raise AssertionError("no request is made here")

    fn = cast(kopf.WebhookFn, never)

    async def first() -> kopf.WebhookClientConfig:
        configs = webhook_server(settings)(fn)
        try:
            return await anext(configs)
        finally:
            await aclose(configs)

    return asyncio.run(first())


def test_in_a_cluster_the_webhook_is_announced_as_its_service() -> None:
    port = free_port()
    config = _announced(
        Settings(
            webhook_port=port,
            webhook_listen="127.0.0.1",
            webhook_host="wtb-webhook.wtb-system.svc",
            webhook_service="wtb-system/wtb-webhook",
        )
    )
    assert "url" not in config
    assert config["service"] == {
        "namespace": "wtb-system",
        "name": "wtb-webhook",
        "port": port,
        "path": "",
    }
    assert config["caBundle"], "the self-signed certificate's CA goes with it"


def test_out_of_a_cluster_the_webhook_is_announced_at_its_url() -> None:
    port = free_port()
    config = _announced(
        Settings(webhook_port=port, webhook_listen="127.0.0.1", webhook_host="127.0.0.1")
    )
    assert config["url"] == f"https://127.0.0.1:{port}"
    assert "service" not in config
    assert config["caBundle"]
