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


def test_an_oversized_admission_request_is_refused_unread() -> None:
    """A request over WTB_WEBHOOK_MAX_BODY_BYTES is answered 413 before its body is read;
    one within it reaches the admission function."""
    import aiohttp

    port = free_port()
    reached: list[Any] = []

    async def answer(data: Any, **_: Any) -> Any:
        reached.append(data)
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {}}

    async def exchange() -> tuple[int, int]:
        settings = Settings(
            webhook_port=port,
            webhook_listen="127.0.0.1",
            webhook_host="127.0.0.1",
            webhook_max_body_bytes=4096,
        )
        configs = webhook_server(settings)(cast(kopf.WebhookFn, answer))
        try:
            config = await anext(configs)
            url = f"{config['url']}/batchtest"
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                big = b'{"pad": "' + b"x" * 8192 + b'"}'
                async with session.post(url, data=big, ssl=False) as refused:
                    too_big = refused.status
                async with session.post(url, data=b'{"pad": "x"}', ssl=False) as served:
                    fine = served.status
            return too_big, fine
        finally:
            await aclose(configs)

    too_big, fine = asyncio.run(asyncio.wait_for(exchange(), 60))
    assert too_big == 413
    assert fine == 200
    assert reached == [{"pad": "x"}], "only the small request reached the admission function"
