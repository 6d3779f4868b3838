"""``db.jobs`` and ``db.events``: the one-statement operations outside ``db.transaction()``.

Each call is its own transaction, sent as one statement on a pooled autocommit connection, with the
same errors and the same events as inside a transaction. Outcomes are read back through ``raw``.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from lifecycle import errors
from lifecycle.db import Database
from lifecycle.states import JobStatus


def _events(raw: psycopg.Connection[Any], job_id: uuid.UUID) -> list[tuple[Any, ...]]:
    return raw.execute(
        "SELECT type, from_status, to_status, run_id FROM job_events WHERE job_id = %s ORDER BY ts, id",
        (job_id,),
    ).fetchall()


def test_a_job_lives_through_one_round_trip_calls(db: Database, raw: psycopg.Connection[Any]) -> None:
    job = db.jobs.create(params={"source": "a.mp4"})
    assert raw.execute("SELECT status FROM jobs WHERE id = %s", (job.id,)).fetchone() == ("queued",)

    claimed = db.jobs.claim_next(lease_seconds=60)
    assert claimed is not None
    assert claimed.id == job.id
    assert claimed.status is JobStatus.PROCESSING
    renewed = db.jobs.renew_lease(job.id, lease_seconds=120)
    assert renewed.version == claimed.version + 1
    done = db.jobs.transition(job.id, JobStatus.SUCCEEDED, expected_from=JobStatus.PROCESSING, reason="ok")
    assert done.status is JobStatus.SUCCEEDED
    assert done.lease_expires_at is None
    note = db.events.add(job.id, "note", {"k": 1})

    assert db.jobs.get(job.id) == done
    assert [j.id for j in db.jobs.list_by_status(JobStatus.SUCCEEDED).items] == [job.id]
    assert _events(raw, job.id) == [
        ("created", None, "queued", None),
        ("transition", "queued", "processing", None),
        ("transition", "processing", "succeeded", None),
        ("note", None, None, None),
    ]
    assert [e.id for e in db.events.list(job.id)][-1] == note.id
    assert len(db.events.page(job.id, limit=2).items) == 2
    # Each call committed on its own: nothing is left open on the server.
    open_transactions = raw.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND state LIKE 'idle in transaction%%'"
    ).fetchone()
    assert open_transactions == (0,)


def test_the_errors_are_those_of_a_transaction(db: Database, raw: psycopg.Connection[Any]) -> None:
    job = db.jobs.create()
    with pytest.raises(errors.InvalidTransition) as caught:
        db.jobs.transition(job.id, JobStatus.SUCCEEDED)
    assert caught.value.from_status == "queued"
    with pytest.raises(errors.JobNotFound):
        db.jobs.transition(uuid.uuid4(), JobStatus.CANCELED)
    with pytest.raises(errors.JobNotFound):
        db.jobs.get(uuid.uuid4())
    with pytest.raises(errors.InvalidInput):
        db.jobs.get("not-a-uuid")
    with pytest.raises(errors.InvalidTransition):
        db.jobs.renew_lease(job.id)
    with pytest.raises(errors.JobNotFound):
        db.events.add(uuid.uuid4(), "note")
    # Nothing was written by the refused calls.
    assert _events(raw, job.id) == [("created", None, "queued", None)]
    assert raw.execute("SELECT count(*) FROM job_events").fetchone() == (1,)


def test_a_refused_call_does_not_poison_the_pooled_connection(db: Database) -> None:
    """The failed statement's own transaction ended with it: the next call on the pool works."""
    job = db.jobs.create()
    for _ in range(5):
        with pytest.raises(errors.InvalidInput):
            db.jobs.create(params={"x": "ok"}, api_key_id=uuid.uuid4())
    assert db.jobs.get(job.id).id == job.id


def test_recording_a_key_needs_a_transaction(db: Database, raw: psycopg.Connection[Any]) -> None:
    """The attach guard locks the row and decides in a second statement: outside a transaction the
    lock would be gone in between, so the call is refused before anything is sent."""
    job = db.jobs.create()
    with pytest.raises(errors.LifecycleError, match=r"inside db\.transaction"):
        db.jobs.record_source_key(job.id, f"sources/{job.id}/source.mp4")
    assert raw.execute("SELECT source_key FROM jobs WHERE id = %s", (job.id,)).fetchone() == (None,)


def test_a_read_only_transaction_refuses_writes_and_leaves_the_pool_read_write(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    job = db.jobs.create()
    with db.transaction(read_only=True) as tx:
        assert tx.jobs.get(job.id).id == job.id
        with pytest.raises(errors.LifecycleError, match="read only") as caught:
            tx.jobs.transition(job.id, JobStatus.CANCELED)
    assert caught.value.context.get("sqlstate") == "25006"
    assert raw.execute("SELECT status FROM jobs WHERE id = %s", (job.id,)).fetchone() == ("queued",)
    # Every pooled connection writes again (the pool may hand out the same one).
    for _ in range(3):
        with db.transaction() as tx:
            assert tx.connection.execute("SHOW transaction_read_only").fetchone() == ("off",)
    assert db.jobs.transition(job.id, JobStatus.CANCELED).status is JobStatus.CANCELED
