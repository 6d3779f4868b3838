"""Plain, immutable records handed out by the data layer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from lifecycle.states import JobStatus

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Job:
    """A row of ``jobs``."""

    id: UUID
    status: JobStatus
    params: dict[str, Any]
    source_key: str | None
    result_keys: tuple[str, ...]
    error: str | None
    attempts: int
    version: int
    lease_expires_at: datetime | None
    retention_hold: bool
    api_key_id: UUID | None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime

    @property
    def object_keys(self) -> tuple[str, ...]:
        """Every storage key recorded on the job (source first)."""
        return ((self.source_key,) if self.source_key else ()) + self.result_keys


@dataclass(frozen=True, slots=True)
class JobEvent:
    """A row of ``job_events``: one thing that happened to a job."""

    id: int
    job_id: UUID
    ts: datetime
    type: str
    from_status: JobStatus | None
    to_status: JobStatus | None
    data: dict[str, Any]
    run_id: str | None


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A row of ``api_keys`` without its hash (the hash never leaves the data layer)."""

    id: UUID
    name: str
    key_id: str
    scopes: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None

    def __repr__(self) -> str:
        return (
            f"ApiKey(id={self.id}, name={self.name!r}, key_id={self.key_id!r}, "
            f"scopes={self.scopes!r}, revoked={self.revoked_at is not None})"
        )


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a keyset-paginated listing; ``next_cursor`` is ``None`` on the last page."""

    items: Sequence[T]
    next_cursor: str | None = field(default=None)
