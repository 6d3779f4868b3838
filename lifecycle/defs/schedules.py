"""Schedules: one per recurring job; cron strings come from the settings (UTC)."""

import dagster as dg

from lifecycle.defs import assets, jobs
from lifecycle.settings import Settings


def build_schedules(settings: Settings) -> list[dg.ScheduleDefinition]:
    """Retention daily, stale-lease rescue every 5 minutes, counts hourly, orphans weekly (defaults)."""
    running = dg.DefaultScheduleStatus.RUNNING
    return [
        dg.ScheduleDefinition(
            name="retention_cleanup_schedule",
            job=jobs.retention_cleanup,
            cron_schedule=settings.retention_cron,
            execution_timezone="UTC",
            default_status=running,
        ),
        dg.ScheduleDefinition(
            name="rescue_stale_jobs_schedule",
            job=jobs.rescue_stale_jobs,
            cron_schedule=settings.rescue_cron,
            execution_timezone="UTC",
            default_status=running,
        ),
        dg.ScheduleDefinition(
            name="job_status_counts_schedule",
            job=assets.status_counts_job,
            cron_schedule=settings.status_counts_cron,
            execution_timezone="UTC",
            default_status=running,
        ),
        dg.ScheduleDefinition(
            name="reconcile_orphans_schedule",
            job=jobs.reconcile_orphans,
            cron_schedule=settings.reconcile_cron,
            execution_timezone="UTC",
            default_status=running,
            # A report only: deleting orphans is an operator's decision (dry_run: false by hand).
            run_config={"ops": {"reconcile_orphans_op": {"config": {"dry_run": True}}}},
        ),
    ]
