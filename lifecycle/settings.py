"""Configuration: the environment, and ``.env`` when present.

Nothing is read at import time: call ``Settings.load()``. Invalid values fail with a
``ConfigurationError`` that names the variable and never repeats its value (it may be a secret).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lifecycle import errors
from lifecycle.redaction import redact_url, register_secret
from lifecycle.states import JobStatus

DAY = 86_400
#: The longest lease a worker may hold on a processing job (setting and per-call ``lease_seconds``).
MAX_LEASE_SECONDS = 7 * DAY
#: The largest cleanup batch (setting, CLI option and Dagster config): one transaction's worth.
MAX_CLEANUP_BATCH_SIZE = 10_000
#: The longest grace period of orphan reconciliation (CLI option, Dagster config and the function).
MAX_RECONCILE_GRACE_SECONDS = 365 * DAY


class LogFormat(enum.StrEnum):
    """How log lines are rendered."""

    JSON = "json"
    CONSOLE = "console"


_DB_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


class Settings(BaseSettings):
    """Every setting of the project; environment variable names are the field names upper-cased."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True)

    # Connections. Unset means "use the embedded development stack" (``lifecycle.devstack``).
    database_url: SecretStr | None = Field(None, description="PostgreSQL URL of the application database")
    database_pool_size: int = Field(
        5,
        ge=1,
        le=100,
        description="Connections a process keeps at most (plus 10 under load), opened on demand",
    )
    database_prepare_threshold: int | None = Field(
        5, description="psycopg prepare_threshold; empty/none for Supabase's transaction pooler"
    )
    database_pool_pre_ping: bool = Field(
        False, description="Test each pooled connection before use (one round trip per transaction)"
    )
    database_pool_recycle_seconds: int = Field(
        300,
        ge=-1,
        description="Replace pooled connections older than this (the pool's max_lifetime; -1: never)",
    )
    supabase_url: str | None = Field(None, description="Base URL of the Supabase project")
    supabase_service_role_key: SecretStr | None = Field(None, description="Service-role JWT")
    supabase_storage_bucket: str | None = Field(
        None, description="One bucket with sources/ and results/ prefixes, instead of two buckets"
    )
    signed_url_ttl_seconds: int = Field(600, ge=1)
    signed_url_max_ttl_seconds: int = Field(7 * DAY, ge=1)

    # Retention per status: how long after entering a status a job may be deleted.
    retention_queued_seconds: int = Field(30 * DAY, ge=0)
    retention_succeeded_seconds: int = Field(7 * DAY, ge=0)
    retention_failed_seconds: int = Field(14 * DAY, ge=0)
    retention_canceled_seconds: int = Field(3 * DAY, ge=0)
    tombstone_retention_seconds: int = Field(90 * DAY, ge=0)

    # Cleanup limits (each overridable per run).
    cleanup_batch_size: int = Field(1000, ge=1, le=MAX_CLEANUP_BATCH_SIZE)
    cleanup_min_batch_size: int = Field(50, ge=1)
    cleanup_max_jobs_per_second: float | None = Field(None, gt=0)
    cleanup_max_objects_per_second: float | None = Field(None, gt=0)
    cleanup_max_jobs: int | None = Field(None, ge=1)
    cleanup_max_runtime_seconds: float | None = Field(None, gt=0)
    cleanup_statement_timeout_ms: int = Field(5000, ge=1)
    cleanup_lock_timeout_ms: int = Field(1000, ge=1)
    outbox_max_attempts_backoff_seconds: int = Field(3600, ge=1)

    # Workers and leases.
    lease_seconds: int = Field(300, ge=1, le=MAX_LEASE_SECONDS)
    max_attempts: int = Field(3, ge=1)
    max_params_bytes: int = Field(64 * 1024, ge=1)

    # API keys.
    bcrypt_rounds: int = Field(12, ge=4, le=31)
    api_key_cache_ttl_seconds: float = Field(60.0, ge=0)

    # Observability.
    log_format: LogFormat = LogFormat.JSON
    log_level: str = "INFO"
    prometheus_pushgateway_url: str | None = None

    # Schedules (cron strings).
    retention_cron: str = "0 3 * * *"
    rescue_cron: str = "*/5 * * * *"
    status_counts_cron: str = "0 * * * *"
    reconcile_cron: str = "0 4 * * 0"

    # Where the embedded development stack keeps its data.
    lifecycle_home: Path = Path(".lifecycle")

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        scheme = urlsplit(value.get_secret_value()).scheme
        if scheme not in _DB_SCHEMES:
            raise ValueError(f"must be a URL with a scheme of {', '.join(_DB_SCHEMES)}")
        return value

    @field_validator("supabase_url", "prometheus_pushgateway_url")
    @classmethod
    def _check_http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL with a host")
        return value.rstrip("/")

    @field_validator("supabase_storage_bucket")
    @classmethod
    def _check_bucket(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if "/" in value or not value.isascii() or len(value) > 100:
            raise ValueError("must be a bucket name: ASCII, no slash, at most 100 characters")
        return value

    @field_validator("database_prepare_threshold", mode="before")
    @classmethod
    def _none_words(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("", "none", "null", "off"):
            return None
        return value

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, *, env_file: str | Path | None = ".env") -> Settings:
        """Settings from ``env`` (default: the process environment) and ``env_file``."""
        try:
            if env is None:
                settings = cls(_env_file=env_file)
            else:
                lowered = {k.lower(): v for k, v in env.items() if k.lower() in cls.model_fields}
                settings = cls.model_validate(lowered)
        except ValidationError as exc:
            raise _configuration_error(exc) from None
        register_secret(settings.database_password)
        if settings.supabase_service_role_key is not None:
            register_secret(settings.supabase_service_role_key.get_secret_value())
        return settings

    # Derived values -----------------------------------------------------------------------------

    @property
    def database_password(self) -> str | None:
        """The password inside ``DATABASE_URL``, if any (for redaction)."""
        if self.database_url is None:
            return None
        return urlsplit(self.database_url.get_secret_value()).password

    def retention_for(self, status: JobStatus) -> timedelta:
        """How long a job stays after entering ``status`` (processing keeps the queued clock)."""
        seconds = {
            JobStatus.QUEUED: self.retention_queued_seconds,
            JobStatus.PROCESSING: self.retention_queued_seconds,
            JobStatus.SUCCEEDED: self.retention_succeeded_seconds,
            JobStatus.FAILED: self.retention_failed_seconds,
            JobStatus.CANCELED: self.retention_canceled_seconds,
        }[status]
        return timedelta(seconds=seconds)

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            if name == "database_url" and value is not None:
                yield name, redact_url(value.get_secret_value())
            else:
                yield name, value

    def __str__(self) -> str:
        return repr(self)


def _configuration_error(exc: ValidationError) -> errors.ConfigurationError:
    """One message naming every bad variable, with pydantic's reason but never the input value."""
    problems = []
    first = None
    for err in exc.errors(include_input=False, include_url=False):
        variable = str(err["loc"][0]).upper() if err["loc"] else "?"
        first = first or variable
        reason = str(err["msg"]).removeprefix("Value error, ")
        problems.append(f"{variable}: {reason}")
    return errors.ConfigurationError("invalid configuration: " + "; ".join(problems), variable=first)
