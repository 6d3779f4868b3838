"""The assets materialise against a real database and the local Storage server."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import psycopg

from lifecycle.db import Database, migrate
from lifecycle.db.engine import libpq_url
from lifecycle.defs.assets import database_schema, job_status_counts, storage_buckets
from lifecycle.defs.resources import DatabaseResource, StorageResource
from lifecycle.settings import Settings
from lifecycle.states import JobStatus


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    [event] = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in event.metadata.items()}


def test_database_schema_migrates_an_empty_database_to_head(
    empty_database_url: str, instance: dg.DagsterInstance
) -> None:
    result = dg.materialize(
        [database_schema],
        resources={"database": DatabaseResource(url=empty_database_url, pool_size=1)},
        instance=instance,
    )
    assert result.success
    head = migrate.head_revision()
    assert _metadata(result, "database_schema")["head_revision"] == head
    with psycopg.connect(libpq_url(empty_database_url)) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == (head,)


def test_job_status_counts_match_the_table(
    database_resource: DatabaseResource, db: Database, instance: dg.DagsterInstance
) -> None:
    past = datetime.now(UTC) - timedelta(days=1)
    with db.transaction() as tx:
        for _ in range(3):
            tx.jobs.create(params={})
        expired = [tx.jobs.create(params={}, expires_at=past) for _ in range(2)]
        tx.jobs.transition(expired[0].id, JobStatus.CANCELED)
    result = dg.materialize([job_status_counts], resources={"database": database_resource}, instance=instance)
    metadata = _metadata(result, "job_status_counts")
    assert metadata["jobs_total"] == 5
    assert metadata["jobs_queued"] == 4
    assert metadata["jobs_canceled"] == 1
    assert metadata["jobs_processing"] == 0
    # The canceled one got a fresh expiry on entering canceled; one queued job is still expired.
    assert metadata["expired_backlog"] == 1
    assert metadata["oldest_expired_age_seconds"] >= 86_000
    assert metadata["outbox_size"] == 0


def test_storage_buckets_creates_then_finds_the_bucket(
    storage_server: Any, instance: dg.DagsterInstance
) -> None:
    bucket = f"lifecycle-t-{uuid.uuid4().hex[:12]}"
    resource = StorageResource(
        url=storage_server.url, service_role_key=storage_server.service_role_key, bucket=bucket
    )
    first = dg.materialize([storage_buckets], resources={"storage": resource}, instance=instance)
    assert _metadata(first, "storage_buckets")["created"] == [bucket]
    second = dg.materialize([storage_buckets], resources={"storage": resource}, instance=instance)
    assert _metadata(second, "storage_buckets")["existing"] == [bucket]
    settings = Settings.load(
        env={"SUPABASE_URL": storage_server.url, "SUPABASE_SERVICE_ROLE_KEY": storage_server.service_role_key}
    )
    from supabase import create_client

    client = create_client(storage_server.url, storage_server.service_role_key)
    assert bucket in {b.name for b in client.storage.list_buckets()}
    client.storage.delete_bucket(bucket)
    assert settings.supabase_url == storage_server.url
