"""Every job runs in process against the test database and the local Storage server.

Outcomes are checked through ``raw`` (an independent connection), not through the code under test.
"""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import psycopg
import pytest

from lifecycle import seeding
from lifecycle.artifacts import attach_source
from lifecycle.db import Database
from lifecycle.defs.jobs import JOB_ID_TAG, LOG_EACH_JOB_LIMIT
from lifecycle.states import JobStatus
from lifecycle.storage import StorageRepo

Raw = psycopg.Connection[tuple[Any, ...]]

ELIGIBLE = "expires_at <= now() AND status <> 'processing' AND NOT retention_hold"


def _run(
    defs: dg.Definitions,
    name: str,
    resources: dict[str, object],
    instance: dg.DagsterInstance,
    config: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    run_config = {"ops": {f"{name}_op": {"config": config}}} if config is not None else None
    return defs.resolve_job_def(name).execute_in_process(
        resources=resources,
        run_config=run_config,
        tags=tags,
        instance=instance,
        raise_on_error=raise_on_error,
    )


def _output_metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    [event] = [e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"]
    return {k: v.value for k, v in event.event_specific_data.metadata.items()}  # type: ignore[union-attr]


def _messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [e.user_message for e in instance.all_logs(run_id)]


def _count(raw: Raw, query: str, *params: Any) -> int:
    row = raw.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def _seed(db: Database, storage: StorageRepo, n: int = 20) -> seeding.SeedSummary:
    return seeding.seed(db, n_jobs=n, expired_fraction=0.5, seed=7, storage=storage)


def test_retention_cleanup_dry_run_writes_nothing_then_real_run_deletes_the_backlog(
    defs: dg.Definitions,
    resources: dict[str, object],
    instance: dg.DagsterInstance,
    storage_db: Database,
    storage: StorageRepo,
    raw: Raw,
) -> None:
    _seed(storage_db, storage)
    expired = _count(raw, f"SELECT count(*) FROM jobs WHERE {ELIGIBLE}")
    total = _count(raw, "SELECT count(*) FROM jobs")
    assert expired > 0

    dry = _run(defs, "retention_cleanup", resources, instance, {"dry_run": True})
    assert dry.success
    metadata = _output_metadata(dry)
    assert "Retention cleanup (dry run)" in metadata["report"]
    assert metadata["dry_run"] is True
    assert _count(raw, "SELECT count(*) FROM jobs") == total
    assert _count(raw, "SELECT count(*) FROM job_deletions") == 0

    real = _run(defs, "retention_cleanup", resources, instance, {"batch_size": 3})
    assert real.success
    metadata = _output_metadata(real)
    assert metadata["jobs_deleted"] == expired
    assert _count(raw, f"SELECT count(*) FROM jobs WHERE {ELIGIBLE}") == 0
    assert _count(raw, "SELECT count(*) FROM jobs") == total - expired
    # Every tombstone names the run that deleted the job; the outbox was drained.
    assert _count(raw, "SELECT count(*) FROM job_deletions WHERE run_id = %s", real.run_id) == expired
    assert _count(raw, "SELECT count(*) FROM storage_deletions") == 0
    assert real.dagster_run.tags["lifecycle/concurrency"] == "retention"


def test_purge_job_run_has_the_tag_its_log_names_the_job_and_the_tombstone_has_the_run(
    defs: dg.Definitions,
    resources: dict[str, object],
    instance: dg.DagsterInstance,
    storage_db: Database,
    storage: StorageRepo,
    raw: Raw,
) -> None:
    with storage_db.transaction() as tx:
        job = tx.jobs.create(params={"demo": True})
        other = tx.jobs.create(params={"demo": True})
    key = attach_source(storage_db, storage, job.id, b"video bytes", "mp4", "video/mp4")

    result = _run(
        defs,
        "purge_job",
        resources,
        instance,
        {"job_id": str(job.id)},
        tags={JOB_ID_TAG: str(job.id)},
    )
    assert result.success
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    assert run.tags[JOB_ID_TAG] == str(job.id)
    assert any(f"jobId={job.id}" in m for m in _messages(instance, result.run_id))
    row = raw.execute("SELECT run_id, reason FROM job_deletions WHERE job_id = %s", (job.id,)).fetchone()
    assert row == (result.run_id, "erasure")
    assert _count(raw, "SELECT count(*) FROM jobs WHERE id = %s", job.id) == 0
    assert _count(raw, "SELECT count(*) FROM jobs WHERE id = %s", other.id) == 1
    with pytest.raises(Exception):  # noqa: B017 - the object is gone (any storage error)
        storage.download(key)


def test_purge_job_launched_without_the_tag_gets_it(
    defs: dg.Definitions, resources: dict[str, object], instance: dg.DagsterInstance, storage_db: Database
) -> None:
    with storage_db.transaction() as tx:
        job = tx.jobs.create(params={})
    result = _run(defs, "purge_job", resources, instance, {"job_id": str(job.id)})
    assert result.success
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    assert run.tags[JOB_ID_TAG] == str(job.id)
    runs = instance.get_runs(filters=dg.RunsFilter(tags={JOB_ID_TAG: str(job.id)}))
    assert [r.run_id for r in runs] == [result.run_id]


def test_purge_job_refuses_a_tag_that_names_another_job(
    defs: dg.Definitions,
    resources: dict[str, object],
    instance: dg.DagsterInstance,
    storage_db: Database,
    raw: Raw,
) -> None:
    with storage_db.transaction() as tx:
        job = tx.jobs.create(params={})
    result = _run(
        defs,
        "purge_job",
        resources,
        instance,
        {"job_id": str(job.id)},
        tags={JOB_ID_TAG: str(uuid.uuid4())},
        raise_on_error=False,
    )
    assert not result.success
    assert _count(raw, "SELECT count(*) FROM jobs WHERE id = %s", job.id) == 1


def test_rescue_stale_jobs_requeues_expired_leases_and_fails_exhausted_ones(
    defs: dg.Definitions, resources: dict[str, object], instance: dg.DagsterInstance, db: Database, raw: Raw
) -> None:
    with db.transaction() as tx:
        ids = [tx.jobs.create(params={"i": i}).id for i in range(4)]
    with db.transaction() as tx:
        claimed = [tx.jobs.claim_next() for _ in range(4)]
    assert all(c is not None for c in claimed)
    live, stale, exhausted = ids[0], ids[1:3], ids[3]
    raw.execute(
        "UPDATE jobs SET lease_expires_at = now() - interval '1 minute' WHERE id = ANY(%s)",
        ([*stale, exhausted],),
    )
    raw.execute("UPDATE jobs SET attempts = 2 WHERE id = %s", (exhausted,))

    result = _run(defs, "rescue_stale_jobs", resources, instance, {"max_attempts": 2})
    assert result.success
    status = dict(raw.execute("SELECT id, status FROM jobs").fetchall())
    assert status[live] == "processing"
    assert [status[j] for j in stale] == ["queued", "queued"]
    assert status[exhausted] == "failed"
    assert (
        _count(
            raw, "SELECT count(*) FROM job_events WHERE run_id = %s AND type = 'transition'", result.run_id
        )
        == 3
    )
    messages = _messages(instance, result.run_id)
    assert any(f"jobId={exhausted} failed" in m for m in messages)
    assert all(any(f"jobId={j} requeued" in m for m in messages) for j in stale)


def test_transition_batch_dry_run_then_real_run_with_limit(
    defs: dg.Definitions, resources: dict[str, object], instance: dg.DagsterInstance, db: Database, raw: Raw
) -> None:
    with db.transaction() as tx:
        ids = [tx.jobs.create(params={}).id for _ in range(5)]
        for job_id in ids:
            tx.jobs.transition(job_id, JobStatus.PROCESSING)
            tx.jobs.transition(job_id, JobStatus.FAILED, error="boom")
    config = {"from_status": "failed", "to_status": "queued", "limit": 3, "reason": "operator retry"}

    dry = _run(defs, "transition_batch", resources, instance, {**config, "dry_run": True})
    assert dry.success
    assert _output_metadata(dry)["moved"] == 3
    assert _count(raw, "SELECT count(*) FROM jobs WHERE status = 'failed'") == 5

    real = _run(defs, "transition_batch", resources, instance, config)
    assert real.success
    assert _output_metadata(real)["moved"] == 3
    assert _count(raw, "SELECT count(*) FROM jobs WHERE status = 'queued'") == 3
    assert (
        _count(
            raw,
            "SELECT count(*) FROM job_events WHERE run_id = %s AND data->>'reason' = 'operator retry'",
            real.run_id,
        )
        == 3
    )


def test_transition_batch_created_before_and_illegal_change(
    defs: dg.Definitions, resources: dict[str, object], instance: dg.DagsterInstance, db: Database, raw: Raw
) -> None:
    with db.transaction() as tx:
        tx.jobs.create(params={})
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    config = {"from_status": "queued", "to_status": "canceled", "created_before": past}
    assert _output_metadata(_run(defs, "transition_batch", resources, instance, config))["moved"] == 0
    bad = {"from_status": "succeeded", "to_status": "queued"}
    assert not _run(defs, "transition_batch", resources, instance, bad, raise_on_error=False).success
    assert _count(raw, "SELECT count(*) FROM jobs WHERE status = 'queued'") == 1


def test_batch_logs_per_job_lines_only_up_to_the_bound(
    defs: dg.Definitions, resources: dict[str, object], instance: dg.DagsterInstance, db: Database
) -> None:
    n = LOG_EACH_JOB_LIMIT + 5
    with db.transaction() as tx:
        for _ in range(n):
            tx.jobs.create(params={})
    config = {"from_status": "queued", "to_status": "canceled", "limit": n}
    result = _run(defs, "transition_batch", resources, instance, config)
    messages = _messages(instance, result.run_id)
    assert sum(m.startswith("jobId=") for m in messages) == LOG_EACH_JOB_LIMIT
    assert any("and 5 more jobs" in m for m in messages)


def test_reconcile_orphans_is_a_dry_run_by_default(
    defs: dg.Definitions,
    resources: dict[str, object],
    instance: dg.DagsterInstance,
    storage: StorageRepo,
    raw: Raw,
) -> None:
    from lifecycle.storage import source_key

    orphan = source_key(uuid.uuid4(), "mp4")
    storage.upload(orphan, b"left behind", "video/mp4")
    result = _run(defs, "reconcile_orphans", resources, instance, {"grace_seconds": 0})
    assert result.success
    metadata = _output_metadata(result)
    assert metadata["dry_run"] is True
    assert metadata["orphans_found"] == 1
    assert _count(raw, "SELECT count(*) FROM storage_deletions") == 0

    real = _run(defs, "reconcile_orphans", resources, instance, {"grace_seconds": 0, "dry_run": False})
    assert _output_metadata(real)["orphans_queued"] == 1
    assert _count(raw, "SELECT count(*) FROM storage_deletions WHERE object_key = %s", orphan) == 1


# -- honest endings: a run that leaves work undone fails, after recording its report ----------------


def _failure(result: dg.ExecuteInProcessResult) -> tuple[str, dict[str, Any]]:
    """The step failure's description and metadata (a ``dg.Failure`` raised by the op)."""
    [event] = [e for e in result.all_node_events if e.event_type_value == "STEP_FAILURE"]
    data = event.event_specific_data.user_failure_data  # type: ignore[union-attr]
    assert data is not None, "the step failed with an error, not with dg.Failure"
    return str(data.description), {k: v.value for k, v in data.metadata.items()}


def _listed(storage: StorageRepo) -> set[str]:
    from lifecycle.storage import ObjectKind

    return {obj.key for kind in ObjectKind for obj in storage.iter_keys(kind)}


def _expired_with_objects(storage_db: Database, storage: StorageRepo, raw: Raw, n: int) -> list[str]:
    """``n`` expired jobs with a stored source each; returns their keys."""
    keys = []
    for _ in range(n):
        with storage_db.transaction() as tx:
            job = tx.jobs.create(params={})
        keys.append(attach_source(storage_db, storage, job.id, b"video", "mp4", "video/mp4"))
    raw.execute("UPDATE jobs SET expires_at = now() - interval '1 hour'")
    return keys


def test_retention_cleanup_with_storage_down_records_the_report_then_fails_with_the_work_left(
    defs: dg.Definitions,
    resources: dict[str, object],
    instance: dg.DagsterInstance,
    storage_db: Database,
    storage: StorageRepo,
    storage_server: Any,
    raw: Raw,
) -> None:
    keys = _expired_with_objects(storage_db, storage, raw, 3)
    storage_server.set_faults(remove_error_rate=1.0)

    result = _run(defs, "retention_cleanup", resources, instance, {}, raise_on_error=False)

    assert not result.success
    metadata = _output_metadata(result)  # the report was recorded before the failure
    assert (metadata["jobs_deleted"], metadata["objects_failed"], metadata["outbox_pending"]) == (3, 3, 3)
    assert "Work left" in metadata["report"]
    description, failure_metadata = _failure(result)
    assert description == "work left: 3 object(s) still queued for removal (3 failed)"
    assert failure_metadata["objects_pending"] == 3
    assert _count(raw, "SELECT count(*) FROM storage_deletions WHERE attempts = 1") == 1
    storage_server.clear_faults()
    assert _listed(storage) == set(keys)


def test_retention_cleanup_drain_only_removes_queued_objects_and_its_dry_run_writes_nothing(
    defs: dg.Definitions,
    resources: dict[str, object],
    instance: dg.DagsterInstance,
    storage_db: Database,
    storage: StorageRepo,
    raw: Raw,
) -> None:
    from lifecycle.retention import cleanup

    keys = _expired_with_objects(storage_db, storage, raw, 3)
    cleanup(storage_db, None)  # phase 1 only: the keys wait in the outbox
    assert _count(raw, "SELECT count(*) FROM jobs") == 0

    dry = _run(defs, "retention_cleanup", resources, instance, {"drain_only": True, "dry_run": True})
    assert dry.success
    assert _output_metadata(dry)["queued"] == 3
    assert _listed(storage) == set(keys)
    assert _count(raw, "SELECT count(*) FROM storage_deletions") > 0

    real = _run(defs, "retention_cleanup", resources, instance, {"drain_only": True})
    assert real.success
    metadata = _output_metadata(real)
    assert (metadata["objects_removed"], metadata["pending"]) == (3, 0)
    assert _count(raw, "SELECT count(*) FROM storage_deletions") == 0
    assert _listed(storage) == set()


def test_purge_job_with_storage_down_fails_with_the_work_left(
    defs: dg.Definitions,
    resources: dict[str, object],
    instance: dg.DagsterInstance,
    storage_db: Database,
    storage: StorageRepo,
    storage_server: Any,
    raw: Raw,
) -> None:
    with storage_db.transaction() as tx:
        job = tx.jobs.create(params={})
    key = attach_source(storage_db, storage, job.id, b"video", "mp4", "video/mp4")
    storage_server.set_faults(remove_error_rate=1.0)

    result = _run(defs, "purge_job", resources, instance, {"job_id": str(job.id)}, raise_on_error=False)

    assert not result.success
    assert _output_metadata(result)["jobs_deleted"] == 1
    description, _ = _failure(result)
    assert description.startswith("work left: 1 object(s) still queued for removal")
    assert _count(raw, "SELECT count(*) FROM jobs WHERE id = %s", job.id) == 0
    assert _count(raw, "SELECT count(*) FROM storage_deletions WHERE job_id = %s", job.id) == 1
    storage_server.clear_faults()
    assert _listed(storage) == {key}
