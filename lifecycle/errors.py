"""The project's exceptions.

Each class's docstring is its default message; context lives in attributes. Messages never carry a
secret (passwords, keys, tokens): callers pass identifiers (job ids, bucket names, statuses) only,
and the data layer translates driver errors at one boundary (``lifecycle.db.errors``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from lifecycle.redaction import redact_known


class LifecycleError(Exception):
    """A lifecycle operation failed."""

    def __init__(self, message: str | None = None, **context: Any) -> None:
        # Redacted here too (defence in depth): str, repr and args never carry a known secret.
        self.message = redact_known(message or (self.__doc__ or type(self).__name__).strip())
        self.context = context
        for name, value in context.items():
            setattr(self, name, value)
        super().__init__(self.message)

    def __str__(self) -> str:
        if not self.context:
            return self.message
        details = ", ".join(f"{k}={v}" for k, v in self.context.items() if v is not None)
        return redact_known(f"{self.message} ({details})") if details else self.message


class JobNotFound(LifecycleError):
    """Job not found."""

    job_id: UUID | str

    def __init__(self, job_id: UUID | str, message: str | None = None) -> None:
        super().__init__(message, job_id=job_id)


class InvalidTransition(LifecycleError):
    """Status change not allowed."""

    job_id: UUID | str | None
    from_status: str | None
    to_status: str | None

    def __init__(
        self,
        message: str | None = None,
        *,
        job_id: UUID | str | None = None,
        from_status: str | None = None,
        to_status: str | None = None,
    ) -> None:
        super().__init__(message, job_id=job_id, from_status=from_status, to_status=to_status)


class VersionConflict(LifecycleError):
    """The job changed since it was read (optimistic concurrency)."""

    job_id: UUID | str
    expected_version: int | None
    actual_version: int | None

    def __init__(
        self,
        job_id: UUID | str,
        *,
        expected_version: int | None = None,
        actual_version: int | None = None,
        message: str | None = None,
    ) -> None:
        super().__init__(
            message,
            job_id=job_id,
            expected_version=expected_version,
            actual_version=actual_version,
        )


class InvalidInput(LifecycleError):
    """Invalid input."""

    field: str | None

    def __init__(self, message: str | None = None, *, field: str | None = None, **context: Any) -> None:
        super().__init__(message, field=field, **context)


class StorageError(LifecycleError):
    """A storage request failed."""

    bucket: str | None
    path: str | None
    status: str | None
    code: str | None

    def __init__(
        self,
        message: str | None = None,
        *,
        bucket: str | None = None,
        path: str | None = None,
        status: str | int | None = None,
        code: str | None = None,
        operation: str | None = None,
    ) -> None:
        super().__init__(
            message,
            operation=operation,
            bucket=bucket,
            path=path,
            status=None if status is None else str(status),
            code=code,
        )


class AttachRefused(LifecycleError):
    """An object cannot be attached to this job now."""

    job_id: UUID | str
    status: str | None
    #: Why: ``"status"`` (not a state that produces this object), ``"eligible_for_deletion"``
    #: (retention may delete the job at any moment), ``"pending_deletion"`` or ``"replaced"`` (below).
    reason: str

    def __init__(
        self, job_id: UUID | str, *, reason: str, status: str | None = None, message: str | None = None
    ) -> None:
        super().__init__(message, job_id=job_id, reason=reason, status=status)


class KeyPendingDeletion(AttachRefused):
    """The key is queued for deletion and a drain has tried to remove it: attach again once it is gone."""

    key: str

    def __init__(self, job_id: UUID | str, key: str, message: str | None = None) -> None:
        super().__init__(job_id, reason="pending_deletion", message=message)
        self.key = key


class KeyReplaced(AttachRefused):
    """The job's key was replaced while these bytes were uploading: the upload was removed again."""

    key: str

    def __init__(self, job_id: UUID | str, key: str, message: str | None = None) -> None:
        super().__init__(job_id, reason="replaced", message=message)
        self.key = key


class DatabaseUnavailable(LifecycleError):
    """The database could not be reached or refused the connection."""

    sqlstate: str | None

    def __init__(self, message: str | None = None, *, sqlstate: str | None = None) -> None:
        super().__init__(message, sqlstate=sqlstate)


class ConfigurationError(LifecycleError):
    """Invalid configuration."""

    variable: str | None

    def __init__(self, message: str | None = None, *, variable: str | None = None) -> None:
        super().__init__(message, variable=variable)


class ServiceRoleRequired(ConfigurationError):
    """Removing objects needs the service-role key (SUPABASE_SERVICE_ROLE_KEY): this key cannot see them."""

    # Any other key (anon, authenticated, ``sb_publishable_``) sees no object, so "not found" would
    # read as "already gone": the service role is the JWT whose ``role`` is ``service_role``, or an
    # ``sb_secret_`` key.

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, variable="SUPABASE_SERVICE_ROLE_KEY")


class RetentionError(LifecycleError):
    """Retention cleanup could not proceed."""


class QueryTimeout(LifecycleError):
    """A statement or lock timeout cancelled the work (it was rolled back)."""

    sqlstate: str | None

    def __init__(self, message: str | None = None, *, sqlstate: str | None = None) -> None:
        super().__init__(message, sqlstate=sqlstate)


class InvalidApiKey(LifecycleError):
    """Invalid API key."""

    # One message for every reason (malformed, unknown, wrong secret, revoked, expired): the
    # caller learns nothing about which keys exist. The key itself is never part of it.


class ApiKeyNotFound(LifecycleError):
    """API key not found."""

    api_key_id: UUID | str

    def __init__(self, api_key_id: UUID | str, message: str | None = None) -> None:
        super().__init__(message, api_key_id=api_key_id)


class ResultsNotAvailable(LifecycleError):
    """The job's results cannot be signed: it has not succeeded."""

    job_id: UUID
    status: str

    def __init__(self, job_id: UUID, status: str, message: str | None = None) -> None:
        super().__init__(message, job_id=job_id, status=status)


class JobExpired(LifecycleError):
    """The job's retention has run out: its results are about to be deleted and are not signed."""

    job_id: UUID
    expires_at: datetime

    def __init__(self, job_id: UUID, expires_at: datetime, message: str | None = None) -> None:
        super().__init__(message, job_id=job_id, expires_at=expires_at.isoformat())
