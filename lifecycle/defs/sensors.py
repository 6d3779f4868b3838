"""Sensors: launch a cleanup when expired jobs are waiting (or a drain when only queued objects are
due); log every failed run.

A tick does no deletes: it probes (an index-ordered query or two), checks the instance for an active
retention run, and asks for a run. The cleanup itself happens in the run.
"""

import json
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from lifecycle import status_counts
from lifecycle.defs.jobs import retention_cleanup
from lifecycle.defs.resources import DatabaseResource
from lifecycle.redaction import redact_known

#: How often the daemon evaluates the sensor; `make run` shows a cleanup within a minute.
SENSOR_INTERVAL_SECONDS = 30
#: The run config of a drain-only retention run.
DRAIN_ONLY_CONFIG = {"ops": {"retention_cleanup_op": {"config": {"drain_only": True}}}}

#: Run states in which a retention run still counts as "in progress" (the next one would queue).
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def parse_cursor(cursor: str | None) -> dict[str, Any]:
    """The sensor's cursor: ``{"requests": n, "last_run_key": ..., ...}`` (empty when unset or bad)."""
    if not cursor:
        return {"requests": 0}
    try:
        value = json.loads(cursor)
    except ValueError:
        return {"requests": 0}
    return value if isinstance(value, dict) and isinstance(value.get("requests"), int) else {"requests": 0}


@dg.sensor(
    job=retention_cleanup,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests a retention cleanup run when expired jobs wait, or a drain-only run when only "
    "queued objects are due for removal, and no retention run is in progress.",
)
def expired_jobs_sensor(
    context: dg.SensorEvaluationContext, database: DatabaseResource
) -> dg.RunRequest | dg.SkipReason:
    active = context.instance.get_runs(
        filters=dg.RunsFilter(job_name=retention_cleanup.name, statuses=ACTIVE_STATUSES), limit=1
    )
    if active:
        run = active[0]
        return dg.SkipReason(f"retention run {run.run_id} is {run.status.value}: not requesting another")
    # Both probes on the database clock: the one the cleanup decides by (this host's may differ).
    oldest = status_counts.oldest_expired_job(database.db)
    drain_only = oldest is None
    if drain_only and not status_counts.outbox_due(database.db):
        return dg.SkipReason("no expired jobs waiting for cleanup and no queued object due for removal")
    cursor = parse_cursor(context.cursor)
    requests = int(cursor["requests"]) + 1
    # A new key per request: a tick retried after a crash reuses it (no duplicate run); the cursor
    # moves on once the request is recorded.
    run_key = f"outbox-drain-{requests}" if drain_only else f"expired-jobs-{requests}"
    context.update_cursor(
        json.dumps(
            {
                "requests": requests,
                "last_run_key": run_key,
                "last_requested_at": datetime.now(UTC).isoformat(),
                "oldest_expired_job_id": oldest,
            }
        )
    )
    if drain_only:
        context.log.info(f"queued objects due for removal: requesting a drain-only run {run_key}")
        return dg.RunRequest(
            run_key=run_key,
            run_config=DRAIN_ONLY_CONFIG,
            tags={"lifecycle/trigger": "expired_jobs_sensor", "lifecycle/mode": "drain_only"},
        )
    context.log.info(f"expired backlog found (oldest jobId={oldest}): requesting {run_key}")
    return dg.RunRequest(run_key=run_key, tags={"lifecycle/trigger": "expired_jobs_sensor"})


@dg.run_failure_sensor(
    name="run_failure_logger",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Logs the id, job and tags of every failed run (alerting hooks in here).",
)
def run_failure_logger(context: dg.RunFailureSensorContext) -> None:
    run = context.dagster_run
    message = redact_known(context.failure_event.message or "")
    tags = {k: v for k, v in run.tags.items() if not k.startswith(".dagster")}
    context.log.error(f"run {run.run_id} of job {run.job_name} failed; tags={tags}; {message}")


ALL_SENSORS = [expired_jobs_sensor, run_failure_logger]
