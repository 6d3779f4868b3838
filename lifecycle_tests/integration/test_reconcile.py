"""Orphan reconciliation against the (local) Storage server over HTTP."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from supabase import create_client

from lifecycle.retention import cleanup, drain_outbox, reconcile_orphans
from lifecycle.storage import ObjectKind, result_key, source_key
from lifecycle_tests.integration.test_retention_support import count, existing, insert_jobs, keys_of


def listed(storage) -> set[str]:
    return {obj.key for kind in ObjectKind for obj in storage.iter_keys(kind)}


def test_orphans_are_found_and_recent_ones_are_left_alone(db, raw, storage, storage_settings, storage_server):
    live = insert_jobs(raw, 3, expires_in_seconds=86_400)
    for key in keys_of(live):
        storage.upload(key, b"x", "video/mp4")
    # A job whose result was recorded but never stored (its row is 30 days old).
    missing_job = insert_jobs(raw, 1, expires_in_seconds=86_400)[0]
    storage.upload(source_key(missing_job, "mp4"), b"x", "video/mp4")
    # Old orphans: objects of jobs that have no row.
    orphans = [
        source_key(uuid.uuid4(), "mp4"),
        result_key(uuid.uuid4(), "webm"),
        result_key(uuid.uuid4(), "mp4"),
    ]
    for key in orphans:
        storage.upload(key, b"x", "video/mp4")
    # An orphan already queued for removal, and a key this project would never build.
    pending = result_key(uuid.uuid4(), "mp4")
    storage.upload(pending, b"x", "video/mp4")
    raw.execute(
        "INSERT INTO storage_deletions (object_key, next_attempt_at) VALUES (%s, now() + interval '1 day')",
        [pending],
    )
    stray = "sources/not-a-job/readme.txt"
    client = create_client(storage_server.url, storage_server.service_role_key)
    client.storage.from_(storage_settings.supabase_storage_bucket).upload(
        stray, b"x", {"content-type": "text/plain"}
    )

    time.sleep(1.5)
    recent = source_key(uuid.uuid4(), "mov")  # uploaded just now: inside the grace period
    storage.upload(recent, b"x", "video/mp4")
    now = datetime.now(UTC)

    dry = reconcile_orphans(db, storage, grace_seconds=1, now=now)

    assert dry.dry_run
    assert dry.objects_listed == 6 + 1 + 3 + 1 + 1 + 1
    assert dry.orphans_found == 3
    assert set(dry.orphan_sample) == set(orphans)
    assert (dry.orphans_queued, dry.inside_grace_skipped, dry.pending_in_outbox) == (0, 1, 1)
    assert (dry.unparseable_keys, dry.unparseable_sample) == (1, [stray])
    assert dry.missing_objects == 1
    assert dry.missing_sample == [(str(missing_job), f"results/{missing_job}/clip.mp4")]
    assert count(raw, "SELECT count(*) FROM storage_deletions") == 1  # the dry run queued nothing

    applied = reconcile_orphans(db, storage, dry_run=False, grace_seconds=1, now=now, run_id="reconcile-1")

    assert (applied.orphans_found, applied.orphans_queued) == (3, 3)
    queued = raw.execute(
        "SELECT object_key, run_id FROM storage_deletions WHERE run_id IS NOT NULL"
    ).fetchall()
    assert set(queued) == {(k, "reconcile-1") for k in orphans}

    drained = drain_outbox(db, storage)
    assert drained.objects_removed == 3
    remaining = listed(storage)
    assert not remaining & set(orphans)
    assert {recent, pending, stray} <= remaining  # recent, already queued (not yet due), not ours
    assert set(keys_of(live)) <= remaining
    assert existing(raw, [*live, missing_job]) == {*live, missing_job}


def test_keys_queued_by_phase_one_are_pending_not_orphans(db, raw, storage):
    """Phase 1 queues keys as chunk rows (no single-key row): reconciliation still sees them."""
    old = insert_jobs(raw, 5)
    for key in keys_of(old):
        storage.upload(key, b"x", "video/mp4")
    assert cleanup(db, None).jobs_deleted == 5  # phase 1 only: the objects wait in the outbox

    report = reconcile_orphans(db, storage, dry_run=False, grace_seconds=0)

    assert (report.orphans_found, report.orphans_queued, report.pending_in_outbox) == (0, 0, 10)
    assert count(raw, "SELECT count(*) FROM storage_deletions WHERE object_key IS NOT NULL") == 0
    assert drain_outbox(db, storage).objects_removed == 10
    assert not listed(storage) & set(keys_of(old))


def test_an_object_its_live_job_does_not_record_is_an_orphan(db, raw, storage):
    """A live job whose source was replaced (.mp4 -> .mov) by a process that died before queueing
    the old key: the .mp4 object belongs to no row. Reconciliation finds it although the job exists,
    queues it, the drain removes it, and the recorded .mov stays."""
    job = insert_jobs(raw, 1, expires_in_seconds=86_400)[0]
    old, recorded = source_key(job, "mov"), keys_of([job])  # insert_jobs records the .mp4 keys
    for key in [old, *recorded]:
        storage.upload(key, b"x", "video/mp4")

    dry = reconcile_orphans(db, storage, grace_seconds=0)
    assert (dry.orphans_found, dry.orphan_sample) == (1, [old])

    applied = reconcile_orphans(db, storage, dry_run=False, grace_seconds=0)
    assert applied.orphans_queued == 1
    assert drain_outbox(db, storage).objects_removed == 1
    assert listed(storage) == set(recorded)


def test_queueing_skips_a_key_its_job_records_by_then(db, raw, storage):
    """Between the listing and the queueing an attach records the key: it is not queued (the insert
    re-reads the job under a share lock), so the drain cannot remove a live object."""
    job = insert_jobs(raw, 1, expires_in_seconds=86_400)[0]
    key = result_key(job, "mp4")  # recorded by insert_jobs
    with db.transaction(run_id="r") as tx:
        queued = tx.outbox.queue_keys([(key, job)])
    assert queued == 0
    assert count(raw, "SELECT count(*) FROM storage_deletions") == 0
