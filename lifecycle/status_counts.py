"""How many jobs are in each status, how big the expired backlog is, and the sensor's probes.

Read-only queries (``lifecycle.db.stats``) for the ``job_status_counts`` asset and the
``expired_jobs_sensor``. ``now=None`` (the default) is the database clock, the one retention cleanup
decides by, so the sensor never sees a backlog the cleanup would not find (or misses one it would);
tests may pass an instant.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from lifecycle.db import Database
from lifecycle.states import JobStatus


@dataclass(frozen=True)
class StatusCounts:
    """A snapshot of the jobs table and the storage outbox, taken at ``at`` (the database's time)."""

    at: datetime
    by_status: dict[str, int] = field(default_factory=dict)
    expired_backlog: int = 0
    oldest_expired_age_seconds: float | None = None
    outbox_size: int = 0
    oldest_outbox_age_seconds: float | None = None

    @property
    def total(self) -> int:
        """Jobs in every status."""
        return sum(self.by_status.values())

    def as_dict(self) -> dict[str, Any]:
        """Plain values (for metadata and JSON)."""
        values = asdict(self)
        values["at"] = self.at.isoformat()
        values["total"] = self.total
        return values


def status_counts(db: Database, now: datetime | None = None) -> StatusCounts:
    """Counts per status, the expired backlog and the outbox, in one read-only transaction."""
    with db.transaction(read_only=True) as tx:
        by_status = {status.value: 0 for status in JobStatus} | tx.stats.counts_by_status()
        expired = tx.stats.expired_backlog(now)
        outbox = tx.stats.outbox_size()
    return StatusCounts(
        at=expired.at,
        by_status=by_status,
        expired_backlog=expired.n,
        oldest_expired_age_seconds=_age(expired.at, expired.oldest),
        outbox_size=outbox.n,
        oldest_outbox_age_seconds=_age(expired.at, outbox.oldest),
    )


def oldest_expired_job(db: Database, now: datetime | None = None) -> str | None:
    """The id of the job that expired first and may be deleted, or ``None`` (index-ordered probe, one
    round trip)."""
    job_id = db.stats.oldest_eligible_job(now)
    return None if job_id is None else str(job_id)


def outbox_due(db: Database, now: datetime | None = None) -> bool:
    """True when the outbox holds objects a drain could remove now (the sensor's second probe, one
    round trip)."""
    return db.stats.outbox_due(now)


def has_expired_backlog(db: Database, now: datetime | None = None) -> bool:
    """True when at least one job is waiting for retention cleanup."""
    return oldest_expired_job(db, now) is not None


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else max(0.0, (now - then).total_seconds())
