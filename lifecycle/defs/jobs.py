"""Ops and jobs: each op calls one service function and reports what it did. No SQL here.

Every op passes ``context.run_id`` to the service, so events and tombstones name the run; every
log line about one job names it (``jobId=<uuid>``), for a bounded number of jobs per run.
"""

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from uuid import UUID

import dagster as dg
from pydantic import Field

from lifecycle import errors, metrics, transitions
from lifecycle.defs import markdown
from lifecycle.defs.resources import DatabaseResource, StorageResource
from lifecycle.retention.limits import CleanupLimits
from lifecycle.retention.report import CleanupReport, DrainReport
from lifecycle.settings import MAX_CLEANUP_BATCH_SIZE, MAX_RECONCILE_GRACE_SECONDS, Settings

#: The run tag that names the job a ``purge_job`` run erases.
JOB_ID_TAG = "lifecycle/job_id"
#: The tag the instance's ``tag_concurrency_limits`` keys on (one retention run at a time).
CONCURRENCY_TAG = "lifecycle/concurrency"
RETENTION_TAGS = {CONCURRENCY_TAG: "retention"}
#: Per-job log lines per run; the rest are summarised (the event log must stay small).
LOG_EACH_JOB_LIMIT = 20


def _metadata(values: dict[str, Any], markdown: str) -> dict[str, dg.MetadataValue]:
    """Numbers as numeric metadata (the UI plots them), the rest as JSON, plus the markdown report."""
    metadata: dict[str, dg.MetadataValue] = {"report": dg.MetadataValue.md(markdown)}
    for key, value in values.items():
        if isinstance(value, bool):
            metadata[key] = dg.MetadataValue.bool(value)
        elif isinstance(value, int):
            metadata[key] = dg.MetadataValue.int(value)
        elif isinstance(value, float):
            metadata[key] = dg.MetadataValue.float(value)
        elif isinstance(value, str):
            metadata[key] = dg.MetadataValue.text(value)
        elif value is not None:
            metadata[key] = dg.MetadataValue.json(value)
    # The run's repository/storage durations and counts (metric deltas since the run started).
    for key, number in metrics.run_metadata().items():
        metadata.setdefault(f"metrics/{key}", dg.MetadataValue.float(number))
    return metadata


def _log_jobs(context: dg.OpExecutionContext, ids: list[UUID], total: int, what: str) -> None:
    """One line per job for the first ``LOG_EACH_JOB_LIMIT``, then one summary line."""
    for job_id in ids[:LOG_EACH_JOB_LIMIT]:
        context.log.info(f"jobId={job_id} {what}")
    if total > LOG_EACH_JOB_LIMIT:
        context.log.info(f"... and {total - min(len(ids), LOG_EACH_JOB_LIMIT)} more jobs {what}")


# Every job below has one op: running it in the run's own process (in_process_executor) saves a
# subprocess start, about 5 s per run.

# -- retention cleanup ------------------------------------------------------------------------------


# Dagster's config schema has no numeric ranges: the Launchpad accepts any number, and the bounds
# below (pydantic's) fail the run when its step starts, naming the field, before any work is done.


class RetentionCleanupConfig(dg.Config):
    """Limits of one cleanup run; unset means the configured default (CLEANUP_* settings)."""

    dry_run: bool = Field(default=False, description="Only report what would be deleted; write nothing.")
    batch_size: int | None = Field(
        default=None, ge=1, le=MAX_CLEANUP_BATCH_SIZE, description="Jobs per transaction."
    )
    max_jobs_per_second: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="Job deletion rate limit."
    )
    max_objects_per_second: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="Object removal rate."
    )
    max_jobs: int | None = Field(default=None, ge=1, description="Stop after this many jobs.")
    max_runtime_seconds: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="Stop after this long."
    )
    drain_only: bool = Field(
        default=False,
        description="Only remove the objects queued in the outbox (phase 2); with dry_run, report what "
        "a drain would do.",
    )

    def limits(self, settings: Settings) -> CleanupLimits:
        """The run's limits: the configured ones (``CLEANUP_*``) with this config's values on top."""
        return CleanupLimits.from_settings(settings).with_overrides(
            batch_size=self.batch_size,
            max_jobs_per_second=self.max_jobs_per_second,
            max_objects_per_second=self.max_objects_per_second,
            max_jobs=self.max_jobs,
            max_runtime_seconds=self.max_runtime_seconds,
        )


def _fail_if_work_left(report: CleanupReport | DrainReport) -> None:
    """End the step as failed, with the one-line summary, when the run left work undone.

    Called after the output (and so its metadata: the full report) is recorded. A failed run is what
    the Runs list, the run-failure sensor and alerting see; ``ExpectationResult`` is deprecated in
    Dagster 1.13 and ``AssetCheckResult`` belongs to an asset check, which these ops are not.
    Retrying at once would not help (failed keys back off), hence ``allow_retries=False``.
    """
    left = report.work_left()
    if left is None:
        return
    pending = report.pending if isinstance(report, DrainReport) else report.outbox_pending
    raise dg.Failure(
        description=f"work left: {left}",
        metadata={
            "work_left": dg.MetadataValue.text(left),
            "objects_pending": dg.MetadataValue.int(pending),
            "objects_failed": dg.MetadataValue.int(report.objects_failed),
        },
        allow_retries=False,
    )


@dg.op(
    description="Delete expired jobs, then their stored objects (retention.cleanup); with drain_only, "
    "only the objects already queued. Fails, after recording its report, when it leaves work undone."
)
def retention_cleanup_op(
    context: dg.OpExecutionContext,
    config: RetentionCleanupConfig,
    database: DatabaseResource,
    storage: StorageResource,
) -> Iterator[dg.Output[dict[str, Any]]]:
    from lifecycle import retention

    def progress(phase: str, done: int, total: int | None) -> None:
        context.log.debug(f"{phase}: {done}" + (f"/{total}" if total is not None else ""))

    if config.drain_only:
        yield from _drain(context, config, database, storage, progress)
        return
    report = retention.cleanup(
        database.db,
        storage.repo,
        dry_run=config.dry_run,
        limits=config.limits(database.db.settings),
        run_id=context.run_id,
        progress=progress,
    )
    values = report.as_dict()
    if config.dry_run:
        plan = values.get("plan") or {}
        context.log.info(
            f"dry run: {plan.get('eligible_jobs', 0)} job(s) and {plan.get('objects', 0)} object(s) "
            "would be deleted; nothing was written"
        )
        for job_id in (plan.get("sample_job_ids") or [])[:LOG_EACH_JOB_LIMIT]:
            context.log.info(f"jobId={job_id} would be deleted (dry run)")
    else:
        context.log.info(
            f"deleted {report.jobs_deleted} job(s), removed {report.objects_removed} object(s) "
            f"in {report.batches} batch(es); outbox pending {report.outbox_pending}"
            + (f"; stopped by {report.stopped_by}" if report.stopped_by else "")
        )
    yield dg.Output(values, metadata=_metadata(values, markdown.cleanup_report(report)))
    _fail_if_work_left(report)


def _drain(
    context: dg.OpExecutionContext,
    config: RetentionCleanupConfig,
    database: DatabaseResource,
    storage: StorageResource,
    progress: Callable[[str, int, int | None], None],
) -> Iterator[dg.Output[dict[str, Any]]]:
    """The drain-only run (the sensor launches one when queued objects are due and no job expired)."""
    from lifecycle import retention

    if config.dry_run:
        plan = retention.plan_drain(database.db)
        context.log.info(f"dry run: {plan.would_do}; nothing was written")
        values = plan.as_dict()
        yield dg.Output(values, metadata=_metadata(values, markdown.drain_plan(plan)))
        return
    drained = retention.drain_outbox(
        database.db,
        storage.repo,
        limits=config.limits(database.db.settings),
        run_id=context.run_id,
        progress=progress,
    )
    context.log.info(
        f"removed {drained.objects_removed} object(s) ({drained.objects_absent} already gone), "
        f"{drained.objects_failed} failed; outbox pending {drained.pending}"
        + (f"; stopped by {drained.stopped_by}" if drained.stopped_by else "")
    )
    values = drained.as_dict()
    yield dg.Output(values, metadata=_metadata(values, markdown.drain_report(drained)))
    _fail_if_work_left(drained)


@dg.job(
    executor_def=dg.in_process_executor,
    description="Retention cleanup: expired jobs, their events and objects (one run at a time).",
    tags=RETENTION_TAGS,
)
def retention_cleanup() -> None:
    retention_cleanup_op()


# -- stale-lease rescue -----------------------------------------------------------------------------


class RescueStaleJobsConfig(dg.Config):
    """How many expired leases to rescue in one run."""

    max_attempts: int | None = Field(
        default=None, ge=1, description="Fail a job after this many claims (default: MAX_ATTEMPTS)."
    )
    limit: int = Field(default=10_000, ge=1, description="At most this many jobs per run.")
    batch_size: int = Field(default=1000, ge=1, le=10_000, description="Jobs per transaction.")


@dg.op(description="Processing jobs whose lease expired: back to queued, or failed after max attempts.")
def rescue_stale_jobs_op(
    context: dg.OpExecutionContext, config: RescueStaleJobsConfig, database: DatabaseResource
) -> dg.Output[dict[str, Any]]:
    report = transitions.rescue_stale_jobs(
        database.db,
        max_attempts=config.max_attempts,
        limit=config.limit,
        batch_size=config.batch_size,
        run_id=context.run_id,
    )
    _log_jobs(context, report.requeued_ids, report.requeued, "requeued (lease expired)")
    _log_jobs(context, report.failed_ids, report.failed, "failed (lease expired, attempts used up)")
    context.log.info(f"rescued: {report.requeued} requeued, {report.failed} failed")
    values = report.as_dict()
    return dg.Output(values, metadata=_metadata(values, markdown.rescue_report(report)))


@dg.job(
    description="Requeue (or fail) processing jobs whose worker lease expired.",
    executor_def=dg.in_process_executor,
)
def rescue_stale_jobs() -> None:
    rescue_stale_jobs_op()


# -- operator's batch transition --------------------------------------------------------------------


class TransitionBatchConfig(dg.Config):
    """An operator's batch status change (oldest jobs first)."""

    from_status: str = Field(description="Current status of the jobs to move (e.g. failed).")
    to_status: str = Field(description="Status to move them to (must be allowed by the state machine).")
    created_before: str | None = Field(
        default=None, description="Only jobs created before this ISO-8601 time (with a time zone)."
    )
    limit: int = Field(default=1000, ge=1, le=100_000, description="At most this many jobs.")
    reason: str | None = Field(default=None, description="Recorded in each job's transition event.")
    dry_run: bool = Field(default=False, description="Count what would move; change nothing.")


@dg.op(description="Move a batch of jobs from one status to another (transitions.transition_batch).")
def transition_batch_op(
    context: dg.OpExecutionContext, config: TransitionBatchConfig, database: DatabaseResource
) -> dg.Output[dict[str, Any]]:
    created_before = None
    if config.created_before:
        try:
            created_before = datetime.fromisoformat(config.created_before)
        except ValueError:
            raise errors.InvalidInput(
                "created_before must be an ISO-8601 time", field="created_before"
            ) from None
    report = transitions.transition_batch(
        database.db,
        config.from_status,
        config.to_status,
        created_before=created_before,
        limit=config.limit,
        reason=config.reason,
        dry_run=config.dry_run,
        run_id=context.run_id,
    )
    verb = "would move" if config.dry_run else "moved"
    _log_jobs(context, report.sample_ids, report.moved, f"{verb} {report.from_status} -> {report.to_status}")
    context.log.info(f"{verb} {report.moved} job(s) {report.from_status} -> {report.to_status}")
    values = report.as_dict()
    return dg.Output(values, metadata=_metadata(values, markdown.transition_report(report)))


@dg.job(
    description="An operator's batch status change, e.g. retry failed jobs created before a date.",
    executor_def=dg.in_process_executor,
)
def transition_batch() -> None:
    transition_batch_op()


# -- purge one job (right to erasure) ---------------------------------------------------------------


class PurgeJobConfig(dg.Config):
    """The job to erase now, whatever its expiry or hold."""

    job_id: str = Field(description="UUID of the job to delete with its events and objects.")
    # The bound of the text retention records on tombstones (its labels, run ids and reasons).
    reason: str = Field(
        default="erasure", min_length=1, max_length=200, description="Recorded in the tombstone."
    )


@dg.op(
    description="Delete one job now with its events and objects; the tombstone names this run. Fails, "
    "after recording its report, when objects of the job are left in the outbox."
)
def purge_job_op(
    context: dg.OpExecutionContext,
    config: PurgeJobConfig,
    database: DatabaseResource,
    storage: StorageResource,
) -> Iterator[dg.Output[dict[str, Any]]]:
    from lifecycle import retention

    try:
        job_id = UUID(config.job_id)
    except ValueError:
        raise errors.InvalidInput("job_id must be a UUID", field="job_id") from None
    tagged = context.run.tags.get(JOB_ID_TAG)
    if tagged is not None and tagged != str(job_id):
        raise errors.InvalidInput(f"run tag {JOB_ID_TAG} does not match config job_id", field="job_id")
    if tagged is None:
        # Launched without the tag (Launchpad, CLI): add it, so the run is found by the job it erased.
        context.instance.add_run_tags(context.run_id, {JOB_ID_TAG: str(job_id)})
    context.log.info(f"jobId={job_id} purge requested (reason={config.reason})")
    report = retention.purge(database.db, storage.repo, [job_id], run_id=context.run_id, reason=config.reason)
    context.log.info(
        f"jobId={job_id} purged: {report.jobs_deleted} job row, {report.events_deleted} event(s), "
        f"{report.objects_removed} object(s) removed, {report.objects_failed} failed"
    )
    values = report.as_dict()
    yield dg.Output(values, metadata=_metadata(values, markdown.cleanup_report(report)))
    _fail_if_work_left(report)


@dg.job(
    description="Erase one job now (right to erasure); the run carries the tag lifecycle/job_id.",
    executor_def=dg.in_process_executor,
)
def purge_job() -> None:
    purge_job_op()


# -- orphan reconciliation --------------------------------------------------------------------------


class ReconcileOrphansConfig(dg.Config):
    """Objects in Storage whose job row does not exist."""

    dry_run: bool = Field(default=True, description="Only report orphans; queue nothing for deletion.")
    grace_seconds: int = Field(
        default=3600,
        ge=0,
        le=MAX_RECONCILE_GRACE_SECONDS,
        description="Ignore objects younger than this (an upload may be in flight).",
    )


@dg.op(description="List the buckets and find objects without a job row (dry run by default).")
def reconcile_orphans_op(
    context: dg.OpExecutionContext,
    config: ReconcileOrphansConfig,
    database: DatabaseResource,
    storage: StorageResource,
) -> dg.Output[dict[str, Any]]:
    from lifecycle import retention

    report = retention.reconcile_orphans(
        database.db,
        storage.repo,
        dry_run=config.dry_run,
        grace_seconds=config.grace_seconds,
        run_id=context.run_id,
    )
    context.log.info(
        f"{report.objects_listed} object(s) listed, {report.orphans_found} orphan(s), "
        f"{report.orphans_queued} queued for deletion" + (" (dry run)" if config.dry_run else "")
    )
    values = report.as_dict()
    return dg.Output(values, metadata=_metadata(values, markdown.reconcile_report(report)))


@dg.job(
    description="Find (and, with dry_run false, queue for deletion) objects without a job row.",
    executor_def=dg.in_process_executor,
)
def reconcile_orphans() -> None:
    reconcile_orphans_op()


ALL_JOBS = [retention_cleanup, rescue_stale_jobs, transition_batch, purge_job, reconcile_orphans]
