"""One settings object for the CLI, the driver and the operator (environment prefix WTB_)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from wtb.errors import WtbError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WTB_", extra="ignore")

    database_url: str | None = Field(
        default=None, description="Result store URL; default: SQLite in ./.wtb/wtb.db."
    )
    retry_backoff_scale: float = Field(
        default=1.0,
        ge=0,
        description="Multiplies every retry delay; 0 retries at once (tests).",
    )
    flush_every: int = Field(default=200, ge=1, description="Results written per transaction.")
    flush_seconds: float = Field(default=0.5, gt=0, description="Longest wait before a write.")
    store_retry_seconds: float = Field(
        default=60.0, ge=0, description="How long writes retry while the database is unreachable."
    )

    # The operator.
    cluster_database_secret: str = Field(
        default="wtb-database",
        description="Secret (in each BatchTest's namespace) whose key holds the database URL "
        "the Ray pods use; it reaches them through the pod template only.",
    )
    cluster_database_secret_key: str = Field(default="url")
    reconcile_seconds: float = Field(
        default=2.0, gt=0, description="How often the operator looks at an unfinished BatchTest."
    )
    status_seconds: float = Field(
        default=5.0, ge=0, description="Least time between two progress writes to a status."
    )
    cluster_ready_timeout_seconds: float = Field(
        default=600.0, gt=0, description="How long a RayCluster may take to be ready."
    )
    status_top_rows: int = Field(
        default=10, ge=1, le=100, description="Matrix rows kept in status (best, plus baseline)."
    )
    webhook_port: int = Field(
        default=9443, ge=0, le=65535, description="Admission webhook port; 0 turns it off."
    )
    webhook_host: str | None = Field(
        default=None, description="Host name or IP the API server calls the webhook at."
    )
    webhook_service: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9-]+/[a-z0-9-]+$",
        description="namespace/name of the Service in front of the webhook: the API server "
        "calls it through the Service (in a cluster) instead of at webhook_host's URL.",
    )
    webhook_listen: str = Field(default="0.0.0.0", description="Address the webhook listens on.")  # noqa: S104
    webhook_certfile: str | None = Field(
        default=None, description="TLS certificate of the webhook; self-signed when unset."
    )
    webhook_keyfile: str | None = Field(default=None)
    webhook_cert_check_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How often the webhook re-reads its certificate files: a rotated "
        "certificate (a renewed Secret) is served, and its caBundle written, this long after.",
    )
    log_level: str = Field(default="INFO")
    watch_namespaces: str = Field(
        default="", description="Comma-separated namespaces the operator watches; all when empty."
    )
    liveness_endpoint: str | None = Field(
        default=None, description="Kopf's liveness endpoint, e.g. http://0.0.0.0:8080/healthz."
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings from the environment; a bad value is a WtbError naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"WTB_{str(e['loc'][0]).upper()}={e.get('input')!r}: {e['msg']}" for e in exc.errors()
        )
        raise WtbError(f"invalid environment: {problems}") from exc
