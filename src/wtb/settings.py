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
    max_output_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest cell output (compact JSON) recorded whole; a larger one is "
        "recorded truncated, with a marker saying so.",
    )
    store_retry_seconds: float = Field(
        default=60.0, ge=0, description="How long writes retry while the database is unreachable."
    )
    db_connect_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="PostgreSQL: how long connecting (and its handshake) may take.",
    )
    db_statement_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        le=86400,
        description="PostgreSQL: how long one statement may run (SET LOCAL statement_timeout).",
    )
    db_lock_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=86400,
        description="PostgreSQL: how long one statement may wait for a lock another "
        "connection holds (SET LOCAL lock_timeout).",
    )

    # Input: what a manifest or a data set may be (docs/datasets.md#limits).
    allow_data_outside: bool = Field(
        default=False,
        description="Let a data set path leave the manifest's directory (an absolute path, "
        "`..`, a symlink pointing out); off: such a path is refused.",
    )
    max_manifest_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1, description="Largest manifest file (or stdin) read."
    )
    max_dataset_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1, description="Largest data set file read."
    )
    max_dataset_row_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1,
        description="Longest line of a JSONL data set (or field of a CSV one).",
    )

    max_combinations: int = Field(
        default=10_000,
        ge=1,
        description="Most combinations a BatchTest's matrix may have (counted before it is "
        "expanded); a bigger matrix is refused, naming spec.matrix.",
    )
    max_cells: int = Field(
        default=1_000_000,
        ge=1,
        description="Most cells (combinations x cases x repeats) one run may plan; checked "
        "once the cases are known.",
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
    webhook_check_seconds: float = Field(
        default=10.0,
        gt=0,
        le=25,
        description="Longest an admission check may take (under the API server's 30 s); a "
        "check that takes longer admits the object with a warning, and the reconcile step "
        "checks it again (the webhook's failure policy is Ignore).",
    )
    webhook_max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Largest admission request the webhook reads; a bigger one is answered "
        "413 unread (the API server then admits, failure policy Ignore, and the reconcile "
        "step checks the object).",
    )
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

    def limits_env(self) -> dict[str, str]:
        """The limits on a batch's size that differ from their defaults, as environment
        variables: the operator passes them on to the batch driver it submits, so that the
        driver plans what the operator admitted."""
        return {
            f"WTB_{name.upper()}": str(getattr(self, name))
            for name in ("max_combinations", "max_cells")
            if getattr(self, name) != type(self).model_fields[name].default
        }


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
