"""Retention cleanup, phase 1 (rows) and the run loop; purge for right-to-erasure.

Phase 1 deletes expired jobs batch by batch, one short transaction each, writing their object keys
to the ``storage_deletions`` outbox and a tombstone per job in the same transaction. Phase 2
(``outbox.drain_outbox``) removes the objects afterwards. A crash anywhere leaves either untouched
rows (the next run selects them again) or outbox rows (the next drain removes them): never an
object without a row or an outbox entry, never a live row deleted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from lifecycle import errors, logs, metrics
from lifecycle.db import Database
from lifecycle.db import retention as retention_db
from lifecycle.retention.limits import (
    CleanupLimits,
    Deadline,
    TokenBucket,
    check_label,
    check_now,
)
from lifecycle.retention.outbox import (
    CHUNK,
    ObjectStore,
    drain_outbox,
    outbox_state,
    require_service_role,
)
from lifecycle.retention.report import EXPIRED_LEFT_CAP, CleanupPlan, CleanupReport

#: ``progress(phase, done, total_or_None)``: phase is "jobs" (phase 1) or "objects" (phase 2).
Progress = Callable[[str, int, int | None], None]

#: Jobs logged one by one (with their id) per run; past this, batches log a summary only.
LOG_EACH_JOB_LIMIT = 100
#: A lost connection is retried this many times per run before the error propagates.
MAX_CONNECTION_RETRIES = 3
#: Tombstones pruned per statement.
PRUNE_BATCH = 10_000
#: ``vacuum=None`` vacuums ``jobs`` after a run that deleted at least this many rows.
VACUUM_MIN_JOBS = 10_000
#: Dry runs list at most this many job ids.
SAMPLE_SIZE = 20
#: Why phase 1 may stop with expired jobs left: the limits a caller set, or timeouts at the floor.
_STOPPED_BY_A_LIMIT = ("max_jobs", "max_runtime_seconds", "query_timeout")

_log = logs.get_logger("lifecycle.retention")


@dataclass
class _Batch:
    locked: int
    jobs: int
    events: int
    keys_queued: int
    ids: Sequence[UUID]
    seconds: float


def _timeouts(db: Database, limits: CleanupLimits | None) -> dict[str, int]:
    """The per-transaction timeouts of retention's writes: the run's limits, or the configured ones."""
    if limits is not None:
        return {
            "statement_timeout_ms": limits.statement_timeout_ms,
            "lock_timeout_ms": limits.lock_timeout_ms,
        }
    s = db.settings
    return {
        "statement_timeout_ms": s.cleanup_statement_timeout_ms,
        "lock_timeout_ms": s.cleanup_lock_timeout_ms,
    }


def _delete_batch(
    db: Database,
    *,
    limit: int,
    now: datetime | None,
    run_id: str | None,
    reason: str,
    limits: CleanupLimits,
    retomb: bool = False,
) -> _Batch:
    """One phase-1 transaction: lock up to ``limit`` expired jobs, queue keys, tombstone, delete."""
    start = time.perf_counter()
    try:
        with db.transaction(run_id=run_id) as tx:
            tx.retention.set_timeouts(**_timeouts(db, limits))
            row = tx.retention.delete_batch(
                limit=limit, now=now, reason=reason, chunk=CHUNK, log_ids=LOG_EACH_JOB_LIMIT, retomb=retomb
            )
    except errors.InvalidInput as exc:
        # A job id that already has a tombstone (a restored row): rare, so the fast statement has
        # no ON CONFLICT and this batch is redone with it.
        if retomb or getattr(exc, "constraint", None) != "pk_job_deletions":
            raise
        _log.warning("a job id in this batch was tombstoned before; its tombstone is replaced")
        return _delete_batch(
            db, limit=limit, now=now, run_id=run_id, reason=reason, limits=limits, retomb=True
        )
    return _Batch(
        row.locked, row.jobs, row.events, row.keys_queued, list(row.ids or ()), time.perf_counter() - start
    )


def _count_eligible(db: Database, *, now: datetime | None, cap: int | None) -> int:
    with db.transaction(read_only=True) as tx:
        return tx.retention.count_eligible(now=now, cap=cap)


def _has_backlog(db: Database, *, now: datetime | None) -> bool:
    with db.transaction(read_only=True) as tx:
        return tx.retention.has_backlog(now=now)


def _log_jobs(ids: Iterable[UUID], logged: int, *, run_id: str | None, reason: str) -> int:
    for job_id in ids:
        if logged >= LOG_EACH_JOB_LIMIT:
            break
        with logs.bound(job_id=job_id, run_id=run_id):
            _log.info("job deleted", reason=reason)
        logged += 1
    return logged


@metrics.timed("retention", "prune_tombstones")
def prune_tombstones(
    db: Database,
    *,
    now: datetime | None = None,
    keep_seconds: int | None = None,
    limits: CleanupLimits | None = None,
) -> int:
    """Delete tombstones older than ``tombstone_retention_seconds``, in bounded batches (under
    ``limits``' timeouts, or the configured ones)."""
    keep = db.settings.tombstone_retention_seconds if keep_seconds is None else keep_seconds
    pruned = 0
    while True:
        with db.transaction() as tx:
            tx.retention.set_timeouts(**_timeouts(db, limits))
            n = tx.retention.prune_tombstones(now=now, keep_seconds=keep, limit=PRUNE_BATCH)
        pruned += n
        if n < PRUNE_BATCH:
            return pruned


def vacuum_jobs(db: Database) -> bool:
    """``VACUUM (ANALYZE) jobs`` outside any transaction; ``False`` (logged) if not allowed here."""
    return retention_db.vacuum_jobs(db)


@metrics.timed("retention", "plan_cleanup")
def plan_cleanup(
    db: Database,
    *,
    now: datetime | None = None,
    batch_size: int,
    max_jobs: int | None = None,
    max_jobs_per_second: float | None = None,
) -> CleanupPlan:
    """The dry run: the same selection as a real run, read-only, summarised."""
    plan = CleanupPlan()
    with db.transaction(read_only=True) as tx:
        tx.retention.set_timeouts(**(_timeouts(db, None) | {"statement_timeout_ms": 0}))
        for row in tx.retention.plan_by_status(now=now, cap=max_jobs):
            plan.jobs_by_status[row.status] = row.jobs
            plan.eligible_jobs += row.jobs
            plan.objects += row.objects
            plan.events = row.events
            if plan.oldest_expiry is None or row.oldest < plan.oldest_expiry:
                plan.oldest_expiry = row.oldest
            if plan.newest_expiry is None or row.newest > plan.newest_expiry:
                plan.newest_expiry = row.newest
        plan.sample_job_ids = tx.retention.plan_sample(now=now, n=SAMPLE_SIZE)
        plan.skipped_processing, plan.skipped_on_hold = tx.retention.kept(now=now)
        plan.tombstones_to_prune = tx.retention.count_prunable_tombstones(
            now=now, keep_seconds=db.settings.tombstone_retention_seconds
        )
        plan.outbox_pending = tx.outbox.pending_keys()
    plan.batches = math.ceil(plan.eligible_jobs / batch_size) if batch_size else 0
    if max_jobs_per_second:
        plan.min_duration_seconds = max(0.0, (plan.eligible_jobs - max_jobs_per_second) / max_jobs_per_second)
    plan.would_do = (
        f"delete {plan.eligible_jobs} job(s) and {plan.events} event(s) in about {plan.batches} "
        f"batch(es) of {batch_size}, write {plan.eligible_jobs} tombstone(s), queue and remove "
        f"{plan.objects} object(s) (plus {plan.outbox_pending} already queued), prune "
        f"{plan.tombstones_to_prune} tombstone(s); keep {plan.skipped_processing} processing and "
        f"{plan.skipped_on_hold} on-hold expired job(s)"
    )
    return plan


@metrics.timed("retention", "cleanup")
def cleanup(
    db: Database,
    storage: ObjectStore | None,
    *,
    dry_run: bool = False,
    batch_size: int | None = None,
    max_jobs_per_second: float | None = None,
    max_objects_per_second: float | None = None,
    max_jobs: int | None = None,
    max_runtime_seconds: float | None = None,
    now: datetime | None = None,
    run_id: str | None = None,
    progress: Progress | None = None,
    vacuum: bool | None = None,
    limits: CleanupLimits | None = None,
) -> CleanupReport:
    """Delete expired jobs (phase 1), then remove their objects (phase 2); see the module docstring.

    ``limits`` defaults to the configured ones (``CleanupLimits.from_settings``); a limit passed
    here replaces its value (``None``: keep it). ``storage=None`` runs phase 1 only and leaves the
    outbox for a later ``drain_outbox``; a ``storage`` whose key is not the service role's is refused
    (``errors.ServiceRoleRequired``) before anything is deleted. Every argument is checked first
    (``errors.InvalidInput``, nothing written). ``vacuum=None`` runs ``VACUUM (ANALYZE) jobs`` after a
    run that deleted at least ``VACUUM_MIN_JOBS`` rows, so index probes for expired rows stay fast.
    The report's ``work_left()`` is one line saying what the run left undone, or ``None``.
    """
    started = time.perf_counter()
    # A run's own values first, then the configured ones (what a run cannot use is refused).
    CleanupLimits.check_overrides(
        batch_size=batch_size,
        max_jobs_per_second=max_jobs_per_second,
        max_objects_per_second=max_objects_per_second,
        max_jobs=max_jobs,
        max_runtime_seconds=max_runtime_seconds,
    )
    check_now(now)
    check_label(run_id, "run_id")
    if limits is None:
        limits = CleanupLimits.from_settings(db.settings)
    limits = limits.with_overrides(
        batch_size=batch_size,
        max_jobs_per_second=max_jobs_per_second,
        max_objects_per_second=max_objects_per_second,
        max_jobs=max_jobs,
        max_runtime_seconds=max_runtime_seconds,
    )
    if storage is not None and not dry_run:
        # Before phase 1: a run that cannot confirm its removals must not start deleting rows.
        require_service_role(storage)
    report = CleanupReport(dry_run=dry_run, run_id=run_id, final_batch_size=limits.batch_size)

    if dry_run:
        report.plan = plan_cleanup(
            db,
            now=now,
            batch_size=limits.batch_size,
            max_jobs=limits.max_jobs,
            max_jobs_per_second=limits.max_jobs_per_second,
        )
        report.outbox_pending = report.plan.outbox_pending
        report.duration_seconds = time.perf_counter() - started
        return report

    max_jobs = limits.max_jobs
    deadline = Deadline(limits.max_runtime_seconds)
    jobs_bucket = TokenBucket(limits.max_jobs_per_second)
    batch = jobs_bucket.chunk(limits.batch_size)
    floor = min(limits.min_batch_size, batch)
    total = None
    if progress is not None:
        total = _count_eligible(db, now=now, cap=max_jobs)
        progress("jobs", 0, total)
    logged = 0
    connection_losses = 0
    with logs.bound(run_id=run_id):
        while True:
            if max_jobs is not None and report.jobs_deleted >= max_jobs:
                if _has_backlog(db, now=now):
                    report.stopped_by = "max_jobs"
                break
            if deadline.passed():
                report.stopped_by = "max_runtime_seconds"
                break
            limit = batch if max_jobs is None else min(batch, max_jobs - report.jobs_deleted)
            if not jobs_bucket.take(limit, deadline):
                report.stopped_by = "max_runtime_seconds"
                break
            try:
                result = _delete_batch(
                    db, limit=limit, now=now, run_id=run_id, reason="retention", limits=limits
                )
            except errors.QueryTimeout:
                jobs_bucket.give_back(limit)
                report.timeouts += 1
                if batch <= floor:
                    report.stopped_by = "query_timeout"
                    _log.warning("batch timed out at the minimum size; stopping", batch_size=batch)
                    break
                batch = max(floor, batch // 2)
                report.final_batch_size = batch
                _log.warning("batch timed out; halving", batch_size=batch)
                continue
            except errors.DatabaseUnavailable:
                # The batch rolled back (or committed just before the loss: either way the next
                # selection sees the truth; the pool drops the broken connection). Retry a few times,
                # then let the caller see it.
                jobs_bucket.give_back(limit)
                connection_losses += 1
                if connection_losses > MAX_CONNECTION_RETRIES:
                    raise
                _log.warning("database connection lost during a batch; retrying", attempt=connection_losses)
                time.sleep(0.2 * connection_losses)
                continue
            jobs_bucket.give_back(limit - result.jobs)
            if result.jobs:
                report.batches += 1
                report.jobs_deleted += result.jobs
                report.events_deleted += result.events
                report.objects_queued += result.keys_queued
                report.longest_batch_seconds = max(report.longest_batch_seconds, result.seconds)
                metrics.count_deleted("jobs", result.jobs)
                metrics.count_deleted("events", result.events)
                logged = _log_jobs(result.ids, logged, run_id=run_id, reason="retention")
                _log.info(
                    "batch deleted",
                    jobs=result.jobs,
                    events=result.events,
                    keys_queued=result.keys_queued,
                    seconds=round(result.seconds, 4),
                )
                if progress is not None:
                    progress("jobs", report.jobs_deleted, total)
            if result.locked < limit:
                break  # the backlog is done (what is left, if anything, is locked by another run)

        if report.stopped_by in _STOPPED_BY_A_LIMIT:
            report.expired_jobs_left = _count_eligible(db, now=now, cap=EXPIRED_LEFT_CAP)
        report.tombstones_pruned = prune_tombstones(db, now=now, limits=limits)
        remaining = deadline.remaining()
        if storage is not None and (remaining is None or remaining > 0):
            drain = drain_outbox(
                db,
                storage,
                max_objects_per_second=limits.max_objects_per_second,
                max_runtime_seconds=remaining,
                now=now,
                run_id=run_id,
                progress=progress,
            )
            report.add_drain(drain)
        else:
            if storage is not None and report.stopped_by is None:
                report.stopped_by = "max_runtime_seconds"
            _outbox_left(db, report, now=now)
        if vacuum or (vacuum is None and report.jobs_deleted >= VACUUM_MIN_JOBS):
            report.vacuumed = vacuum_jobs(db)
        report.duration_seconds = time.perf_counter() - started
        _log.info(
            "cleanup finished",
            jobs=report.jobs_deleted,
            events=report.events_deleted,
            objects_removed=report.objects_removed,
            objects_failed=report.objects_failed,
            stopped_by=report.stopped_by,
            work_left=report.work_left(),
        )
    return report


def _outbox_left(
    db: Database, report: CleanupReport, *, now: datetime | None, job_ids: Sequence[UUID] | None = None
) -> None:
    """Fill the report's outbox fields when no drain ran (its own report would have)."""
    state = outbox_state(db, now=now, job_ids=job_ids)
    report.outbox_pending = state.keys
    report.outbox_claimed = state.claimed
    report.outbox_failed = state.failed


@metrics.timed("retention", "purge")
def purge(
    db: Database,
    storage: ObjectStore | None,
    job_ids: Iterable[UUID | str],
    *,
    run_id: str | None = None,
    reason: str = "erasure",
    force: bool = False,
) -> CleanupReport:
    """Delete these jobs now, whatever their expiry or hold, then remove their objects.

    A job that is ``processing`` is refused (``InvalidTransition``) unless ``force``; an unknown id
    is ``JobNotFound`` unless a tombstone shows it was already deleted (purge is idempotent). All or
    nothing: a refusal deletes none of the jobs. ``reason`` and ``run_id`` are at most
    ``MAX_LABEL_LENGTH`` characters, and ``storage`` must be the service role's: checked before
    anything is written. The report's outbox fields (and ``work_left()``) cover these jobs' keys.
    """
    check_label(reason, "reason", required=True)
    check_label(run_id, "run_id")
    ids = retention_db.job_ids(job_ids)
    if storage is not None:
        require_service_role(storage)
    started = time.perf_counter()
    report = CleanupReport(run_id=run_id, final_batch_size=len(ids))
    if not ids:
        return report
    with logs.bound(run_id=run_id), db.transaction(run_id=run_id) as tx:
        tx.retention.set_timeouts(**_timeouts(db, None))
        found = tx.retention.lock_for_purge(ids)
        missing = [j for j in ids if j not in found]
        if missing:
            gone = tx.retention.tombstoned(missing)
            for job_id in missing:
                if job_id not in gone:
                    raise errors.JobNotFound(job_id)
        busy = [j for j, status in found.items() if status == "processing"]
        if busy and not force:
            raise errors.InvalidTransition(
                "a processing job is not purged without force", job_id=busy[0], from_status="processing"
            )
        targets = sorted(found)
        if targets:
            # One outbox row per job (the drain below is restricted to these jobs); ON CONFLICT
            # for the tombstone, a purge being small and possibly of a re-used id.
            row = tx.retention.delete_named(targets, reason=reason, chunk=CHUNK, log_ids=LOG_EACH_JOB_LIMIT)
            report.jobs_deleted, report.events_deleted = row.jobs, row.events
            report.objects_queued = row.keys_queued
            report.batches = 1
        tx.retention.due_now(ids)
    metrics.count_deleted("jobs", report.jobs_deleted)
    metrics.count_deleted("events", report.events_deleted)
    for job_id in targets:
        with logs.bound(job_id=job_id, run_id=run_id):
            _log.info("job purged", reason=reason, forced=force and job_id in busy)
    if storage is not None:
        drain = drain_outbox(db, storage, job_ids=ids, run_id=run_id)
        report.add_drain(drain)
    else:
        _outbox_left(db, report, now=None, job_ids=ids)
    report.duration_seconds = time.perf_counter() - started
    return report
