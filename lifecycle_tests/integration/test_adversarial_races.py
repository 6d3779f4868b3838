"""Adversarial races on issue 10's promise: no object lost, none orphaned, no outcome misreported.

Each test holds one side open for real (a remove or upload waiting in the local Storage server, a
drain's lock session killed with ``pg_terminate_backend``) and reads the outcome through an
independent path: the ``raw`` connection for the tables, the bucket listing over HTTP for objects.
"""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest

from lifecycle import errors
from lifecycle.artifacts import attach_source
from lifecycle.db import Database
from lifecycle.db.outbox import CLAIM_LOCK_CLASS
from lifecycle.retention import cleanup, drain_outbox
from lifecycle.settings import Settings
from lifecycle.states import JobStatus
from lifecycle.storage import StorageRepo, source_key
from lifecycle_tests.integration._jobs_helpers import job_in, row, snapshot
from lifecycle_tests.integration.test_attach_races import (
    Background,
    attached_then_replaced,
    drain_holding_its_remove,
    outbox,
    stored_keys,
    wait_until,
)

pytestmark = pytest.mark.integration

Raw = psycopg.Connection[Any]


def kill_lock_session(raw: Raw, key: str) -> None:
    """Terminate the session holding the advisory lock of the drain that claims ``key``'s row."""
    found = raw.execute(
        "SELECT l.pid FROM pg_locks l JOIN storage_deletions d ON d.claimed_by = l.objid::integer "
        "WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objsubid = 2 AND d.object_key = %s",
        (CLAIM_LOCK_CLASS, key),
    ).fetchone()
    assert found is not None, "no session holds the claim's lock"
    raw.execute("SELECT pg_terminate_backend(%s)", (found[0],))
    wait_until(
        lambda: not bool(
            raw.execute(
                "SELECT lifecycle_claim_alive(claimed_by) FROM storage_deletions WHERE object_key = %s",
                (key,),
            ).fetchone()[0]  # type: ignore[index]
        ),
        "the claim to die with its session",
    )


def test_reattach_after_the_drains_lock_session_dies_mid_remove_keeps_the_new_object(
    db: Database, raw: Raw, storage: StorageRepo, storage_server: Any
) -> None:
    """.mp4 replaced by .mov (.mp4 queued); a drain sends the DELETE of .mp4 (held in the server), its
    lock session is killed: the claim is dead, but the DELETE is still in flight. Re-attaching .mp4
    in that window must not end with the job recording .mp4 and no .mp4 object: the attach is
    refused until a drain confirms the removal, then it works and the new object stays."""
    job, mp4, mov = attached_then_replaced(db, storage)
    assert outbox(raw) == [mp4]
    drain = drain_holding_its_remove(db, storage, storage_server, raw, mp4)
    kill_lock_session(raw, mp4)

    with pytest.raises(errors.KeyPendingDeletion):
        attach_source(db, storage, job.id, b"second mp4", "mp4", "video/mp4")
    report = drain.result()
    # The held DELETE landed; the drain saw its lock session die (one connection loss) and is done.
    assert (report.objects_removed, report.pending, report.connection_losses) == (1, 0, 1)
    storage_server.clear_faults()
    drain_outbox(db, storage)  # whatever the first drain left

    assert row(raw, job.id)["source_key"] == mov  # type: ignore[index]
    assert stored_keys(storage, job.id) == {mov}
    assert outbox(raw) == []
    # Once the removal is confirmed, attaching .mp4 works and its object stays.
    attach_source(db, storage, job.id, b"second mp4", "mp4", "video/mp4")
    drain_outbox(db, storage)
    assert row(raw, job.id)["source_key"] == mp4  # type: ignore[index]
    assert stored_keys(storage, job.id) == {mp4}
    assert storage.download(mp4) == b"second mp4"
    assert outbox(raw) == []


def test_a_restored_job_cannot_attach_a_key_still_queued_in_a_chunk_row(
    db: Database, raw: Raw, storage: StorageRepo
) -> None:
    """Phase 1 queued the deleted job's keys as a chunk row; the job's row comes back (a restore
    re-uses its id) and attaches the same key before the drain ran. The drain must not remove the
    restored job's new object: the attach is refused until the old key is confirmed gone."""
    job = job_in(db, JobStatus.QUEUED)
    mp4 = source_key(job.id, "mp4")
    attach_source(db, storage, job.id, b"old mp4", "mp4", "video/mp4")
    raw.execute("UPDATE jobs SET expires_at = now() - interval '1 minute' WHERE id = %s", (job.id,))
    cleanup(db, None)  # phase 1 only: the key waits in a chunk row
    assert outbox(raw) == [mp4]
    raw.execute(
        "INSERT INTO jobs (id, status, params, expires_at) "
        "VALUES (%s, 'queued', '{}', now() + interval '1 day')",
        (job.id,),
    )

    before = snapshot(raw)
    with pytest.raises(errors.KeyPendingDeletion):
        attach_source(db, storage, job.id, b"new mp4", "mp4", "video/mp4")
    assert snapshot(raw) == before
    assert storage.download(mp4) == b"old mp4"  # not overwritten: no upload was sent
    drain_outbox(db, storage)
    assert row(raw, job.id)["source_key"] is None  # type: ignore[index]
    assert stored_keys(storage, job.id) == set()
    assert outbox(raw) == []
    attach_source(db, storage, job.id, b"new mp4", "mp4", "video/mp4")
    drain_outbox(db, storage)
    assert row(raw, job.id)["source_key"] == mp4  # type: ignore[index]
    assert stored_keys(storage, job.id) == {mp4}
    assert storage.download(mp4) == b"new mp4"
    assert outbox(raw) == []


class _OddRemoveAnswers(httpx.BaseTransport):
    """Forwards every request to the local Storage server, except removes: answered 200 with
    ``body`` (not the list of removed objects the API sends) and nothing deleted."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self._real = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE" and "/object/" in request.url.path:
            return httpx.Response(200, content=self._body, headers={"content-type": "application/json"})
        return self._real.handle_request(request)

    def close(self) -> None:
        self._real.close()


@pytest.mark.parametrize("body", [b"null", b"{}", b'"ok"', b"[1, null]", b'{"name": "x"}', b"not json"])
def test_a_remove_answered_200_with_a_body_that_is_not_a_list_counts_nothing_gone(
    db: Database, raw: Raw, storage: StorageRepo, storage_settings: Settings, storage_server: Any, body: bytes
) -> None:
    """Storage answers 200 but not with the list of removed objects: no key counts as gone, the
    outbox keeps every row, the drain ends (no crash) and says work is left."""
    job, mp4, mov = attached_then_replaced(db, storage)
    assert storage_settings.supabase_service_role_key is not None
    odd = StorageRepo.connect(
        storage_server.url,
        storage_settings.supabase_service_role_key.get_secret_value(),
        http_client=httpx.Client(transport=_OddRemoveAnswers(body)),
        layout=storage.layout,
        backoff_seconds=0.01,
    )
    try:
        report = drain_outbox(db, odd)
    finally:
        odd.close()
    assert (report.objects_removed, report.objects_absent, report.objects_failed) == (0, 0, 1)
    assert report.work_left() == "1 object(s) still queued for removal (1 failed)"
    assert outbox(raw) == [mp4]
    assert stored_keys(storage, job.id) == {mp4, mov}


def test_an_attach_whose_own_cleanup_remove_timed_out_does_not_let_the_key_be_taken_back(
    db: Database, raw: Raw, storage: StorageRepo, storage_settings: Settings, storage_server: Any
) -> None:
    """Attach A's .mp4 upload is held; .mov replaces it; A's upload lands and A removes it again,
    but that DELETE times out on A's side while the server still runs it. Attaching .mp4 again in
    that window must not end with the job recording .mp4 and its object removed by A's late DELETE:
    A queued its key with an attempt counted, so the attach is refused until a drain confirms it gone."""
    job = job_in(db, JobStatus.QUEUED)
    mp4, mov = source_key(job.id, "mp4"), source_key(job.id, "mov")
    assert storage_settings.supabase_service_role_key is not None
    # A's client gives up on a request after 3 s and does not retry: its DELETE (held 6 s) times out.
    slow = StorageRepo.connect(
        storage_server.url,
        storage_settings.supabase_service_role_key.get_secret_value(),
        http_client=httpx.Client(timeout=3.0),
        layout=storage.layout,
        retries=1,
    )
    try:
        storage_server.set_faults(upload_delay_seconds=1.5, remove_delay_seconds=6)
        a = Background(lambda: attach_source(db, slow, job.id, b"first mp4", "mp4", "video/mp4"))
        wait_until(lambda: row(raw, job.id)["source_key"] == mp4, "A to record .mp4")  # type: ignore[index]
        with db.transaction() as tx:
            tx.jobs.record_source_key(job.id, mov)  # .mov replaces .mp4 while A's bytes are held
        with pytest.raises(errors.KeyReplaced):
            a.result()
    finally:
        slow.close()
    storage_server.clear_faults()  # A's DELETE is still waiting in the server
    assert stored_keys(storage, job.id) == {mp4}  # A's late DELETE has not landed yet
    with pytest.raises(errors.KeyPendingDeletion):
        attach_source(db, storage, job.id, b"second mp4", "mp4", "video/mp4")
    assert row(raw, job.id)["source_key"] == mov  # type: ignore[index]
    assert outbox(raw) == [mp4]
    wait_until(lambda: stored_keys(storage, job.id) == set(), "A's late DELETE to land")
    drain_outbox(db, storage)
    assert row(raw, job.id)["source_key"] == mov  # type: ignore[index]
    assert outbox(raw) == []
    attach_source(db, storage, job.id, b"second mp4", "mp4", "video/mp4")
    drain_outbox(db, storage)
    assert row(raw, job.id)["source_key"] == mp4  # type: ignore[index]
    assert stored_keys(storage, job.id) == {mp4}  # .mov replaced and removed by the drain
    assert storage.download(mp4) == b"second mp4"
    assert outbox(raw) == []
