"""``build_definitions``: the per-concern definitions merged into one code location."""

import dagster as dg

from lifecycle.defs import assets, jobs, schedules, sensors
from lifecycle.defs.resources import DatabaseResource, StorageResource
from lifecycle.settings import Settings


def default_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:  # type: ignore[type-arg]
    """Resources for a deployment: secrets and URLs through ``EnvVar`` (resolved at run time)."""
    return {
        "database": DatabaseResource(
            url=dg.EnvVar("DATABASE_URL"),
            pool_size=settings.database_pool_size,
            prepare_threshold=settings.database_prepare_threshold,
        ),
        "storage": StorageResource(
            url=dg.EnvVar("SUPABASE_URL"),
            service_role_key=dg.EnvVar("SUPABASE_SERVICE_ROLE_KEY"),
            bucket=settings.supabase_storage_bucket,
        ),
    }


def build_definitions(settings: Settings) -> dg.Definitions:
    """Assets, jobs, schedules and sensors of the lifecycle code location."""
    return dg.Definitions(
        assets=[assets.database_schema, assets.storage_buckets, assets.job_status_counts],
        jobs=[assets.status_counts_job, *jobs.ALL_JOBS],
        schedules=schedules.build_schedules(settings),
        sensors=sensors.ALL_SENSORS,
        resources=default_resources(settings),
    )
