"""Claims that die with their run (the claim protocol of phase 2).

A drain holds ``pg_advisory_lock(CLAIM_LOCK_CLASS, token)`` on a session of its own and writes its
token on the outbox rows it claims. These tests hold a remove call open in the local Storage server
(``remove_delay_seconds``) and check the outbox through ``raw`` and the bucket through its listing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lifecycle import errors
from lifecycle.db import Database
from lifecycle.retention import DrainReport, cleanup, drain_outbox, outbox
from lifecycle.storage import ObjectKind, StorageRepo
from lifecycle_tests.integration.test_retention_support import (
    QUEUED_KEYS,
    cli_env,
    count,
    insert_jobs,
    keys_of,
    live_claims,
)

#: Generous bounds for waiting on another process; never asserted as durations.
WAIT = 60


def listed(storage) -> set[str]:
    return {obj.key for kind in ObjectKind for obj in storage.iter_keys(kind)}


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting: {what}")
        time.sleep(0.05)


def queue_objects(raw, storage, *, expired: int, live: int = 0):
    """Expired jobs whose keys phase 1 has queued (as chunk rows), their objects stored."""
    old = insert_jobs(raw, expired)
    new = insert_jobs(raw, live, expires_in_seconds=86_400)
    for key in keys_of(old + new):
        storage.upload(key, b"bytes of " + key.encode(), "video/mp4")
    return old, new


def queue_single_keys(raw, storage, n: int) -> list[str]:
    """``n`` objects queued one row per key (as replacements and reconciliation queue them)."""
    jobs = insert_jobs(raw, n // 2, expires_in_seconds=86_400, keys=False)
    keys = keys_of(jobs)
    for key in keys:
        storage.upload(key, b"x", "video/mp4")
    raw.execute("INSERT INTO storage_deletions (object_key) SELECT unnest(%s::text[])", [keys])
    return keys


def test_a_drain_started_after_a_killed_one_finishes_everything_at_once(
    database_url, db, raw, storage, storage_settings, storage_server
):
    old, new = queue_objects(raw, storage, expired=15, live=3)
    cleanup(db, None)  # phase 1 only: 30 keys queued
    assert count(raw, QUEUED_KEYS) == 30

    # The first drain hangs in its first remove call; it is killed there, claims on its rows.
    storage_server.set_faults(remove_delay_seconds=30)
    cli = Path(sys.executable).with_name("lifecycle")
    proc = subprocess.Popen(
        [str(cli), "cleanup", "--drain-only", "--run-id", "killed-run"],
        env={**os.environ, **cli_env(database_url, storage_settings)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: live_claims(raw) > 0, "the first drain claims rows")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    storage_server.clear_faults()
    # The server ends the killed client's session (and so its lock) once it sees the socket close.
    wait_for(lambda: live_claims(raw) == 0, "the killed drain's session ends")
    assert count(raw, "SELECT count(*) FROM storage_deletions WHERE claimed_by IS NOT NULL") > 0
    assert listed(storage) == set(keys_of(old + new))

    # The next drain, right now (no lease to wait out, no clock moved), finishes everything.
    second = drain_outbox(db, storage)

    assert second.objects_removed == 30
    assert (second.objects_failed, second.pending, second.work_left()) == (0, 0, None)
    assert count(raw, QUEUED_KEYS) == 0
    assert listed(storage) == set(keys_of(new))


def test_two_live_drains_never_remove_the_same_key_twice(db, raw, storage_settings, storage_server):
    repos = [StorageRepo.from_settings(storage_settings, backoff_seconds=0.01) for _ in range(2)]
    try:
        repos[0].ensure_buckets()
        keys = queue_single_keys(raw, repos[0], 40)
        storage_server.set_faults(remove_delay_seconds=0.5)
        reports: list[DrainReport] = []
        failures: list[BaseException] = []

        def drain(repo: StorageRepo) -> None:
            try:
                # 5 objects a second: claims of 5 keys, so the two drains take turns on the outbox.
                reports.append(drain_outbox(db, repo, max_objects_per_second=5))
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=drain, args=(repo,)) for repo in repos]
        for thread in threads:
            thread.start()
        # Both hold claims at the same moment: two live tokens on the outbox.
        wait_for(
            lambda: count(
                raw,
                "SELECT count(DISTINCT claimed_by) FROM storage_deletions "
                "WHERE claimed_by IS NOT NULL AND lifecycle_claim_alive(claimed_by)",
            )
            == 2,
            "both drains hold claims at once",
        )
        for thread in threads:
            thread.join(timeout=WAIT)
        assert not failures
        assert len(reports) == 2
        # Every key removed exactly once: none removed by both, none "absent" to one because the
        # other had removed it.
        assert sum(r.objects_removed for r in reports) == len(keys)
        assert [r.objects_absent for r in reports] == [0, 0]
        assert all(r.objects_removed > 0 for r in reports)
        assert count(raw, QUEUED_KEYS) == 0
        assert listed(repos[0]) == set()
    finally:
        for repo in repos:
            repo.close()


def _terminate_others(raw) -> int:
    """Kill every other session of this database (the drain's lock session and its pool)."""
    rows = raw.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchall()
    return len(rows)


def _drain_in_thread(db, storage, results: list, **kwargs) -> threading.Thread:
    def run() -> None:
        try:
            results.append(drain_outbox(db, storage, **kwargs))
        except BaseException as exc:
            results.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_drain_whose_connections_are_killed_in_phase_two_still_finishes(db, raw, storage, storage_server):
    _, new = queue_objects(raw, storage, expired=10, live=2)
    cleanup(db, None)
    storage_server.set_faults(remove_delay_seconds=1)
    results: list = []
    # 10 objects a second: two claims per bucket prefix, so work remains after the kill.
    thread = _drain_in_thread(db, storage, results, max_objects_per_second=10)
    wait_for(lambda: live_claims(raw) > 0, "the drain claims rows")
    assert _terminate_others(raw) >= 1  # the lock's session and the pool, mid remove call
    thread.join(timeout=WAIT)

    [report] = results
    assert isinstance(report, DrainReport), report
    assert report.connection_losses >= 1
    assert (report.pending, report.objects_failed, report.work_left()) == (0, 0, None)
    assert report.objects_removed + report.objects_absent == 20
    assert count(raw, QUEUED_KEYS) == 0
    assert listed(storage) == set(keys_of(new))


def test_a_drain_that_loses_the_database_for_good_leaves_only_stealable_rows_and_says_so(
    db, raw, storage, storage_server, monkeypatch
):
    _, new = queue_objects(raw, storage, expired=10, live=2)
    cleanup(db, None)
    monkeypatch.setattr(outbox, "MAX_CONNECTION_RETRIES", 0)  # the first loss is one too many
    storage_server.set_faults(remove_delay_seconds=1)
    results: list = []
    thread = _drain_in_thread(db, storage, results, max_objects_per_second=10)
    wait_for(lambda: live_claims(raw) > 0, "the drain claims rows")
    _terminate_others(raw)
    thread.join(timeout=WAIT)
    storage_server.clear_faults()

    [error] = results
    assert isinstance(error, errors.DatabaseUnavailable), error
    assert "next run" in str(error)
    # Whatever it left is free for the next run at once: no live claim.
    assert live_claims(raw) == 0
    assert count(raw, QUEUED_KEYS) > 0
    fresh = Database.from_url(db.url, settings=db.settings)
    try:
        second = drain_outbox(fresh, storage)
    finally:
        fresh.dispose()
    assert (second.pending, second.work_left()) == (0, None)
    assert count(raw, QUEUED_KEYS) == 0
    assert listed(storage) == set(keys_of(new))
