"""Retention cleanup against real PostgreSQL: selection, phase 1, dry run, limits, tombstones.

Storage-backed behaviour (objects removed, faults) is in ``test_retention_storage.py``.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from lifecycle import errors
from lifecycle.db import Database
from lifecycle.defs import markdown
from lifecycle.retention import CleanupLimits, cleanup, purge
from lifecycle.settings import Settings
from lifecycle_tests.integration.test_retention_support import (
    QUEUED_KEYS,
    count,
    existing,
    insert_jobs,
    keys_of,
    snapshot,
)


def test_phase_one_deletes_expired_rows_and_events_writes_tombstones_and_queues_keys(db, raw):
    expired = insert_jobs(raw, 30, status="succeeded", events=3)
    failed = insert_jobs(raw, 5, status="failed", events=1)
    live = insert_jobs(raw, 10, status="succeeded", expires_in_seconds=86_400, events=2)

    report = cleanup(db, None, batch_size=7, run_id="run-1")

    assert report.jobs_deleted == 35
    assert report.events_deleted == 30 * 3 + 5
    assert report.objects_queued == 70
    assert report.batches == 5
    assert report.stopped_by is None
    assert existing(raw, expired + failed) == set()
    assert existing(raw, live) == set(live)
    assert count(raw, "SELECT count(*) FROM job_events WHERE job_id = ANY(%s)", [expired + failed]) == 0
    assert count(raw, "SELECT count(*) FROM job_events WHERE job_id = ANY(%s)", [live]) == 20
    tombstones = raw.execute(
        "SELECT job_id, final_status, object_count, events_deleted, reason, run_id FROM job_deletions"
    ).fetchall()
    assert {t[0] for t in tombstones} == set(expired + failed)
    by_id = {t[0]: t for t in tombstones}
    assert by_id[expired[0]][1:] == ("succeeded", 2, 3, "retention", "run-1")
    assert by_id[failed[0]][1:] == ("failed", 2, 1, "retention", "run-1")
    queued = raw.execute(
        "SELECT k, run_id, job_id FROM storage_deletions CROSS JOIN LATERAL unnest(object_keys) AS k"
    ).fetchall()
    assert sorted(q[0] for q in queued) == sorted(keys_of(expired + failed))  # each key once
    assert {q[1] for q in queued} == {"run-1"}
    # Phase 1 writes chunk rows (one bucket each, at most 1000 keys), not a row per key or per job.
    rows = raw.execute("SELECT object_key, job_id, object_keys FROM storage_deletions").fetchall()
    assert all(r[0] is None and r[1] is None for r in rows)
    assert all(len({k.partition("/")[0] for k in r[2]}) == 1 and len(r[2]) <= 1000 for r in rows)
    assert len(rows) == 2 * report.batches
    # With no storage the outbox stays for a later drain.
    assert report.outbox_pending == 70


def test_processing_and_held_jobs_are_never_deleted_even_when_expired(db, raw):
    processing = insert_jobs(raw, 5, status="processing", expires_in_seconds=-86_400)
    held = insert_jobs(raw, 5, status="succeeded", hold=True, expires_in_seconds=-86_400)
    queued = insert_jobs(raw, 3, status="queued", expires_in_seconds=-60)

    report = cleanup(db, None, batch_size=2)
    # Far in the future too: expiry alone never overrides processing or a hold.
    later = cleanup(db, None, now=datetime.now(UTC) + timedelta(days=3650))

    assert report.jobs_deleted == 3
    assert later.jobs_deleted == 0
    assert existing(raw, processing + held) == set(processing + held)
    assert existing(raw, queued) == set()
    assert count(raw, "SELECT count(*) FROM job_deletions WHERE job_id = ANY(%s)", [processing + held]) == 0


def test_oldest_expiry_goes_first(db, raw):
    newer = insert_jobs(raw, 5, expires_in_seconds=-60)
    older = insert_jobs(raw, 5, expires_in_seconds=-86_400)

    report = cleanup(db, None, max_jobs=5, batch_size=2)

    assert report.jobs_deleted == 5
    assert existing(raw, older) == set()
    assert existing(raw, newer) == set(newer)


def test_dry_run_writes_nothing_and_reports_the_plan(db, raw):
    expired = insert_jobs(raw, 25, status="succeeded", events=2)
    insert_jobs(raw, 4, status="canceled", events=1, keys=False)
    insert_jobs(raw, 3, status="processing")
    insert_jobs(raw, 2, status="failed", hold=True)
    insert_jobs(raw, 6, expires_in_seconds=86_400)
    raw.execute(
        "INSERT INTO job_deletions (job_id, final_status, created_at, expired_at, deleted_at) "
        "VALUES (gen_random_uuid(), 'succeeded', now(), now(), now() - interval '400 days')"
    )
    before = snapshot(raw)
    stats_before = raw.execute(
        "SELECT n_tup_del, n_tup_ins, n_tup_upd FROM pg_stat_user_tables WHERE relname = 'jobs'"
    ).fetchone()

    report = cleanup(db, None, dry_run=True, batch_size=10, max_jobs_per_second=10)

    assert snapshot(raw) == before
    assert report.dry_run
    assert (report.jobs_deleted, report.batches) == (0, 0)
    plan = report.plan
    assert plan is not None
    assert plan.eligible_jobs == 29
    assert plan.jobs_by_status == {"succeeded": 25, "canceled": 4}
    assert plan.events == 25 * 2 + 4
    assert plan.objects == 50
    assert (plan.skipped_processing, plan.skipped_on_hold) == (3, 2)
    assert plan.tombstones_to_prune == 1
    assert plan.batches == 3
    assert plan.min_duration_seconds == pytest.approx(1.9)
    assert len(plan.sample_job_ids) == 20
    canceled = {r[0] for r in raw.execute("SELECT id FROM jobs WHERE status = 'canceled'").fetchall()}
    assert set(plan.sample_job_ids) <= set(expired) | canceled
    assert plan.oldest_expiry is not None
    assert plan.newest_expiry is not None
    assert plan.oldest_expiry <= plan.newest_expiry <= datetime.now(UTC)
    assert "delete 29 job(s)" in plan.would_do
    page = markdown.cleanup_report(report)
    assert "dry run" in page
    assert str(plan.sample_job_ids[0]) in page
    assert report.as_dict()["plan"]["eligible_jobs"] == 29
    # Not even row locks (FOR UPDATE writes xmax): the table saw no write.
    assert snapshot(raw) == before
    assert (
        raw.execute(
            "SELECT n_tup_del, n_tup_ins, n_tup_upd FROM pg_stat_user_tables WHERE relname = 'jobs'"
        ).fetchone()
        == stats_before
    )


def test_dry_run_honours_max_jobs(db, raw):
    insert_jobs(raw, 12)
    report = cleanup(db, None, dry_run=True, max_jobs=5)
    assert report.plan is not None
    assert report.plan.eligible_jobs == 5


def test_max_jobs_stops_early_and_says_so(db, raw):
    insert_jobs(raw, 30)

    first = cleanup(db, None, max_jobs=12, batch_size=5)
    rest = cleanup(db, None, max_jobs=100, batch_size=5)

    assert (first.jobs_deleted, first.stopped_by) == (12, "max_jobs")
    assert (rest.jobs_deleted, rest.stopped_by) == (18, None)
    assert count(raw, "SELECT count(*) FROM jobs") == 0


def test_max_jobs_equal_to_the_backlog_is_not_an_early_stop(db, raw):
    insert_jobs(raw, 10)
    report = cleanup(db, None, max_jobs=10, batch_size=4)
    assert (report.jobs_deleted, report.stopped_by) == (10, None)


def test_limits_passed_in_are_the_runs_and_an_argument_still_overrides_them(database_url, raw):
    # Settings no run can use: a run given its own limits does not consult them.
    settings = Settings.load(env={"BCRYPT_ROUNDS": "4", "CLEANUP_MAX_RUNTIME_SECONDS": "inf"})
    db = Database.from_url(database_url, settings=settings)
    try:
        insert_jobs(raw, 30)
        with pytest.raises(errors.InvalidInput) as refused:
            cleanup(db, None)
        assert refused.value.field == "CLEANUP_MAX_RUNTIME_SECONDS"
        assert count(raw, "SELECT count(*) FROM jobs") == 30

        limits = CleanupLimits.from_settings(Settings.load(env={})).with_overrides(batch_size=4, max_jobs=12)
        first = cleanup(db, None, limits=limits)
        assert (first.jobs_deleted, first.batches, first.final_batch_size) == (12, 3, 4)
        assert first.stopped_by == "max_jobs"
        second = cleanup(db, None, limits=limits, max_jobs=100)
        assert (second.jobs_deleted, second.batches, second.stopped_by) == (18, 5, None)
        assert count(raw, "SELECT count(*) FROM jobs") == 0
    finally:
        db.dispose()


def test_max_runtime_stops_early_and_says_so(db, raw):
    insert_jobs(raw, 200, events=0, keys=False)

    report = cleanup(db, None, max_runtime_seconds=0.5, max_jobs_per_second=100, batch_size=50)

    assert report.stopped_by == "max_runtime_seconds"
    assert 0 < report.jobs_deleted < 200
    assert count(raw, "SELECT count(*) FROM jobs") == 200 - report.jobs_deleted


def test_rate_limit_is_a_lower_bound_on_duration(db, raw):
    insert_jobs(raw, 1000, events=0, keys=False)

    started = time.monotonic()
    report = cleanup(db, None, max_jobs_per_second=200, batch_size=1000)
    elapsed = time.monotonic() - started

    assert report.jobs_deleted == 1000
    assert elapsed >= 4.0
    # The rate also caps the batch: at most one second's worth per transaction.
    assert report.batches >= 5


def test_tombstones_are_pruned_after_their_retention(db, raw):
    old = raw.execute(
        "INSERT INTO job_deletions (job_id, final_status, created_at, expired_at, deleted_at) "
        "SELECT gen_random_uuid(), 'succeeded', now(), now(), now() - interval '91 days' "
        "FROM generate_series(1, 7) RETURNING job_id"
    ).fetchall()
    insert_jobs(raw, 3)

    report = cleanup(db, None)

    assert report.tombstones_pruned == 7
    assert count(raw, "SELECT count(*) FROM job_deletions WHERE job_id = ANY(%s)", [[r[0] for r in old]]) == 0
    assert count(raw, "SELECT count(*) FROM job_deletions") == 3


def test_two_concurrent_runs_delete_each_job_once(database_url, settings, raw):
    ids = insert_jobs(raw, 3000, events=1)
    live = insert_jobs(raw, 20, expires_in_seconds=86_400)
    results: list[object] = []

    def run(name: str) -> None:
        database = Database.from_url(database_url, settings=settings)
        try:
            results.append(cleanup(database, None, batch_size=50, run_id=name))
        except BaseException as exc:  # surfaced by the assertion below
            results.append(exc)
        finally:
            database.dispose()

    threads = [threading.Thread(target=run, args=(f"run-{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert all(not isinstance(r, BaseException) for r in results), results
    reports = [r for r in results if not isinstance(r, BaseException)]
    assert sum(r.jobs_deleted for r in reports) == 3000
    assert sum(r.events_deleted for r in reports) == 3000
    assert sum(r.objects_queued for r in reports) == 6000
    assert existing(raw, ids) == set()
    assert existing(raw, live) == set(live)
    assert count(raw, "SELECT count(*) FROM job_deletions") == 3000
    by_run = dict(raw.execute("SELECT run_id, count(*) FROM job_deletions GROUP BY run_id").fetchall())
    assert by_run == {r.run_id: r.jobs_deleted for r in reports if r.jobs_deleted}
    assert count(raw, QUEUED_KEYS) == 6000


def _slow_settings(**extra: str) -> Settings:
    return Settings.load(env={"BCRYPT_ROUNDS": "4", **extra})


def test_lock_timeout_halves_the_batch_down_to_the_floor(database_url, raw):
    """A batch that waits on a lock past lock_timeout is retried smaller, and the run stops cleanly."""
    settings = _slow_settings(CLEANUP_LOCK_TIMEOUT_MS="200", CLEANUP_MIN_BATCH_SIZE="2")
    database = Database.from_url(database_url, settings=settings)
    ids = insert_jobs(raw, 16)
    oldest = raw.execute("SELECT id FROM jobs ORDER BY expires_at LIMIT 1").fetchone()
    assert oldest is not None
    # Another session holds the oldest job's event rows locked and has not committed: the batch
    # locks the job (nothing else holds it), then its cascade to events must wait (and time out).
    with psycopg.connect(raw.info.dsn) as blocker:
        blocker.execute("SELECT 1 FROM job_events WHERE job_id = %s FOR UPDATE", [oldest[0]])
        try:
            report = cleanup(database, None, batch_size=16)
        finally:
            blocker.rollback()
            database.dispose()

    assert report.stopped_by == "query_timeout"
    assert report.timeouts == 4  # 16 -> 8 -> 4 -> 2 (the floor) and the floor failed too
    assert report.final_batch_size == 2
    assert report.jobs_deleted == 0
    assert existing(raw, ids) == set(ids)
    # Nothing half-done: no tombstone, no queued key.
    assert count(raw, "SELECT count(*) FROM job_deletions") == 0
    assert count(raw, "SELECT count(*) FROM storage_deletions") == 0

    # Once the lock is gone the next run does the work.
    again = Database.from_url(database_url, settings=settings)
    try:
        assert cleanup(again, None, batch_size=16).jobs_deleted == 16
    finally:
        again.dispose()


def test_connection_terminated_mid_batch_loses_nothing(database_url, raw):
    """pg_terminate_backend while a batch holds its row locks: the batch rolls back and is retried."""
    settings = _slow_settings(CLEANUP_LOCK_TIMEOUT_MS="30000")
    database = Database.from_url(database_url, settings=settings)
    expired = insert_jobs(raw, 40, events=2)
    live = insert_jobs(raw, 10, expires_in_seconds=86_400)
    oldest = raw.execute("SELECT id FROM jobs ORDER BY expires_at LIMIT 1").fetchone()
    assert oldest is not None
    results: list[object] = []

    def run() -> None:
        try:
            results.append(cleanup(database, None, batch_size=10))
        except BaseException as exc:  # surfaced by the assertion below
            results.append(exc)

    waiting = (
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND wait_event_type = 'Lock' AND query LIKE '%%storage_deletions%%'"
    )
    with psycopg.connect(raw.info.dsn) as blocker:
        # Another session holds the oldest job's event rows locked: the first batch locks its jobs,
        # then its cascade waits inside the transaction for those rows. Terminate it there.
        blocker.execute("SELECT 1 FROM job_events WHERE job_id = %s FOR UPDATE", [oldest[0]])
        worker = threading.Thread(target=run)
        worker.start()
        pids: list[int] = []
        for _ in range(500):
            pids = [r[0] for r in raw.execute(waiting).fetchall()]
            if pids:
                break
            time.sleep(0.02)
        assert pids, "the batch never waited on the lock"
        for pid in pids:
            raw.execute("SELECT pg_terminate_backend(%s)", [pid])
        # Whatever the batch had done is rolled back (its retry may be waiting again, uncommitted).
        assert existing(raw, expired) == set(expired)
        assert count(raw, "SELECT count(*) FROM job_deletions") == 0
        blocker.rollback()
    worker.join(timeout=60)

    try:
        second = cleanup(database, None, batch_size=10)
    finally:
        database.dispose()
    first = results[0]
    assert not isinstance(first, BaseException), first
    assert first.jobs_deleted + second.jobs_deleted == 40
    assert existing(raw, expired) == set()
    assert existing(raw, live) == set(live)
    assert count(raw, "SELECT count(*) FROM job_deletions") == 40
    assert count(raw, QUEUED_KEYS) == 80
    assert count(raw, "SELECT count(*) FROM job_events WHERE job_id = ANY(%s)", [live]) == 20


def test_purge_deletes_named_jobs_whatever_their_expiry(db, raw):
    live = insert_jobs(raw, 3, expires_in_seconds=86_400, events=4)
    held = insert_jobs(raw, 1, hold=True, expires_in_seconds=86_400)
    busy = insert_jobs(raw, 1, status="processing", expires_in_seconds=86_400)
    other = insert_jobs(raw, 2, expires_in_seconds=86_400)

    report = purge(db, None, [live[0], str(live[1]), held[0]], run_id="erase-1")

    assert (report.jobs_deleted, report.events_deleted) == (3, 4 + 4 + 2)
    assert existing(raw, live + held + busy + other) == {live[2], busy[0], *other}
    reasons = raw.execute("SELECT DISTINCT reason, run_id FROM job_deletions").fetchall()
    assert reasons == [("erasure", "erase-1")]
    # Idempotent: already purged ids are fine.
    assert purge(db, None, [live[0]]).jobs_deleted == 0

    with pytest.raises(errors.InvalidTransition):
        purge(db, None, [busy[0], live[2]])
    assert existing(raw, [busy[0], live[2]]) == {busy[0], live[2]}  # all or nothing
    with pytest.raises(errors.JobNotFound):
        purge(db, None, ["00000000-0000-4000-8000-000000000000"])
    assert purge(db, None, [busy[0]], force=True).jobs_deleted == 1


def test_a_reused_job_id_gets_its_tombstone_replaced(db, raw):
    """A job id that already has a tombstone (a restored row) does not block the batch."""
    ids = insert_jobs(raw, 3, events=1)
    raw.execute(
        "INSERT INTO job_deletions (job_id, final_status, created_at, expired_at, deleted_at, run_id) "
        "VALUES (%s, 'failed', now() - interval '9 days', now() - interval '8 days', "
        "now() - interval '7 days', 'old-run')",
        [ids[1]],
    )

    report = cleanup(db, None, batch_size=10, run_id="new-run")

    assert (report.jobs_deleted, report.events_deleted, report.objects_queued) == (3, 3, 6)
    assert existing(raw, ids) == set()
    rows = raw.execute(
        "SELECT final_status, run_id, events_deleted, deleted_at > now() - interval '1 hour' "
        "FROM job_deletions WHERE job_id = %s",
        [ids[1]],
    ).fetchall()
    assert rows == [("succeeded", "new-run", 1, True)]
    assert count(raw, "SELECT count(*) FROM job_deletions WHERE run_id = 'new-run'") == 3


def test_event_counts_in_tombstones_are_what_the_cascade_removed(db, raw):
    """Events are counted in the batch statement and removed by the FK cascade: the counts match."""
    none = insert_jobs(raw, 2, events=0)
    one = insert_jobs(raw, 2, events=1)
    four = insert_jobs(raw, 2, events=4)
    live = insert_jobs(raw, 1, events=3, expires_in_seconds=86_400)
    ids = none + one + four
    before = dict(
        raw.execute(
            "SELECT j, count(e.id) FROM unnest(%s::uuid[]) AS j LEFT JOIN job_events e ON e.job_id = j "
            "GROUP BY j",
            [ids],
        ).fetchall()
    )

    report = cleanup(db, None, batch_size=4)

    assert report.events_deleted == sum(before.values()) == 10
    after = dict(raw.execute("SELECT job_id, events_deleted FROM job_deletions").fetchall())
    assert after == before
    assert count(raw, "SELECT count(*) FROM job_events WHERE job_id = ANY(%s)", [ids]) == 0
    assert count(raw, "SELECT count(*) FROM job_events WHERE job_id = ANY(%s)", [live]) == 3
