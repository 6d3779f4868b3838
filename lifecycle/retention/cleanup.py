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
from typing import Any
from uuid import UUID

import sqlalchemy as sa

from lifecycle import errors, logs, metrics
from lifecycle.db import Database
from lifecycle.db._translate import translate
from lifecycle.redaction import redact_known
from lifecycle.retention import queries
from lifecycle.retention.limits import (
    MAX_BATCH_SIZE,
    MAX_JOBS_PER_RUN,
    Deadline,
    TokenBucket,
    check_count,
    check_label,
    check_now,
    check_positive,
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


def _timeouts(db: Database) -> dict[str, str]:
    s = db.settings
    return {
        "statement_timeout": str(s.cleanup_statement_timeout_ms),
        "lock_timeout": str(s.cleanup_lock_timeout_ms),
    }


def _delete_batch(
    db: Database, *, limit: int, now: datetime | None, run_id: str | None, reason: str, retomb: bool = False
) -> _Batch:
    """One phase-1 transaction: lock up to ``limit`` expired jobs, queue keys, tombstone, delete."""
    start = time.perf_counter()
    try:
        with db.transaction(run_id=run_id) as tx:
            conn = tx.connection
            conn.execute(queries.SET_TIMEOUTS, _timeouts(db))
            statement = queries.DELETE_BATCH_RETOMB if retomb else queries.DELETE_BATCH
            params = _delete_params(now=now, run_id=run_id, reason=reason) | {"limit": limit}
            row = conn.execute(statement, params).one()
    except errors.InvalidInput as exc:
        # A job id that already has a tombstone (a restored row): rare, so the fast statement has
        # no ON CONFLICT and this batch is redone with it.
        if retomb or getattr(exc, "constraint", None) != "pk_job_deletions":
            raise
        _log.warning("a job id in this batch was tombstoned before; its tombstone is replaced")
        return _delete_batch(db, limit=limit, now=now, run_id=run_id, reason=reason, retomb=True)
    return _Batch(
        int(row.locked),
        int(row.jobs),
        int(row.events),
        int(row.keys_queued),
        list(row.ids or ()),
        time.perf_counter() - start,
    )


def _delete_params(
    *, now: datetime | None, run_id: str | None, reason: str, per_job: bool = False
) -> dict[str, Any]:
    return {
        "now": now,
        "run_id": run_id,
        "reason": reason,
        "per_job": per_job,
        "chunk": CHUNK,
        "log_ids": LOG_EACH_JOB_LIMIT,
    }


def _scalar(db: Database, statement: sa.TextClause, params: dict[str, Any], *, read_only: bool = True) -> Any:
    with db.transaction() as tx:
        if read_only:
            tx.connection.execute(sa.text("SET TRANSACTION READ ONLY"))
        return tx.connection.execute(statement, params).scalar_one()


def _log_jobs(ids: Iterable[UUID], logged: int, *, run_id: str | None, reason: str) -> int:
    for job_id in ids:
        if logged >= LOG_EACH_JOB_LIMIT:
            break
        with logs.bound(job_id=job_id, run_id=run_id):
            _log.info("job deleted", reason=reason)
        logged += 1
    return logged


@metrics.timed("retention", "prune_tombstones")
def prune_tombstones(db: Database, *, now: datetime | None = None, keep_seconds: int | None = None) -> int:
    """Delete tombstones older than ``tombstone_retention_seconds``, in bounded batches."""
    keep = db.settings.tombstone_retention_seconds if keep_seconds is None else keep_seconds
    pruned = 0
    while True:
        with db.transaction() as tx:
            tx.connection.execute(queries.SET_TIMEOUTS, _timeouts(db))
            n = tx.connection.execute(
                queries.PRUNE_TOMBSTONES, {"now": now, "keep": keep, "limit": PRUNE_BATCH}
            ).rowcount
        pruned += n
        if n < PRUNE_BATCH:
            return pruned


def vacuum_jobs(db: Database) -> bool:
    """``VACUUM (ANALYZE) jobs`` outside any transaction; ``False`` (logged) if not allowed here."""
    try:
        with db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM (ANALYZE) jobs")
        return True
    except sa.exc.DBAPIError as exc:
        # Not fatal: autovacuum gets there too, just later (e.g. a role that does not own the table).
        _log.warning("vacuum skipped", error=redact_known(str(translate(exc))))
        return False


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
    with db.transaction() as tx:
        conn = tx.connection
        # Read only: the database itself refuses any write a bug might attempt here.
        conn.execute(sa.text("SET TRANSACTION READ ONLY"))
        conn.execute(queries.SET_TIMEOUTS, _timeouts(db) | {"statement_timeout": "0"})
        for row in conn.execute(queries.PLAN_BY_STATUS, {"now": now, "cap": max_jobs}):
            plan.jobs_by_status[str(row.status)] = int(row.jobs)
            plan.eligible_jobs += int(row.jobs)
            plan.objects += int(row.objects)
            plan.events = int(row.events)
            if plan.oldest_expiry is None or row.oldest < plan.oldest_expiry:
                plan.oldest_expiry = row.oldest
            if plan.newest_expiry is None or row.newest > plan.newest_expiry:
                plan.newest_expiry = row.newest
        plan.sample_job_ids = list(
            conn.execute(queries.PLAN_SAMPLE, {"now": now, "n": SAMPLE_SIZE}).scalars()
        )
        kept = conn.execute(queries.PLAN_KEPT, {"now": now}).one()
        plan.skipped_processing, plan.skipped_on_hold = int(kept.processing), int(kept.on_hold)
        plan.tombstones_to_prune = int(
            conn.execute(
                queries.COUNT_PRUNABLE_TOMBSTONES,
                {"now": now, "keep": db.settings.tombstone_retention_seconds},
            ).scalar_one()
        )
        plan.outbox_pending = int(conn.execute(queries.OUTBOX_PENDING).scalar_one())
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
) -> CleanupReport:
    """Delete expired jobs (phase 1), then remove their objects (phase 2); see the module docstring.

    ``None`` limits mean the configured default. ``storage=None`` runs phase 1 only and leaves the
    outbox for a later ``drain_outbox``; a ``storage`` whose key is not the service role's is refused
    (``errors.ServiceRoleRequired``) before anything is deleted. Every argument is checked first
    (``errors.InvalidInput``, nothing written). ``vacuum=None`` runs ``VACUUM (ANALYZE) jobs`` after a
    run that deleted at least ``VACUUM_MIN_JOBS`` rows, so index probes for expired rows stay fast.
    The report's ``work_left()`` is one line saying what the run left undone, or ``None``.
    """
    s = db.settings
    started = time.perf_counter()
    check_count(batch_size, "batch_size", low=1, high=MAX_BATCH_SIZE)
    check_count(max_jobs, "max_jobs", low=1, high=MAX_JOBS_PER_RUN)
    check_positive(max_jobs_per_second, "max_jobs_per_second")
    check_positive(max_objects_per_second, "max_objects_per_second")
    check_positive(max_runtime_seconds, "max_runtime_seconds")
    check_now(now)
    check_label(run_id, "run_id")
    batch_size = s.cleanup_batch_size if batch_size is None else batch_size
    max_jobs_per_second = (
        s.cleanup_max_jobs_per_second if max_jobs_per_second is None else max_jobs_per_second
    )
    max_objects_per_second = (
        s.cleanup_max_objects_per_second if max_objects_per_second is None else max_objects_per_second
    )
    max_jobs = s.cleanup_max_jobs if max_jobs is None else max_jobs
    max_runtime_seconds = (
        s.cleanup_max_runtime_seconds if max_runtime_seconds is None else max_runtime_seconds
    )
    # The settings' own values too (an environment may say "inf").
    check_count(batch_size, "CLEANUP_BATCH_SIZE", low=1, high=MAX_BATCH_SIZE)
    check_positive(max_jobs_per_second, "CLEANUP_MAX_JOBS_PER_SECOND")
    check_positive(max_objects_per_second, "CLEANUP_MAX_OBJECTS_PER_SECOND")
    check_positive(max_runtime_seconds, "CLEANUP_MAX_RUNTIME_SECONDS")
    if storage is not None and not dry_run:
        # Before phase 1: a run that cannot confirm its removals must not start deleting rows.
        require_service_role(storage)
    report = CleanupReport(dry_run=dry_run, run_id=run_id, final_batch_size=batch_size)

    if dry_run:
        report.plan = plan_cleanup(
            db, now=now, batch_size=batch_size, max_jobs=max_jobs, max_jobs_per_second=max_jobs_per_second
        )
        report.outbox_pending = report.plan.outbox_pending
        report.duration_seconds = time.perf_counter() - started
        return report

    deadline = Deadline(max_runtime_seconds)
    jobs_bucket = TokenBucket(max_jobs_per_second)
    batch = jobs_bucket.chunk(batch_size)
    floor = min(s.cleanup_min_batch_size, batch)
    total = None
    if progress is not None:
        total = int(_scalar(db, queries.COUNT_ELIGIBLE, {"now": now, "cap": max_jobs}))
        progress("jobs", 0, total)
    logged = 0
    connection_losses = 0
    with logs.bound(run_id=run_id):
        while True:
            if max_jobs is not None and report.jobs_deleted >= max_jobs:
                if _scalar(db, queries.BACKLOG_PROBE, {"now": now}):
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
                result = _delete_batch(db, limit=limit, now=now, run_id=run_id, reason="retention")
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
                # selection sees the truth). Retry a few times, then let the caller see it.
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
            report.expired_jobs_left = int(
                _scalar(db, queries.COUNT_ELIGIBLE, {"now": now, "cap": EXPIRED_LEFT_CAP})
            )
        report.tombstones_pruned = prune_tombstones(db, now=now)
        remaining = deadline.remaining()
        if storage is not None and (remaining is None or remaining > 0):
            drain = drain_outbox(
                db,
                storage,
                max_objects_per_second=max_objects_per_second,
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
    report.outbox_pending = int(state.keys)
    report.outbox_claimed = int(state.claimed)
    report.outbox_failed = int(state.failed)


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
    from lifecycle.db._common import as_uuid

    check_label(reason, "reason", required=True)
    check_label(run_id, "run_id")
    ids = sorted({as_uuid(j, "job_id") for j in job_ids})
    if storage is not None:
        require_service_role(storage)
    started = time.perf_counter()
    report = CleanupReport(run_id=run_id, final_batch_size=len(ids))
    if not ids:
        return report
    with logs.bound(run_id=run_id), db.transaction(run_id=run_id) as tx:
        conn = tx.connection
        conn.execute(queries.SET_TIMEOUTS, _timeouts(db))
        found = {row.id: str(row.status) for row in conn.execute(queries.LOCK_FOR_PURGE, {"ids": ids})}
        missing = [j for j in ids if j not in found]
        if missing:
            gone = set(conn.execute(queries.TOMBSTONED, {"ids": missing}).scalars())
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
            row = conn.execute(
                queries.DELETE_NAMED,
                _delete_params(now=None, run_id=run_id, reason=reason, per_job=True) | {"ids": targets},
            ).one()
            report.jobs_deleted, report.events_deleted = int(row.jobs), int(row.events)
            report.objects_queued = int(row.keys_queued)
            report.batches = 1
        conn.execute(queries.PURGE_DUE_NOW, {"ids": ids})
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
