"""``StatsRepo``: read-only counts of the jobs table and the outbox, and the sensor's probes.

Statements in ``sql/stats.sql``. ``now=None`` (the default) is the database clock, the one retention
cleanup decides by; a test may pass an instant instead. "Eligible for deletion" is the shared
``retention.eligible`` fragment, so the probe and the backlog count agree with the cleanup's selection.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID

from psycopg.rows import class_row

from lifecycle import errors

if TYPE_CHECKING:
    from lifecycle.db._executor import Executor


@dataclass(frozen=True)
class ExpiredBacklog:
    """Jobs retention cleanup would delete at ``at``, and the expiry of the oldest."""

    at: datetime
    n: int
    oldest: datetime | None


@dataclass(frozen=True)
class OutboxSize:
    """Object keys queued for removal, and when the oldest was queued."""

    n: int
    oldest: datetime | None


class StatsRepo:
    """Counts and probes; nothing here writes."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    def counts_by_status(self) -> dict[str, int]:
        """Jobs per status that has any (a status with none is absent)."""
        return {status: int(n) for status, n in self.executor.all("stats.counts_by_status")}

    def expired_backlog(self, now: datetime | None = None) -> ExpiredBacklog:
        """How many jobs are eligible for deletion at ``now`` (``None``: the database clock)."""
        backlog = self.executor.one("stats.expired_backlog", {"now": now}, row=class_row(ExpiredBacklog))
        if backlog is None:  # an aggregate always returns its row
            raise errors.LifecycleError("stats.expired_backlog returned no row")
        return backlog

    def outbox_size(self) -> OutboxSize:
        """Object keys in the ``storage_deletions`` outbox."""
        size = self.executor.one("stats.outbox_size", row=class_row(OutboxSize))
        if size is None:  # an aggregate always returns its row
            raise errors.LifecycleError("stats.outbox_size returned no row")
        return size

    def oldest_eligible_job(self, now: datetime | None = None) -> UUID | None:
        """The id of the job that expired first and may be deleted at ``now`` (index-ordered probe)."""
        job_id: UUID | None = self.executor.scalar("stats.oldest_eligible_job", {"now": now})
        return job_id

    def outbox_due(self, now: datetime | None = None) -> bool:
        """Whether a drain could claim an outbox row at ``now`` (due, or held by a dead drain)."""
        return bool(self.executor.scalar("stats.outbox_due", {"now": now, "token": None}))
