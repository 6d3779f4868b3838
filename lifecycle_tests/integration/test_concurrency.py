"""Races: one winner per transition, one owner per claimed job."""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from lifecycle import errors
from lifecycle.db import Database
from lifecycle.states import JobStatus
from lifecycle_tests.integration._jobs_helpers import events, job_in, row


def test_sixteen_threads_race_one_transition(database_url, settings, raw):
    db = Database.from_url(database_url, settings=settings, pool_size=16)
    try:
        job = job_in(db, JobStatus.PROCESSING)
        start = threading.Barrier(16)

        def attempt(i: int) -> str:
            start.wait()
            try:
                with db.transaction(run_id=f"t{i}") as tx:
                    tx.jobs.transition(job.id, JobStatus.SUCCEEDED, expected_from=JobStatus.PROCESSING)
            except errors.InvalidTransition as exc:
                return f"lost to {exc.from_status}"
            return "won"

        with ThreadPoolExecutor(16) as pool:
            outcomes = Counter(pool.map(attempt, range(16)))
    finally:
        db.dispose()
    assert outcomes == {"won": 1, "lost to succeeded": 15}
    transitions = [e for e in events(raw, job.id) if e["to_status"] == "succeeded"]
    assert len(transitions) == 1
    assert row(raw, job.id)["version"] == job.version + 1


def test_racing_cancels_without_expected_from_record_the_true_source(database_url, settings, raw):
    """processing -> canceled races queued -> processing... the event names the status really left."""
    db = Database.from_url(database_url, settings=settings, pool_size=16)
    try:
        job = job_in(db, JobStatus.QUEUED)
        start = threading.Barrier(8)

        def attempt(i: int) -> str:
            start.wait()
            target = JobStatus.PROCESSING if i % 2 else JobStatus.CANCELED
            try:
                with db.transaction() as tx:
                    tx.jobs.transition(job.id, target)
            except errors.InvalidTransition:
                return "lost"
            return target.value

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(attempt, range(8)))
    finally:
        db.dispose()
    evs = events(raw, job.id)
    # Replaying the events must give the current status, each from_status the previous to_status.
    for previous, current in itertools.pairwise(evs):
        assert current["from_status"] == previous["to_status"]
    assert evs[-1]["to_status"] == row(raw, job.id)["status"]


def test_claim_next_from_eight_threads_hands_out_each_job_once(database_url, settings, raw):
    db = Database.from_url(database_url, settings=settings, pool_size=8)
    try:
        raw.execute(
            "INSERT INTO jobs (params, expires_at) "
            "SELECT jsonb_build_object('i', i), now() + interval '1 day' FROM generate_series(1, 1000) i"
        )
        start = threading.Barrier(8)

        def worker(_: int) -> list[object]:
            claimed = []
            start.wait()
            while True:
                with db.transaction() as tx:
                    job = tx.jobs.claim_next(lease_seconds=60)
                if job is None:
                    return claimed
                claimed.append(job.id)

        with ThreadPoolExecutor(8) as pool:
            per_worker = list(pool.map(worker, range(8)))
    finally:
        db.dispose()
    everything = [job_id for claimed in per_worker for job_id in claimed]
    assert len(everything) == 1000
    assert len(set(everything)) == 1000
    assert (
        raw.execute("SELECT count(*) FROM jobs WHERE status = 'processing' AND attempts = 1").fetchone()[0]
        == 1000
    )
    per_job = raw.execute(
        "SELECT count(*) FROM job_events WHERE to_status = 'processing' GROUP BY job_id HAVING count(*) <> 1"
    ).fetchall()
    assert per_job == []
    assert raw.execute("SELECT count(*) FROM job_events").fetchone()[0] == 1000
