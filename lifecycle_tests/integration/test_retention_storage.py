"""Retention cleanup with objects on the (local) Storage server over HTTP: the seed's cleanup test,
dry run, and faults each followed by a second run that finishes the work."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lifecycle.db import Database
from lifecycle.defs import markdown
from lifecycle.retention import cleanup, drain_outbox, purge
from lifecycle.storage import ObjectKind, StorageRepo
from lifecycle.storage.keys import BucketLayout
from lifecycle_tests.integration.test_retention_support import (
    QUEUED_KEYS,
    count,
    existing,
    insert_jobs,
    keys_of,
    live_claims,
    snapshot,
)

#: Past every backoff: "the next run, later".
LATER = timedelta(hours=3)


def upload_all(storage, keys):
    for key in keys:
        storage.upload(key, b"bytes of " + key.encode(), "video/mp4")


def listed(storage) -> set[str]:
    return {obj.key for kind in ObjectKind for obj in storage.iter_keys(kind)}


def plant(raw, storage, *, expired: int, live: int):
    """Expired and live jobs with events, their source and result objects uploaded."""
    old = insert_jobs(raw, expired, events=3)
    new = insert_jobs(raw, live, expires_in_seconds=86_400, events=2)
    upload_all(storage, keys_of(old + new))
    return old, new


def assert_finished(raw, storage, old, new):
    """Nothing expired left anywhere, nothing live lost, nothing orphaned, outbox empty."""
    assert existing(raw, old) == set()
    assert existing(raw, new) == set(new)
    assert count(raw, "SELECT count(*) FROM job_events WHERE job_id = ANY(%s)", [new]) == 2 * len(new)
    assert count(raw, "SELECT count(*) FROM job_deletions WHERE job_id = ANY(%s)", [old]) == len(old)
    assert count(raw, "SELECT count(*) FROM storage_deletions") == 0
    assert listed(storage) == set(keys_of(new))


def test_cleanup_removes_expired_rows_and_objects_and_keeps_live_ones(db, raw, storage):
    old, new = plant(raw, storage, expired=12, live=5)
    never_uploaded = insert_jobs(raw, 2)  # keys recorded, bytes never sent: confirmed absent

    report = cleanup(db, storage, batch_size=5, run_id="run-seed")

    assert report.jobs_deleted == 14
    assert report.events_deleted == 12 * 3 + 2 * 2
    assert report.objects_removed == 24
    assert report.objects_absent == 4
    assert report.objects_failed == 0
    assert report.outbox_pending == 0
    assert report.stopped_by is None
    assert_finished(raw, storage, old + never_uploaded, new)
    run_ids = raw.execute("SELECT DISTINCT run_id FROM job_deletions").fetchall()
    assert run_ids == [("run-seed",)]


def test_dry_run_leaves_tables_and_objects_unchanged(db, raw, storage):
    plant(raw, storage, expired=6, live=3)
    tables, objects = snapshot(raw), listed(storage)

    report = cleanup(db, storage, dry_run=True)

    assert report.plan is not None
    assert (report.plan.eligible_jobs, report.plan.objects) == (6, 12)
    assert snapshot(raw) == tables
    assert listed(storage) == objects


def test_storage_answering_500_for_a_share_of_removes(db, raw, storage_settings, storage_server):
    # No client-side retries, so the server's 500s reach the outbox logic.
    flaky = StorageRepo.from_settings(storage_settings, retries=1, backoff_seconds=0.01)
    try:
        flaky.ensure_buckets()
        old, new = plant(raw, flaky, expired=30, live=4)
        storage_server.set_faults(remove_error_rate=0.5, seed=3)

        # 20 objects/s makes 20-key chunks, so the faults hit some calls and not others.
        first = cleanup(db, flaky, max_objects_per_second=20)

        assert first.jobs_deleted == 30
        assert first.objects_failed > 0
        assert first.objects_removed > 0
        assert first.objects_removed + first.objects_absent + first.objects_failed <= 60
        failed = raw.execute(
            "SELECT attempts, last_error, next_attempt_at > now() FROM storage_deletions"
        ).fetchall()
        # A chunk row keeps exactly its keys that were not confirmed gone.
        assert count(raw, QUEUED_KEYS) == 60 - first.objects_removed - first.objects_absent
        assert {a for a, _, _ in failed} <= {0, 1}
        assert all(later for a, _, later in failed if a == 1)
        assert all(err and storage_server.service_role_key not in err for a, err, _ in failed if a == 1)
        # Live objects are untouched even while removals fail.
        assert set(keys_of(new)) <= listed(flaky)

        storage_server.clear_faults()
        second = cleanup(db, flaky, now=datetime.now(UTC) + LATER)
    finally:
        flaky.close()

    assert second.jobs_deleted == 0
    assert first.objects_removed + second.objects_removed == 60
    with StorageRepo.from_settings(storage_settings) as lister:
        assert_finished(raw, lister, old, new)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unreachable_storage(storage_server, storage_settings) -> StorageRepo:
    """A StorageRepo with the right key and bucket, pointed at a port nothing listens on."""
    return StorageRepo.connect(
        f"http://127.0.0.1:{_closed_port()}",
        storage_server.service_role_key,
        layout=BucketLayout.single(storage_settings.supabase_storage_bucket),
        retries=1,
    )


def test_storage_down_then_back(db, raw, storage, storage_settings, storage_server):
    old, new = plant(raw, storage, expired=10, live=3)
    down = _unreachable_storage(storage_server, storage_settings)
    try:
        first = cleanup(db, down)
    finally:
        down.close()

    assert first.jobs_deleted == 10
    assert (first.objects_removed, first.objects_failed) == (0, 20)
    assert first.outbox_pending == 20
    assert all("unreachable" in e for e in first.errors)
    assert count(raw, QUEUED_KEYS + " WHERE attempts = 1") == 20
    assert listed(storage) == set(keys_of(old + new))  # nothing lost, nothing removed yet

    # The storage server is back: a drain-only run, once the backoff has passed, finishes.
    second = drain_outbox(db, storage, now=datetime.now(UTC) + LATER)
    assert (second.objects_removed, second.objects_failed, second.pending) == (20, 0, 0)
    assert_finished(raw, storage, old, new)


def test_sigkill_between_phase_one_and_phase_two(
    database_url, raw, storage, storage_settings, storage_server
):
    old, new = plant(raw, storage, expired=15, live=3)
    storage_server.set_faults(remove_delay_seconds=60)  # phase 2 hangs in its first remove call
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SUPABASE_URL": storage_settings.supabase_url,
        "SUPABASE_SERVICE_ROLE_KEY": storage_server.service_role_key,
        "SUPABASE_STORAGE_BUCKET": storage_settings.supabase_storage_bucket,
    }
    cli = Path(sys.executable).with_name("lifecycle")
    proc = subprocess.Popen(
        [str(cli), "cleanup", "--batch-size", "4", "--run-id", "killed-run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Phase 1 is done when every expired row is gone and phase 2 holds claims.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not existing(raw, old) and live_claims(raw) > 0:
                break
            time.sleep(0.05)
        assert not existing(raw, old)
        assert live_claims(raw) > 0
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    storage_server.clear_faults()
    # The server ends the killed client's session, and with it the claims, once it sees the socket close.
    deadline = time.monotonic() + 60
    while live_claims(raw) and time.monotonic() < deadline:
        time.sleep(0.05)

    # The rows are gone, the objects are not, and the outbox still knows every key.
    assert count(raw, QUEUED_KEYS) == 30
    assert listed(storage) == set(keys_of(old + new))
    assert {r[0] for r in raw.execute("SELECT DISTINCT run_id FROM storage_deletions").fetchall()} == {
        "killed-run"
    }

    # The next run, right away (its claims died with the killed run), finishes phase 2.
    database = Database.from_url(database_url, settings=storage_settings)
    try:
        second = cleanup(database, storage)
    finally:
        database.dispose()
    assert second.jobs_deleted == 0
    assert second.objects_removed == 30
    assert_finished(raw, storage, old, new)


def test_purge_removes_objects_now(db, raw, storage):
    live = insert_jobs(raw, 3, expires_in_seconds=86_400)
    upload_all(storage, keys_of(live))

    report = purge(db, storage, [live[0]], run_id="erase")

    assert (report.jobs_deleted, report.objects_removed, report.outbox_pending) == (1, 2, 0)
    assert listed(storage) == set(keys_of(live[1:]))
    assert existing(raw, live) == set(live[1:])


def test_errors_in_reports_are_redacted(db, raw, storage_server, storage_settings):
    insert_jobs(raw, 1)
    down = _unreachable_storage(storage_server, storage_settings)
    try:
        report = cleanup(db, down)
    finally:
        down.close()
    assert report.errors
    text = markdown.cleanup_report(report) + str(report.as_dict())
    assert storage_server.service_role_key not in text
    assert "Bearer" not in text
    stored = raw.execute("SELECT last_error FROM storage_deletions").fetchall()
    assert stored
    assert all(storage_server.service_role_key not in str(e) for (e,) in stored)
