"""Batch status changes: stale-lease rescue and an operator's batch transition.

Both loop over ``tx.jobs.transition_many`` (one guarded statement per batch, ``SKIP LOCKED``, one
event per job carrying the run id), one short transaction per batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from lifecycle import errors
from lifecycle.db import Database
from lifecycle.states import JobStatus, can_transition, parse_status

#: Ids kept in a report (and logged one line each by the Dagster ops); the rest are counted only.
SAMPLE_SIZE = 20
DEFAULT_BATCH_SIZE = 1000


class _DryRun(Exception):
    """Raised inside a dry run's transaction so that it rolls back."""


@dataclass
class TransitionReport:
    """What a batch transition moved (or, in a dry run, would move)."""

    from_status: str
    to_status: str
    dry_run: bool
    moved: int = 0
    batches: int = 0
    sample_ids: list[UUID] = field(default_factory=list)

    def _sample(self, ids: list[UUID]) -> None:
        room = SAMPLE_SIZE - len(self.sample_ids)
        if room > 0:
            self.sample_ids.extend(ids[:room])

    def as_dict(self) -> dict[str, Any]:
        """Plain values (run metadata, JSON)."""
        return {
            "from_status": self.from_status,
            "to_status": self.to_status,
            "dry_run": self.dry_run,
            "moved": self.moved,
            "batches": self.batches,
            "sample_ids": [str(i) for i in self.sample_ids],
        }


@dataclass
class RescueReport:
    """Processing jobs whose lease expired: back to queued, or failed after ``max_attempts``."""

    max_attempts: int
    requeued: int = 0
    failed: int = 0
    batches: int = 0
    requeued_ids: list[UUID] = field(default_factory=list)
    failed_ids: list[UUID] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (run metadata, JSON)."""
        return {
            "max_attempts": self.max_attempts,
            "requeued": self.requeued,
            "failed": self.failed,
            "batches": self.batches,
            "requeued_sample": [str(i) for i in self.requeued_ids],
            "failed_sample": [str(i) for i in self.failed_ids],
        }


def transition_batch(
    db: Database,
    from_status: JobStatus | str,
    to_status: JobStatus | str,
    *,
    created_before: datetime | None = None,
    limit: int = DEFAULT_BATCH_SIZE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    reason: str | None = None,
    dry_run: bool = False,
    run_id: str | None = None,
) -> TransitionReport:
    """Move up to ``limit`` jobs (oldest first) from ``from_status`` to ``to_status``.

    One transaction per batch of ``batch_size``. A dry run runs the same statement for ``limit``
    jobs in one transaction and rolls it back: the count is exactly what a real run would move now.
    """
    source, target = _parse(from_status, "from_status"), _parse(to_status, "to_status")
    if not can_transition(source, target):
        raise errors.InvalidTransition(from_status=source.value, to_status=target.value)
    _check_positive(limit, "limit")
    _check_positive(batch_size, "batch_size")
    report = TransitionReport(source.value, target.value, dry_run)
    if dry_run:
        try:
            with db.transaction(run_id=run_id) as tx:
                ids = tx.jobs.transition_many(
                    source, target, limit=limit, created_before=created_before, reason=reason
                )
                report.moved, report.batches = len(ids), 1
                report._sample(ids)
                raise _DryRun
        except _DryRun:
            pass
        return report
    while report.moved < limit:
        wanted = min(batch_size, limit - report.moved)
        with db.transaction(run_id=run_id) as tx:
            ids = tx.jobs.transition_many(
                source, target, limit=wanted, created_before=created_before, reason=reason
            )
        report.moved += len(ids)
        report.batches += 1
        report._sample(ids)
        if len(ids) < wanted:
            break
    return report


def rescue_stale_jobs(
    db: Database,
    *,
    max_attempts: int | None = None,
    limit: int = 10_000,
    batch_size: int = DEFAULT_BATCH_SIZE,
    run_id: str | None = None,
) -> RescueReport:
    """Processing jobs whose lease expired go back to queued, or to failed after ``max_attempts``.

    ``attempts`` counts claims, so a job claimed ``max_attempts`` times and abandoned again is not
    retried. Up to ``limit`` jobs, one transaction per batch.
    """
    attempts = db.settings.max_attempts if max_attempts is None else max_attempts
    _check_positive(attempts, "max_attempts")
    _check_positive(limit, "limit")
    _check_positive(batch_size, "batch_size")
    report = RescueReport(max_attempts=attempts)
    reason = "lease expired"
    while report.requeued + report.failed < limit:
        wanted = min(batch_size, limit - report.requeued - report.failed)
        with db.transaction(run_id=run_id) as tx:
            exhausted = tx.jobs.exhausted_leases(attempts, wanted)
            for job_id in exhausted:
                tx.jobs.transition(
                    job_id,
                    JobStatus.FAILED,
                    expected_from=JobStatus.PROCESSING,
                    reason=reason,
                    data={"max_attempts": attempts},
                    error=f"lease expired after {attempts} attempt(s)",
                )
            requeued: list[UUID] = []
            if len(exhausted) < wanted:
                requeued = tx.jobs.transition_many(
                    JobStatus.PROCESSING,
                    JobStatus.QUEUED,
                    limit=wanted - len(exhausted),
                    lease_expired=True,
                    reason=reason,
                )
        report.batches += 1
        report.failed += len(exhausted)
        report.requeued += len(requeued)
        report.failed_ids.extend(exhausted[: max(0, SAMPLE_SIZE - len(report.failed_ids))])
        report.requeued_ids.extend(requeued[: max(0, SAMPLE_SIZE - len(report.requeued_ids))])
        if len(exhausted) + len(requeued) < wanted:
            break
    return report


def _parse(value: JobStatus | str, name: str) -> JobStatus:
    if isinstance(value, JobStatus):
        return value
    try:
        return parse_status(value)
    except errors.InvalidInput:
        raise errors.InvalidInput("unknown job status", field=name) from None


def _check_positive(value: int, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise errors.InvalidInput(f"{name} must be a positive integer", field=name)
