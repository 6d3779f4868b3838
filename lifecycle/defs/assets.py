"""Assets: the database schema, the storage buckets and a snapshot of job counts."""

import dagster as dg

from lifecycle import metrics
from lifecycle import status_counts as counts
from lifecycle.db import migrate
from lifecycle.defs.resources import DatabaseResource, StorageResource

GROUP = "lifecycle"


@dg.asset(group_name=GROUP, description="The application schema, upgraded to the newest migration.")
def database_schema(context: dg.AssetExecutionContext, database: DatabaseResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
    url = database.db.url
    before = migrate.current_revision(url)
    after = migrate.upgrade(url)
    context.log.info(f"schema migrated {before or 'base'} -> {after}")
    return dg.MaterializeResult(
        metadata={
            "head_revision": dg.MetadataValue.text(str(migrate.head_revision())),
            "previous_revision": dg.MetadataValue.text(str(before or "base")),
            "current_revision": dg.MetadataValue.text(str(after)),
        }
    )


@dg.asset(
    group_name=GROUP,
    deps=[database_schema],
    description="The Storage buckets the project writes to (created when missing).",
)
def storage_buckets(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
    result = storage.repo.ensure_buckets()
    created = sorted(_names(result, "created"))
    existing = sorted(_names(result, "existed"))
    context.log.info(f"buckets created={created} existing={existing}")
    return dg.MaterializeResult(
        metadata={
            "created": dg.MetadataValue.json(created),
            "existing": dg.MetadataValue.json(existing),
            "created_count": dg.MetadataValue.int(len(created)),
        }
    )


@dg.asset(
    group_name=GROUP,
    deps=[database_schema],
    description="Jobs per status, the expired backlog and the storage outbox (plotted over time).",
)
def job_status_counts(context: dg.AssetExecutionContext, database: DatabaseResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
    snapshot = counts.status_counts(database.db)
    metrics.set_status_gauges(snapshot)  # pushed with the run's other metrics (Pushgateway)
    metadata: dict[str, dg.MetadataValue] = {
        f"jobs_{status}": dg.MetadataValue.int(n) for status, n in snapshot.by_status.items()
    }
    metadata["jobs_total"] = dg.MetadataValue.int(snapshot.total)
    metadata["expired_backlog"] = dg.MetadataValue.int(snapshot.expired_backlog)
    expired_age = snapshot.oldest_expired_age_seconds or 0.0
    metadata["oldest_expired_age_seconds"] = dg.MetadataValue.float(expired_age)
    metadata["outbox_size"] = dg.MetadataValue.int(snapshot.outbox_size)
    outbox_age = snapshot.oldest_outbox_age_seconds or 0.0
    metadata["oldest_outbox_age_seconds"] = dg.MetadataValue.float(outbox_age)
    context.log.info(
        f"jobs={snapshot.total} expired_backlog={snapshot.expired_backlog} outbox={snapshot.outbox_size}"
    )
    return dg.MaterializeResult(metadata=metadata)


def _names(result: object, attribute: str) -> list[str]:
    """Bucket names from ``ensure_buckets()``'s answer (an object or a mapping)."""
    value = result.get(attribute, ()) if isinstance(result, dict) else getattr(result, attribute, ())
    return [str(name) for name in value or ()]


status_counts_job = dg.define_asset_job(
    "job_status_counts_job",
    selection=[job_status_counts],
    description="Materialise job_status_counts (the hourly snapshot).",
)
