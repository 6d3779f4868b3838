"""Injection: SQL-injection payloads in every string input of the public functions are stored or
compared verbatim and change nothing else (checked by an independent query before and after)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from lifecycle import errors
from lifecycle.db import Database
from lifecycle.states import JobStatus

PAYLOADS = [
    "'; DROP TABLE jobs; --",
    "' OR '1'='1",
    "x'); DELETE FROM job_events; --",
    "$$; TRUNCATE api_keys CASCADE; $$",
    "\\'; UPDATE jobs SET status = 'failed' WHERE true; --",
    ":id OR 1=1 -- :status",
    "%(id)s %s {0} {id}",
    "1; SELECT pg_sleep(0) /* */ ; COMMIT; DROP SCHEMA public CASCADE",
    "Robert'); DROP TABLE api_keys;-- ☃ \u202e",
]

_TABLES = ("jobs", "job_events", "api_keys", "storage_deletions", "job_deletions")


def world(
    raw: psycopg.Connection[Any],
    *,
    except_jobs: tuple[uuid.UUID, ...] = (),
    except_keys: tuple[uuid.UUID, ...] = (),
) -> Any:
    """Every row of every table and the list of tables, minus the rows a call was meant to write."""
    jobs = list(except_jobs) or [uuid.UUID(int=0)]
    keys = list(except_keys) or [uuid.UUID(int=0)]
    state: dict[str, Any] = {
        "tables": raw.execute(
            "SELECT array_agg(tablename ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone(),
        "jobs": raw.execute(
            "SELECT coalesce(jsonb_agg(t ORDER BY t.id), '[]') FROM jobs t WHERE NOT t.id = ANY(%s)", (jobs,)
        ).fetchone(),
        "job_events": raw.execute(
            "SELECT coalesce(jsonb_agg(t ORDER BY t.id), '[]') FROM job_events t "
            "WHERE NOT t.job_id = ANY(%s)",
            (jobs,),
        ).fetchone(),
        "api_keys": raw.execute(
            "SELECT coalesce(jsonb_agg(t ORDER BY t.id), '[]') FROM api_keys t WHERE NOT t.id = ANY(%s)",
            (keys,),
        ).fetchone(),
    }
    for table in ("storage_deletions", "job_deletions"):
        state[table] = raw.execute(
            f"SELECT coalesce(jsonb_agg(t ORDER BY t::text), '[]') FROM {table} t"
        ).fetchone()
    return state


@pytest.fixture
def baseline(db: Database) -> dict[str, Any]:
    """Some rows that an injected statement would change: jobs in several statuses, events, a key."""
    with db.transaction() as tx:
        queued = tx.jobs.create(params={"n": 1})
        done = tx.jobs.create(params={"n": 2})
        tx.jobs.transition(done.id, JobStatus.PROCESSING)
        tx.jobs.transition(done.id, JobStatus.SUCCEEDED)
        tx.events.add(queued.id, "note", data={"a": 1})
        key, plaintext = tx.api_keys.create("baseline", scopes=("read",))
    return {"queued": queued, "done": done, "key": key, "plaintext": plaintext}


def test_payloads_are_stored_verbatim(
    db: Database, raw: psycopg.Connection[Any], baseline: dict[str, Any]
) -> None:
    before = world(raw)
    new_jobs: list[uuid.UUID] = []
    new_keys: list[uuid.UUID] = []
    for p in PAYLOADS:
        with db.transaction(run_id=p) as tx:
            job = tx.jobs.create(params={p: p, "list": [p]})
            new_jobs.append(job.id)
            job = tx.jobs.update(job.id, expected_version=job.version, error=p)
            tx.events.add(job.id, p, data={"value": p})
            tx.jobs.transition(job.id, JobStatus.CANCELED, reason=p, data={p: p})
            key, _ = tx.api_keys.create(p, scopes=(p,))
            new_keys.append(key.id)
        # A payload is never an object key: refused before any SQL (keys are the job's own only).
        for method in ("record_source_key", "add_result_key"):
            with pytest.raises(errors.InvalidInput) as info, db.transaction() as tx:
                getattr(tx.jobs, method)(job.id, p)
            assert info.value.field == "key"

        stored = raw.execute(
            "SELECT params, error, source_key, result_keys, status FROM jobs WHERE id = %s", (job.id,)
        ).fetchone()
        assert stored == ({p: p, "list": [p]}, p, None, [], "canceled")
        events = raw.execute(
            "SELECT type, data, run_id FROM job_events WHERE job_id = %s ORDER BY id", (job.id,)
        ).fetchall()
        assert {run_id for _, _, run_id in events} == {p}
        assert (p, {"value": p}) in [(t, d) for t, d, _ in events]
        transition = [d for t, d, _ in events if t == "transition"][-1]
        assert p in json.dumps(transition, ensure_ascii=False)
        assert raw.execute("SELECT name, scopes FROM api_keys WHERE id = %s", (key.id,)).fetchone() == (
            p,
            [p],
        )
        # Lookups compare the payload as a value.
        with db.transaction() as tx:
            assert [k.name for k in tx.api_keys.list() if k.id == key.id] == [p]
            assert tx.jobs.get(job.id).error == p

    assert world(raw, except_jobs=tuple(new_jobs), except_keys=tuple(new_keys)) == before
    # The baseline is intact (the key still verifies, the jobs kept their statuses).
    with db.transaction() as tx:
        assert tx.api_keys.verify(baseline["plaintext"]).id == baseline["key"].id
        assert tx.jobs.get(baseline["done"].id).status is JobStatus.SUCCEEDED


def _calls(db: Database, b: dict[str, Any], p: str) -> list[tuple[str, Callable[[], Any]]]:
    """Every public repository call with ``p`` in one string argument; each must be refused."""
    from lifecycle import retention, transitions

    job = b["queued"].id

    def in_tx(fn: Callable[[Any], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with db.transaction() as tx:
                return fn(tx)

        return run

    return [
        ("jobs.get", in_tx(lambda tx: tx.jobs.get(p))),
        ("jobs.update id", in_tx(lambda tx: tx.jobs.update(p, expected_version=1, error="x"))),
        ("jobs.transition id", in_tx(lambda tx: tx.jobs.transition(p, JobStatus.CANCELED))),
        ("jobs.transition to", in_tx(lambda tx: tx.jobs.transition(job, p))),
        (
            "jobs.transition from",
            in_tx(lambda tx: tx.jobs.transition(job, JobStatus.CANCELED, expected_from=p)),
        ),
        ("jobs.list_by_status status", in_tx(lambda tx: tx.jobs.list_by_status(p))),
        ("jobs.list_by_status after", in_tx(lambda tx: tx.jobs.list_by_status(JobStatus.QUEUED, after=p))),
        ("jobs.transition_many from", in_tx(lambda tx: tx.jobs.transition_many(p, JobStatus.CANCELED))),
        ("jobs.transition_many to", in_tx(lambda tx: tx.jobs.transition_many(JobStatus.QUEUED, p))),
        ("jobs.renew_lease", in_tx(lambda tx: tx.jobs.renew_lease(p))),
        ("jobs.record_source_key id", in_tx(lambda tx: tx.jobs.record_source_key(p, "k"))),
        ("jobs.add_result_key id", in_tx(lambda tx: tx.jobs.add_result_key(p, "k"))),
        ("events.add id", in_tx(lambda tx: tx.events.add(p, "note"))),
        ("events.list id", in_tx(lambda tx: tx.events.list(p))),
        ("events.list after", in_tx(lambda tx: tx.events.list(job, after=p))),
        ("api_keys.verify", in_tx(lambda tx: tx.api_keys.verify(p))),
        ("api_keys.verify shaped", in_tx(lambda tx: tx.api_keys.verify(b["plaintext"][:-4] + p))),
        ("api_keys.get", in_tx(lambda tx: tx.api_keys.get(p))),
        ("api_keys.revoke", in_tx(lambda tx: tx.api_keys.revoke(p))),
        ("transition_batch from", lambda: transitions.transition_batch(db, p, JobStatus.CANCELED)),
        ("transition_batch to", lambda: transitions.transition_batch(db, JobStatus.QUEUED, p)),
        ("retention.purge", lambda: retention.purge(db, None, [p])),
    ]


def test_payloads_in_identifiers_and_filters_are_refused_and_change_nothing(
    db: Database, raw: psycopg.Connection[Any], baseline: dict[str, Any]
) -> None:
    before = world(raw)
    for p in PAYLOADS:
        for name, call in _calls(db, baseline, p):
            with pytest.raises(errors.LifecycleError):
                call()
            assert world(raw) == before, f"{name} changed the database with {p!r}"


def test_payloads_in_retention_and_batch_run_ids(
    db: Database, raw: psycopg.Connection[Any], baseline: dict[str, Any]
) -> None:
    """``run_id`` and ``reason`` are free text: stored as given, nothing else changed."""
    from lifecycle import retention, transitions

    for p in PAYLOADS:
        with db.transaction() as tx:
            failed = tx.jobs.create(params={})
            tx.jobs.transition(failed.id, JobStatus.PROCESSING)
            tx.jobs.transition(failed.id, JobStatus.FAILED)
        before = world(raw, except_jobs=(failed.id,))
        retention.cleanup(db, None, run_id=p, dry_run=True)
        report = transitions.transition_batch(db, JobStatus.FAILED, JobStatus.QUEUED, reason=p, run_id=p)
        assert report.moved == 1
        event = raw.execute(
            "SELECT run_id, data FROM job_events WHERE job_id = %s ORDER BY id DESC LIMIT 1", (failed.id,)
        ).fetchone()
        assert event is not None
        assert event[0] == p
        assert p in json.dumps(event[1], ensure_ascii=False)
        assert world(raw, except_jobs=(failed.id,)) == before, p


def test_payloads_in_storage_keys_are_refused_before_any_io(
    db: Database, raw: psycopg.Connection[Any], storage: Any, baseline: dict[str, Any]
) -> None:
    from lifecycle import artifacts
    from lifecycle.storage import result_key, source_key

    before = world(raw)
    job = baseline["queued"].id
    for p in PAYLOADS:
        calls: list[Callable[[str], Any]] = [
            lambda v: source_key(v, "mp4"),
            lambda v: result_key(job, v),
            lambda v: storage.upload(v, b"x", "video/mp4"),
            lambda v: storage.sign(v),
            lambda v: storage.remove([v]),
            lambda v: artifacts.attach_source(db, storage, job, b"x", v, "video/mp4"),
            lambda v: artifacts.attach_source(db, storage, job, b"x", "mp4", v),
            lambda v: artifacts.attach_source(db, storage, job, v, "mp4", "video/mp4"),
            lambda v: artifacts.attach_result(db, storage, v, b"x", "mp4", "video/mp4"),
            lambda v: artifacts.signed_result_urls(db, storage, v),
        ]
        for call in calls:
            with pytest.raises(errors.LifecycleError):
                call(p)
        assert world(raw) == before, p
    assert list(storage.iter_keys("sources")) == []
    assert list(storage.iter_keys("results")) == []
