"""Dagster resources: thin wrappers around ``Database`` and ``StorageRepo``.

Secrets come in through ``EnvVar`` (resolved when a run starts, never shown in the UI); the pool
is created when a run or tick starts and closed when it ends. No connection at load time.
"""

from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from lifecycle import logs, metrics
from lifecycle.db import Database
from lifecycle.redaction import REDACTED, redact_url
from lifecycle.settings import Settings
from lifecycle.storage import StorageRepo


def _settings(**overrides: Any) -> Settings:
    """The process settings (retention, limits) with the resource's connection values on top."""
    return Settings.load().model_copy(update=overrides)


class DatabaseResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The application database (PostgreSQL / Supabase)."""

    url: str = Field(description="PostgreSQL URL of the application database (set it with EnvVar).")
    pool_size: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Connections kept at most (plus 10 under load), opened on demand.",
    )
    prepare_threshold: int | None = Field(
        default=5,
        description="psycopg prepare_threshold; None disables server-side prepared statements "
        "(required behind Supabase's transaction pooler on port 6543).",
    )
    _database: Database | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        settings = _settings(database_pool_size=self.pool_size)
        # Redacted JSON logs (jobId/runId bound) for the run's own and library lines, and a
        # metrics baseline so the run reports only what it did.
        logs.configure(settings)
        metrics.mark_run_start()
        self._database = Database.from_url(
            self.url,
            settings=settings,
            pool_size=self.pool_size,
            prepare_threshold=self.prepare_threshold,
        )

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        database, self._database = self._database, None
        try:
            if database is not None:
                database.dispose()
        finally:
            self._database = None
            # Batch runs push to the Pushgateway when PROMETHEUS_PUSHGATEWAY_URL is set (never fails).
            if context.run is not None:
                metrics.push_to_gateway(_settings(), job=context.run.job_name)

    def __repr_args__(self) -> Any:
        # The URL carries the password: never in a repr, str or log line.
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if name == "url" and isinstance(value, str) else value

    @property
    def db(self) -> Database:
        """The ``Database`` of this run (or tick)."""
        if self._database is None:
            raise RuntimeError("DatabaseResource used outside a run: setup_for_execution was not called")
        return self._database


class StorageResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Supabase Storage (or the local Storage server) through the official client."""

    url: str = Field(description="Base URL of the Supabase project (set it with EnvVar).")
    service_role_key: str = Field(
        description="Service-role key (set it with EnvVar('SUPABASE_SERVICE_ROLE_KEY'))."
    )
    bucket: str | None = Field(
        default=None, description="One bucket with sources/ and results/ prefixes, instead of two buckets."
    )
    _repo: StorageRepo | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._repo = StorageRepo.from_settings(self.settings())

    def __repr_args__(self) -> Any:
        # The service-role key is a credential: never in a repr, str or log line.
        for name, value in super().__repr_args__():
            yield name, REDACTED if name == "service_role_key" and value else value

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        repo, self._repo = self._repo, None
        try:
            if repo is not None:
                repo.close()
        finally:
            self._repo = None

    def settings(self) -> Settings:
        """Settings carrying this resource's Storage URL, key and bucket."""
        from pydantic import SecretStr

        settings = Settings.load(
            env={"SUPABASE_URL": self.url, "SUPABASE_SERVICE_ROLE_KEY": self.service_role_key}
        )  # validates the URL and registers the key for redaction
        return _settings(
            supabase_url=settings.supabase_url,
            supabase_service_role_key=SecretStr(self.service_role_key),
            supabase_storage_bucket=self.bucket,
        )

    @property
    def repo(self) -> StorageRepo:
        """The ``StorageRepo`` of this run."""
        if self._repo is None:
            raise RuntimeError("StorageResource used outside a run: setup_for_execution was not called")
        return self._repo
