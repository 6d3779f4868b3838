"""How many jobs are in each status, how big the expired backlog is, and the sensor's probes.

Read-only queries for the ``job_status_counts`` asset and the ``expired_jobs_sensor``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from lifecycle.db import Database
from lifecycle.states import JobStatus

# The "expired" predicate is the one retention cleanup uses: expired, not being processed, not held.
# ORDER BY expires_at LIMIT 1 makes the planner walk idx_jobs_expires_at from its low end and stop
# at the first live match (about 0.1 ms at 10M rows); without ORDER BY, with no match, the planner
# may scan the wrong way for over a second (../shared/reference/postgres.md).
_PROBE = sa.text(
    """
    SELECT id FROM jobs
    WHERE expires_at <= :now AND status <> 'processing' AND NOT retention_hold
    ORDER BY expires_at
    LIMIT 1
    """
)

_COUNTS_BY_STATUS = sa.text("SELECT status, count(*) AS n FROM jobs GROUP BY status")

_EXPIRED = sa.text(
    """
    SELECT count(*) AS n, min(expires_at) AS oldest
    FROM jobs
    WHERE expires_at <= :now AND status <> 'processing' AND NOT retention_hold
    """
)

# Keys, not rows: retention queues a batch's keys as chunk rows (``object_keys``, up to 1000 each).
_OUTBOX = sa.text(
    "SELECT coalesce(sum(coalesce(cardinality(object_keys), 1)), 0) AS n, min(created_at) AS oldest "
    "FROM storage_deletions"
)


# Does the outbox hold a row a drain could claim now? Due and unclaimed (the first row along
# idx_storage_deletions_next_attempt_at), or claimed by a drain whose lock session is gone (each
# distinct token looked up once with ``lifecycle_claim_alive``, along the partial index on claimed_by;
# ``OFFSET 0`` keeps the planner from testing every claimed row instead).
_OUTBOX_DUE_PROBE = sa.text(
    """
    SELECT (SELECT id FROM storage_deletions
            WHERE claimed_by IS NULL AND next_attempt_at <= :now
            ORDER BY next_attempt_at LIMIT 1) IS NOT NULL
        OR EXISTS (SELECT 1 FROM (SELECT DISTINCT claimed_by AS token FROM storage_deletions
                                  WHERE claimed_by IS NOT NULL OFFSET 0) AS d
                   WHERE NOT lifecycle_claim_alive(d.token))
    """
)


@dataclass(frozen=True)
class StatusCounts:
    """A snapshot of the jobs table and the storage outbox."""

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
    now = now or datetime.now(UTC)
    with db.transaction() as tx:
        conn = tx.connection
        by_status = {status.value: 0 for status in JobStatus}
        for row in conn.execute(_COUNTS_BY_STATUS):
            by_status[row.status] = int(row.n)
        expired = conn.execute(_EXPIRED, {"now": now}).one()
        outbox = conn.execute(_OUTBOX).one()
    return StatusCounts(
        at=now,
        by_status=by_status,
        expired_backlog=int(expired.n),
        oldest_expired_age_seconds=_age(now, expired.oldest),
        outbox_size=int(outbox.n),
        oldest_outbox_age_seconds=_age(now, outbox.oldest),
    )


def oldest_expired_job(db: Database, now: datetime | None = None) -> str | None:
    """The id of the job that expired first and may be deleted, or ``None`` (index-only probe)."""
    now = now or datetime.now(UTC)
    with db.transaction() as tx:
        job_id = tx.connection.execute(_PROBE, {"now": now}).scalar()
    return None if job_id is None else str(job_id)


def outbox_due(db: Database, now: datetime | None = None) -> bool:
    """True when the outbox holds objects a drain could remove now (the sensor's second probe)."""
    now = now or datetime.now(UTC)
    with db.transaction() as tx:
        return bool(tx.connection.execute(_OUTBOX_DUE_PROBE, {"now": now}).scalar_one())


def has_expired_backlog(db: Database, now: datetime | None = None) -> bool:
    """True when at least one job is waiting for retention cleanup."""
    return oldest_expired_job(db, now) is not None


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else max(0.0, (now - then).total_seconds())
