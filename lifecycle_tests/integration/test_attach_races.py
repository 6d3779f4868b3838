"""Attach races cleanup (issue 10, items 3 and 4): every interleaving is held open for real.

The other side is held in flight with a second session (a row lock, a live drain's advisory lock)
or with the local Storage server's delays (an upload waiting before it stores its bytes, a remove
waiting before it deletes), and the outcome is read through an independent path: the ``raw``
connection for the tables, the bucket listing over HTTP for the objects.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from lifecycle import errors
from lifecycle.artifacts import attach_result, attach_source
from lifecycle.db import Database
from lifecycle.db.engine import libpq_url
from lifecycle.db.outbox import CLAIM_LOCK_CLASS
from lifecycle.records import Job
from lifecycle.retention import cleanup, drain_outbox
from lifecycle.states import JobStatus
from lifecycle.storage import StorageRepo, result_key, source_key
from lifecycle_tests.integration._jobs_helpers import job_in, row, snapshot

pytestmark = pytest.mark.integration

Raw = psycopg.Connection[Any]

#: How long a held HTTP call waits in the local Storage server. Long enough for the few
#: milliseconds of database work the test does meanwhile; the test never asserts on time.
HOLD_SECONDS = 3.0


class Background:
    """Run ``call`` in a thread; ``result()`` joins it and returns its value or raises its error."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self._value = call()
        except BaseException as exc:  # handed to the test thread by result()
            self._error = exc

    def result(self, timeout: float = 60) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "background call did not finish"
        if self._error is not None:
            raise self._error
        return self._value


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 20) -> None:
    """Poll ``predicate`` until it holds (a bounded wait for the other side, not a timing check)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def waiting_on_a_lock(raw: Raw) -> bool:
    """Some other session of this database waits for a row lock."""
    found = raw.execute(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    ).fetchone()
    return bool(found and found[0])


def outbox(raw: Raw) -> list[str]:
    """The single keys queued in the outbox (and every key of a chunk row), sorted."""
    rows = raw.execute(
        "SELECT k FROM storage_deletions, unnest(coalesce(object_keys, ARRAY[object_key])) AS k ORDER BY k"
    ).fetchall()
    return [r[0] for r in rows]


def stored_keys(storage: StorageRepo, job_id: uuid.UUID) -> set[str]:
    """The job's objects as the bucket lists them over HTTP."""
    return {obj.key for obj in storage.list_job_objects(job_id)}


@contextmanager
def live_claim(database_url: str, raw: Raw, key: str) -> Iterator[int]:
    """A drain's claim on ``key``'s outbox row, alive while the block runs (the drain's session
    holds its advisory lock); when the block ends the session is gone and the claim is dead."""
    token = 1_000_000 + uuid.uuid4().int % 1_000_000
    with psycopg.connect(libpq_url(database_url), autocommit=True) as drain:
        drain.execute("SELECT pg_advisory_lock(%s, %s)", (CLAIM_LOCK_CLASS, token))
        claimed = raw.execute(
            "UPDATE storage_deletions SET claimed_by = %s WHERE object_key = %s", (token, key)
        )
        assert claimed.rowcount == 1
        yield token


def claimed(raw: Raw, key: str) -> bool:
    """``key``'s outbox row carries a drain's claim."""
    found = raw.execute(
        "SELECT count(*) FROM storage_deletions WHERE object_key = %s AND claimed_by IS NOT NULL", (key,)
    ).fetchone()
    return bool(found and found[0])


def attached_then_replaced(db: Database, storage: StorageRepo) -> tuple[Job, str, str]:
    """A queued job whose stored ``.mp4`` source was replaced by a stored ``.mov``: ``.mp4`` queued."""
    job = job_in(db, JobStatus.QUEUED)
    mp4, mov = source_key(job.id, "mp4"), source_key(job.id, "mov")
    attach_source(db, storage, job.id, b"first mp4", "mp4", "video/mp4")
    attach_source(db, storage, job.id, b"the mov", "mov", "video/quicktime")
    return job, mp4, mov


def drain_holding_its_remove(
    db: Database, storage: StorageRepo, storage_server: Any, raw: Raw, key: str
) -> Background:
    """A drain in the background whose removes wait in the server, returned once it claimed ``key``."""
    storage_server.set_faults(remove_delay_seconds=HOLD_SECONDS)
    drain = Background(lambda: drain_outbox(db, storage))
    wait_until(lambda: claimed(raw, key), f"the drain to claim {key}")
    return drain


def replaced_source(db: Database, job_id: uuid.UUID) -> tuple[str, str]:
    """A queued job whose ``.mp4`` source was replaced by a ``.mov``: the ``.mp4`` key is queued."""
    mp4, mov = source_key(job_id, "mp4"), source_key(job_id, "mov")
    with db.transaction() as tx:
        tx.jobs.record_source_key(job_id, mp4)
        tx.jobs.record_source_key(job_id, mov)
    return mp4, mov


# -- item 3: a key pending deletion, at the repository ---------------------------------------------


def test_a_key_a_live_drain_is_removing_is_not_recorded(
    db: Database, raw: Raw, database_url: str, storage: StorageRepo
) -> None:
    job = job_in(db, JobStatus.QUEUED)
    mp4, mov = replaced_source(db, job.id)
    assert outbox(raw) == [mp4]
    with live_claim(database_url, raw, mp4):
        before = snapshot(raw)
        with pytest.raises(errors.KeyPendingDeletion) as info, db.transaction() as tx:
            tx.jobs.record_source_key(job.id, mp4)
        assert (info.value.key, info.value.reason, info.value.job_id) == (mp4, "pending_deletion", job.id)
        assert snapshot(raw) == before
    # The drain's session is gone, so is its claim, but a DELETE it sent may still be in flight:
    # still refused, until a drain confirms the key gone.
    with pytest.raises(errors.KeyPendingDeletion), db.transaction() as tx:
        tx.jobs.record_source_key(job.id, mp4)
    drain_outbox(db, storage)
    assert outbox(raw) == []
    with db.transaction() as tx:
        tx.jobs.record_source_key(job.id, mp4)
    assert row(raw, job.id)["source_key"] == mp4
    assert outbox(raw) == [mov]


def test_a_result_key_a_live_drain_is_removing_is_not_recorded(
    db: Database, raw: Raw, database_url: str, storage: StorageRepo
) -> None:
    """A result key can be in the outbox too (reconciliation queued it as an orphan)."""
    job = job_in(db, JobStatus.PROCESSING)
    key = result_key(job.id, "mp4")
    raw.execute("INSERT INTO storage_deletions (object_key, job_id) VALUES (%s, %s)", (key, job.id))
    with live_claim(database_url, raw, key):
        before = snapshot(raw)
        with pytest.raises(errors.KeyPendingDeletion), db.transaction() as tx:
            tx.jobs.add_result_key(job.id, key)
        assert snapshot(raw) == before
    drain_outbox(db, storage)  # the key is confirmed gone (absent) and its row deleted
    with db.transaction() as tx:
        tx.jobs.add_result_key(job.id, key)
    assert row(raw, job.id)["result_keys"] == [key]
    assert outbox(raw) == []


def test_a_dead_claim_blocks_recording_until_a_drain_confirms_the_key_gone(
    db: Database, raw: Raw, storage: StorageRepo
) -> None:
    """A claim whose token no session holds belongs to a killed drain, whose DELETE may still be in
    flight: refused until the next drain takes the row over and confirms the key gone."""
    job = job_in(db, JobStatus.QUEUED)
    mp4, mov = replaced_source(db, job.id)
    raw.execute("UPDATE storage_deletions SET claimed_by = 12345 WHERE object_key = %s", (mp4,))
    with pytest.raises(errors.KeyPendingDeletion), db.transaction() as tx:
        tx.jobs.record_source_key(job.id, mp4)
    assert outbox(raw) == [mp4]
    drain_outbox(db, storage)
    with db.transaction() as tx:
        tx.jobs.record_source_key(job.id, mp4)
    assert outbox(raw) == [mov]


def test_a_key_whose_removal_failed_before_is_not_taken_back(
    db: Database, raw: Raw, storage: StorageRepo
) -> None:
    """A failed remove may have timed out while the server still runs it: refused as well."""
    job = job_in(db, JobStatus.QUEUED)
    mp4, _ = replaced_source(db, job.id)
    raw.execute("UPDATE storage_deletions SET attempts = 1 WHERE object_key = %s", (mp4,))
    with pytest.raises(errors.KeyPendingDeletion), db.transaction() as tx:
        tx.jobs.record_source_key(job.id, mp4)
    assert outbox(raw) == [mp4]


def test_recording_waits_for_a_drain_claiming_the_key_then_refuses(
    db: Database, raw: Raw, database_url: str
) -> None:
    """The drain's claim is in flight (row locked, not committed): recording waits for it and then
    sees the claim, instead of deleting the outbox row under the drain."""
    job = job_in(db, JobStatus.QUEUED)
    mp4, mov = replaced_source(db, job.id)
    token = 2_000_000 + uuid.uuid4().int % 1_000_000
    with psycopg.connect(libpq_url(database_url)) as drain:
        drain.execute("SELECT pg_advisory_lock(%s, %s)", (CLAIM_LOCK_CLASS, token))
        drain.execute("SELECT id FROM storage_deletions WHERE object_key = %s FOR UPDATE SKIP LOCKED", (mp4,))
        drain.execute("UPDATE storage_deletions SET claimed_by = %s WHERE object_key = %s", (token, mp4))

        def record() -> None:
            with db.transaction() as tx:
                tx.jobs.record_source_key(job.id, mp4)

        attach = Background(record)
        wait_until(lambda: waiting_on_a_lock(raw), "the recording statement to wait for the claim")
        drain.commit()
        with pytest.raises(errors.KeyPendingDeletion):
            attach.result()
        assert row(raw, job.id)["source_key"] == mov
        assert outbox(raw) == [mp4]


def test_re_recording_a_key_while_another_attach_replaces_it(db: Database, raw: Raw) -> None:
    """T1 replaces .mp4 by .mov (queuing .mp4) while T2 records .mp4 again: T2 waits for the row,
    and must then take .mp4 out of the outbox T1 just put it in (else a drain deletes a live object)."""
    job = job_in(db, JobStatus.QUEUED)
    mp4, mov = source_key(job.id, "mp4"), source_key(job.id, "mov")
    with db.transaction() as tx:
        tx.jobs.record_source_key(job.id, mp4)

    def record_mp4() -> None:
        with db.transaction() as tx:
            tx.jobs.record_source_key(job.id, mp4)

    with db.transaction() as t1:
        t1.jobs.record_source_key(job.id, mov)
        t2 = Background(record_mp4)
        wait_until(lambda: waiting_on_a_lock(raw), "T2 to wait for T1's row lock")
    t2.result()
    assert row(raw, job.id)["source_key"] == mp4
    assert outbox(raw) == [mov]


# -- item 3: re-attaching while the drain's DELETE is in flight ----------------------------------


def test_reattach_while_a_drain_removes_the_key_is_refused_and_works_after(
    db: Database, raw: Raw, storage: StorageRepo, storage_server: Any
) -> None:
    """Attach .mp4, replace it with .mov (.mp4 queued), hold the drain's DELETE of .mp4 in flight
    and attach .mp4 again: refused (KeyPendingDeletion). Once the drain is done, attaching .mp4
    works and its object is there. (Needs the drain's claims to set ``claimed_by``.)"""
    job, mp4, mov = attached_then_replaced(db, storage)
    assert outbox(raw) == [mp4]
    drain = drain_holding_its_remove(db, storage, storage_server, raw, mp4)
    with pytest.raises(errors.KeyPendingDeletion):
        attach_source(db, storage, job.id, b"second mp4", "mp4", "video/mp4")
    assert row(raw, job.id)["source_key"] == mov
    drain.result()
    storage_server.clear_faults()
    assert stored_keys(storage, job.id) == {mov}
    assert outbox(raw) == []

    attach_source(db, storage, job.id, b"second mp4", "mp4", "video/mp4")
    assert row(raw, job.id)["source_key"] == mp4
    assert storage.download(mp4) == b"second mp4"
    assert outbox(raw) == [mov]


def test_reattach_under_a_live_claim_uploads_nothing(
    db: Database, raw: Raw, storage: StorageRepo, database_url: str
) -> None:
    """The same race with the drain's claim held by a second session: nothing is recorded or sent."""
    job, mp4, mov = attached_then_replaced(db, storage)
    with live_claim(database_url, raw, mp4):
        before = snapshot(raw)
        with pytest.raises(errors.KeyPendingDeletion):
            attach_source(db, storage, job.id, b"second mp4", "mp4", "video/mp4")
        assert snapshot(raw) == before
        assert storage.download(mp4) == b"first mp4"  # not overwritten: no upload was sent
    # The claim is dead now, but its DELETE could still land: refused until a drain confirms it.
    with pytest.raises(errors.KeyPendingDeletion):
        attach_source(db, storage, job.id, b"second mp4", "mp4", "video/mp4")
    drain_outbox(db, storage)
    attach_source(db, storage, job.id, b"second mp4", "mp4", "video/mp4")
    assert storage.download(mp4) == b"second mp4"
    assert outbox(raw) == [mov]


# -- item 4: the upload in flight while cleanup deletes the job ------------------------------------


def expire(db: Database, raw: Raw, job_id: uuid.UUID) -> None:
    """Finish the job (succeeded) with its retention already run out."""
    with db.transaction() as tx:
        tx.jobs.transition(job_id, JobStatus.SUCCEEDED)
    raw.execute("UPDATE jobs SET expires_at = now() - interval '1 minute' WHERE id = %s", (job_id,))


def upload_held_through_cleanup(
    db: Database, raw: Raw, storage: StorageRepo, storage_server: Any
) -> tuple[uuid.UUID, str, Background]:
    """A processing job's result upload held in flight while the job succeeds, expires and cleanup
    deletes it; cleanup's drain finds the key absent (the upload had not landed: the interleaving
    did happen). Returns the job's id, the key and the attach still in flight."""
    job = job_in(db, JobStatus.PROCESSING)
    key = result_key(job.id, "mp4")
    storage_server.set_faults(upload_delay_seconds=HOLD_SECONDS)
    attach = Background(lambda: attach_result(db, storage, job.id, b"clip", "mp4", "video/mp4"))
    wait_until(lambda: (row(raw, job.id) or {}).get("result_keys") == [key], "the key to be recorded")
    expire(db, raw, job.id)
    report = cleanup(db, storage)
    assert (report.jobs_deleted, report.objects_absent) == (1, 1)
    return job.id, key, attach


def test_upload_landing_after_cleanup_deleted_the_job_is_removed(
    db: Database, raw: Raw, storage: StorageRepo, storage_server: Any
) -> None:
    """The result upload is held in flight; meanwhile the job succeeds, expires and cleanup deletes
    it (its drain finds the key absent). When the upload lands, attach queues its key, removes its
    own object and raises JobNotFound: the bucket holds nothing, and the next drain confirms the key
    gone and empties the outbox."""
    job_id, key, attach = upload_held_through_cleanup(db, raw, storage, storage_server)
    with pytest.raises(errors.JobNotFound):
        attach.result()
    storage_server.clear_faults()
    assert row(raw, job_id) is None
    assert stored_keys(storage, job_id) == set()
    assert outbox(raw) == [key]
    drained = drain_outbox(db, storage)
    assert (drained.objects_removed, drained.objects_absent, drained.pending) == (0, 1, 0)
    assert outbox(raw) == []


def test_upload_landing_after_cleanup_that_cannot_be_removed_is_queued(
    db: Database, raw: Raw, storage: StorageRepo, storage_server: Any
) -> None:
    """As above, but Storage refuses attach's own remove: the key goes to the outbox (not left for
    reconciliation's grace period), and the next drain removes the object."""
    job_id, key, attach = upload_held_through_cleanup(db, raw, storage, storage_server)
    # The held upload keeps its delay; every remove from now on fails.
    storage_server.set_faults(remove_error_rate=1.0)
    with pytest.raises(errors.JobNotFound):
        attach.result()
    storage_server.clear_faults()
    assert row(raw, job_id) is None
    assert stored_keys(storage, job_id) == {key}
    assert outbox(raw) == [key]
    drained = drain_outbox(db, storage)
    assert (drained.objects_removed, drained.pending) == (1, 0)
    assert stored_keys(storage, job_id) == set()
    assert outbox(raw) == []


def test_cleanup_after_the_upload_landed_removes_the_object(
    db: Database, raw: Raw, storage: StorageRepo
) -> None:
    """The other order: the upload finished first, so cleanup's drain removes the object."""
    job = job_in(db, JobStatus.PROCESSING)
    key = attach_result(db, storage, job.id, b"clip", "mp4", "video/mp4")
    assert stored_keys(storage, job.id) == {key}
    expire(db, raw, job.id)
    report = cleanup(db, storage)
    assert (report.jobs_deleted, report.objects_removed) == (1, 1)
    assert row(raw, job.id) is None
    assert stored_keys(storage, job.id) == set()
    assert outbox(raw) == []


def test_upload_landing_after_its_key_was_replaced_is_removed(
    db: Database, raw: Raw, storage: StorageRepo, storage_server: Any
) -> None:
    """The .mp4 source upload is held in flight; meanwhile .mov replaces it and a drain finds .mp4
    absent. When the .mp4 upload lands, attach removes it again and raises KeyReplaced."""
    job = job_in(db, JobStatus.QUEUED)
    mp4, mov = source_key(job.id, "mp4"), source_key(job.id, "mov")
    storage_server.set_faults(upload_delay_seconds=HOLD_SECONDS)
    attach = Background(lambda: attach_source(db, storage, job.id, b"mp4 bytes", "mp4", "video/mp4"))
    wait_until(lambda: (row(raw, job.id) or {}).get("source_key") == mp4, "the .mp4 key to be recorded")
    with db.transaction() as tx:
        tx.jobs.record_source_key(job.id, mov)
    first = drain_outbox(db, storage)
    assert first.objects_absent == 1  # .mp4 had not landed yet
    with pytest.raises(errors.KeyReplaced) as info:
        attach.result()
    assert (info.value.key, info.value.reason) == (mp4, "replaced")
    storage_server.clear_faults()
    assert row(raw, job.id)["source_key"] == mov
    assert stored_keys(storage, job.id) == set()  # .mov was only recorded, never uploaded
    # The key was queued again too, in case the removal had failed: the next drain finds it gone.
    assert outbox(raw) == [mp4]
    drained = drain_outbox(db, storage)
    assert (drained.objects_removed, drained.objects_absent, drained.pending) == (0, 1, 0)
    assert outbox(raw) == []


def test_attach_checks_eligibility_on_the_database_clock(
    db: Database, raw: Raw, storage: StorageRepo
) -> None:
    """A queued job past its expiry may be deleted by cleanup at any moment: no source for it."""
    job = job_in(db, JobStatus.QUEUED)
    raw.execute("UPDATE jobs SET expires_at = now() - interval '1 second' WHERE id = %s", (job.id,))
    before = snapshot(raw)
    with pytest.raises(errors.AttachRefused) as info:
        attach_source(db, storage, job.id, b"x", "mp4", "video/mp4")
    assert (info.value.reason, info.value.status) == ("eligible_for_deletion", "queued")
    assert snapshot(raw) == before
    assert stored_keys(storage, job.id) == set()
