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
