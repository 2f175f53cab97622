"""The admission webhook's HTTPS server: the certificate given, or a self-signed one."""

from __future__ import annotations

import ipaddress
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp.web
import kopf

from wtb.settings import Settings


class BoundedWebhookServer(kopf.WebhookServer):
    """Kopf's server, refusing an admission request bigger than `max_body` bytes before
    reading it (413; aiohttp also stops reading a body without a length at 1 MiB)."""

    def __init__(self, *, max_body: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_body = max_body

    async def _serve(  # type: ignore[override]  # Kopf's is a staticmethod, called on self
        self, fn: kopf.WebhookFn, request: aiohttp.web.Request
    ) -> aiohttp.web.Response:
        length = request.content_length
        if length is not None and length > self.max_body:
            raise aiohttp.web.HTTPRequestEntityTooLarge(
                max_size=self.max_body,
                actual_size=length,
                text=f"admission request of {length} bytes, more than "
                f"WTB_WEBHOOK_MAX_BODY_BYTES={self.max_body}",
            )
        return await super()._serve(fn, request)


class ServiceWebhookServer(BoundedWebhookServer):
    """Kopf's server, announced to the API server as a Service (`clientConfig.service`)
    instead of a URL: an API server can reach Services, but seldom resolves cluster DNS."""

    def __init__(self, *, service: str, service_port: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service_namespace, _, self.service_name = service.partition("/")
        self.service_port = service_port

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        async for config in super().__call__(fn):
            announced = kopf.WebhookClientConfig(
                service=kopf.WebhookClientConfigService(
                    namespace=self.service_namespace,
                    name=self.service_name,
                    port=self.service_port,
                    path=self.path or "",
                )
            )
            if config.get("caBundle"):
                announced["caBundle"] = config["caBundle"]
            yield announced


def webhook_server(settings: Settings) -> kopf.WebhookServer:
    host = settings.webhook_host or "127.0.0.1"
    certfile, keyfile = settings.webhook_certfile, settings.webhook_keyfile
    if not (certfile and keyfile):
        certfile, keyfile = self_signed_certificate(host)
    options: dict[str, Any] = {
        "addr": settings.webhook_listen,
        "port": settings.webhook_port,
        "host": host,
        "certfile": certfile,
        "pkeyfile": keyfile,
        "max_body": settings.webhook_max_body_bytes,
        # Kopf re-reads the files this often; when they change (a renewed certificate), it
        # serves the new one and writes its caBundle into the webhook configuration.
        "file_check_interval": settings.webhook_cert_check_seconds,
    }
    if settings.webhook_service:
        return ServiceWebhookServer(
            service=settings.webhook_service, service_port=settings.webhook_port, **options
        )
    return BoundedWebhookServer(**options)


def self_signed_certificate(host: str) -> tuple[str, str]:
    """A certificate for `host` (IP or DNS name), valid a year; Kopf sends it to the API
    server as the webhook's caBundle."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = Path(tempfile.mkdtemp(prefix="wtb-webhook-"))
    certfile, keyfile = directory / "tls.crt", directory / "tls.key"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    keyfile.chmod(0o600)
    return str(certfile), str(keyfile)
