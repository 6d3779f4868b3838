"""Schedules: one per recurring job; cron strings come from the settings (UTC)."""

from typing import Any

import dagster as dg

from lifecycle.defs import assets, jobs
from lifecycle.settings import Settings

#: A report only: deleting orphans is an operator's decision (``dry_run: false`` by hand).
_RECONCILE_DRY_RUN = {"ops": {"reconcile_orphans_op": {"config": {"dry_run": True}}}}


def build_schedules(settings: Settings) -> list[dg.ScheduleDefinition]:
    """Retention daily, stale-lease rescue every 5 minutes, counts hourly, orphans weekly (defaults)."""
    table: list[tuple[str, Any, str, dict[str, Any] | None]] = [
        ("retention_cleanup_schedule", jobs.retention_cleanup, settings.retention_cron, None),
        ("rescue_stale_jobs_schedule", jobs.rescue_stale_jobs, settings.rescue_cron, None),
        ("job_status_counts_schedule", assets.status_counts_job, settings.status_counts_cron, None),
        ("reconcile_orphans_schedule", jobs.reconcile_orphans, settings.reconcile_cron, _RECONCILE_DRY_RUN),
    ]
    return [
        dg.ScheduleDefinition(
            name=name,
            job=job,
            cron_schedule=cron,
            execution_timezone="UTC",
            default_status=dg.DefaultScheduleStatus.RUNNING,
            run_config=run_config,
        )
        for name, job, cron, run_config in table
    ]
