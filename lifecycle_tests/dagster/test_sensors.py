"""The expired-jobs sensor and the run-failure sensor, evaluated in process."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import psycopg
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from lifecycle.db import Database
from lifecycle.db.engine import libpq_url
from lifecycle.defs.resources import DatabaseResource
from lifecycle.defs.sensors import expired_jobs_sensor, run_failure_logger

Raw = psycopg.Connection[tuple[Any, ...]]

#: A queued run needs an origin (the daemon launches it from there); this one is never launched.
_ORIGIN = RemoteJobOrigin(
    repository_origin=RemoteRepositoryOrigin(
        code_location_origin=InProcessCodeLocationOrigin(
            loadable_target_origin=LoadableTargetOrigin(module_name="lifecycle.definitions", attribute="defs")
        ),
        repository_name="__repository__",
    ),
    job_name="retention_cleanup",
)


def _tick(
    instance: dg.DagsterInstance, database: DatabaseResource, cursor: str | None
) -> tuple[dg.RunRequest | dg.SkipReason, str | None]:
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"database": database}
    ) as context:
        result = expired_jobs_sensor(context)
        return result, context.cursor  # type: ignore[return-value]


def _expired_job(db: Database) -> None:
    with db.transaction() as tx:
        tx.jobs.create(params={}, expires_at=datetime.now(UTC) - timedelta(hours=1))


def test_no_backlog_skips_with_the_reason(
    instance: dg.DagsterInstance, database_resource: DatabaseResource, db: Database
) -> None:
    with db.transaction() as tx:
        tx.jobs.create(params={})  # not expired
    result, cursor = _tick(instance, database_resource, None)
    assert isinstance(result, dg.SkipReason)
    assert "no expired jobs" in (result.skip_message or "")
    assert cursor is None


def test_held_and_processing_jobs_are_not_a_backlog(
    instance: dg.DagsterInstance, database_resource: DatabaseResource, db: Database, raw: Raw
) -> None:
    _expired_job(db)
    raw.execute("UPDATE jobs SET retention_hold = true")
    result, _ = _tick(instance, database_resource, None)
    assert isinstance(result, dg.SkipReason)


def test_backlog_requests_one_run_then_none_while_it_is_queued_and_the_cursor_survives(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    database_resource: DatabaseResource,
    db: Database,
    raw: Raw,
) -> None:
    _expired_job(db)
    first, cursor = _tick(instance, database_resource, None)
    assert isinstance(first, dg.RunRequest)
    assert first.run_key == "expired-jobs-1"
    assert cursor is not None
    assert json.loads(cursor)["requests"] == 1

    # What the daemon does with the request: a queued run of retention_cleanup.
    run = instance.add_run(
        DagsterRun(
            job_name="retention_cleanup",
            status=dg.DagsterRunStatus.QUEUED,
            remote_job_origin=_ORIGIN,
            tags={**first.tags, "dagster/run_key": first.run_key or ""},
        )
    )
    second, cursor_after_skip = _tick(instance, database_resource, cursor)
    assert isinstance(second, dg.SkipReason)
    assert run.run_id in (second.skip_message or "")
    assert "QUEUED" in (second.skip_message or "")
    assert cursor_after_skip == cursor
    # Nothing was deleted inside the ticks.
    row = raw.execute("SELECT count(*) FROM jobs").fetchone()
    assert row == (1,)

    # The run ends (here: fails) with the backlog still there; the next request gets a new key
    # from the surviving cursor.
    instance.report_run_failed(run)
    third, cursor = _tick(instance, database_resource, cursor_after_skip)
    assert isinstance(third, dg.RunRequest)
    assert third.run_key == "expired-jobs-2"
    assert cursor is not None
    assert json.loads(cursor)["requests"] == 2


def test_a_corrupt_cursor_starts_over(
    instance: dg.DagsterInstance, database_resource: DatabaseResource, db: Database
) -> None:
    _expired_job(db)
    result, _ = _tick(instance, database_resource, "not json")
    assert isinstance(result, dg.RunRequest)
    assert result.run_key == "expired-jobs-1"


def test_run_failure_sensor_logs_the_run_id_and_tags(
    defs: dg.Definitions, instance: dg.DagsterInstance, database_resource: DatabaseResource, capfd: Any
) -> None:
    result = defs.resolve_job_def("transition_batch").execute_in_process(
        resources={"database": database_resource},
        run_config={"ops": {"transition_batch_op": {"config": {"from_status": "x", "to_status": "y"}}}},
        tags={"team": "media"},
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_logger",
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
    ).for_run_failure()
    capfd.readouterr()
    run_failure_logger(context)
    text = capfd.readouterr().err
    assert result.run_id in text
    assert "transition_batch" in text
    assert "'team': 'media'" in text


# -- the drain-only run: queued objects due, no expired job ----------------------------------------


def _queue(raw: Raw, *, claimed_by: int | None = None, due: bool = True) -> None:
    raw.execute(
        "INSERT INTO storage_deletions (object_key, claimed_by, next_attempt_at) "
        "VALUES (%s, %s, now() + CASE WHEN %s THEN interval '0' ELSE interval '1 hour' END)",
        (f"results/{uuid.uuid4()}/clip.mp4", claimed_by, due),
    )


def test_due_outbox_rows_without_a_backlog_request_a_drain_only_run(
    instance: dg.DagsterInstance, database_resource: DatabaseResource, raw: Raw
) -> None:
    _queue(raw, due=False)  # backing off after a failure: not due
    result, _ = _tick(instance, database_resource, None)
    assert isinstance(result, dg.SkipReason)

    _queue(raw)
    result, cursor = _tick(instance, database_resource, None)
    assert isinstance(result, dg.RunRequest)
    assert result.run_key == "outbox-drain-1"
    assert result.run_config == {"ops": {"retention_cleanup_op": {"config": {"drain_only": True}}}}
    assert cursor is not None
    assert json.loads(cursor)["requests"] == 1
    assert raw.execute("SELECT count(*) FROM storage_deletions").fetchone() == (2,)


def test_rows_a_live_drain_holds_are_not_due_and_a_dead_drains_are(
    instance: dg.DagsterInstance, database_resource: DatabaseResource, raw: Raw, database_url: str
) -> None:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as drain:
        drain.execute("SELECT pg_advisory_lock(1818458467, 77)")  # a live drain with token 77
        _queue(raw, claimed_by=77)
        result, _ = _tick(instance, database_resource, None)
        assert isinstance(result, dg.SkipReason)
    # That drain's session ended (killed): its claim is dead, the row is due at once.
    _queue(raw, claimed_by=78, due=False)
    raw.execute("DELETE FROM storage_deletions WHERE claimed_by = 77")
    result, _ = _tick(instance, database_resource, None)
    assert isinstance(result, dg.RunRequest)
    assert result.run_key == "outbox-drain-1"


def test_an_expired_backlog_still_gets_the_full_cleanup(
    instance: dg.DagsterInstance, database_resource: DatabaseResource, db: Database, raw: Raw
) -> None:
    _queue(raw)
    _expired_job(db)
    result, _ = _tick(instance, database_resource, None)
    assert isinstance(result, dg.RunRequest)
    assert result.run_key == "expired-jobs-1"
    assert not result.run_config
